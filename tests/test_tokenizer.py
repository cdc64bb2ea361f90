import json

from transformers import AutoTokenizer

from dlmkit.data.tinyworld import TinyWorld
from dlmkit.presets import TINY_TOKENIZER
from dlmkit.tokenizer import ENDOFTEXT, IM_END, IM_START, MASK, main as train_main, render_chat, render_prompt


def _tok():
    return AutoTokenizer.from_pretrained(TINY_TOKENIZER)


def test_special_tokens_and_mask_is_last():
    tok = _tok()
    assert tok.eos_token == tok.pad_token == ENDOFTEXT
    assert tok.mask_token == MASK and tok.mask_token_id == len(tok) - 1
    ids = tok.convert_tokens_to_ids([ENDOFTEXT, IM_START, IM_END])
    assert len(set(ids)) == 3 and max(ids) < tok.mask_token_id
    assert tok.padding_side == "left"


def test_round_trip_of_world_text_and_any_unicode():
    tok = _tok()
    texts = [i["target"] for i in TinyWorld(5).strata(2)] + TinyWorld(5).documents(5)
    texts += ["Ünïcödé, emoji 🚀 and tabs\tand\nnewlines", "  leading spaces", "x = [1, 2, 3]  # code"]
    for text in texts:
        assert tok.decode(tok(text)["input_ids"]) == text


def test_digits_are_single_tokens_like_qwen2():
    tok = _tok()
    pieces = tok.tokenize("12345")
    assert pieces == ["1", "2", "3", "4", "5"]


def test_chat_template_matches_qwen_format():
    tok = _tok()
    messages = [{"role": "user", "content": "What is 2 + 2?"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n"
    assert text == render_chat(messages, add_generation_prompt=True)
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert tok.decode(ids) == text
    assert ids[0] == tok.convert_tokens_to_ids(IM_START)


def test_render_prompt_is_the_user_turn_before_the_reference_answer():
    item = {"messages": [{"role": "user", "content": "Which fruit is grown in Fenist?"},
                         {"role": "assistant", "content": "Now, the fruit of Fenist is the pear, so C."}]}
    prompt = render_prompt(item)
    assert prompt == "<|im_start|>user\nWhich fruit is grown in Fenist?<|im_end|>\n<|im_start|>assistant\n"
    # the full chat is the prompt, then the answer: what the training recipes mask and the models are asked
    assert render_chat(item["messages"]).startswith(prompt)
    assert render_chat(item["messages"])[len(prompt):] == "Now, the fruit of Fenist is the pear, so C.<|im_end|>\n"


def test_retraining_reproduces_the_shipped_tokenizer(tmp_path):
    train_main(["--out", str(tmp_path)])
    shipped = json.loads((TINY_TOKENIZER / "tokenizer.json").read_text())
    rebuilt = json.loads((tmp_path / "tokenizer.json").read_text())
    assert rebuilt["model"]["vocab"] == shipped["model"]["vocab"]
    assert rebuilt["model"]["merges"] == shipped["model"]["merges"]
