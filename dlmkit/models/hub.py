"""Local directory or hub id: the one rule every model loader follows, with the one allow-list of
what may be fetched (configs, tokenizer files, safetensors weights: never pickled weights, never
remote code).

A source that is an existing directory is used as is. A name shaped like a hub id (owner/name,
not a path) is fetched with huggingface_hub.snapshot_download, only the allowed files. Anything
else is a mistyped path: a one-line UserError that says so.
"""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import snapshot_download

from dlmkit.errors import UserError, first_line

ALLOW_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.jinja")


def looks_like_hub_id(source) -> bool:
    """owner/name or a bare name (gpt2-xl), and not a path (./x, /x, ~/x, a/b/c)."""
    text = str(source)
    parts = text.split("/")
    return len(parts) <= 2 and all(parts) and not text.startswith((".", "~")) and not os.path.isabs(text)


def is_local(source) -> bool:
    """True when `source` names a place on disk (existing, or path-shaped), not a hub id."""
    return Path(source).expanduser().exists() or not looks_like_hub_id(source)


def checkpoint_dir(source, what: str = "checkpoint", fix: str = "pass a local directory or check the id and network"
                   ) -> Path:
    """The directory holding `source`: itself, or the hub snapshot of its allowed files."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UserError(f"{path} is a file, not a directory; pass the {what} directory (config.json + *.safetensors)")
    if not looks_like_hub_id(source):
        raise UserError(f"{what} directory {source} does not exist; check the path or pass a hub id")
    try:
        return Path(snapshot_download(str(source), allow_patterns=list(ALLOW_PATTERNS)))
    except Exception as exc:  # offline, unknown repo, gated repo ...
        raise UserError(f"{what} {source!r} cannot be fetched from the hub ({first_line(exc)}); {fix}") from None
