"""The shipped tiny checkpoints: they load through the real loaders and have learned the world."""

import json

import pytest
from scipy.stats import binomtest

from dlmkit.data.tiny_corpus import load_tiny_tokenizer
from dlmkit.data.tinyworld import TinyWorld
from dlmkit.metrics.answers import check_answer
from dlmkit.presets import TINY, TINY_ROOT
from dlmkit.tokenizer import render_chat

SHIPPED = sorted({d for d in TINY.values() if (TINY_ROOT / d / "training.json").exists()})


def test_assets_stay_small():
    size = sum(f.stat().st_size for f in TINY_ROOT.rglob("*") if f.is_file())
    assert size < 40 * 2**20, f"dlmkit/assets is {size / 2**20:.1f} MB; the budget is 40 MB"


@pytest.mark.parametrize("directory", SHIPPED)
def test_checkpoint_card_names_its_rebuild_command_and_vocab_matches(directory):
    card = json.loads((TINY_ROOT / directory / "training.json").read_text())
    assert card["recipe"].startswith("python -m dlmkit.train.tiny ")
    config = json.loads((TINY_ROOT / directory / "config.json").read_text())
    assert config["vocab_size"] == len(load_tiny_tokenizer())


@pytest.mark.skipif("dream" not in SHIPPED, reason="tiny Dream not built (python -m dlmkit.train.tiny dlm)")
def test_tiny_dream_solves_easy_problems_far_above_chance():
    """Greedy 128-step answers to easy word problems and functions (a guess is right with
    probability ~0; 2% is generous). Multiple choice is left out: the tiny models state the
    right fact but have not learned to map it to its letter (README, tiny checkpoints)."""
    from dlmkit.decoding.diffusion import diffusion_generate
    from dlmkit.models.dream import load_dream, load_dream_tokenizer

    model = load_dream(TINY_ROOT / "dream")
    tokenizer = load_dream_tokenizer(TINY_ROOT / "dream")
    world = TinyWorld(0)
    items = world.items("gsm8k", "easy", 16, "test") + world.items("humaneval", "easy", 8, "test")
    enc = tokenizer([render_chat(i["messages"][:1], add_generation_prompt=True) for i in items],
                    return_tensors="pt", padding=True)
    out = diffusion_generate(model, enc["input_ids"], enc["attention_mask"], max_new_tokens=128, steps=128)
    texts = tokenizer.batch_decode(out.generated, skip_special_tokens=True)
    correct = sum(check_answer(item, text) for item, text in zip(items, texts))
    assert binomtest(correct, len(items), 0.02, alternative="greater").pvalue < 1e-3, (correct, texts[:3])


@pytest.mark.parametrize("role", ["ar_small", "ar_medium"])
def test_tiny_gap_fillers_solve_easy_word_problems(role):
    if TINY[role] not in SHIPPED:
        pytest.skip(f"tiny {role} not built (python -m dlmkit.train.tiny {role})")
    from dlmkit.models.ar import load_ar

    model, tokenizer = load_ar(TINY_ROOT / TINY[role])
    items = TinyWorld(0).items("gsm8k", "easy", 8, "test")
    correct = 0
    for item in items:
        ids = tokenizer(render_chat(item["messages"][:1], add_generation_prompt=True), return_tensors="pt")
        out = model.generate(**ids, max_new_tokens=64, do_sample=False, pad_token_id=tokenizer.eos_token_id,
                             eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")])
        correct += check_answer(item, tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    assert correct >= 3, f"{role} solved {correct}/8 easy word problems"
