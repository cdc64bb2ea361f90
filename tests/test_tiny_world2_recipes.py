"""The generation-2 recipes: staging only, Dream's rows, the fact gate."""

import re

import pytest
import torch

from dlmkit.data.tiny_corpus import load_tiny_tokenizer
from dlmkit.data.tinyworld2 import TinyWorld2
from dlmkit.errors import UserError
from dlmkit.presets import TINY_ROOT
from dlmkit.train import tiny
from dlmkit.train.recipes import world2
from dlmkit.train.recipes.dream import diffusion_batch


def test_world2_never_writes_over_the_shipped_checkpoints(tmp_path):
    assert world2.staging_dir("ar_small", None) == world2.STAGING / "ar_small"
    assert world2.staging_dir("dlm", tmp_path / "x") == tmp_path / "x"
    with pytest.raises(UserError, match="shipped generation-1 assets"):
        world2.staging_dir("dlm", TINY_ROOT / "dream")
    with pytest.raises(UserError, match="shipped generation-1 assets"):
        tiny.main(["ar_small", "--world", "2", "--out", str(TINY_ROOT / "ar_small")])
    with pytest.raises(UserError, match="choose from dlm"):
        world2.staging_dir("target", None)


def test_the_control_role_and_the_tokenizer_belong_to_their_generations():
    with pytest.raises(UserError, match="world 2 only"):
        tiny.main(["ar_control"])
    with pytest.raises(UserError, match="reuses the generation-1 tokenizer"):
        tiny.main(["tokenizer", "--world", "2"])


def test_dream_rows_hold_chats_and_every_towns_documents(monkeypatch):
    monkeypatch.setattr(world2, "N_CHAT", 120)
    monkeypatch.setattr(world2, "PER_TOWN", 3)
    tokenizer = load_tiny_tokenizer()
    world = TinyWorld2(0)
    pairs = world2.dream_pairs(tokenizer, world)
    docs = [tokenizer.decode(r) for p, r in pairs if not p]
    assert len(docs) == len(world.gazetteer.towns) * world2.PER_TOWN
    assert len(pairs) - len(docs) == world2.N_CHAT
    for town in world.gazetteer.heldout[:5]:
        assert sum(bool(re.search(rf"\b{town}\b", d)) for d in docs) == world2.PER_TOWN
    # a document row (empty prompt) and a chat row batch together: the document is all region
    chat = next(i for i, (p, _) in enumerate(pairs) if p)
    doc = next(i for i, (p, _) in enumerate(pairs) if not p)
    ids, attn, pos, region = diffusion_batch(pairs, torch.tensor([chat, doc]), pad_id=0, eos_id=0, gen_len=128)
    n_prompt = len(pairs[chat][0])
    assert region[1].sum() == 128 and attn[1].sum() == 128 and pos[1, n_prompt] == 0
    assert ids[1, n_prompt:n_prompt + len(pairs[doc][1])].tolist() == pairs[doc][1]


def test_gate_scores_the_stated_value_and_the_letter_by_group():
    world = TinyWorld2(0)
    items = world2.probes(world, 70)
    assert len(items) == 70 and len({i["facts"][0][0] for i in items}) > 30
    right = world2.gate(world, items, [i["target"] for i in items])
    assert right["fact_accuracy_all"] == right["letter_accuracy_all"] == 1.0
    wrong_value = []
    for item in items:
        other = next(c for c in item["choices"] if c != item["value"])
        wrong_value.append(f"Well, {other} is the one. So the answer is {item['answer']}.")
    scores = world2.gate(world, items, wrong_value)
    assert scores["fact_accuracy_all"] == 0.0 and scores["letter_accuracy_all"] == 1.0
    known = set(world.gazetteer.medium_known)
    half = [i["target"] if i["facts"][0][0] in known else "" for i in items]
    scores = world2.gate(world, items, half)
    assert scores["fact_accuracy_medium_known"] == 1.0 and scores["fact_accuracy_medium_unknown"] == 0.0
