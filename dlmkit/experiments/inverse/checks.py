"""Phase checks: the paper's claims as pass/fail rows over this run's own tables.

The testbed (the tiny preset on generation 2 of the tiny world) is built so that each
mechanism of inverse speculation can show, and a control in which it must vanish; this
phase states, per claim, the number measured, the threshold and whether it is met, read
from the tables the other phases wrote into summary.json (the deployable committed_end rule
unless a row names another). A claim whose table is missing (its phase not run, or no
prompt of the evaluation set selected) is listed with `met` None and says which table.

table_checks columns: claim, measured, threshold, met, source (table and row).
"""

from __future__ import annotations

RULE = "committed_end"


def _row(table: list[dict], **where):
    return next((r for r in table if all(r.get(k) == v for k, v in where.items())), None)


def _check(claim: str, measured, threshold: str, ok, source: str) -> dict:
    return {"claim": claim, "measured": measured, "threshold": threshold,
            "met": None if measured is None else bool(ok), "source": source}


def _missing(claim: str, threshold: str, table: str) -> dict:
    return {"claim": claim, "measured": None, "threshold": threshold, "met": None, "source": f"{table} (not in this run)"}


def pipeline_checks(t2: list[dict] | None) -> list[dict]:
    names = ["Dream accuracy / ar_small alone accuracy", "ar_small alone F1 against Dream",
             "F1 gain from real anchors @0.1", "F1 gain from real anchors @0.25",
             "pipeline accuracy @0.25 / Dream accuracy", "ar_medium alone F1 - ar_small alone F1",
             "ar_control F1 gain from anchors @0.1", "ar_control F1 gain from anchors @0.25"]
    thresholds = [">= 2", "<= 0.55", ">= 0.20", ">= 0.30", ">= 0.8", "> 0", "<= 0.05", "<= 0.05"]
    if not t2:
        return [_missing(n, t, "table2_pipeline") for n, t in zip(names, thresholds)]
    dream = _row(t2, method="Dream (full)")
    alone = {m: _row(t2, method=f"{m} alone") for m in ("ar_small", "ar_medium", "ar_control")}

    def anchored(model, fraction):
        return _row(t2, method=f"{model} + anchors", fraction=fraction, end_rule=RULE)

    out = []
    small = alone["ar_small"]
    ratio = dream["accuracy"] / small["accuracy"] if small and small["accuracy"] else None
    out.append(_check(names[0], ratio, thresholds[0], ratio is not None and ratio >= 2, "table2_pipeline"))
    out.append(_check(names[1], small["f1"], thresholds[1], small["f1"] <= 0.55, "table2_pipeline: ar_small alone"))
    for name, fraction, bar in ((names[2], 0.1, 0.20), (names[3], 0.25, 0.30)):
        row = anchored("ar_small", fraction)
        gain = row["f1"] - small["f1"] if row else None
        out.append(_check(name, gain, f">= {bar:.2f}", gain is not None and gain >= bar,
                          f"table2_pipeline: ar_small + anchors @{fraction} {RULE}"))
    row = anchored("ar_small", 0.25)
    share = row["accuracy"] / dream["accuracy"] if row and dream["accuracy"] else None
    out.append(_check(names[4], share, thresholds[4], share is not None and share >= 0.8,
                      f"table2_pipeline: ar_small + anchors @0.25 {RULE}"))
    medium = alone["ar_medium"]
    diff = medium["f1"] - small["f1"] if medium else None
    out.append(_check(names[5], diff, thresholds[5], diff is not None and diff > 0, "table2_pipeline: alone rows"))
    control = alone["ar_control"]
    for name, fraction in ((names[6], 0.1), (names[7], 0.25)):
        row = anchored("ar_control", fraction) if control else None
        gain = row["f1"] - control["f1"] if row else None
        out.append(_check(name, gain, "<= 0.05", gain is not None and gain <= 0.05,
                          f"table2_pipeline: ar_control + anchors @{fraction} {RULE}"))
    return out


def ablation_checks(t4: list[dict] | None) -> list[dict]:
    names = ["random-token F1 - AR alone F1 @{f}", "random-position F1 between random-token and real @{f}",
             "ROUGE-L real - random-position @{f}"]
    out = []
    for fraction in (0.1, 0.25):
        rows = {r["anchors"]: r for r in t4 or [] if r["fraction"] == fraction and r["end_rule"] == RULE}
        rt, rp, real = rows.get("random_token"), rows.get("random_position"), rows.get("real")
        if not (rt and rp and real):
            out += [_missing(n.format(f=fraction), t, "table4_ablation")
                    for n, t in zip(names, ("< 0", "in (rt, real)", "> 0"))]
            continue
        alone = t4[0]
        out.append(_check(names[0].format(f=fraction), rt["f1"] - alone["f1"], "< 0", rt["f1"] < alone["f1"],
                          f"table4_ablation @{fraction} {RULE}"))
        out.append(_check(names[1].format(f=fraction), rp["f1"], f"in ({rt['f1']:.3f}, {real['f1']:.3f})",
                          rt["f1"] < rp["f1"] < real["f1"], f"table4_ablation @{fraction} {RULE}"))
        gap = real["rouge_l"] - rp["rouge_l"] if real.get("rouge_l") is not None and rp.get("rouge_l") is not None else None
        out.append(_check(names[2].format(f=fraction), gap, "> 0", gap is not None and gap > 0,
                          f"table4_ablation @{fraction} {RULE}"))
    return out


