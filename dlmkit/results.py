"""Run directories: atomic JSON, per-item JSONL with resume, summary.json with provenance.

Layout of one run (default `runs/<script>/<preset>[-subsetN]/`, which git ignores; the
committed runs in `results/` were written with an explicit `--out results/...`):

    summary.json        {"provenance": {...}, "config": {...}, "tables": {name: [row, ...]},
                         "timings": {name: [row, ...]}, "notes": [...]}
    <phase>.jsonl       one JSON object per finished item, appended and fsynced as it is done
    *.png               plots

`tables` depend only on the inputs and the seed (same --seed, same tables); tables of measured
times (repeated, with their spread) live under `timings`; wall times, dates and the git sha
under `provenance`.

Provenance is what a stranger needs to rerun a committed result (`rerun_argv`):

    script, argv        the script relative to the repository and every argument as typed
                        (argv[0] is the script); cwd, relative to the repository when inside
    out                 the run directory (relative to the repository when inside)
    git_sha, git_dirty  the commit, and whether `git status --porcelain` (untracked files
                        included) showed anything outside the run's own directory;
                        git_changes lists up to 20 such paths
    models              role -> local path relative to the repository (else absolute) or hub id;
                        model_revisions: role -> hub commit, where a cached snapshot tells it;
                        weights_sha256: role -> {file: sha256} of its *.safetensors
    versions            python, dlmkit (package metadata, else pyproject.toml), libraries
    config              (beside provenance) the full settings the script passed
    resumes             one entry per --resume call (argv, started_utc, wall_time_s, git_sha,
                        git_dirty); the first call's provenance is kept as it was
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

    def _rewrite(self, records: list[dict]) -> None:
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))

    def repair(self) -> None:
        """Rewrite the file without torn lines, so appends start on a clean line."""
        if self.path.exists():
            self._rewrite(self.records())

    def drop(self, stale) -> int:
        """Rewrite the file without the records for which `stale(record)` is true; how many went."""
        records = self.records()
        kept = [r for r in records if not stale(r)]
        if len(kept) < len(records):
            self._rewrite(kept)
        return len(records) - len(kept)

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


def _relative(path, base: Path = REPO) -> str:
    """`path` relative to `base` when inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(base.resolve())) or "."
    except ValueError:
        return str(path)


def git_state(repo: Path | None = None, exclude: Path | None = None) -> dict:
    """The commit and whether the work tree is clean (`git status --porcelain`, untracked files
    included), not counting `exclude` (a run's own directory) when it lies inside the repository."""
    repo = repo or REPO
    pathspec = []
    if exclude is not None:
        rel = _relative(exclude, repo)
        if not Path(rel).is_absolute() and rel != ".":
            pathspec = ["--", ".", f":(exclude){rel}"]
    try:
        sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10).stdout.strip() or None
        status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=all", *pathspec],
                                capture_output=True, text=True, timeout=10)
        changes = [line[3:] for line in status.stdout.splitlines()] if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        sha, changes = None, None
    return {"git_sha": sha, "git_dirty": None if changes is None else bool(changes),
            "git_changes": None if changes is None else changes[:20]}


def dlmkit_version() -> str | None:
    """The installed package's version, else the one in this checkout's pyproject.toml."""
    from importlib import metadata

    try:
        return metadata.version("dlmkit")
    except metadata.PackageNotFoundError:
        pass
    pyproject = REPO / "pyproject.toml"
    if pyproject.exists():
        import tomllib

        return tomllib.loads(pyproject.read_text()).get("project", {}).get("version")
    return None


