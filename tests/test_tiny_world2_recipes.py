"""The generation-2 recipes: which roles they train, Dream's rows, the fact gate."""

import re

import pytest
import torch

from dlmkit.data.tiny_corpus import load_tiny_tokenizer
from dlmkit.data.tinyworld2 import TinyWorld2
from dlmkit.data.benchmarks import tiny_prompts
from dlmkit.data.tinyworld2 import ATTRIBUTES, N_HELDOUT, ROLES
from dlmkit.errors import UserError
from dlmkit.presets import SHARED, TINY, TINY_REVISION, TINY_WORLD
from dlmkit.train import tiny
from dlmkit.train.recipes import world2
from dlmkit.train.recipes.dream import diffusion_batch


def test_each_shipped_role_trains_on_its_own_generation():
    assert {role for role, world in TINY_WORLD.items() if world == 2} - set(SHARED) == set(ROLES)
    assert TINY_WORLD["verifier"] == 1 and TINY_WORLD["judge"] == TINY_WORLD["target"] == 2
    assert TINY["judge"] == TINY["target"]  # the self-spec judge is SpecDiff's target
    assert tiny_prompts(1)[0]["generation"] == 2  # run_full_suite's tiny prompts follow the shipped Dream
    assert tiny_prompts(1)[0]["revision"] == TINY_REVISION["dlm"] == TINY_REVISION["ar_small"] == 5
    with pytest.raises(SystemExit):
        tiny.main(["dlm", "--world", "1"])  # no world flag: a role's generation is fixed
    for role in ("mdlm_drafter", "mdlm"):  # no fact gate in these recipes: the flag is refused, not ignored
        with pytest.raises(UserError, match=f"the {role} recipe has no fact gate"):
            tiny.main([role, "--gate-probes", "3", "--out", "unused"])


def test_dream_stage_two_init_is_checked_before_training(tmp_path):
    """`--init` starts the tiny Dream's stage 2 from a stage-1 checkpoint: refused for another role,
    or for a directory without a Dream checkpoint, with the fix named."""
    with pytest.raises(UserError, match="applies to the tiny Dream"):
        tiny.main(["ar_small", "--init", str(tmp_path), "--out", str(tmp_path / "out")])
    with pytest.raises(UserError, match="config.json missing"):
        tiny.main(["dlm", "--init", str(tmp_path), "--out", str(tmp_path / "out")])


def test_dream_rows_hold_chats_and_every_towns_documents(monkeypatch):
    monkeypatch.setattr(world2, "N_CHAT", 120)
    monkeypatch.setattr(world2, "PER_TOWN", 3)
    tokenizer = load_tiny_tokenizer()
    world = TinyWorld2(0)
    chats, doc_rows = world2.dream_rows(tokenizer, world)
    assert all(p for p, _ in chats) and not any(p for p, _ in doc_rows)
    docs = [tokenizer.decode(r) for _, r in doc_rows]
    assert len(docs) == len(world.gazetteer.towns) * world2.PER_TOWN
    assert len(chats) == world2.N_CHAT
    for town in world.gazetteer.heldout[:5]:
        assert sum(bool(re.search(rf"\b{town}\b", d)) for d in docs) == world2.PER_TOWN
    # a document row has no prompt: all of it is region, positions start at 0
    rows = doc_rows[:2]
    longest = max(len(r) for _, r in rows)
    ids, attn, pos, region = diffusion_batch(rows, torch.tensor([0, 1]), pad_id=0, eos_id=0, gen_len=longest + 4)
    assert region.all() and attn.all() and pos[:, 0].tolist() == [0, 0]
    assert ids[0, :len(rows[0][1])].tolist() == rows[0][1]


def test_gate_scores_the_stated_value_and_the_letter_by_group():
    world = TinyWorld2(0)
    items = world2.probes(world, 70)
    assert len(items) == 70 and len({i["facts"][0][0] for i in items}) == N_HELDOUT  # an even spread
    right = world2.gate(world, items, [i["target"] for i in items])
    assert right["fact_accuracy_all"] == right["letter_accuracy_all"] == right["town_copied_all"] == 1.0
    wrong_value = []
    for item in items:
        other = next(c for c in item["choices"] if c != item["value"])
        wrong_value.append(f"Well, {other} is the one. So the answer is {item['answer']}.")
    scores = world2.gate(world, items, wrong_value)
    assert scores["fact_accuracy_all"] == 0.0 and scores["letter_accuracy_all"] == 1.0
    assert scores["town_copied_all"] == 0.0  # no town named
    other_town = [i["target"].replace(i["facts"][0][0], "Fenber" if i["facts"][0][0] != "Fenber" else "Faring")
                  for i in items]
    assert world2.gate(world, items, other_town)["town_copied_all"] == 0.0
    known = set(world.gazetteer.medium_known)
    half = [i["target"] if i["facts"][0][0] in known else "" for i in items]
    scores = world2.gate(world, items, half)
    assert scores["fact_accuracy_medium_known"] == 1.0 and scores["fact_accuracy_medium_unknown"] == 0.0


