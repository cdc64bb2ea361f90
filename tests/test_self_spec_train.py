"""100 steps of self-spec training end to end through the shared loop, on data whose tokens
depend on each other (every sequence repeats one token), so the causal target has something
to learn that the factorized draft cannot know."""

import json
import math

import pytest
import torch

from dlmkit.models.mdlm import MDLM, MDLMConfig
from dlmkit.models.self_spec import SelfSpecConfig, SelfSpecMDLM, load_self_spec, save_self_spec, self_spec_loss
from dlmkit.train.loop import TrainConfig, train
from dlmkit.train.schedules import warmup_cosine

VOCAB, LENGTH, BATCH = 17, 16, 16
STEPS, WARMUP, LR = 100, 10, 3e-3


def make_mdlm():
    torch.manual_seed(0)
    mdlm = MDLM(MDLMConfig(vocab_size=VOCAB, model_length=LENGTH, hidden_dim=32, cond_dim=8, n_blocks=1, n_heads=2,
                           dropout=0.1))
    with torch.no_grad():
        mdlm.backbone.output_layer.linear.weight.normal_(0, 0.5)
    return mdlm


def make_batch(step):
    gen = torch.Generator().manual_seed(step)
    return torch.randint(0, VOCAB - 1, (BATCH, 1), generator=gen).expand(-1, LENGTH).contiguous(), step


def loss_fn(model, batch):
    x0, step = batch
    out = self_spec_loss(model, x0, generator=torch.Generator().manual_seed(10_000 + step))
    return out.loss, {"target_loss": out.target_loss, "draft_loss": out.draft_loss}


def validation(model):
    x0, _ = make_batch(999_999)
    out = self_spec_loss(model, x0, generator=torch.Generator().manual_seed(5))
    return {"target_loss": out.target_loss, "draft_loss": out.draft_loss}


def run(out_dir, steps=STEPS, checkpoint_every=0, batches=make_batch):
    mdlm = make_mdlm()
    model = SelfSpecMDLM(mdlm, SelfSpecConfig.for_backbone(mdlm, dropout=0.1))
    cfg = TrainConfig(steps=steps, lr=LR, warmup_steps=WARMUP, min_lr_ratio=0.0, log_every=1, eval_every=50,
                      checkpoint_every=checkpoint_every, seed=0)
    return model, train(model, loss_fn, batches, cfg, out_dir, eval_fn=validation, device="cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    frozen = {k: v.clone() for k, v in make_mdlm().state_dict().items()}
    model, history = run(out)
    return out, model, history, frozen


def test_losses_are_finite_fall_and_the_target_beats_the_draft(trained):
    _, _, history, _ = trained
    losses = [r["loss"] for r in history]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10
    assert abs(history[0]["target_loss"] - history[0]["draft_loss"]) < 0.05  # starts as the draft
    final = history[-1]
    assert final["val_target_loss"] < final["val_draft_loss"] - 0.5, final


def test_the_frozen_mdlm_is_unchanged(trained):
    _, model, _, frozen = trained
    state = model.backbone.state_dict()
    assert set(state) == set(frozen) and all(torch.equal(state[k], frozen[k]) for k in frozen)
    assert float(model.target_head.linear_weight_delta.detach().abs().sum()) > 0  # the head trained too


def test_lr_schedule_warms_up_then_cosines_to_zero(trained):
    _, _, history, _ = trained
    lrs = [r["lr"] for r in history]  # the rate for the next step, logged after each step
    assert lrs[:WARMUP - 1] == pytest.approx([LR * (s + 2) / WARMUP for s in range(WARMUP - 1)])
    assert max(lrs) == pytest.approx(LR) and lrs[-1] == pytest.approx(0.0, abs=1e-12)
    tail = lrs[WARMUP:]
    assert all(b <= a for a, b in zip(tail, tail[1:]))
    assert lrs[STEPS // 2] == pytest.approx(LR * warmup_cosine(STEPS // 2 + 1, warmup_steps=WARMUP,
                                                                total_steps=STEPS))


def test_trained_parts_round_trip_and_the_loop_checkpoints(trained, tmp_path):
    out, model, history, _ = trained
    parts = save_self_spec(model, tmp_path / "final")
    loaded = load_self_spec(parts, make_mdlm())
    x0, _ = make_batch(123)
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    assert float(self_spec_loss(loaded, x0, generator=gen()).target_loss) == \
        float(self_spec_loss(model.eval(), x0, generator=gen()).target_loss)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, STEPS + 1))
    assert (out / "checkpoint" / "trainable.safetensors").exists()


def test_resume_after_a_crash_is_bit_identical(tmp_path):
    straight, _ = run(tmp_path / "straight", steps=40)

    class Crash(Exception):
        pass

    def crashing(step):
        if step == 30:
            raise Crash
        return make_batch(step)

    with pytest.raises(Crash):
        run(tmp_path / "resumed", steps=40, checkpoint_every=20, batches=crashing)
    resumed, history = run(tmp_path / "resumed", steps=40, checkpoint_every=20)  # from step 20
    assert [r["step"] for r in history] == list(range(1, 41))
    for key, value in straight.trainable_state().items():
        assert torch.equal(value, resumed.trainable_state()[key]), key
