#!/usr/bin/env python
"""Readings of a tiny run's per-prompt records that the README's inverse diagnosis cites.

From a run directory of `run_full_suite.py` on the tiny preset (A.jsonl, B.jsonl, gap.jsonl),
over the evaluation set (hard, medium and mixed strata):

  town_copies   per gap-filler alone, in ARC-like and GSM8K-like answers (which name 2-4
                towns): "the town of X" slots, and the share whose X is a town the prompt asks
                about (the rest are other towns the model learned by heart)
  gap_by_task   per task and fraction, committed_end rule: mean gap-only F1 of ar_small with
                the anchors minus alone (phase gap's per-prompt rows), and how many prompts gain
  code_constant Dream's code answers: the constant bound first is the town's bell count;
                the answer passes its tests; it passes once every use of k, m or c is renamed
                to the name bound first (what a sampler keeping one name would give)
  gap_filler_code  ar_small's code answers alone: the right constant, passing the run's tests,
                passing revision 2's four-input tests (which some wrong constants pass)
  asked_attribute  Dream's answers to the single-fact multiple-choice prompts (all strata, not
                only the evaluation set), per asked attribute: the share whose first value is
                one of that attribute's (`tinyworld2.stated_attribute`), not another's
  code_form     Dream's code answers per function family: passing, and whether the body's first
                word (after the constant's binding) is the family's ("for" in first_over_bells,
                "return" in most), with ar_small's mean gap-only F1 gain at the lowest fraction
  gap_without_wrong_body  gap-only F1 of ar_small with the anchors minus alone, committed_end
                rule, per fraction, with its Wilcoxon p: over the evaluation set, and over it
                without the code prompts whose Dream body starts with another family's word

    python benchmarks/run_records.py [--run results/run_full_suite/tiny] [--revision 5]

`--revision` is the tiny-world revision the run's prompts come from (`presets.TINY_REVISION`
by default); revision 2's run is in the history: `git archive e96ef3e results/run_full_suite/tiny
| tar -x -C /tmp/rev2`, then `--run /tmp/rev2/results/run_full_suite/tiny --revision 2`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TOWN = re.compile(r"town of ([A-Z][a-z]+)")
BINDING = re.compile(r"\n    ([kmc]) = (-?\d+)")


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise SystemExit(f"no {path}; pass --run DIR of a run_full_suite.py run with phases A, B and gap done")
    return [json.loads(line) for line in path.open()]


def town_copies(b_records: list[dict], items: dict) -> list[dict]:
    counts: dict[str, list[int]] = {}
    for record in b_records:
        if not record["eval"] or record["task"] not in ("arc", "gsm8k"):
            continue
        asked = {town for town, _ in items[record["id"]]["facts"]}
        for fill in record["fills"]:
            if fill["rule"] != "alone":
                continue
            named = TOWN.findall(fill["text"])
            c = counts.setdefault(fill["model"], [0, 0])
            c[0] += len(named)
            c[1] += sum(name in asked for name in named)
    return [{"model": m, "town_slots": n, "prompt_towns_named": k / n if n else None} for m, (n, k) in counts.items()]


def _gap_pairs(gap_records: list[dict], leave_out=frozenset()):
    """(id, fraction, gap F1 with the anchors, alone) of every evaluation prompt with a gap left,
    committed_end rule (no gap at a fraction, NaN or missing: the anchors cover the answer)."""
    for record in gap_records:
        if not record["eval"] or record["id"] in leave_out:
            continue
        for row in record["rows"]:
            f1, alone = row.get("gap_f1"), row.get("gap_f1_alone")
            if row["rule"] == "committed_end" and f1 is not None and alone is not None and f1 == f1 and alone == alone:
                yield record["id"], row["fraction"], f1, alone


def gap_by_task(gap_records: list[dict]) -> list[dict]:
    acc: dict[tuple, list[float]] = {}
    for prompt_id, fraction, f1, alone in _gap_pairs(gap_records):
        acc.setdefault((prompt_id.split("-")[1], fraction), []).append(f1 - alone)
    return [{"task": task, "fraction": fraction, "prompts_with_a_gap": len(d), "gap_f1_gain": sum(d) / len(d),
             "prompts_gaining": sum(x > 0 for x in d)} for (task, fraction), d in sorted(acc.items())]


def unify_names(text: str) -> str | None:
    """The answer with every use of k, m or c after the first binding renamed to its name."""
    m = BINDING.search(text)
    if not m:
        return None
    return text[:m.end()] + re.sub(r"\b[kmc]\b", m.group(1), text[m.end():])


def _constant_right_and_passes(item: dict, text: str) -> tuple[bool, bool]:
    """Whether a code answer binds the item's bell count first, and whether it passes its tests."""
    from dlmkit.metrics.scoring import is_correct

    truth = BINDING.search("\n" + item["canonical_solution"]).group(2)
    m = BINDING.search(text)
    return bool(m) and m.group(2) == truth, is_correct(item, text)


