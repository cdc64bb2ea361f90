"""The flags every script shares, and how they turn into a device, a dtype and seeds.

    --preset tiny|paper   --subset N   --phase NAME (repeatable)   --out DIR
    --device auto|cpu|cuda[:N]   --dtype auto|float32|bfloat16|float16   --seed N
    --resume   --overwrite   --model-ROLE PATH_OR_ID (one per role the script uses)
    --unsafe-exec (score HumanEval code without the bubblewrap sandbox)

Bad input ends the script with one line on stderr that names the fix, and exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import random
import sys
from pathlib import Path
from typing import Callable

from dlmkit.errors import UserError
from dlmkit.presets import PRESETS, ROLES

DTYPES = ("auto", "float32", "bfloat16", "float16")
# OSErrors that are the machine's state, not a bug: one line and exit 2, like bad input.
DISK_ERRORS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
               errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
               errno.EPERM: "permission denied"}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the script's docstring layout; shows a default only where there is one."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            if isinstance(action.default, Path):  # a path of this install, shown as the package's own
                shown = _shown_path(action.default)
                text += f" (default: {shown.replace('%', '%%')})"
            else:
                text += " (default: %(default)s)"
        return text


def _shown_path(path: Path) -> str:
    """A default path relative to the checkout (or site-packages) that holds dlmkit, so --help names
    no machine's directories."""
    root = Path(__file__).resolve().parent.parent
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are a single line (no usage dump) ending in a pointer to --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UnsafeExec(argparse.Action):
    """--unsafe-exec: from parsing on, model-written code runs without bubblewrap (sandbox.allow_unsafe)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        from dlmkit.metrics.sandbox import allow_unsafe

        allow_unsafe()
        setattr(namespace, self.dest, True)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def count_list(text: str) -> list[int]:
    """'8,16,4' -> [4, 8, 16]: distinct whole numbers >= 1, sorted (step counts, draft lengths, NFE budgets)."""
    try:
        values = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if not values or values[0] < 1:
        raise argparse.ArgumentTypeError(f"values must be >= 1, got {text!r}")
    return values


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0 (a loss weight, a temperature)."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a learning rate)."""
    value = _finite(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def fraction(text: str) -> float:
    """A finite number in (0, 1] (a share of the denoising steps)."""
    value = _finite(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (e.g. 0.1 for 10%), got {value}")
    return value


def nonnegative_list(text: str) -> list[float]:
    """'1,0' -> [0.0, 1.0]: distinct finite numbers >= 0, sorted (temperatures)."""
    parts = [part for part in text.split(",") if part.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers >= 0, got {text!r}")
    return sorted({nonnegative_float(part) for part in parts})


def build_parser(prog: str, description: str, *, phases: list[str], roles: list[str],
                 default_seed: int = 42, subset_help: str = "N prompts per stratum") -> OneLineParser:
    """A parser with the shared flags; scripts add their own flags to what it returns."""
    parser = OneLineParser(prog=prog, description=description,
                           formatter_class=HelpFormatter)
    shared = parser.add_argument_group("shared flags")
    shared.add_argument("--preset", choices=PRESETS, default="tiny",
                        help="tiny: small models shipped in dlmkit/assets/tiny (runs on a CPU); "
                             "paper: the papers' hub checkpoints (needs a GPU and the hub)")
    shared.add_argument("--subset", type=positive_int, default=None, metavar="N",
                        help=f"a smoke test: use only {subset_help}")
    shared.add_argument("--phase", action="append", choices=phases, metavar="NAME", default=None,
                        help=f"run only this phase (repeatable; default: all, in order: {', '.join(phases)})")
    shared.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="run directory for summary.json and per-item JSONL "
                             f"(default: runs/{Path(prog).stem}/PRESET[-subsetN]; the committed runs live in results/)")
    shared.add_argument("--device", default="auto",
                        help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N")
    shared.add_argument("--dtype", choices=DTYPES, default="auto",
                        help="model dtype; auto is bfloat16 on CUDA and float32 on CPU")
    shared.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="torch CPU threads (default: OMP_NUM_THREADS if set, else the cores idle at the start, the "
                             "cores minus the load average, at least 1: on a shared machine extra threads multiply "
                             "the time)")
    shared.add_argument("--seed", type=int, default=default_seed, help="seed for data order and sampling")
    shared.add_argument("--resume", action="store_true",
                        help="continue the run in --out, skipping finished items")
    shared.add_argument("--overwrite", action="store_true",
                        help="discard an earlier run in --out and start again")
    shared.add_argument("--unsafe-exec", action=UnsafeExec,
                        help="run HumanEval code without the bubblewrap sandbox: it can then read and write "
                             "your files, use the network and see your environment (for machines without bubblewrap)")
    if roles:
        models = parser.add_argument_group("models (override a preset's choice for one role)")
        for role in roles:
            models.add_argument(f"--model-{role.replace('_', '-')}", dest=f"model_{role}", default=None,
                                metavar="PATH_OR_ID", help=f"{role}: {ROLES[role][1]}")
    parser.set_defaults(_phases=list(phases), _roles=list(roles))
    return parser


def selected_phases(args) -> list[str]:
    """The phases to run, in the script's declared order."""
    wanted = set(args.phase or args._phases)
    return [p for p in args._phases if p in wanted]


def model_overrides(args) -> dict[str, str | None]:
    return {role: getattr(args, f"model_{role}") for role in args._roles}


def resolve_device(name: str = "auto") -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} was requested but no CUDA GPU is visible; pass --device cpu")
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise UserError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s); "
                            f"pass cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return name
    raise UserError(f"unknown --device {name!r}; pass auto, cpu, cuda or cuda:N")


