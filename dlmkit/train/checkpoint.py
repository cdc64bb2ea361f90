"""Training checkpoints: weights as safetensors, optimizer and counters via weights-only torch.save.

A checkpoint is a directory written under a temporary name and renamed into place, so a
crash mid-save leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only the parameters that train (frozen backbones are not copied into checkpoints)."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(directory: Path, model, optimizer, scheduler, step: int, extra: dict | None = None) -> None:
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "step": step,
                "rng": torch.get_rng_state(), "extra": extra or {}}, tmp / "trainer_state.pt")
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        os.replace(directory, old)
    os.replace(tmp, directory)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(directory: Path, model, optimizer, scheduler) -> tuple[int, dict]:
    """Restore into model/optimizer/scheduler; returns (step, extra)."""
    directory = Path(directory)
    missing, unexpected = model.load_state_dict(load_file(str(directory / "trainable.safetensors")), strict=False)
    if unexpected:
        raise RuntimeError(f"checkpoint {directory} has parameters the model lacks: {unexpected[:3]}")
    state = torch.load(directory / "trainer_state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    return int(state["step"]), state["extra"]
