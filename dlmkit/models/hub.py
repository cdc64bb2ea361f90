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


def safetensors_problem(path: Path) -> str | None:
    """Why a *.safetensors file cannot be loaded (truncated, not safetensors), read from its header and size
    alone (no tensor is read), or None when it is whole."""
    import json
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than a safetensors header"
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                return f"header of {length} bytes in a {size}-byte file (truncated)"
            header = json.loads(f.read(length))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"unreadable header ({first_line(exc, 60)})"
    if not isinstance(header, dict):
        return "not a safetensors header"
    end = max((entry.get("data_offsets", [0, 0])[1] for key, entry in header.items()
               if key != "__metadata__" and isinstance(entry, dict)), default=0)
    if 8 + length + end > size:
        return f"{size} bytes where its header needs {8 + length + end} (truncated)"
    return None


def check_weights(source, role: str) -> None:
    """A one-line UserError, before anything runs, when a local checkpoint's weights are truncated or corrupt."""
    directory = Path(source).expanduser()
    if not directory.is_dir():
        return  # a hub id: the download checks it
    for path in sorted(directory.rglob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            raise UserError(f"{role} weights {path} cannot be loaded: {problem}; copy or download the checkpoint "
                            f"again, or pass --model-{role.replace('_', '-')} DIR with a whole one")