def code_constant(a_records: list[dict], items: dict) -> dict:
    from dlmkit.metrics.scoring import is_correct

    rows = [r for r in a_records if r["task"] == "humaneval" and r["difficulty"] == "mixed"]
    right = passes = unified = 0
    for record in rows:
        item = items[record["id"]]
        is_right, does_pass = _constant_right_and_passes(item, record["text"])
        right += is_right
        passes += does_pass
        one = unify_names(record["text"])
        unified += one is not None and is_correct(item, one)
    return {"prompts": len(rows), "constant_right": right, "passes": passes, "passes_with_one_name": unified}


def gap_filler_code(b_records: list[dict], items: dict, items_revision2: dict, model: str = "ar_small") -> dict:
    """A gap-filler's code answers alone: the right constant, passing this revision's tests, and
    passing revision 2's four-input tests (same prompts; a body is scored after the prompt)."""
    from dlmkit.metrics.scoring import is_correct

    n = right = passes = passes_old = 0
    for record in b_records:
        if record["task"] != "humaneval" or record["difficulty"] != "mixed":
            continue
        fill = next(f for f in record["fills"] if f["model"] == model and f["rule"] == "alone")
        item, old = items[record["id"]], items_revision2[record["id"]]
        is_right, does_pass = _constant_right_and_passes(item, fill["text"])
        n += 1
        right += is_right
        passes += does_pass
        passes_old += is_correct({**old, "id": old["id"] + "/revision-2-tests"}, fill["text"])
    return {"model": model, "prompts": n, "constant_right": right, "passes": passes,
            "passes_revision_2_tests": passes_old}


def asked_attribute(a_records: list[dict], items: dict) -> list[dict]:
    from dlmkit.data.tinyworld2 import stated_attribute

    counts: dict[str, list[int]] = {}
    for record in a_records:
        item = items[record["id"]]
        if item["task"] not in ("mmlu", "arc") or len(item["facts"]) != 1:
            continue
        asked = item["facts"][0][1]
        c = counts.setdefault(asked, [0, 0])
        c[0] += 1
        c[1] += stated_attribute(record["text"]) == asked
    rows = [{"attribute": a, "prompts": n, "states_it": k / n} for a, (n, k) in sorted(counts.items())]
    total = sum(n for n, _ in counts.values())
    return rows + [{"attribute": "all", "prompts": total,
                    "states_it": sum(k for _, k in counts.values()) / total if total else None}]


def body_first_word(text: str) -> str | None:
    """The first word of a code answer's line after its constant's binding ("for", "return")."""
    m = BINDING.search(text)
    rest = re.match(r"\n\s*(\w+)", text[m.end():]) if m else None
    return rest.group(1) if rest else None


def _family(item: dict) -> str:
    return item["entry_point"].rsplit("_", 1)[0]  # first_over_bells_momber -> first_over_bells