def size_checks(t3: list[dict] | None) -> list[dict]:
    name, threshold = "abs(ar_medium - ar_small) F1 with anchors @0.1", "<= 0.03"
    row = _row(t3 or [], fraction=0.1, end_rule=RULE)
    if not row:
        return [_missing(name, threshold, "table3_size")]
    diff = row["f1_diff_medium_minus_small"]
    return [_check(name, abs(diff), threshold, abs(diff) <= 0.03, f"table3_size @0.1 {RULE}")]


def gap_checks(t5: list[dict] | None) -> list[dict]:
    out = []
    for fraction in (0.1, 0.25):
        name, threshold = f"gap-only F1 with anchors - alone @{fraction} (Wilcoxon p)", "> 0, p < 0.01"
        row = _row(t5 or [], fraction=fraction, end_rule=RULE)
        if not row:
            out.append(_missing(name, threshold, "table5_gap_only"))
            continue
        diff = row["gap_f1"] - row["gap_f1_alone"]
        p = row.get("wilcoxon_p_vs_ar_alone")
        out.append({**_check(name, diff, threshold, diff > 0 and p is not None and p < 0.01,
                             f"table5_gap_only @{fraction} {RULE}"), "p": p})
    return out


def drafted_checks(td: list[dict] | None) -> list[dict]:
    """Beyond the paper (1): drafted gap filling, every draft sent, at 10% and 25%."""
    out = []
    for fraction in (0.1, 0.25):
        names = (f"drafted fill: positions / sequential AR passes @{fraction}",
                 f"drafted fill: tokens equal to forced decoding @{fraction}")
        row = _row(td or [], model="ar_small", stop="fixed", fraction=fraction, min_conf=0.0)
        if not row:
            out += [_missing(n, t, "drafted_gap_fill") for n, t in zip(names, (">= 3", "== 1"))]
            continue
        ratio, equal = row["passes_vs_one_per_position"], row["tokens_equal_forced"]
        out.append(_check(names[0], ratio, ">= 3", ratio is not None and ratio >= 3, f"drafted_gap_fill @{fraction}"))
        out.append(_check(names[1], equal, "== 1", equal == 1, f"drafted_gap_fill @{fraction}"))
    return out


def adaptive_checks(ta: list[dict] | None) -> list[dict]:
    """Beyond the paper (2): an adaptive DLM stop against fixed fractions."""
    name = "adaptive stop: best F1 above the fixed curve at equal mean DLM steps, or fixed-0.1 F1 in <= 75% of its steps"
    if not ta:
        return [_missing(name, "> 0 or reached", "adaptive_stop")]
    fixed = _row(ta, kind="fixed", threshold=0.1)
    rules = [r for r in ta if r["kind"] != "fixed"]
    margins = [r["f1_minus_fixed"] for r in rules if r["f1_minus_fixed"] is not None]
    best = max(margins) if margins else None
    cheaper = [r for r in rules if fixed and r["f1"] >= fixed["f1"] and r["mean_dlm_steps"] <= 0.75 * fixed["mean_dlm_steps"]]
    return [_check(name, best, "> 0 or reached", (best is not None and best > 0) or bool(cheaper),
                   "adaptive_stop: " + (", ".join(r["rule"] for r in cheaper) if cheaper else "best f1_minus_fixed"))]


def timing_checks(t6: list[dict] | None) -> list[dict]:
    """Beyond the paper (3): the pipeline with drafted fill and the adaptive stop vs the full DLM run."""
    name = "pipeline, adaptive stop + drafted fill: speedup vs the full DLM run"
    row = next((r for r in t6 or [] if (r.get("method") or "").startswith("adaptive")
                and r["method"].endswith("drafted fill")), None)
    if not row:
        return [_missing(name, ">= 10", "table6_timing")]
    return [_check(name, row["speedup_vs_full_dlm"], ">= 10", row["speedup_vs_full_dlm"] >= 10,
                   f"table6_timing: {row['method']}")]


def check_rows(tables: dict) -> list[dict]:
    return (pipeline_checks(tables.get("table2_pipeline")) + ablation_checks(tables.get("table4_ablation"))
            + size_checks(tables.get("table3_size")) + gap_checks(tables.get("table5_gap_only"))
            + drafted_checks(tables.get("drafted_gap_fill")) + adaptive_checks(tables.get("adaptive_stop"))
            + timing_checks(tables.get("table6_timing")))


def phase_checks(run, context) -> None:
    rows = check_rows(run.summary["tables"])
    run.add_table("table_checks", rows)
    failed = [r["claim"] for r in rows if r["met"] is False]
    if failed:
        run.note(f"table_checks: {len(failed)} of {len(rows)} claims not met on the {context.preset} preset: "
                 + "; ".join(failed))


__all__ = ["check_rows", "phase_checks"]
