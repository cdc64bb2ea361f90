"""What the anchors carry, per task and fraction: are they content, and does the AR know them already?

For every prompt of the evaluation set and every fraction, the anchors Dream has committed
(phase A's commit steps) fall into three kinds:
  content   answer positions (< gen_len) whose token overlaps a span of fact-base content in
            Dream's answer (`tinyworld2.content_spans`: attribute values, town names, numbers,
            the letter in multiple choice; numbers in GSM8K and code)
  template  the other answer positions (phrasing, punctuation, copies of the prompt)
  end       positions past the answer (Dream's trailing end-of-text)
and, for each gap-filler, the share of answer anchors whose token equals the token that
gap-filler writes at the same position alone (phase B's `alone` fill): an anchor the AR
would have written anyway carries nothing. The paper's premise is that the early anchors
are content the small AR lacks: a high content share and a low share equal to ar_small
alone, while for the control gap-filler (which knows what Dream knows) most answer anchors
are what it writes alone.

table_anchor_content: one row per task (and "all") and fraction.
"""

from __future__ import annotations

from typing import Callable

from dlmkit.anchors import anchors_at_fraction
from dlmkit.data.tinyworld2 import content_flags
from dlmkit.metrics.scoring import mean


def answer_content_flags(context, record: dict) -> list[bool]:
    """Per answer position (< gen_len) of a phase A record: whether its token is content."""
    return content_flags(record["task"], [context.decode([t]) for t in record["tokens"][:record["gen_len"]]])


def anchor_kinds(context, record: dict, flags: list[bool], fraction: float) -> tuple[list[int], list[int], int]:
    """(answer anchor positions, of them the content ones, anchors past the answer) of a phase A
    record, given its `answer_content_flags`."""
    anchors = anchors_at_fraction(record["commit_step"], record["tokens"], fraction, context.dream.steps)
    answer = [p for p in anchors.positions if p < record["gen_len"]]
    return answer, [p for p in answer if flags[p]], len(anchors.positions) - len(answer)


def carry_rows(context, a_records: dict, b_records: list[dict], models,
               alone_tokens: Callable[[dict, str], list[int]]) -> list[dict]:
    """alone_tokens(b_record, model): the tokens that gap-filler wrote alone for that prompt."""
    flags = {b["id"]: answer_content_flags(context, a_records[b["id"]]) for b in b_records}
    rows = []
    tasks = ["all"] + list(dict.fromkeys(r["task"] for r in b_records))
    for task in tasks:
        mine = [r for r in b_records if task == "all" or r["task"] == task]
        for fraction in context.fractions:
            counts = {"answer": 0, "content": 0, "end": 0}
            equal = {m: 0 for m in models}
            for b in mine:
                a = a_records[b["id"]]
                answer, content, end = anchor_kinds(context, a, flags[b["id"]], fraction)
                counts["answer"] += len(answer)
                counts["content"] += len(content)
                counts["end"] += end
                for m in models:
                    alone = alone_tokens(b, m)
                    equal[m] += sum(1 for p in answer if p < len(alone) and alone[p] == a["tokens"][p])
            total = counts["answer"] + counts["end"]
            row = {"task": task, "fraction": fraction, "n": len(mine),
                   "anchors_per_prompt": total / max(len(mine), 1),
                   "answer_anchors_per_prompt": counts["answer"] / max(len(mine), 1),
                   "content_share": counts["content"] / counts["answer"] if counts["answer"] else None,
                   "template_share": 1 - counts["content"] / counts["answer"] if counts["answer"] else None,
                   "end_share_of_all": counts["end"] / total if total else None}
            for m in models:
                row[f"equal_to_{m}_alone"] = equal[m] / counts["answer"] if counts["answer"] else None
            rows.append(row)
    return rows


def content_commit_note(context, a_records: dict, b_records: list[dict]) -> str:
    """Mean commit step of content and template answer tokens, per task: which Dream commits first."""
    parts = []
    for task in dict.fromkeys(r["task"] for r in b_records):
        content, template = [], []
        for b in (r for r in b_records if r["task"] == task):
            a = a_records[b["id"]]
            for p, flag in enumerate(answer_content_flags(context, a)):
                (content if flag else template).append(a["commit_step"][p])
        parts.append(f"{task} content {mean(content):.1f} vs template {mean(template):.1f}"
                     if content and template else f"{task}: no content tokens")
    return "mean commit step of Dream's answer tokens (of 128): " + "; ".join(parts)