def wrong_body(a_records: list[dict], items: dict) -> set[str]:
    """Ids of code answers whose body starts with another word than the item's own body."""
    return {r["id"] for r in a_records if r["task"] == "humaneval"
            and body_first_word(r["text"]) != body_first_word("\n" + items[r["id"]]["canonical_solution"])}


def _gap_gains(gap_records: list[dict], fraction: float, leave_out=frozenset()) -> dict[str, tuple[float, float]]:
    """{id: (gap F1 with the anchors, alone)} at one fraction (`_gap_pairs`)."""
    return {i: (f1, alone) for i, f, f1, alone in _gap_pairs(gap_records, leave_out) if f == fraction}


def code_form(a_records: list[dict], gap_records: list[dict], items: dict) -> list[dict]:
    from dlmkit.metrics.scoring import is_correct

    fraction = min(f for r in gap_records for f in r["fractions"])
    gains = _gap_gains(gap_records, fraction)
    wrong = wrong_body(a_records, items)
    rows: dict[str, dict] = {}
    for record in a_records:
        if record["task"] != "humaneval" or record["difficulty"] != "mixed":
            continue
        item = items[record["id"]]
        row = rows.setdefault(_family(item), {"family": _family(item), "prompts": 0, "passes": 0,
                                              "body_starts_right": 0, "gains": []})
        row["prompts"] += 1
        row["passes"] += is_correct(item, record["text"])
        row["body_starts_right"] += record["id"] not in wrong
        if record["id"] in gains:
            row["gains"].append(gains[record["id"]][0] - gains[record["id"]][1])
    return [{**{k: v for k, v in row.items() if k != "gains"}, "fraction": fraction,
             "gap_f1_gain": sum(row["gains"]) / len(row["gains"]) if row["gains"] else None}
            for _, row in sorted(rows.items())]


def gap_without_wrong_body(a_records: list[dict], gap_records: list[dict], items: dict) -> list[dict]:
    from dlmkit.stats import wilcoxon

    wrong = wrong_body(a_records, items)
    out = []
    for fraction in sorted({f for r in gap_records for f in r["fractions"]}):
        for name, leave_out in (("evaluation set", set()), ("without wrong code bodies", wrong)):
            pairs = list(_gap_gains(gap_records, fraction, leave_out).values())
            f1, alone = [p[0] for p in pairs], [p[1] for p in pairs]
            out.append({"fraction": fraction, "prompts": name, "n": len(pairs),
                        "gap_f1_gain": (sum(f1) - sum(alone)) / len(pairs) if pairs else None,
                        "wilcoxon_p": wilcoxon(f1, alone)["p_value"] if len(pairs) >= 2 else None})
    return out


def main(argv=None) -> int:
    from dlmkit.data.benchmarks import tiny_prompts
    from dlmkit.data.tinyworld2 import REVISIONS
    from dlmkit.presets import TINY_REVISION
    from dlmkit.results import markdown_table

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("results/run_full_suite/tiny"))
    parser.add_argument("--revision", type=int, choices=REVISIONS, default=TINY_REVISION["dlm"])
    args = parser.parse_args(argv)
    items = {item["id"]: item for item in tiny_prompts(revision=args.revision)}
    a_records, b_records, gap_records = (_jsonl(args.run / name) for name in ("A.jsonl", "B.jsonl", "gap.jsonl"))
    print("town_copies\n" + markdown_table(town_copies(b_records, items)))
    print("\ngap_by_task\n" + markdown_table(gap_by_task(gap_records)))
    print("\ncode_constant\n" + markdown_table([code_constant(a_records, items)]))
    items2 = {item["id"]: item for item in tiny_prompts(revision=2)}
    print("\ngap_filler_code\n" + markdown_table([gap_filler_code(b_records, items, items2)]))
    print("\nasked_attribute\n" + markdown_table(asked_attribute(a_records, items)))
    print("\ncode_form\n" + markdown_table(code_form(a_records, gap_records, items)))
    print("\ngap_without_wrong_body\n" + markdown_table(gap_without_wrong_body(a_records, gap_records, items)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
