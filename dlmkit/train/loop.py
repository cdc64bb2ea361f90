"""One small training loop shared by every trained model in the suite.

AdamW, linear warmup + cosine decay, gradient clipping, periodic validation, checkpoints
with resume, a tqdm bar and a JSONL log. Batches come from `make_batch(step)`, a pure
function of the step, so a resumed run sees exactly the batches it would have seen.
Runs through `accelerate`, so the same code trains on one CPU or on several GPUs
(`accelerate launch script.py ...`): each process takes its share of the step's batch
(`shard_batch`), so the batch size is global. Noise a loss draws from a generator keyed on
the step alone (masking times, orders) repeats across processes, one pattern per shard: a
valid but more correlated estimate than one process drawing noise for the whole batch.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from dlmkit.train.checkpoint import load_checkpoint, save_checkpoint
from dlmkit.train.schedules import warmup_cosine


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0
    eval_every: int = 0  # 0: only at the end
    checkpoint_every: int = 0  # 0: only at the end
    log_every: int = 10
    seed: int = 0


def _no_decay(name: str, param: torch.Tensor) -> bool:
    return param.ndim < 2 or name.endswith(".bias") or "norm" in name.lower()


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no weight decay on biases, norms and other vectors."""
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if _no_decay(name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def shard_batch(batch, index: int, count: int):
    """This process's rows of a batch (a tensor, or a tuple / list / dict of tensors with a
    shared first dimension); the first dimension must divide evenly."""
    if count == 1:
        return batch
    if torch.is_tensor(batch):
        if batch.shape[0] % count:
            raise ValueError(f"a batch of {batch.shape[0]} rows does not split over {count} processes; "
                             "pick a batch size divisible by the number of processes")
        rows = batch.shape[0] // count
        return batch[index * rows:(index + 1) * rows]
    if isinstance(batch, dict):
        return {k: shard_batch(v, index, count) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(shard_batch(v, index, count) for v in batch)
    return batch


def train(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, object], tuple[torch.Tensor, dict]],
    make_batch: Callable[[int], object],
    cfg: TrainConfig,
    out_dir: Path,
    *,
    eval_fn: Callable[[torch.nn.Module], dict] | None = None,
    resume: bool = True,
    device: str | None = None,
    desc: str = "train",
) -> list[dict]:
    """Train `model` in place for cfg.steps; returns the log records (also in out_dir/train_log.jsonl)."""
    from accelerate import Accelerator

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(cpu=(device == "cpu"))
    torch.manual_seed(cfg.seed)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(
        s, warmup_steps=cfg.warmup_steps, total_steps=cfg.steps, min_ratio=cfg.min_lr_ratio))
    model, optimizer = accelerator.prepare(model, optimizer)
    ckpt_dir, log_path = out_dir / "checkpoint", out_dir / "train_log.jsonl"

    start = 0
    if resume and (ckpt_dir / "trainer_state.pt").exists():
        start, _ = load_checkpoint(ckpt_dir, accelerator.unwrap_model(model), optimizer, scheduler)
        history = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()] \
            if log_path.exists() else []
        history = [r for r in history if r["step"] <= start]
    else:
        history = []
    if accelerator.is_main_process:
        _write_log(log_path, history)
        (out_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))

    model.train()
    bar = tqdm(range(start, cfg.steps), desc=desc, initial=start, total=cfg.steps,
               disable=not accelerator.is_main_process)
    t0, running = time.time(), []
    for step in bar:
        batch = make_batch(step)
        if accelerator.num_processes > 1:
            from accelerate.utils import send_to_device

            batch = send_to_device(shard_batch(batch, accelerator.process_index, accelerator.num_processes),
                                   accelerator.device)
        loss, metrics = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad],
                                                cfg.grad_clip) if cfg.grad_clip else None
        optimizer.step()
        scheduler.step()
        running.append(float(loss.detach()))
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            record = {"step": done, "loss": sum(running) / len(running), "lr": scheduler.get_last_lr()[0],
                      "grad_norm": float(grad_norm) if grad_norm is not None else None,
                      "elapsed_s": round(time.time() - t0, 2),
                      **{k: float(v.detach() if torch.is_tensor(v) else v) for k, v in metrics.items()}}
            running = []
            if eval_fn is not None and (done == cfg.steps or (cfg.eval_every and done % cfg.eval_every == 0)):
                model.eval()
                with torch.no_grad():
                    record.update({f"val_{k}": float(v) for k, v in eval_fn(accelerator.unwrap_model(model)).items()})
                model.train()
            history.append(record)
            if accelerator.is_main_process:
                _append_log(log_path, record)
            bar.set_postfix(loss=f"{record['loss']:.4f}")
        if done == cfg.steps or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0):
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_checkpoint(ckpt_dir, accelerator.unwrap_model(model), optimizer, scheduler, done)
    model.eval()
    return history


def _append_log(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def _write_log(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
