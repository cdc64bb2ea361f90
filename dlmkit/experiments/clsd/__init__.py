"""CLSD, continuous latent speculative decoding (train_clsd.py): a rectified-flow DiT grafted from
a strided slice of the verifier drafts embedding blocks; the frozen verifier scores them and a
causal guillotine keeps the confident prefix of the best.

One module per phase: embed.py, stage_a.py, stage_c.py, infer.py; data.py (transcripts, windows,
shards), objectives.py (the two training stages' losses), context.py (the verifier, loaded once),
settings.py (the flags' settings). The decoding loop itself is dlmkit/decoding/clsd.py.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dlmkit.cli import nonnegative_float, positive_int, probability
from dlmkit.experiments import lazy_context, lazy_phase
from dlmkit.experiments.clsd.settings import TARGETS, Settings

_HERE = __name__
# phases and Context import torch when first used: --help stays light
PHASES = {name: lazy_phase(f"{_HERE}.{name}", f"phase_{name}") for name in ("embed", "stage_a", "stage_c", "infer")}
ROLES = ["verifier"]
SUBSET = ("N prompts at inference, and smoke-sized training (40 records, 5 + 5 steps, 8 new tokens, 2 candidates; "
          "each flag given wins)")
PHASE_ROLES = {phase: ROLES for phase in PHASES}


def index_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices, got {text!r}") from None
    if not values or len(set(values)) != len(values) or min(values) < 0:
        raise argparse.ArgumentTypeError(f"layer indices must be distinct and >= 0, got {text!r}")
    return values


def add_flags(parser) -> None:
    own = parser.add_argument_group("CLSD (defaults depend on --preset: tiny / paper)")
    own.add_argument("--ckpt-dir", type=Path, default=None, metavar="DIR",
                     help="embedding shards and DiT checkpoints (default: OUT/checkpoints, the run's own); a shared "
                          "one is reused only by runs with the same seed, verifier weights and settings")
    own.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                     help="a local NuminaMath-CoT copy (save_to_disk folder or parquet files) for --preset paper")
    own.add_argument("--source-indices", type=index_list, default=None, metavar="I,J,...",
                     help="verifier layers copied into the DiT (default: 0,3,6,9,12,15,18,21,24,26,28,31 for a "
                          "32-layer verifier, scaled proportionally for other depths)")
    own.add_argument("--block-len", type=positive_int, default=None, metavar="L",
                     help="tokens per drafted block (tiny 32, paper 128)")
    own.add_argument("--prefix-len", type=positive_int, default=None, metavar="P",
                     help="context tokens before each training chunk (tiny 32, paper 128)")
    own.add_argument("--embed-records", type=positive_int, default=None, metavar="N",
                     help="training transcripts to embed (tiny 3000, paper 400000)")
    own.add_argument("--stage-a-steps", type=positive_int, default=None, metavar="S",
                     help="stage A optimizer steps (tiny 3000, paper 50000)")
    own.add_argument("--stage-c-steps", type=positive_int, default=None, metavar="S",
                     help="stage C optimizer steps (tiny 200, paper 5000)")
    own.add_argument("--batch-size", type=positive_int, default=None, metavar="B",
                     help="chunks per step (tiny 16, paper 32)")
    own.add_argument("--targets", choices=TARGETS, default=None,
                     help="what the DiT learns to draft: data (the card: the transcripts' chunks; paper default) or "
                          "verifier (each chunk replaced by the verifier's greedy continuation of its prefix: "
                          "self-distillation; tiny default)")
    own.add_argument("--euler-steps", type=positive_int, default=2, metavar="K",
                     help="Euler steps of a draft (stage C and inference)")
    own.add_argument("--beta0", type=nonnegative_float, default=0.1, metavar="WEIGHT", help="stage C MSE weight at the first step (annealed to 0)")
    own.add_argument("--candidates", type=positive_int, default=None, metavar="N",
                     help="candidate blocks drafted and scored per round (tiny 8, paper 32)")
    own.add_argument("--threshold", type=probability, default=0.5, metavar="P",
                     help="guillotine: keep drafted tokens while the verifier's probability of each is >= this; "
                          ">= 0.5 makes the output equal greedy decoding")
    own.add_argument("--gen-length", type=positive_int, default=None, metavar="T",
                     help="new tokens per prompt at inference (tiny 40, paper 512); stops early at end of turn")


__getattr__ = lazy_context(__name__)


__all__ = ["Context", "PHASES", "PHASE_ROLES", "ROLES", "Settings", "add_flags", "index_list"]