def package_versions() -> dict:
    from importlib import metadata

    versions = {"python": platform.python_version(), "dlmkit": dlmkit_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


_SHA256: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> hex digest


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process for a given (path, size, mtime)."""
    import hashlib

    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                digest.update(block)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def _cached_snapshot(source: str) -> Path | None:
    """The local snapshot of a hub id in the Hugging Face cache (never the network), or None."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source, local_files_only=True))
    except Exception:  # not a hub id, not cached, no huggingface_hub: the revision is unknown
        return None


def model_provenance(source: str) -> dict:
    """{"source": repo-relative path or hub id, "revision": hub commit or None, "sha256": {file: digest}}."""
    source = str(source)
    local = Path(source)
    revision = None
    if not local.is_dir():
        snapshot = _cached_snapshot(source)
        if snapshot is not None:
            local, revision = snapshot, snapshot.name  # the cache names snapshots by commit
    weights = {}
    if local.is_dir():
        weights = {str(f.relative_to(local)): file_sha256(f) for f in sorted(local.rglob("*.safetensors"))}
    return {"source": portable_source(source), "revision": revision, "sha256": weights}


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


def run_identity(seed: int, models: dict, settings: dict | None) -> dict:
    """What a resumed run must share with the run it continues (per-item records carry none of it):
    the seed, each role's weights (sha256 of its *.safetensors, else its source) and the settings
    that change results. `models`: role -> model_provenance(...)."""
    return {"seed": seed, "models": {role: {"source": d["source"], "sha256": d["sha256"]} for role, d in models.items()},
            "settings": dict(settings or {})}


def _stored_identity(previous: dict) -> dict | None:
    """The identity a run directory recorded; for runs written before it was recorded, what their
    provenance says (seed, models, weights)."""
    identity = previous.get("config", {}).get("identity")
    provenance = previous.get("provenance") or {}
    if identity and "settings" in identity:
        return identity
    if not identity and not provenance:
        return None
    identity = dict(identity or {})
    seed = identity.pop("seed", provenance.get("seed"))
    sources = identity.pop("models", None) or provenance.get("models", {})
    weights = provenance.get("weights_sha256", {})
    models = {role: {"source": source, "sha256": weights.get(role) or {}} for role, source in sources.items()
              if isinstance(source, str)}
    return {"seed": seed, "models": models, "settings": identity, "recorded_before_identity": True}


def _same_model(a: dict, b: dict) -> bool:
    if a.get("sha256") and b.get("sha256"):
        return a["sha256"] == b["sha256"]  # the same weights, wherever they lie
    return a.get("source") == b.get("source")


def _check_identity(out: Path, before: dict | None, now: dict) -> None:
    """Refuse to resume a run with another seed, other weights for a role both calls load, or other
    settings that change results (a resume may add phases, and so roles, and change output-only flags)."""
    if not before:
        return
    differ = []
    if before.get("seed") is not None and before["seed"] != now["seed"]:
        differ.append(f"--seed {before['seed']} -> {now['seed']}")
    old, new = before.get("models", {}), now["models"]
    for role in sorted(old.keys() & new.keys()):
        if not _same_model(old[role], new[role]):
            what = "weights" if old[role].get("source") == new[role].get("source") else \
                f"{old[role].get('source')!r} -> {new[role].get('source')!r}"
            differ.append(f"--model-{role.replace('_', '-')} {what}")
    settings_before, settings_now = before.get("settings", {}), now["settings"]
    # an older run recorded some settings only: those are compared
    keys = settings_before.keys() & settings_now.keys() if before.get("recorded_before_identity") else \
        settings_before.keys() | settings_now.keys()
    for key in sorted(keys):
        if settings_before.get(key) != settings_now.get(key):
            differ.append(f"{key} {settings_before.get(key)!r} -> {settings_now.get(key)!r}")
    if differ:
        raise UserError(f"{out} holds a run made with other inputs ({'; '.join(differ)}); resume with the same "
                        "seed, models and settings, or pass --out NEW_DIR (or --overwrite)")


def _holds_results(directory: Path) -> bool:
    """True when `directory` holds anything a run computed. A summary.json with no phase done, no
    table and no note (a call that stopped before its first result) holds nothing to lose."""
    if not directory.is_dir():
        return False
    for entry in directory.iterdir():
        if entry.name != "summary.json":
            return True
        try:
            summary = json.loads(entry.read_text())
        except (OSError, ValueError):
            return True
        if not isinstance(summary, dict) or any(summary.get(k) for k in ("phases_done", "tables", "notes")):
            return True
    return False


def _argv_as_typed(script: str, argv) -> list[str]:
    """[script relative to the repository, *arguments]. Scripts pass sys.argv (program first) or
    the arguments alone; a first element naming the script (or any .py file) is the program."""
    argv = [str(a) for a in argv]
    if argv and (Path(argv[0]).name == Path(script).name or argv[0].endswith(".py")):
        program, args = argv[0], argv[1:]
    else:
        program, args = script, argv
    for candidate in (Path(program), REPO / program, REPO / Path(program).name):
        if candidate.is_file():
            return [_relative(candidate), *args]
    return [program, *args]


class Run:
    """One invocation of a script: its directory, its summary and its per-item logs.

    argv: what the caller typed, with or without the program first (see `_argv_as_typed`).
    A resumed run keeps the first call's provenance and appends this call to `resumes`."""

    def __init__(self, out: Path, *, script: str, argv: list[str], preset: str, models: dict,
                 device: str, dtype: str, seed: int, config: dict | None = None,
                 identity: dict | None = None, resume: bool = False, overwrite: bool = False):
        self.dir = Path(out)
        if self.dir.exists() and not self.dir.is_dir():
            raise UserError(f"--out {self.dir} is a file, not a directory; pass --out NEW_DIR")
        if _holds_results(self.dir) and not (resume or overwrite):
            raise UserError(f"{self.dir} already holds a run; pass --resume to continue it, "
                            f"--overwrite to replace it, or --out NEW_DIR")
        sources = {role: str(getattr(s, "source", s)) for role, s in models.items()}
        described = {role: model_provenance(src) for role, src in sources.items()}  # each file hashed once
        previous = self._load_previous() if resume else {}
        now = run_identity(seed, described, identity)
        before = _stored_identity(previous)
        _check_identity(self.dir, before, now)
        # a resume may load roles the earlier calls did not: the run's identity is the union
        now["models"] = {**(before or {}).get("models", {}), **now["models"]}  # (an older run's: recorded anew)
        config = {**(config or {}), "identity": now}
        if overwrite and self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.started = time.time()
        started_utc = datetime.now(timezone.utc).isoformat(timespec="seconds")
        git = git_state(exclude=self.dir)
        argv = _argv_as_typed(script, argv)
        if previous.get("provenance"):
            provenance = previous["provenance"]
            self._clock = {"argv": argv, "started_utc": started_utc, "wall_time_s": None,
                           "git_sha": git["git_sha"], "git_dirty": git["git_dirty"],
                           "device_name": device_description(device)}
            provenance["resumes"] = [*provenance.get("resumes", []), self._clock]
            provenance["resumed"] = True
        else:
            provenance = self._clock = {
                "script": argv[0], "argv": argv, "cwd": _relative(Path.cwd()), "out": _relative(self.dir),
                "preset": preset,
                "models": {role: d["source"] for role, d in described.items()},
                "model_revisions": {role: d["revision"] for role, d in described.items() if d["revision"]},
                "weights_sha256": {role: d["sha256"] for role, d in described.items()},
                "device": device, "device_name": device_description(device), "dtype": dtype, "seed": seed,
                **git, "versions": package_versions(),
                "started_utc": started_utc, "wall_time_s": None, "resumed": False, "resumes": [],
            }
        self.summary = {
            "provenance": provenance,
            "config": {**previous.get("config", {}), **(config or {})},  # a resumed run keeps earlier phases' settings
            "tables": previous.get("tables", {}),
            "timings": previous.get("timings", {}),
            "notes": previous.get("notes", []),
            "note_phases": previous.get("note_phases", {}),  # phase -> the notes it wrote (a rerun replaces them)
            "phases_done": previous.get("phases_done", []),
        }
        self._phase = None
        for log in self.dir.glob("*.jsonl"):
            JsonlLog(log).repair()
        self.save()

    def _load_previous(self) -> dict:
        if not self.dir.is_dir():
            return {}
        path = self.dir / "summary.json"
        if not path.exists():
            return {}
        return json.loads(path.read_text())

    def log(self, name: str, key: str = "id") -> JsonlLog:
        return JsonlLog(self.dir / f"{name}.jsonl", key=key)

    def add_table(self, name: str, rows: list[dict], echo: bool = True, section: str = "tables") -> None:
        """A table under summary[section]: "tables" for what the seed determines (the same on any run
        with the same --seed), "timings" for what was measured on this machine in this run."""
        self.summary[section][name] = _jsonable(rows)
        self.save()
        if echo:
            print(f"\n### {name}\n\n{markdown_table(rows)}\n", flush=True)

    def note(self, text: str) -> None:
        """A sentence a reader must see: e.g. where a published number was not reproduced. A note
        written inside a phase (begin_phase) belongs to it: rerunning the phase replaces its notes."""
        if text not in self.summary["notes"]:
            self.summary["notes"].append(text)
        if self._phase is not None:
            mine = self.summary["note_phases"].setdefault(self._phase, [])
            if text not in mine:
                mine.append(text)
        self.save()

    def begin_phase(self, phase: str) -> None:
        """A phase (re)starts: the notes it wrote in an earlier call go (unless another phase wrote them
        too), so a resumed run never keeps a finding its tables no longer show."""
        stale = self.summary["note_phases"].pop(phase, [])
        others = {t for notes in self.summary["note_phases"].values() for t in notes}
        self.summary["notes"] = [t for t in self.summary["notes"] if t not in stale or t in others]
        self._phase = phase

    def phase_done(self, phase: str, wall_s: float | None = None, cpu_s: float | None = None) -> None:
        """Record a phase as done; its wall and CPU (process) time go to this call's provenance and stderr."""
        self._phase = None
        if phase not in self.summary["phases_done"]:
            self.summary["phases_done"].append(phase)
        if wall_s is not None:
            self._clock.setdefault("phase_seconds", {})[phase] = {"wall": round(wall_s, 2), "cpu": round(cpu_s, 2)}
            echo(f"phase {phase} done: {wall_s:.1f} s wall, {cpu_s:.1f} s CPU")
        self.save()

    def closing_summary(self, phases) -> str:
        """What a reader wants at the end of a run: the findings (notes), the tables and where every file is."""
        lines = [f"\n## {Path(self.summary['provenance']['script']).name}: done ({', '.join(phases)})", ""]
        if self.summary["notes"]:
            lines += ["Findings:"] + [f"  - {note}" for note in self.summary["notes"]] + [""]
        lines.append(f"Tables ({len(self.summary['tables'])}, full rows in summary.json): "
                     + ", ".join(self.summary["tables"]))
        if self.summary["timings"]:
            lines.append("Timings (measured here, beside the tables): " + ", ".join(self.summary["timings"]))
        files = sorted(p.name for p in self.dir.iterdir() if p.is_file() and not p.name.startswith("."))
        lines.append(f"Files in {self.dir}/: " + ", ".join(files))
        return "\n".join(lines)

    def save(self) -> None:
        self._clock["wall_time_s"] = round(time.time() - self.started, 2)  # this call's: first or resuming
        atomic_write_json(self.dir / "summary.json", self.summary)


def rerun_argv(summary: dict, out: Path | str | None = None, python: str | None = None) -> list[str]:
    """The command line that reran a recorded run, from its provenance alone: this Python, the
    script in this checkout, the recorded arguments, with --out replaced by `out` (or set to the
    recorded run directory). Run it from `rerun_cwd(summary)`; relative paths in the arguments
    (models, --out) are relative to that directory."""
    provenance = summary["provenance"]
    script, *args = provenance["argv"]
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not (arg.startswith("--out=") or arg in ("--resume", "--overwrite")):
            kept.append(arg)
    target = out if out is not None else _recorded_out(provenance, args)
    script_path = Path(script) if Path(script).is_absolute() else REPO / script
    return [python or sys.executable, str(script_path), *kept, "--out", str(target)]


def _recorded_out(provenance: dict, args: list[str]) -> str:
    for i, arg in enumerate(args):
        if arg == "--out" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--out="):
            return arg.split("=", 1)[1]
    out = provenance.get("out")
    return str(REPO / out) if out and not Path(out).is_absolute() else str(out)


def rerun_cwd(summary: dict) -> Path:
    """The directory a recorded run was started from (inside this checkout when it was inside its own)."""
    cwd = summary["provenance"].get("cwd") or "."
    return Path(cwd) if Path(cwd).is_absolute() else REPO / cwd


def default_out(script: str, preset: str, subset: int | None = None) -> Path:
    """runs/<script stem>/<preset>[-subsetN], relative to the current directory. Not results/:
    a fresh checkout's smoke test must neither collide with nor replace the committed runs."""
    return Path("runs") / Path(script).stem / (f"{preset}-subset{subset}" if subset else preset)


def echo(*args) -> None:
    print(*args, file=sys.stderr, flush=True)
