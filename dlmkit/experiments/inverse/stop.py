"""Phase B's adaptive-stop rows: stop Dream per prompt by a rule read from the partial run
(decoding/early_stop.py) instead of at a fixed fraction, and compare at equal mean DLM steps.

For every rule of settings.STOP_GRID (fixed fractions for the baseline curve, the
confidence rule and the end-coverage rule at several thresholds) phase B records, per prompt,
the rule's stop step (from phase A's commit steps and signals, exactly what an online stop
would see) and ar_small's committed_end fill of the anchors then, scored against Dream's
full answer. The drafted decoder gives these fills token for token (phase drafted), so its
F1 is theirs.

table adaptive_stop (evaluation set): per rule mean_dlm_steps, word F1 (bootstrap CI),
ROUGE-L, GT accuracy (Wilson CI), coverage, and for each adaptive rule:
  fixed_f1_at_same_steps  the fixed-fraction curve's F1 linearly interpolated at the rule's
                          mean steps (the "equal mean DLM steps" comparison)
  paired_fixed            the fixed row with the fewest mean steps at or above the rule's,
                          its F1 and the paired Wilcoxon p of the rule's per-prompt F1 against it
                          (a comparison that gives the fixed fraction the extra steps)
  share_at_max_steps      the share of prompts on which the rule stopped at its max_steps cap
                          (None without a cap): where it is near 1 the signal never fired first,
                          and the rule is that fixed step count in disguise
"""

from __future__ import annotations

from dlmkit.anchors import anchors_after
from dlmkit.decoding.early_stop import stop_step
from dlmkit.experiments.inverse.settings import ADAPTIVE, STOP_GRID
from dlmkit.metrics.scoring import mean, mean_ci, proportion_ci
from dlmkit.plots import pyplot, save_figure
from dlmkit.stats import wilcoxon

ROLE = "ar_small"
TABLE = "adaptive_stop"


def adaptive_fills(context, item: dict, record: dict, gap_fill) -> list[dict]:
    """ar_small's committed_end fill at the stop of every STOP_GRID rule (tokens dropped but for
    ADAPTIVE's fill, which the drafted phase compares with)."""
    steps, ends = context.dream.steps, context.dlm_end_ids()
    jobs = []
    for rule in STOP_GRID:
        done = stop_step(rule, record["commit_step"], record["tokens"], record["signals"], ends, steps)
        jobs.append(({"stop_rule": rule.name, "kind": rule.kind, "threshold": rule.threshold, "dlm_steps": done},
                     anchors_after(record["commit_step"], record["tokens"], done), "committed_end"))
    rows = gap_fill(context, ROLE, item, record, jobs)
    for row in rows:
        if row["stop_rule"] != ADAPTIVE.name:
            del row["tokens"], row["forced"]
    return rows


def grid_names() -> list[str]:
    return [rule.name for rule in STOP_GRID]


def _interpolate(points: list[tuple[float, float]], x: float) -> float | None:
    points = sorted(points)
    if not points or not points[0][0] <= x <= points[-1][0]:
        return None
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


def adaptive_table(records: list[dict]) -> list[dict]:
    by_rule = {name: [next(f for f in r["adaptive"] if f["stop_rule"] == name) for r in records] for name in grid_names()}
    rows = []
    for rule in STOP_GRID:
        fills = by_rule[rule.name]
        rows.append({"rule": rule.name, "kind": rule.kind, "threshold": rule.threshold, "n": len(fills),
                     "mean_dlm_steps": mean([f["dlm_steps"] for f in fills]),
                     **mean_ci([f["f1"] for f in fills], "f1"), "rouge_l": mean([f["rouge_l"] for f in fills]),
                     **proportion_ci([f["correct"] for f in fills], "accuracy"),
                     "coverage": mean([f["coverage"] for f in fills]),
                     # a rule that stops at its cap on every prompt is that fixed step count in disguise
                     "share_at_max_steps": (mean([float(f["dlm_steps"] >= rule.max_steps) for f in fills])
                                            if rule.kind != "fixed" and rule.max_steps is not None else None)})
    fixed = [r for r in rows if r["kind"] == "fixed"]
    curve = [(r["mean_dlm_steps"], r["f1"]) for r in fixed]
    for row in rows:
        row.update(fixed_f1_at_same_steps=None, f1_minus_fixed=None, paired_fixed=None, paired_fixed_f1=None,
                   paired_wilcoxon_p=None)
        if row["kind"] == "fixed":
            continue
        at = _interpolate(curve, row["mean_dlm_steps"])
        row.update(fixed_f1_at_same_steps=at, f1_minus_fixed=row["f1"] - at if at is not None else None)
        above = [r for r in fixed if r["mean_dlm_steps"] >= row["mean_dlm_steps"]]
        if above:
            paired = min(above, key=lambda r: r["mean_dlm_steps"])
            ours, theirs = [f["f1"] for f in by_rule[row["rule"]]], [f["f1"] for f in by_rule[paired["rule"]]]
            row.update(paired_fixed=paired["rule"], paired_fixed_f1=paired["f1"],
                       paired_wilcoxon_p=wilcoxon(ours, theirs)["p_value"] if len(ours) >= 2 else None)
    return rows


