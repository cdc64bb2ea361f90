"""Run directories: atomic JSON, per-item JSONL with resume, summary.json with provenance.

Layout of one run (default `runs/<script>/<preset>[-subsetN]/`, which git ignores; the
committed runs in `results/` were written with an explicit `--out results/...`):

    summary.json        {"provenance": {...}, "config": {...}, "tables": {name: [row, ...]}, "notes": [...]}
    <phase>.jsonl       one JSON object per finished item, appended and fsynced as it is done
    *.png               plots

`tables` depend only on the inputs and the seed (same --seed, same tables); wall times,
dates and the git sha live under `provenance`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from dlmkit.errors import UserError

PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "accelerate", "numpy", "scipy", "datasets")


# --------------------------------------------------------------------------- atomic files


_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


def atomic_write_text(path: Path, text: str) -> None:
    """Write a file so that readers see the old content or the new, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)  # mkstemp makes 0600; results are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; null says "not defined"
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalars
        return _jsonable(value.item())
    return value


def to_json(obj) -> str:
    return json.dumps(_jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, to_json(obj))


# --------------------------------------------------------------------------- JSONL


class JsonlLog:
    """Append-only per-item records; a line torn by a crash is ignored (and dropped on resume)."""

    def __init__(self, path: Path, key: str = "id"):
        self.path = Path(path)
        self.key = key

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the tail of an interrupted write
        return out

    def done_ids(self) -> set:
        return {r[self.key] for r in self.records() if self.key in r}

    def repair(self) -> None:
        """Rewrite the file without torn lines, so appends start on a clean line."""
        if self.path.exists():
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records()))

    def append(self, record: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(_jsonable(record), allow_nan=False) + "\n"
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


# --------------------------------------------------------------------------- provenance


REPO = Path(__file__).resolve().parents[1]


def portable_source(source: str) -> str:
    """A model source as a resumed run compares it: relative to the repo when inside it, so a
    run made in one clone of the repo resumes in another."""
    try:
        return str(Path(source).resolve().relative_to(REPO))
    except (ValueError, OSError):
        return source


def git_state(repo: Path | None = None) -> dict:
    repo = repo or REPO
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, None
    return {"git_sha": sha, "git_dirty": dirty}


def package_versions() -> dict:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("dlmkit",) + PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: str) -> str:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


# --------------------------------------------------------------------------- tables


def markdown_table(rows: list[dict], floatfmt: str = ".3f") -> str:
    """Rows of dicts as a GitHub Markdown table (columns in first-seen order)."""
    if not rows:
        return "(no rows)"
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]

    def cell(value) -> str:
        if isinstance(value, float):
            return format(value, floatfmt)
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the run


def _check_identity(out: Path, before: dict | None, now: dict) -> None:
    """Per-item records carry no seed, lengths or models, so resuming with other ones would mix two
    runs. `identity` holds those settings; its "models" entry is compared on the roles both runs
    loaded (a resume may run phases that need other roles)."""
    if not before:
        return
    differ = {k for k in before.keys() | now.keys() if k != "models" and before.get(k) != now.get(k)}
    models_before, models_now = before.get("models", {}), now.get("models", {})
    differ |= {f"models.{r}" for r in models_before.keys() & models_now.keys() if models_before[r] != models_now[r]}
    if differ:
        was = ", ".join(f"{k} {_lookup(before, k)!r} -> {_lookup(now, k)!r}" for k in sorted(differ))
        raise UserError(f"{out} holds a run with other settings ({was}); resume with the same flags and models, "
                        "or pass --overwrite")


def _lookup(identity: dict, key: str):
    head, _, role = key.partition(".")
    return identity.get(head, {}).get(role) if role else identity.get(head)


class Run:
    """One invocation of a script: its directory, its summary and its per-item logs."""

    def __init__(self, out: Path, *, script: str, argv: list[str], preset: str, models: dict,
                 device: str, dtype: str, seed: int, config: dict | None = None,
                 identity: dict | None = None, resume: bool = False, overwrite: bool = False):
        self.dir = Path(out)
        if self.dir.exists() and any(self.dir.iterdir()) and not (resume or overwrite):
            raise UserError(f"{self.dir} already holds a run; pass --resume to continue it, "
                            f"--overwrite to replace it, or --out NEW_DIR")
        if overwrite and self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        previous = self._load_previous() if resume else {}
        if identity is not None:
            _check_identity(self.dir, previous.get("config", {}).get("identity"), identity)
            config = {**(config or {}), "identity": identity}
        self.summary = {
            "provenance": {
                "script": script, "argv": list(argv), "preset": preset,
                "models": {role: str(getattr(s, "source", s)) for role, s in models.items()},
                "device": device, "device_name": device_description(device), "dtype": dtype, "seed": seed,
                **git_state(), "versions": package_versions(),
                "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "wall_time_s": None, "resumed": bool(previous),
            },
            "config": {**previous.get("config", {}), **(config or {})},  # a resumed run keeps earlier phases' settings
            "tables": previous.get("tables", {}),
            "notes": previous.get("notes", []),
            "phases_done": previous.get("phases_done", []),
        }
        for log in self.dir.glob("*.jsonl"):
            JsonlLog(log).repair()
        self.save()

    def _load_previous(self) -> dict:
        path = self.dir / "summary.json"
        if not path.exists():
            return {}
        return json.loads(path.read_text())

    def log(self, name: str, key: str = "id") -> JsonlLog:
        return JsonlLog(self.dir / f"{name}.jsonl", key=key)

    def add_table(self, name: str, rows: list[dict], echo: bool = True) -> None:
        self.summary["tables"][name] = _jsonable(rows)
        self.save()
        if echo:
            print(f"\n### {name}\n\n{markdown_table(rows)}\n", flush=True)

    def note(self, text: str) -> None:
        """A sentence a reader must see: e.g. where a published number was not reproduced."""
        if text not in self.summary["notes"]:
            self.summary["notes"].append(text)
        self.save()

    def phase_done(self, phase: str) -> None:
        if phase not in self.summary["phases_done"]:
            self.summary["phases_done"].append(phase)
        self.save()

    def save(self) -> None:
        self.summary["provenance"]["wall_time_s"] = round(time.time() - self.started, 2)
        atomic_write_json(self.dir / "summary.json", self.summary)


def default_out(script: str, preset: str, subset: int | None = None) -> Path:
    """runs/<script stem>/<preset>[-subsetN], relative to the current directory. Not results/:
    a fresh checkout's smoke test must neither collide with nor replace the committed runs."""
    return Path("runs") / Path(script).stem / (f"{preset}-subset{subset}" if subset else preset)


def echo(*args) -> None:
    print(*args, file=sys.stderr, flush=True)
