"""Phase size: does a bigger gap-filler help? ar_small vs ar_medium on the same anchors.

Paired per prompt (evaluation set), from phase B's fills (filling in missing ones, see
fill.ensure_fills): alone and at every fraction and end rule, mean word F1 and accuracy
of both gap-fillers, the mean paired difference (medium - small) with a bootstrap CI,
Wilcoxon signed-rank p and Cohen's d (the paper's pooled sd). The paper's Table 3 (N=50,
Qwen2.5-0.5B vs 1.5B: alone 0.068/0.149, @10% 0.841/0.832, @25% 0.953/0.944) sits beside
ours on the alone and oracle rows; its 50 prompts are not identified, ours are the whole
evaluation set, so n differs.
"""

from __future__ import annotations

from dlmkit.experiments.inverse.fill import ALONE, RULES, pick, records_from_fills
from dlmkit.metrics.scoring import mean, mean_ci, not_reproduced
from dlmkit.stats import cohens_d, wilcoxon

SMALL, MEDIUM = "ar_small", "ar_medium"
PUBLISHED_TABLE3 = {None: (0.068, 0.149), 0.1: (0.841, 0.832), 0.25: (0.953, 0.944)}


def size_record(b_record: dict) -> dict:
    rows = []
    for fraction, rule in [(None, ALONE)] + [(f, r) for f in b_record["fractions"] for r in RULES]:
        small, medium = pick(b_record, SMALL, fraction, rule), pick(b_record, MEDIUM, fraction, rule)
        rows.append({"fraction": fraction, "rule": rule, "f1_small": small["f1"], "f1_medium": medium["f1"],
                     "correct_small": small["correct"], "correct_medium": medium["correct"]})
    return {"id": b_record["id"], "eval": b_record["eval"], "fractions": b_record["fractions"], "rows": rows}


def size_table(records: list[dict], fractions) -> list[dict]:
    out = []
    for fraction, rule in [(None, ALONE)] + [(f, r) for f in fractions for r in RULES]:
        rows = [row for r in records for row in r["rows"] if row["fraction"] == fraction and row["rule"] == rule]
        small, medium = [r["f1_small"] for r in rows], [r["f1_medium"] for r in rows]
        row = {"fraction": fraction, "end_rule": "ar_end" if rule == ALONE else rule, "n": len(rows),
               "f1_ar_small": mean(small), "f1_ar_medium": mean(medium),
               **mean_ci([m - s for s, m in zip(small, medium)], "f1_diff_medium_minus_small"),
               "p_wilcoxon": None, "cohens_d": None,
               "accuracy_ar_small": mean([float(r["correct_small"]) for r in rows]),
               "accuracy_ar_medium": mean([float(r["correct_medium"]) for r in rows])}
        if len(rows) >= 2:
            row.update(p_wilcoxon=wilcoxon(medium, small)["p_value"], cohens_d=cohens_d(medium, small)["d"])
        published = PUBLISHED_TABLE3.get(None if fraction is None else round(fraction, 4)) \
            if rule in (ALONE, "oracle") else None
        row["published_f1_ar_small"], row["published_f1_ar_medium"] = published or (None, None)
        out.append(row)
    return out


def phase_size(run, context) -> None:
    evaluation = records_from_fills(run, context, "size", "table3_size", lambda a, b: size_record(b))
    if evaluation is None:
        return
    rows = size_table(evaluation, context.fractions)
    run.add_table("table3_size", rows)
    misses = not_reproduced(rows, {"f1_ar_small": "published_f1_ar_small", "f1_ar_medium": "published_f1_ar_medium"},
                            lambda r: f"@{r['fraction']} ({r['end_rule']})")
    if misses:
        run.note(f"table3_size ({context.preset} preset, n={len(evaluation)}; published N=50) does not reproduce: "
                 + "; ".join(misses))


__all__ = ["phase_size", "size_record", "size_table"]
