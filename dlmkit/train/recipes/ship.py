"""The end every tiny recipe shares: a shipped checkpoint directory is self-describing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dlmkit.presets import TINY_TOKENIZER

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


def work_dir(out: Path) -> Path:
    """Where training keeps its checkpoints and log beside the shipped directory (git-ignored)."""
    return Path(out).with_name(Path(out).name + ".train")


def ship(out: Path, card: dict) -> dict:
    """Next to the saved weights: the tokenizer (so AutoTokenizer loads the directory as it
    loads a hub id), the training card and log; then drop the work directory."""
    out, work = Path(out), work_dir(out)
    for name in TOKENIZER_FILES:
        shutil.copy(TINY_TOKENIZER / name, out / name)
    (out / "training.json").write_text(json.dumps(card, indent=2) + "\n")
    (out / "train_log.jsonl").write_text((work / "train_log.jsonl").read_text())
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(card, indent=2))
    return card
