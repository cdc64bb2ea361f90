"""Phase gap: how good are the AR's own tokens, with the anchors taken out of the score?

Word F1 over the whole answer credits the anchors, which are Dream's tokens by construction.
Over G, the reference answer's positions < gen_len that are not anchors, we score only what
the AR wrote (dlmkit.metrics.text):
  gap word F1        word F1 between the gap text of the filled answer and of Dream's answer
                     (each maximal run of gap positions decoded on its own)
  gap token accuracy share of G where the filled token equals Dream's token
and the same two numbers for the AR's answer alone at the same positions G: does the AR
fill a gap better when it sees the anchors around it? Spearman's rho between coverage and
gap F1 asks whether more anchors make the remaining gaps easier (the paper: rho = -0.037,
no). Prompts whose G is empty (every answer position anchored, or an empty answer) have no
gap score and are left out of n.

Reads phase B's fills of ar_small (filling in missing ones, see fill.ensure_fills);
gap.jsonl keeps the per-prompt numbers. The published Table 5 numbers sit on the 10% oracle
row (the paper reports one setting; we assume its default, 10% with the end marker).
"""

from __future__ import annotations

from dlmkit.anchors import Anchors
from dlmkit.metrics.text import gap_token_accuracy, gap_word_f1
from dlmkit.experiments.inverse.fill import ALONE, RULES, anchors_for, pick, records_from_fills
from dlmkit.metrics.scoring import mean, mean_ci, not_reproduced
from dlmkit.stats import cohens_d, spearman, wilcoxon

ROLE = "ar_small"
PUBLISHED_TABLE5 = {"gap_f1": 0.475, "gap_f1_alone": 0.231, "rho": -0.037}


def gap_scores(context, a_record: dict, b_record: dict) -> dict:
    """Per fraction and end rule: gap F1 and gap token accuracy of the fill and of the AR alone."""
    gen_len = a_record["gen_len"]
    reference = a_record["tokens"][:gen_len]
    alone = pick(b_record, ROLE, None, ALONE)["tokens"]
    rows = []
    for fraction in b_record["fractions"]:
        answer: Anchors = anchors_for(a_record, fraction, context.dream.steps).truncated(gen_len)
        gaps = gen_len - len(answer)
        for rule in RULES:
            filled = pick(b_record, ROLE, fraction, rule)["tokens"]
            row = {"fraction": fraction, "rule": rule, "coverage": answer.coverage, "gap_positions": gaps}
            if gaps:
                row.update(gap_f1=gap_word_f1(filled, reference, answer.positions, context.decode),
                           gap_token_acc=gap_token_accuracy(filled, reference, answer.positions),
                           gap_f1_alone=gap_word_f1(alone, reference, answer.positions, context.decode),
                           gap_token_acc_alone=gap_token_accuracy(alone, reference, answer.positions))
            rows.append(row)
    return {"id": a_record["id"], "eval": b_record["eval"], "fractions": b_record["fractions"], "rows": rows}


def gap_table(records: list[dict], fractions) -> list[dict]:
    out = []
    for fraction in fractions:
        for rule in RULES:
            rows = [row for r in records for row in r["rows"]
                    if row["fraction"] == fraction and row["rule"] == rule and row["gap_positions"]]
            f1, alone = [r["gap_f1"] for r in rows], [r["gap_f1_alone"] for r in rows]
            row = {"model": ROLE, "fraction": fraction, "end_rule": rule, "n": len(rows),
                   **mean_ci(f1, "gap_f1"), "gap_f1_alone": mean(alone),
                   "gap_token_acc": mean([r["gap_token_acc"] for r in rows]),
                   "gap_token_acc_alone": mean([r["gap_token_acc_alone"] for r in rows]),
                   "coverage": mean([r["coverage"] for r in rows]),
                   "cohens_d_vs_ar_alone": None, "wilcoxon_p_vs_ar_alone": None,
                   "spearman_coverage_vs_gap_f1": None, "spearman_p": None}
            if len(rows) >= 2:
                rho = spearman([r["coverage"] for r in rows], f1)
                row.update(cohens_d_vs_ar_alone=cohens_d(f1, alone)["d"],
                           wilcoxon_p_vs_ar_alone=wilcoxon(f1, alone)["p_value"],
                           spearman_coverage_vs_gap_f1=rho["rho"], spearman_p=rho["p_value"])
            published = PUBLISHED_TABLE5 if (round(fraction, 4), rule) == (0.1, "oracle") else {}
            row.update(published_gap_f1=published.get("gap_f1"), published_gap_f1_alone=published.get("gap_f1_alone"),
                       published_spearman=published.get("rho"))
            out.append(row)
    return out


def phase_gap(run, context) -> None:
    evaluation = records_from_fills(run, context, "gap", "table5_gap_only", lambda a, b: gap_scores(context, a, b))
    if evaluation is None:
        return
    rows = gap_table(evaluation, context.fractions)
    run.add_table("table5_gap_only", rows)
    misses = not_reproduced(rows, {"gap_f1": "published_gap_f1", "gap_f1_alone": "published_gap_f1_alone",
                                   "spearman_coverage_vs_gap_f1": "published_spearman"},
                            lambda r: f"@{r['fraction']} ({r['end_rule']})", tolerance=0.1)
    if misses:
        run.note(f"table5_gap_only ({context.preset} preset, n={rows[0]['n']}) does not reproduce: " + "; ".join(misses))


__all__ = ["gap_scores", "gap_table", "phase_gap"]
