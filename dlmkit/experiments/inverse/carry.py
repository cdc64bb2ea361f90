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

Where a gap-filler's F1 gain comes from (`gained_words`, table_gain_sources). Word F1 counts
distinct words (`metrics.text.words`), so the gain of "with anchors" over "alone" is the
distinct words of Dream's answer that the anchored output has and the lone one lacks (and
those it lost). Each gained word is one of
  right    content (as above: values, names, numbers, the letter) that the item's reference
           answer also contains: right content the gap-filler did not write alone
  wrong    content the reference answer does not contain: Dream's own mistake, which the
           anchored output now repeats (F1 is measured against Dream's answer, so adopting its
           mistakes raises F1)
  wording  any other word: phrasing, connectives, punctuation-bearing template words
The control gap-filler knows the facts, so its gain should be little but letters it could
not look up and names it miscopied; wording and Dream's mistakes show what else anchors fix.
table_gain_sources: one row per model, fraction (the committed_end rule) and task (and
"all"), means per prompt.
"""

from __future__ import annotations

import re
from typing import Callable

from dlmkit.anchors import anchors_at_fraction
from dlmkit.data.tinyworld2 import content_flags
from dlmkit.metrics.scoring import mean
from dlmkit.metrics.text import words

GAIN_KINDS = ("right", "wrong", "wording")


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


def _word_kinds(task: str, text: str) -> dict[str, bool]:
    """Distinct words of `text` (as word F1 counts them) -> whether any occurrence overlaps content
    (`content_flags` over the text cut into its words, each with the whitespace before it)."""
    pieces = re.findall(r"\s*\S+", text)
    kinds: dict[str, bool] = {}
    for piece, flag in zip(pieces, content_flags(task, pieces)):
        word = piece.strip().lower()
        kinds[word] = kinds.get(word, False) or flag
    return kinds


def _gained(dream: dict[str, bool], reference: set[str] | None, alone_text: str, anchored_text: str) -> dict:
    """gained_words over Dream's `_word_kinds` and the reference's words (None: no reference)."""
    alone, anchored = set(words(alone_text)), set(words(anchored_text))
    gained = [(word, content) for word, content in dream.items() if word in anchored and word not in alone]
    content = [word for word, is_content in gained if is_content]
    wrong = None if reference is None else sum(1 for word in content if word not in reference)
    return {"right": None if wrong is None else len(content) - wrong, "wrong": wrong,
            "wording": len(gained) - len(content), "content": len(content),
            "lost": sum(1 for word in dream if word in alone and word not in anchored)}


def gained_words(task: str, dream_text: str, reference_text: str | None, alone_text: str, anchored_text: str) -> dict:
    """Counts of the distinct words of Dream's answer that `anchored_text` has and `alone_text`
    lacks, by kind (GAIN_KINDS; right and wrong are None without a reference text, and
    `content` is their sum), and `lost`: Dream's words the lone output had and the anchored one lacks."""
    reference = set(words(reference_text)) if reference_text is not None else None
    return _gained(_word_kinds(task, dream_text), reference, alone_text, anchored_text)


def gain_rows(context, a_records: dict, b_records: list[dict], models, fill_of: Callable[[dict, str, float | None], dict],
              references: dict[str, str | None]) -> list[dict]:
    """table_gain_sources. fill_of(b_record, model, fraction): that gap-filler's phase B fill (its
    "text" and "f1") with anchors at the fraction under committed_end, or alone (fraction None);
    references: item id -> the item's reference answer (None where it has none: the right /
    wrong split is then None for every group holding that item)."""
    # per prompt, once: Dream's words and their kinds, the reference's words
    dream = {b["id"]: _word_kinds(b["task"], a_records[b["id"]]["text"]) for b in b_records}
    reference = {b["id"]: set(words(references[b["id"]])) if references.get(b["id"]) is not None else None
                 for b in b_records}
    rows = []
    for task in ["all"] + list(dict.fromkeys(r["task"] for r in b_records)):
        mine = [r for r in b_records if task == "all" or r["task"] == task]
        checked = all(reference[b["id"]] is not None for b in mine)
        wrong_in_dream = [sum(1 for w, c in dream[b["id"]].items() if c and w not in reference[b["id"]])
                          for b in mine if reference[b["id"]] is not None]
        for model in models:
            for fraction in context.fractions:
                got = [_gained(dream[b["id"]], reference[b["id"]], fill_of(b, model, None)["text"],
                               fill_of(b, model, fraction)["text"]) for b in mine]
                row = {"model": model, "fraction": fraction, "task": task, "n": len(mine),
                       "f1_gain": mean([fill_of(b, model, fraction)["f1"] - fill_of(b, model, None)["f1"] for b in mine])}
                for kind in ("content", *GAIN_KINDS, "lost"):
                    values = [g[kind] for g in got]
                    name = "lost_words" if kind == "lost" else f"gained_{kind}_words"
                    row[name] = mean(values) if kind not in ("right", "wrong") or checked else None
                row["dream_content_words_not_in_reference"] = mean(wrong_in_dream) if checked else None
                rows.append(row)
    return rows


def gain_note(rows: list[dict], model: str = "ar_control") -> str:
    """Where the control's F1 gain comes from, at every fraction (the "all" rows)."""
    def split(r):
        if r["gained_right_words"] is None:
            return f"{r['gained_content_words']:.2f} content (no reference answers to check them against)"
        return f"{r['gained_right_words']:.2f} right content, {r['gained_wrong_words']:.2f} of Dream's mistakes"

    parts = [f"@{r['fraction']:g} {r['f1_gain']:+.3f} F1; words gained per prompt: {split(r)}, "
             f"{r['gained_wording_words']:.2f} wording; {r['lost_words']:.2f} lost"
             for r in rows if r["model"] == model and r["task"] == "all" and r["f1_gain"] is not None]
    return f"table_gain_sources: {model} " + "; ".join(parts) if parts else f"table_gain_sources: no {model} rows"
