"""Inverse speculation (run_full_suite.py): Dream runs a fraction of its denoising steps, the
tokens it has committed become anchors, and a small AR model fills the gaps by forced decoding.

One module per phase: reference.py (A), fill.py (B), pearl.py (C), ablation.py, gap.py, size.py,
payload.py, drafted.py, timing.py, checks.py (the claims as pass/fail rows over the run's tables);
carry.py what the anchors carry, stop.py phase B's adaptive-stop rows; context.py holds what they
share, settings.py the flags' settings.
"""

from __future__ import annotations

from pathlib import Path

from dlmkit.cli import fraction, positive_int
from dlmkit.experiments import lazy_context, lazy_phase
from dlmkit.experiments.inverse.settings import FRACTIONS, PUBLISHED_DIR, TIMING_REPEATS, Settings

_HERE = __name__
# phases and Context import torch when first used: --help stays light
PHASES = {name: lazy_phase(f"{_HERE}.{module}", function) for name, module, function in (
    ("A", "reference", "phase_a"), ("B", "fill", "phase_b"), ("C", "pearl", "phase_c"),
    ("ablation", "ablation", "phase_ablation"), ("gap", "gap", "phase_gap"), ("size", "size", "phase_size"),
    ("payload", "payload", "phase_payload"), ("drafted", "drafted", "phase_drafted"), ("timing", "timing", "phase_timing"),
    ("checks", "checks", "phase_checks"))}
ROLES = ["dlm", "ar_small", "ar_medium", "ar_control"]
SUBSET = "N prompts per stratum (task x difficulty; 8 strata)"
# The models each phase needs (gap, size and drafted read phase B's fills and compute missing ones).
PHASE_ROLES = {"A": ["dlm"], "B": ROLES, "C": ["dlm", "ar_small"], "ablation": ["dlm", "ar_small"], "gap": ROLES,
               "size": ROLES, "payload": ["dlm"], "drafted": ROLES, "timing": ["dlm", "ar_small"], "checks": []}


def add_flags(parser) -> None:
    own = parser.add_argument_group("inverse speculation")
    own.add_argument("--fractions", type=fraction, nargs="+", default=list(FRACTIONS), metavar="F",
                     help="step fractions in (0, 1] at which anchors are read (phases B, gap, size, payload, "
                          "timing; the ablation always uses 0.1 and 0.25)")
    own.add_argument("--gap-fill", choices=("forced", "drafted"), default="forced",
                     help="phase B's gap-fill decoder: forced (one AR pass per gap position) or drafted (Dream's "
                          "argmax at the cutoff as drafts the AR verifies: the same tokens in fewer passes; the "
                          "fills' forward_passes then count drafted passes) (default forced)")
    own.add_argument("--timing-repeats", type=positive_int, default=None, metavar="N",
                     help="times phase timing measures all its prompts, one repeat after another; its table gives the median over "
                          f"the repeats and their range (default {TIMING_REPEATS}, 1 with --subset: a smoke test "
                          "times once)")
    own.add_argument("--published-dir", type=Path, default=PUBLISHED_DIR, metavar="DIR",
                     help="folder holding the paper's published_timing.json, shown beside table6_timing "
                          "(optional; a missing file leaves those columns empty)")


__getattr__ = lazy_context(__name__)


__all__ = ["Context", "PHASES", "PHASE_ROLES", "ROLES", "Settings", "add_flags"]
