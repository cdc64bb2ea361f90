import json

import pytest
import torch

from dlmkit.train.loop import TrainConfig, train
from dlmkit.train.schedules import warmup_cosine


def test_warmup_then_cosine_to_the_floor():
    lr = [warmup_cosine(s, warmup_steps=10, total_steps=110, min_ratio=0.1) for s in range(110)]
    assert lr[0] == pytest.approx(0.1) and lr[9] == pytest.approx(1.0)
    assert all(b > a for a, b in zip(lr[:9], lr[1:10]))  # linear warmup
    assert all(b <= a for a, b in zip(lr[10:], lr[11:]))  # monotone decay
    assert lr[60] == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-9)  # halfway down the cosine
    assert warmup_cosine(110, warmup_steps=10, total_steps=110, min_ratio=0.1) == pytest.approx(0.1)


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.frozen = torch.nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.head = torch.nn.Linear(4, 1)


def _loss(model, batch):
    x, y = batch
    pred = model.head(model.frozen(x)).squeeze(-1)
    return torch.nn.functional.mse_loss(pred, y), {"mean_pred": pred.mean()}


def _batch(step):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(16, 4, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5, 3.0])


CFG = dict(steps=40, lr=0.3, warmup_steps=5, log_every=5, seed=0)


def test_loss_falls_frozen_weights_stay_and_log_is_written(tmp_path):
    model = Tiny()
    frozen_before = model.frozen.weight.clone()
    history = train(model, _loss, _batch, TrainConfig(**CFG), tmp_path, device="cpu")
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert torch.equal(model.frozen.weight, frozen_before)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in history)
    lines = (tmp_path / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(5, 41, 5))


def test_resume_after_a_crash_reproduces_an_uninterrupted_run(tmp_path):
    cfg = TrainConfig(**{**CFG, "checkpoint_every": 10})
    straight = Tiny()
    train(straight, _loss, _batch, cfg, tmp_path / "a", device="cpu")

    def dies_at_step_25(step):
        if step == 25:
            raise KeyboardInterrupt  # the process is killed mid-run
        return _batch(step)

    with pytest.raises(KeyboardInterrupt):
        train(Tiny(), _loss, dies_at_step_25, cfg, tmp_path / "b", device="cpu")
    resumed = Tiny()
    history = train(resumed, _loss, _batch, cfg, tmp_path / "b", device="cpu")  # picks up at step 20
    assert [r["step"] for r in history] == list(range(5, 41, 5))
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_checkpoint_holds_only_trainable_parameters(tmp_path):
    from safetensors.torch import load_file

    train(Tiny(), _loss, _batch, TrainConfig(**{**CFG, "steps": 5}), tmp_path, device="cpu")
    assert set(load_file(str(tmp_path / "checkpoint" / "trainable.safetensors"))) == {"head.weight", "head.bias"}


def test_shard_batch_splits_rows_evenly_across_processes():
    from dlmkit.train.loop import shard_batch

    batch = {"x": torch.arange(12).reshape(6, 2), "pair": (torch.arange(6), torch.arange(6) * 10)}
    parts = [shard_batch(batch, i, 3) for i in range(3)]
    assert torch.equal(torch.cat([p["x"] for p in parts]), batch["x"])
    assert parts[1]["pair"][1].tolist() == [20, 30]
    assert shard_batch(batch, 0, 1) is batch
    with pytest.raises(ValueError, match="divisible by the number of processes"):
        shard_batch(torch.zeros(5, 2), 0, 2)
