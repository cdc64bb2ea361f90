"""SpecDiff's drafter corpus: the target's own continuations of training-split prompts."""

import pytest
import torch

from dlmkit.data.tiny_corpus import load_tiny_tokenizer
from dlmkit.data.tinyworld2 import TinyWorld2
from dlmkit.decoding.spec_loop import CachedLM, ar_generate
from dlmkit.errors import UserError
from dlmkit.experiments.specdiff.prompts import tiny_world_prompts
from dlmkit.train import tiny
from dlmkit.train.recipes import distill


def tiny_target(vocab: int, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab, n_embd=16, n_layer=2, n_head=2, n_positions=256)
    return GPT2LMHeadModel(config).eval()


def test_greedy_rows_are_the_targets_own_greedy_decoding_and_sampled_rows_follow_the_seed():
    model = tiny_target(50)
    prompts = torch.randint(0, 50, (3, 5), generator=torch.Generator().manual_seed(1))
    greedy = distill.continue_batch(model, prompts, 12, 0.0, None)
    lm = CachedLM(model)
    for row, tail in zip(prompts.tolist(), greedy.tolist()):
        assert ar_generate(lm, row, 12).tokens == tail  # batched, cached: the same tokens one at a time
    draw = lambda seed: distill.continue_batch(model, prompts, 12, 1.0, torch.Generator().manual_seed(seed))
    assert torch.equal(draw(3), draw(3)) and not torch.equal(draw(3), draw(4))
    assert not torch.equal(draw(3), greedy)


def test_corpus_holds_prompt_then_the_targets_greedy_continuation(monkeypatch):
    tokenizer = load_tiny_tokenizer()
    model = tiny_target(len(tokenizer))
    world = TinyWorld2(0)
    monkeypatch.setattr(distill, "BATCH", 3)  # several batches per length
    docs = distill.target_corpus(model, tokenizer, world, n=16, new_tokens=6)
    prompts = distill.training_prompts(world, tokenizer, 16)
    assert len(docs) == 16
    lm = CachedLM(model)
    eos = tokenizer.eos_token_id
    for doc, prompt in zip(docs, prompts):
        assert doc[:len(prompt)] == prompt and doc[len(prompt):] == ar_generate(lm, [eos] + prompt, 6).tokens
    sampled = lambda seed: distill.target_corpus(model, tokenizer, world, n=16, new_tokens=6, temperature=1.0, seed=seed)
    assert sampled(0) == sampled(0) != sampled(1) and sampled(0) != docs


def test_prompts_come_from_the_training_split_never_the_bench_prompts():
    tokenizer = load_tiny_tokenizer()
    world = TinyWorld2(0)
    prompts = distill.training_prompts(world, tokenizer, 200)
    assert {len(p) for p in prompts[:100]} == set(distill.PROMPT_TOKENS)
    # A document prompt is the start of a training draw (a test draw may open with the same sentence:
    # the facts are shared, the draws are not).
    for prompt, text in zip(prompts[:100], world.documents(100, "train")):
        assert tokenizer(text, add_special_tokens=False)["input_ids"][:len(prompt)] == prompt
    bench = tiny_world_prompts(tokenizer, ("chat",), 50, 12)
    bench = {tuple(p["ids"][1:]) for p in bench}  # without the leading <|endoftext|>
    assert len(bench) > 20 and not bench & {tuple(p) for p in prompts}
    chat = [tokenizer.decode(p) for p in prompts[100:]]
    assert all(text.endswith("<|im_start|>assistant\n") for text in chat)
    heldout = world.gazetteer.heldout
    assert not any(town in text for text in chat for town in heldout)


def test_targets_flag_is_for_the_specdiff_drafters_only():
    with pytest.raises(UserError, match="--targets applies to SpecDiff's drafters"):
        tiny.main(["ar_small", "--targets", "target", "--out", "unused"])
    with pytest.raises(SystemExit):
        tiny.main(["drafter", "--targets", "verifier", "--out", "unused"])
    with pytest.raises(UserError, match="unknown drafter targets"):
        distill.check_targets("verifier")


def fake_corpus(calls):
    def corpus(tokenizer, world, seed, device):
        calls.append(seed)
        ids = tokenizer(world.documents(200, "train"), add_special_tokens=False)["input_ids"]
        return ids, {"targets": "target", "corpus": "fake"}
    return corpus


def test_mdlm_drafter_learns_the_target_corpus_in_drafting_states_and_the_control_keeps_mdlms_recipe(
        monkeypatch, tmp_path):
    import json

    from dlmkit.train.recipes import mdlm

    calls = []
    monkeypatch.setattr(distill, "drafter_corpus", fake_corpus(calls))
    seen = []
    real_tail = mdlm.tail_masked
    # a training step draws its tail with gradients on; the held-out cross-entropy under no_grad
    monkeypatch.setattr(mdlm, "tail_masked", lambda *a, **k: seen.append(torch.is_grad_enabled()) or real_tail(*a, **k))
    tiny.main(["mdlm_drafter", "--steps", "2", "--out", str(tmp_path / "kd")])
    card = json.loads((tmp_path / "kd" / "training.json").read_text())
    assert calls == [0] and card["objective"] == "drafting" and card["data"]["targets"] == "target"
    assert sum(seen) == 2  # both training steps
    tiny.main(["mdlm_drafter", "--steps", "2", "--targets", "data", "--out", str(tmp_path / "data")])
    card = json.loads((tmp_path / "data" / "training.json").read_text())
    assert calls == [0] and card["objective"] == "nelbo" and card["data"]["targets"] == "data"
    assert sum(seen) == 2  # no training step of the control drew a tail


def test_ar_drafter_learns_the_target_corpus_and_the_control_the_worlds_text(monkeypatch, tmp_path):
    import json

    from dlmkit.train.recipes import causal_lm

    calls = []
    monkeypatch.setattr(distill, "drafter_corpus", fake_corpus(calls))
    monkeypatch.setattr(causal_lm, "greedy_task_accuracy", lambda *a, **k: {})  # the gate's slow half
    tiny.main(["drafter", "--steps", "2", "--gate-probes", "2", "--out", str(tmp_path / "kd")])
    card = json.loads((tmp_path / "kd" / "training.json").read_text())
    assert calls == [0] and card["corpus"]["targets"] == "target" and card["corpus"]["corpus"] == "fake"
    tiny.main(["drafter", "--steps", "2", "--gate-probes", "2", "--targets", "data", "--out", str(tmp_path / "data")])
    card = json.loads((tmp_path / "data" / "training.json").read_text())
    assert calls == [0] and "targets" not in card["corpus"] and card["corpus"]["towns"] > 0
