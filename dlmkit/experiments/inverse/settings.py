"""run_full_suite.py's settings, built once from the flags and frozen: Dream's generation
settings for the preset, the step fractions at which anchors are read, and where the paper's
published timings are."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from dlmkit.data.published import PUBLISHED_DIR  # noqa: F401  (the --published-dir default)
from dlmkit.decoding.early_stop import StopRule
from dlmkit.decoding.settings import DreamSettings
from dlmkit.errors import UserError

FRACTIONS = (0.10, 0.15, 0.25)
# The adaptive DLM stop run end to end (phase A keeps its step and drafts; the drafted and timing
# phases use it): stop once every open answer position Dream is 90% sure of is committed, after
# 8 steps at most. Phase B's adaptive_stop table sweeps STOP_GRID (fixed fractions for the
# baseline curve, then rules) at equal mean DLM steps. ADAPTIVE was picked from this grid on the
# tiny run's own prompts (the README says so); every rule of the grid is reported.
ADAPTIVE = StopRule("text_confidence", 0.9, max_steps=8)
# Fixed fractions: every step count from 3 to 9 (5/128 and 7/128 included: the curve jumps between
# 6 and 8 steps on the tiny preset), then the paper's fractions and beyond.
STOP_GRID = (tuple(StopRule("fixed", f) for f in (0.03, 0.03125, 0.0390625, 0.05, 0.0546875, 0.0625, 0.075, 0.1, 0.15,
                                                  0.2, 0.25, 0.375, 0.5))
             + (ADAPTIVE, StopRule("text_confidence", 0.99, max_steps=16),
                StopRule("text_confidence", 0.5, max_steps=48), StopRule("text_confidence", 0.7),
                StopRule("text_confidence", 0.9, window=3), StopRule("confidence", 0.9), StopRule("end_coverage", 0.5)))
# Phase timing measures all its prompts this many times, one repeat after another, and reports the median and range
# (CPU wall times move by a tenth between calls); a --subset smoke test times once.
TIMING_REPEATS = 3
# Dream as the paper ran it: 128 entropy-ordered steps, T = 0.2, top_p 0.95, over a 512-token canvas
# (the tiny preset: 128 tokens).
DREAM = {"paper": DreamSettings(max_new_tokens=512), "tiny": DreamSettings(max_new_tokens=128)}


def checked_fractions(fractions, steps: int) -> tuple[float, ...]:
    from dlmkit.anchors import steps_done_at  # torch: after the flags are read

    for fraction in fractions:
        try:
            done = steps_done_at(fraction, steps)
        except UserError as err:
            raise UserError(f"--fractions: {err}") from None
        if done == 0:
            raise UserError(f"--fractions {fraction} is 0 of Dream's {steps} steps (no anchors); pass fractions "
                            f">= {1 / steps:.4g}")
    return tuple(sorted(set(fractions)))


@dataclass(frozen=True)
class Settings:
    preset: str
    subset: int | None
    phases: tuple[str, ...]
    dream: DreamSettings
    fractions: tuple[float, ...] = FRACTIONS
    published_dir: Path | None = None
    gap_fill: str = "forced"  # phase B's decoder: forced, or drafted (the same tokens, fewer passes)
    timing_repeats: int = TIMING_REPEATS

    @classmethod
    def from_flags(cls, args, job) -> "Settings":
        dream = DREAM[job.preset]
        return cls(preset=job.preset, subset=job.subset, phases=job.phases, dream=dream,
                   fractions=checked_fractions(args.fractions, dream.steps), published_dir=args.published_dir,
                   gap_fill=args.gap_fill,
                   timing_repeats=args.timing_repeats or (1 if job.subset else TIMING_REPEATS))

    def config(self, specs) -> dict:
        return {"subset": self.subset, "phases": list(self.phases), "fractions": list(self.fractions),
                "dream": asdict(self.dream), "gap_fill": self.gap_fill, "timing_repeats": self.timing_repeats}

    def identity(self, specs) -> dict:
        # Dream's settings make phase A's records, which every later phase reads (the runner adds seed and models);
        # the fractions only add items, keyed by fraction.
        return {"dream": asdict(self.dream), "adaptive_stop": ADAPTIVE.name}
