"""The tiny world's byte-level BPE tokenizer, saved in HF format with a Qwen-style chat template.

It mirrors the Qwen2 tokenizer that Dream and Qwen2.5 share: Qwen2's pre-tokenizer regex
(single digits, words with a leading space), byte-level fallback so any text round-trips,
`<|endoftext|>` as end of text and padding, `<|im_start|>` / `<|im_end|>` chat markers,
and `<|mask|>` as the last id (MDLM's convention: mask = vocab size - 1).

Retrain it with:  python -m dlmkit.tokenizer --out dlmkit/assets/tiny/tokenizer
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from dlmkit.data.tinyworld import TinyWorld

ENDOFTEXT, IM_START, IM_END, MASK = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"
QWEN2_PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2.5's template without its default system prompt (no system turn unless given).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def render_chat(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The chat template as plain Python, for training data built without a tokenizer object."""
    text = "".join(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages)
    return text + (f"{IM_START}assistant\n" if add_generation_prompt else "")


def render_prompt(item: dict) -> str:
    """What a model is asked: an item's first (user) message through the chat template, with the
    generation prompt (the text before its reference answer)."""
    return render_chat(item["messages"][:1], add_generation_prompt=True)


def training_corpus(world: TinyWorld, n_items: int = 6000) -> list[str]:
    """Every kind of text the tiny models will see: chat items, documents, math CoT."""
    chats = [render_chat(item["messages"]) for item in world.chat_examples(n_items)]
    docs = world.documents(n_items // 2)
    math = [render_chat(r["messages"]) for r in world.math_cot(n_items // 4)]
    return chats + docs + math


def train_tokenizer(world: TinyWorld, vocab_size: int = 4096):
    """Train the BPE on the tiny world and wrap it as a transformers fast tokenizer."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1,  # the mask is appended after training, as the last id
        special_tokens=[ENDOFTEXT, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(training_corpus(world), trainer=trainer)
    tok.add_special_tokens([MASK])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=ENDOFTEXT, pad_token=ENDOFTEXT, mask_token=MASK,
        additional_special_tokens=[IM_START, IM_END], padding_side="left", model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Train the tiny world's BPE tokenizer (HF format).")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "assets" / "tiny" / "tokenizer")
    parser.add_argument("--seed", type=int, default=0, help="tiny-world seed of the training text")
    parser.add_argument("--vocab-size", type=int, default=4096, help="upper bound; the world may need fewer")
    args = parser.parse_args(argv)
    tokenizer = train_tokenizer(TinyWorld(args.seed), args.vocab_size)
    tokenizer.save_pretrained(args.out)
    print(f"saved a {len(tokenizer)}-entry tokenizer to {args.out}")


if __name__ == "__main__":
    main()