def idle_cores(cores: int | None = None, load: float | None = None) -> int:
    """The cores nobody else is using now: all of this process's cores minus the 1-minute load
    average, rounded, at least 1. On the tiny preset one thread per idle core is fastest: on a
    quiet 2-core machine 2 threads bring `run_full_suite.py --subset 2` from 93 s to about 67 s,
    while at load 2.4-3.5 a second thread made 8 prompts x 16 Dream steps 2.4x slower (3.6-4.5 s
    wall against 1.5 s): threads beyond the idle cores only fight the other jobs."""
    cores = cores if cores is not None else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else (os.cpu_count() or 1)
    load = load if load is not None else (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)
    return max(1, min(cores, int(cores - load + 0.5)))


def set_threads(threads: int | None, device: str) -> int:
    """torch's intra-op threads: --threads, else OMP_NUM_THREADS when set, else the idle cores on CPU
    (idle_cores: so a busy machine costs time in proportion to its load, not a multiple of it);
    a GPU run keeps torch's default."""
    import torch

    if threads is None and device == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        threads = idle_cores()
    if threads is not None:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def synchronize(device) -> None:
    """Wait for the GPU's queued work (a timing must cover work done, not work queued); a no-op on CPU."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def resolve_dtype(name: str, device: str):
    import torch

    if name not in DTYPES:
        raise UserError(f"unknown --dtype {name!r}; pass one of {', '.join(DTYPES)}")
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return getattr(torch, name)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Call a script's main; a UserError becomes one line on stderr and exit status 2."""
    prog = Path(sys.argv[0]).name
    try:
        code = main(argv)
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except OSError as err:
        if err.errno not in DISK_ERRORS:
            raise
        where = f" writing {err.filename}" if err.filename else ""
        print(f"{prog}: error: {DISK_ERRORS[err.errno]}{where} ({os.strerror(err.errno)}); finished items are "
              "saved: free space or fix the permissions (or pass --out DIR elsewhere), then rerun with --resume",
              file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished items are saved, rerun with --resume to continue", file=sys.stderr)
        raise SystemExit(130) from None
    raise SystemExit(code or 0)