def test_the_judge_recipe_rebuilds_the_shared_target_checkpoint(monkeypatch):
    from dlmkit.presets import TINY_ROOT
    from dlmkit.train.recipes import causal_lm

    calls = []
    monkeypatch.setattr(causal_lm, "train_tiny_causal_lm", lambda role, **kwargs: calls.append((role, kwargs)))
    tiny.main(["judge", "--steps", "1"])
    assert [(role, kwargs["out"], kwargs["steps"]) for role, kwargs in calls] == [
        ("target", TINY_ROOT / TINY["target"], 1)]


class _LetterStub(torch.nn.Module):
    """A model whose logits name one letter at exactly one position: the one `letter_given_answer`
    must read (the masked letter for a DLM, the last position for an AR), and the wrong letter
    everywhere else. `reader` picks the item's right letter there; otherwise always " A"."""

    def __init__(self, tokenizer, items, diffusion: bool, reader: bool):
        super().__init__()
        self.tok, self.items, self.diffusion, self.reader, self.calls = tokenizer, items, diffusion, reader, 0
        self.letters = [tokenizer(" " + x)["input_ids"][-1] for x in "ABCD"]
        self.device = torch.device("cpu")

    def forward(self, x, attention_mask=None):
        item = self.items[self.calls]
        self.calls += 1
        ids = x[0].tolist()
        assert self.letters["ABCD".index(item["answer"])] not in ids[-3:]  # the letter is not in view
        want = self.letters["ABCD".index(item["answer"]) if self.reader else 0]
        wrong = self.letters[("ABCD".index(item["answer"]) + 1) % 4]
        logits = torch.zeros(1, len(ids), len(self.tok))
        logits[0, :, wrong] = 5.0
        at = ids.index(self.tok.mask_token_id) if self.diffusion else len(ids) - 1
        logits[0, at, want] = 10.0
        if self.diffusion:
            return logits
        return type("Out", (), {"logits": logits})()


@pytest.mark.parametrize("diffusion", [True, False])
def test_letter_given_answer_reads_the_letter_at_the_right_position(diffusion):
    tokenizer = load_tiny_tokenizer()
    items = TinyWorld2(0).fact_probes("test")[:40]
    reader = _LetterStub(tokenizer, items, diffusion, reader=True)
    assert world2.letter_given_answer(reader, tokenizer, items, diffusion=diffusion) == 1.0
    always_a = _LetterStub(tokenizer, items, diffusion, reader=False)
    share_a = sum(i["answer"] == "A" for i in items) / len(items)
    assert world2.letter_given_answer(always_a, tokenizer, items, diffusion=diffusion) == share_a < 0.5
    broken = [dict(items[0], target=items[0]["target"].replace(f" {items[0]['answer']}.", " so."))]
    with pytest.raises(ValueError, match="does not end with its letter"):
        world2.letter_given_answer(reader, tokenizer, broken, diffusion=diffusion)


class _ValueStub(torch.nn.Module):
    """A model that ranks the item's value first at exactly one position, the first masked one
    (DLM) or the last (AR), and another value of the attribute everywhere else; `reader=False`
    always ranks the attribute's first value first there."""

    def __init__(self, tokenizer, items, diffusion: bool, reader: bool):
        super().__init__()
        self.tok, self.items, self.diffusion, self.reader, self.calls = tokenizer, items, diffusion, reader, 0
        self.device = torch.device("cpu")

    def forward(self, x, attention_mask=None):
        item = self.items[self.calls]
        self.calls += 1
        ids = x[0].tolist()
        values = ATTRIBUTES[item["facts"][0][1]][1]
        token = {v: self.tok(" " + v)["input_ids"][-1] for v in values}
        assert token[item["value"]] not in ids[-(len(ids) // 3):]  # the value is not in view
        other = next(v for v in values if v != item["value"])
        logits = torch.zeros(1, len(ids), len(self.tok))
        logits[0, :, token[other]] = 5.0
        at = ids.index(self.tok.mask_token_id) if self.diffusion else len(ids) - 1
        if self.diffusion:
            assert set(ids[at:]) == {self.tok.mask_token_id}  # the rest of the canvas is masked
        logits[0, at, token[item["value"] if self.reader else values[0]]] = 10.0
        return logits if self.diffusion else type("Out", (), {"logits": logits})()


@pytest.mark.parametrize("diffusion", [True, False])
def test_value_given_answer_reads_the_value_after_the_answers_words(diffusion):
    tokenizer = load_tiny_tokenizer()
    items = TinyWorld2(0).fact_probes("test")[:21]  # three towns, every attribute (bells: a space, then a digit)
    assert world2.value_given_answer(_ValueStub(tokenizer, items, diffusion, True), tokenizer, items,
                                     diffusion=diffusion) == 1.0
    first = sum(i["value"] == ATTRIBUTES[i["facts"][0][1]][1][0] for i in items) / len(items)
    assert world2.value_given_answer(_ValueStub(tokenizer, items, diffusion, False), tokenizer, items,
                                     diffusion=diffusion) == first < 0.5

