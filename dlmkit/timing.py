"""Wall-clock timing of repeated calls: warm-up first, the device synchronised around every call,
the median with its spread, and an optional deadline that ends the repeats early.

    t = time_calls(lambda: model(x), "cuda", repeats=10, warmup=3)
    t.median_ms, t.min_ms, t.max_ms, t.n          # t.to_dict() for a JSON record
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from dlmkit.cli import synchronize


@dataclass
class Timing:
    samples_ms: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.samples_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    @property
    def min_ms(self) -> float:
        return min(self.samples_ms)

    @property
    def max_ms(self) -> float:
        return max(self.samples_ms)

    def to_dict(self) -> dict:
        """{"median", "min", "max", "n"} in ms, plus the relative spread (max - min) / median."""
        median = self.median_ms
        return {"median": median, "min": self.min_ms, "max": self.max_ms, "n": self.n,
                "rel_spread": (self.max_ms - self.min_ms) / median if median else None}


def time_calls(fn, device, repeats: int, warmup: int = 1, *, deadline: float | None = None,
               min_repeats: int = 1) -> Timing:
    """Time `repeats` calls of fn() after `warmup` untimed ones. With a deadline (a
    time.perf_counter() value), stop once the next call would likely end past it, keeping at
    least `min_repeats` samples."""
    for _ in range(warmup):
        fn()
    out = Timing()
    for _ in range(repeats):
        if deadline is not None and out.n >= min_repeats and time.perf_counter() + out.median_ms / 1e3 > deadline:
            break
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        out.samples_ms.append(1000 * (time.perf_counter() - start))
    return out
