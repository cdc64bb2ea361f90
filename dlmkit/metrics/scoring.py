"""How the suite scores one answer and summarises a group of them.

One answer: word F1 (the paper's metric) and ROUGE-L against Dream's full-run answer, and
ground-truth correctness (check_answer; GSM8K by lm-eval's filters: "correct" is
flexible-extract, the default, and "correct_strict" strict-match).
HumanEval answers are executed; a program that does not even compile cannot pass, so it is
failed without starting a sandbox, and each (prompt, answer) pair is executed once per process.

A group: mean with a bootstrap 95% CI (F1) or a proportion with a Wilson 95% CI (accuracy);
every summary carries its n.
"""

from __future__ import annotations

import math

from dlmkit.metrics.answers import check_answer
from dlmkit.metrics.text import rouge_l_f, word_f1
from dlmkit.stats import bootstrap_ci, wilson_ci

_GRADES: dict[tuple, bool] = {}


def is_correct(item: dict, text: str, gsm8k_mode: str = "flexible-extract") -> bool:
    """check_answer, memoised; an empty HumanEval answer or one that does not compile fails."""
    key = (item["id"], gsm8k_mode, text)
    if key not in _GRADES:
        if item["task"] == "humaneval":
            _GRADES[key] = bool(text.strip()) and _compiles(item, text) and check_answer(item, text)
        else:
            _GRADES[key] = check_answer(item, text, gsm8k_mode=gsm8k_mode)
    return _GRADES[key]


def _compiles(item: dict, text: str) -> bool:
    from dlmkit.metrics.code_exec import build_program

    try:
        compile(build_program(item, text), "<candidate>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def score_answer(item: dict, text: str, reference_text: str) -> dict:
    """F1 / ROUGE-L vs the reference answer and ground-truth correctness of one answer."""
    scores = {"f1": word_f1(text, reference_text), "rouge_l": rouge_l_f(text, reference_text),
              "correct": is_correct(item, text)}
    if item["task"] == "gsm8k":
        scores["correct_strict"] = is_correct(item, text, "strict")
    return scores


def by_stratum(records: list[dict]) -> dict[str, list[dict]]:
    """Records grouped by "task/difficulty", in first-seen order (a table adds its "all" row)."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(f"{r['task']}/{r['difficulty']}", []).append(r)
    return groups


def mean(values) -> float | None:
    values = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(values) / len(values) if values else None


def mean_ci(values, prefix: str, seed: int = 0) -> dict:
    """{prefix: mean, prefix_low, prefix_high} with a bootstrap 95% CI (None below 2 values)."""
    values = [float(v) for v in values if v is not None and not math.isnan(v)]
    out = {prefix: mean(values), f"{prefix}_low": None, f"{prefix}_high": None}
    if len(values) >= 2:
        ci = bootstrap_ci(values, seed=seed)
        out[f"{prefix}_low"], out[f"{prefix}_high"] = ci["low"], ci["high"]
    return out


def proportion_ci(flags, prefix: str) -> dict:
    """{prefix: share, prefix_low, prefix_high} with a Wilson 95% CI."""
    flags = [bool(f) for f in flags if f is not None]
    if not flags:
        return {prefix: None, f"{prefix}_low": None, f"{prefix}_high": None}
    ci = wilson_ci(sum(flags), len(flags))
    return {prefix: ci["proportion"], f"{prefix}_low": ci["low"], f"{prefix}_high": ci["high"]}


def not_reproduced(rows: list[dict], pairs: dict[str, str], label, tolerance: float = 0.05) -> list[str]:
    """Cells whose published number lies outside our CI (when there is one) and more than
    `tolerance` from our value. pairs: {our column: published column}; label(row) names a row."""
    misses = []
    for row in rows:
        for ours, theirs in pairs.items():
            value, published = row.get(ours), row.get(theirs)
            if value is None or published is None:
                continue
            low, high = row.get(f"{ours}_low"), row.get(f"{ours}_high")
            inside = low is not None and high is not None and low <= published <= high
            if not inside and abs(value - published) > tolerance:
                misses.append(f"{label(row)} {ours} {value:.3f} vs published {published:.3f}")
    return misses


__all__ = ["is_correct", "mean", "mean_ci", "not_reproduced", "proportion_ci", "score_answer"]
