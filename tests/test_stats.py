import math

import numpy as np
import pytest

from dlmkit.errors import UserError
from dlmkit.stats import bootstrap_ci, cohens_d, compare_paired, paired_t, spearman, wilcoxon, wilson_ci


def test_wilcoxon_exact_hand_computed():
    # all 5 differences positive: W- = 0, exact two-sided p = 2 / 2^5
    r = wilcoxon([1, 2, 3, 4, 5], [0, 0, 0, 0, 0])
    assert (r["statistic"], r["n"], r["n_nonzero"]) == (0.0, 5, 5)
    assert r["p_value"] == pytest.approx(2 / 32)
    # differences 1, -2, 3, 4, 5: W- = 2; subsets of ranks with sum <= 2: {}, {1}, {2} -> p = 2 * 3/32
    r = wilcoxon([1, -2, 3, 4, 5], [0, 0, 0, 0, 0])
    assert r["statistic"] == 2.0 and r["p_value"] == pytest.approx(6 / 32)
    assert r["median_diff"] == 3.0


def test_wilcoxon_all_ties_and_bad_input():
    r = wilcoxon([0.5, 0.2], [0.5, 0.2])
    assert (r["statistic"], r["p_value"], r["n_nonzero"]) == (0.0, 1.0, 0)
    with pytest.raises(UserError):
        wilcoxon([1, 2], [1])


def test_paired_t_hand_computed():
    # differences 1, 0, 2, 3: mean 1.5, sd sqrt(5/3), t = 1.5 / (sd / 2)
    r = paired_t([1, 2, 3, 4], [0, 2, 1, 1])
    assert r["t"] == pytest.approx(1.5 / (math.sqrt(5 / 3) / 2))
    assert r["mean_diff"] == 1.5 and r["df"] == 3
    assert r["p_value"] == pytest.approx(0.10272808, abs=1e-7)  # two-sided, t(3) tail


def test_cohens_d_uses_the_papers_pooled_sd():
    # means 2 and 4, variances 1 and 4: pooled sd sqrt(2.5)
    r = cohens_d([1, 2, 3], [2, 4, 6])
    assert r["pooled_sd"] == pytest.approx(math.sqrt(2.5))
    assert r["d"] == pytest.approx(-2 / math.sqrt(2.5))
    assert math.isnan(cohens_d([1, 1], [1, 1])["d"])
    assert math.isnan(cohens_d([1], [2, 3])["d"])


def test_spearman_hand_computed():
    # rank differences 0, -1, 1, 0: rho = 1 - 6 * 2 / (4 * 15) = 0.8
    r = spearman([1, 2, 3, 4], [1, 3, 2, 4])
    assert r["rho"] == pytest.approx(0.8) and r["n"] == 4
    assert spearman([1, 2, 3], [3, 2, 1])["rho"] == pytest.approx(-1.0)
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])["rho"])


def test_wilson_ci_hand_computed():
    z, k, n = 1.959963984540054, 7, 10
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    r = wilson_ci(k, n)
    assert r["proportion"] == 0.7
    assert r["low"] == pytest.approx(center - half, abs=1e-9)
    assert r["high"] == pytest.approx(center + half, abs=1e-9)
    assert wilson_ci(0, 5)["low"] == 0.0
    with pytest.raises(UserError):
        wilson_ci(6, 5)


def test_bootstrap_ci_is_seeded_and_sensible():
    values = np.arange(100, dtype=float)
    a = bootstrap_ci(values, seed=3, n_resamples=2000)
    assert a == bootstrap_ci(values, seed=3, n_resamples=2000)
    assert a != bootstrap_ci(values, seed=4, n_resamples=2000)
    # normal approximation: 49.5 +- 1.96 * sd / sqrt(n), sd = 29.01
    se = np.std(values, ddof=1) / 10
    assert a["estimate"] == 49.5
    assert a["low"] == pytest.approx(49.5 - 1.96 * se, abs=0.6)
    assert a["high"] == pytest.approx(49.5 + 1.96 * se, abs=0.6)
    flat = bootstrap_ci([0.3, 0.3, 0.3])
    assert (flat["low"], flat["high"]) == (0.3, 0.3)


@pytest.mark.parametrize("statistic", [np.mean, np.median])
def test_bootstrap_ci_vectorized_equals_one_call_per_resample(statistic):
    """np.mean / np.median take scipy's vectorized path; a plain callable (no axis) takes one call per
    resample. Same resamples, same numbers, ties and a skewed sample included."""
    rng = np.random.default_rng(7)
    for values in (np.round(rng.random(37), 1), (rng.random(190) < 0.2).astype(float), rng.exponential(size=12)):
        fast = bootstrap_ci(values, statistic, seed=5, n_resamples=3000)
        slow = bootstrap_ci(values, lambda v: statistic(v), seed=5, n_resamples=3000)
        assert fast.keys() == slow.keys()
        for key in fast:  # a degenerate BCa interval is NaN on both paths
            assert fast[key] == slow[key] or (np.isnan(fast[key]) and np.isnan(slow[key])), key


def test_results_are_json_ready():
    import json

    out = compare_paired([0.9, 0.8, 0.7, 0.95], [0.1, 0.3, 0.2, 0.15])
    json.dumps(out)
    assert out["wilcoxon"]["p_value"] == pytest.approx(2 / 16)
    assert all(isinstance(v, (int, float)) for v in wilson_ci(3, 9).values())
