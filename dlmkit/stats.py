"""Thin wrappers over scipy.stats for the papers' tables.

Each returns a small dict of plain floats / ints, ready for JSON (NaN where a statistic is
undefined; dlmkit.results writes NaN as null). Paired tests take two equally long
sequences of per-prompt scores, x (e.g. with anchors) and y (e.g. alone).
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Callable, Sequence

import numpy as np
from scipy import stats as _st

from dlmkit.errors import UserError


def _paired(x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise UserError(f"paired statistics need two equally long 1-D sequences, got shapes {x.shape} and {y.shape}")
    if x.size == 0:
        raise UserError("paired statistics need at least one pair of scores")
    return x, y


def _f(value) -> float:
    return float(value) if value is not None else float("nan")


def wilcoxon(x, y, alternative: str = "two-sided") -> dict:
    """Wilcoxon signed-rank test of x - y with scipy's defaults: zero differences dropped, and
    the p-value method scipy picks (1.17: exact up to n = 50 without ties or zeros; with ties or
    zeros, every sign flip enumerated up to n = 13 (a deterministic permutation test, about half
    a second at n = 12), else the normal approximation). All-zero differences give statistic 0
    and p 1."""
    x, y = _paired(x, y)
    diff = x - y
    out = {"n": int(diff.size), "n_nonzero": int(np.count_nonzero(diff)), "median_diff": float(np.median(diff))}
    if out["n_nonzero"] == 0:
        return {**out, "statistic": 0.0, "p_value": 1.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy warns about small n; the p is still returned
        res = _st.wilcoxon(x, y, alternative=alternative)
    return {**out, "statistic": _f(res.statistic), "p_value": _f(res.pvalue)}


def paired_t(x, y, alternative: str = "two-sided") -> dict:
    """Paired t-test of x - y."""
    x, y = _paired(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # n = 1 or zero variance: NaN, reported as such
        res = _st.ttest_rel(x, y, alternative=alternative)
    return {"n": int(x.size), "mean_diff": float(np.mean(x - y)), "t": _f(res.statistic),
            "p_value": _f(res.pvalue), "df": int(x.size - 1)}


def cohens_d(x, y) -> dict:
    """(mean(x) - mean(y)) / sqrt((s_x^2 + s_y^2) / 2), sample sds (ddof 1): the paper's pooled
    sd, which ignores the pairing. NaN when both sds are 0 or a side has one value."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 2 or y.size < 2:
        return {"d": float("nan"), "pooled_sd": float("nan"), "mean_x": _mean(x), "mean_y": _mean(y)}
    pooled = math.sqrt((np.var(x, ddof=1) + np.var(y, ddof=1)) / 2)
    diff = float(np.mean(x) - np.mean(y))
    return {"d": diff / pooled if pooled > 0 else float("nan"), "pooled_sd": pooled,
            "mean_x": float(np.mean(x)), "mean_y": float(np.mean(y))}


def _mean(a: np.ndarray) -> float:
    return float(np.mean(a)) if a.size else float("nan")


def spearman(x, y) -> dict:
    """Spearman rank correlation (ties get average ranks); NaN for constant input."""
    x, y = _paired(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input: scipy warns and returns NaN
        res = _st.spearmanr(x, y)
    return {"n": int(x.size), "rho": _f(res.statistic), "p_value": _f(res.pvalue)}


def wilson_ci(successes: int, n: int, confidence: float = 0.95) -> dict:
    """Wilson score interval of a proportion (scipy binomtest(...).proportion_ci)."""
    if not (isinstance(n, (int, np.integer)) and n >= 1 and 0 <= successes <= n):
        raise UserError(f"wilson_ci needs integers 0 <= successes <= n and n >= 1, got {successes}/{n}")
    ci = _st.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return {"successes": int(successes), "n": int(n), "proportion": successes / n,
            "low": float(ci.low), "high": float(ci.high), "confidence": confidence}


def bootstrap_ci(values, statistic: Callable = np.mean, *, confidence: float = 0.95, n_resamples: int = 9999,
                 seed: int = 0, method: str = "BCa") -> dict:
    """Bootstrap confidence interval of statistic(values) (scipy.stats.bootstrap, seeded).
    For a paired difference pass x - y.

    A statistic that takes `axis` (np.mean, np.median, ...) is evaluated on all resamples at
    once (scipy's vectorized path): the same resamples and, for numpy's reductions, the same
    numbers as one call per resample (tested), 10-20x faster; any other callable gets one call
    per resample."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size < 2:
        raise UserError(f"bootstrap_ci needs a 1-D sequence of at least 2 values, got shape {values.shape}")
    estimate = float(statistic(values))
    if np.all(values == values[0]):  # no spread: every resample gives the same value
        return {"estimate": estimate, "low": estimate, "high": estimate, "standard_error": 0.0,
                "confidence": confidence, "n": int(values.size)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # BCa warns on degenerate jackknife; the interval is still returned
        kwargs = dict(confidence_level=confidence, n_resamples=n_resamples, method=method,
                      vectorized=_takes_axis(statistic))
        try:
            res = _st.bootstrap((values,), statistic, rng=np.random.default_rng(seed), **kwargs)
        except TypeError:  # scipy < 1.15 names the seed random_state
            res = _st.bootstrap((values,), statistic, random_state=np.random.default_rng(seed), **kwargs)
    return {"estimate": estimate, "low": _f(res.confidence_interval.low), "high": _f(res.confidence_interval.high),
            "standard_error": _f(res.standard_error), "confidence": confidence, "n": int(values.size)}


def _takes_axis(statistic: Callable) -> bool:
    """scipy's own rule for vectorized=None ("axis" among the parameters), except that a callable
    without a signature (some builtins) takes the per-resample path instead of failing in scipy."""
    try:
        return "axis" in inspect.signature(statistic).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def compare_paired(x: Sequence[float], y: Sequence[float]) -> dict:
    """Everything the tables report for one paired comparison, in one dict."""
    return {"mean_x": float(np.mean(x)), "mean_y": float(np.mean(y)), "wilcoxon": wilcoxon(x, y),
            "cohens_d": cohens_d(x, y)["d"], "paired_t": paired_t(x, y)}


__all__ = ["bootstrap_ci", "cohens_d", "compare_paired", "paired_t", "spearman", "wilcoxon", "wilson_ci"]
