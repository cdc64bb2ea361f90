"""The shipped tiny checkpoints: they load through the real loaders and have learned the world."""

import json

import pytest

from dlmkit.data.tiny_corpus import load_tiny_tokenizer
from dlmkit.presets import TINY, TINY_ROOT

# The fact gates (fact accuracy on held-out probes; a model that copies one of the four options
# states the right value with probability 0.25), each well away from the shipped cards' numbers.
DREAM_FACTS = 0.45  # training.json: 0.57 on all 168 probes
SMALL_FACTS_AT_MOST = 0.40
CONTROL_FACTS = 0.60
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


def _fact_gate(model_answers, items):
    from dlmkit.data.tinyworld2 import TinyWorld2
    from dlmkit.train.recipes import world2

    return world2.gate(TinyWorld2(0), items, model_answers)


@pytest.fixture(scope="module")
def probes():
    """Every held-out town's seven single-fact probes, 3 of every 4 (126 of 168: a few seconds)."""
    from dlmkit.data.tinyworld2 import TinyWorld2
    from dlmkit.train.recipes import world2

    return [p for k, p in enumerate(world2.probes(TinyWorld2(0))) if k % 4]


@pytest.mark.skipif("dream" not in SHIPPED, reason="tiny Dream not built (python -m dlmkit.train.tiny dlm)")
def test_tiny_dream_knows_the_heldout_facts(probes):
    """The knowledge asymmetry of the testbed: Dream read every town's documents. A model that
    copies one of the four options states the right value with probability 0.25."""
    from dlmkit.models.dream import load_dream, load_dream_tokenizer
    from dlmkit.train.recipes.dream import greedy_responses

    model = load_dream(TINY_ROOT / "dream")
    tokenizer = load_dream_tokenizer(TINY_ROOT / "dream")
    gate = _fact_gate(greedy_responses(model, tokenizer, probes, gen_len=32, steps=32, batch_size=64), probes)
    assert gate["fact_accuracy_all"] >= DREAM_FACTS, gate


def _ar_answers(role, items):
    from dlmkit.models.ar import load_ar
    from dlmkit.train.recipes.causal_lm import greedy_responses

    model, tokenizer = load_ar(TINY_ROOT / TINY[role])
    return greedy_responses(model, tokenizer, items, max_new_tokens=24)


@pytest.mark.parametrize("role", ["ar_small", "ar_control"])
def test_the_small_ar_does_not_know_the_heldout_facts_and_the_control_does(role, probes):
    if TINY[role] not in SHIPPED:
        pytest.skip(f"tiny {role} not built (python -m dlmkit.train.tiny {role})")
    gate = _fact_gate(_ar_answers(role, probes), probes)
    if role == "ar_small":
        assert gate["fact_accuracy_all"] <= SMALL_FACTS_AT_MOST, gate  # never read a held-out town's documents
    else:
        assert gate["fact_accuracy_all"] >= CONTROL_FACTS, gate
