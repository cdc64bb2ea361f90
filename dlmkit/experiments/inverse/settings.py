"""run_full_suite.py's settings, built once from the flags and frozen: Dream's generation
settings for the preset, the step fractions at which anchors are read, and where the paper's
published timings are."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from dlmkit.data.published import PUBLISHED_DIR  # noqa: F401  (the --published-dir default)
from dlmkit.decoding.settings import DreamSettings
from dlmkit.errors import UserError

FRACTIONS = (0.10, 0.15, 0.25)
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

    @classmethod
    def from_flags(cls, args, job) -> "Settings":
        dream = DREAM[job.preset]
        return cls(preset=job.preset, subset=job.subset, phases=job.phases, dream=dream,
                   fractions=checked_fractions(args.fractions, dream.steps), published_dir=args.published_dir)

    def config(self, specs) -> dict:
        return {"subset": self.subset, "phases": list(self.phases), "fractions": list(self.fractions),
                "dream": asdict(self.dream)}

    def identity(self, specs) -> dict:
        # Dream's settings make phase A's records, which every later phase reads (the runner adds seed and models);
        # the fractions only add items, keyed by fraction.
        return {"dream": asdict(self.dream)}