def adaptive_by_task(records: list[dict]) -> list[dict]:
    """adaptive_stop_by_task: per rule and task, the mean DLM steps and F1 (where a rule spends its steps)."""
    rows = []
    for rule in STOP_GRID:
        for task in dict.fromkeys(r["task"] for r in records):
            fills = [next(f for f in r["adaptive"] if f["stop_rule"] == rule.name) for r in records if r["task"] == task]
            rows.append({"rule": rule.name, "task": task, "n": len(fills),
                         "mean_dlm_steps": mean([f["dlm_steps"] for f in fills]), "f1": mean([f["f1"] for f in fills]),
                         "accuracy": mean([float(f["correct"]) for f in fills])})
    return rows


def adaptive_note(rows: list[dict], reference_fraction: float = 0.1) -> str:
    """The issue's two questions: does a rule beat the fixed fraction at equal mean steps, and does one
    reach the fixed 10% F1 with at least 25% fewer mean steps."""
    ref = next((r for r in rows if r["kind"] == "fixed" and abs(r["threshold"] - reference_fraction) < 1e-9), None)
    rules = [r for r in rows if r["kind"] != "fixed"]
    beating = [r for r in rules if r["f1_minus_fixed"] is not None and r["f1_minus_fixed"] > 0]
    parts = [f"{r['rule']}: {r['mean_dlm_steps']:.1f} steps, F1 {r['f1']:.3f} vs fixed "
             + (f"{r['fixed_f1_at_same_steps']:.3f}" if r["fixed_f1_at_same_steps"] is not None else "n/a")
             for r in rules]
    text = f"{TABLE}: at equal mean DLM steps (the fixed curve interpolated) " + "; ".join(parts)
    text += f". Rules above the fixed curve: {len(beating)} of {len(rules)}"
    capped = [r for r in rules if r.get("share_at_max_steps") is not None and r["share_at_max_steps"] >= 0.5]
    if capped:
        text += ". Stopped by their step cap rather than their signal on most prompts: " + ", ".join(
            f"{r['rule']} ({r['share_at_max_steps']:.0%} of prompts)" for r in capped)
    if ref is not None:
        cheaper = [r for r in rules if r["f1"] >= ref["f1"] and r["mean_dlm_steps"] <= 0.75 * ref["mean_dlm_steps"]]
        text += (f". Fixed {reference_fraction:g}: {ref['mean_dlm_steps']:.0f} steps, F1 {ref['f1']:.3f}; rules reaching it "
                 f"with >= 25% fewer mean steps: " + (", ".join(r["rule"] for r in cheaper) or "none"))
    return text


def plot_adaptive(rows: list[dict], path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((axes[0], "f1", "word F1 vs Dream's full answer"), (axes[1], "accuracy", "GT accuracy")):
        for kind, style in (("fixed", "-o"), ("confidence", "s"), ("end_coverage", "^")):
            pts = sorted((r["mean_dlm_steps"], r[key]) for r in rows if r["kind"] == kind and r[key] is not None)
            if pts:
                ax.plot(*zip(*pts), style, label=kind if kind != "fixed" else "fixed fraction")
        ax.set_xlabel("mean DLM steps per prompt")
        ax.set_title(title)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"adaptive DLM stop vs fixed fraction, {ROLE} fills (n={rows[0]['n']})")
    fig.tight_layout()
    save_figure(fig, path)


__all__ = ["adaptive_by_task", "adaptive_fills", "adaptive_note", "adaptive_table", "grid_names", "plot_adaptive"]
