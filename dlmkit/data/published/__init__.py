"""The inverse-speculation paper's published data, shipped with the package (MIT; copied
unchanged, see README.md here): anchor patterns of 180 Dream-v0-Instruct-7B answers and the
paper's A100 timings."""

from __future__ import annotations

import json
from pathlib import Path

PUBLISHED_DIR = Path(__file__).resolve().parent
ANCHORS_FILE = PUBLISHED_DIR / "published_anchors.json"
TIMING_FILE = PUBLISHED_DIR / "published_timing.json"


def load_anchors(path: Path = ANCHORS_FILE) -> list[dict]:
    """The published records (one per prompt), as in the file."""
    return json.loads(Path(path).read_text())


__all__ = ["ANCHORS_FILE", "PUBLISHED_DIR", "TIMING_FILE", "load_anchors"]
