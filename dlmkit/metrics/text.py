"""Text overlap metrics of inverse speculation.

Words are `text.lower().split()`: lowercase, split on whitespace, punctuation kept ("end."
and "end" are different words), exactly as the paper's word F1.

  word_f1            set-based: P = |W(pred) & W(ref)| / |W(pred)|, R = ... / |W(ref)|,
                     F1 = 2PR / (P + R); 0 when either side has no words or nothing overlaps.
                     Repeats count once, order does not matter.
  rouge_l_f          order-aware: LCS of the two word sequences (repeats count),
                     P = LCS / len(pred), R = LCS / len(ref), F = 2PR / (P + R) (ROUGE-L, beta 1).
  gap_token_accuracy over the reference's non-anchor positions G = {p < len(ref): p not an
                     anchor}: share of p in G with filled[p] == ref[p] (a position the filled
                     output does not reach counts as wrong); NaN when G is empty.
  gap_word_f1        word_f1 between the gap text of the filled output and of the reference:
                     each side keeps only its tokens at positions in G (same G as above), each
                     maximal run of consecutive gap positions is decoded on its own, and runs
                     are joined by one space (so words from different gaps never fuse). The
                     anchors, identical on both sides by construction, cannot inflate it.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence


def words(text: str) -> list[str]:
    return text.lower().split()


def word_f1(prediction: str, reference: str) -> float:
    """The paper's set-based bag-of-words F1."""
    pred, ref = set(words(prediction)), set(words(reference))
    if not pred or not ref:
        return 0.0
    common = len(pred & ref)
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Longest common subsequence length (O(len(a) * len(b)) time, O(len(b)) memory)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0  # row[j - 1] of the previous row
        for j, y in enumerate(b, start=1):
            above = row[j]
            row[j] = diagonal + 1 if x == y else max(row[j], row[j - 1])
            diagonal = above
    return row[-1]


def rouge_l_f(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure over the same words as word_f1."""
    pred, ref = words(prediction), words(reference)
    if not pred or not ref:
        return 0.0
    lcs = lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def gap_positions(reference_length: int, anchor_positions: Iterable[int]) -> list[int]:
    """G: the reference's positions that are not anchors."""
    anchored = set(int(p) for p in anchor_positions)
    return [p for p in range(reference_length) if p not in anchored]


def gap_token_accuracy(filled: Sequence[int], reference: Sequence[int], anchor_positions: Iterable[int]) -> float:
    """Share of the reference's non-anchor positions where the filled token equals the reference's."""
    gaps = gap_positions(len(reference), anchor_positions)
    if not gaps:
        return float("nan")
    return sum(1 for p in gaps if p < len(filled) and int(filled[p]) == int(reference[p])) / len(gaps)


def _gap_text(tokens: Sequence[int], gaps: list[int], decode: Callable[[list[int]], str]) -> str:
    present = [p for p in gaps if p < len(tokens)]
    pieces, run = [], []
    for p in present:
        if run and p != run[-1] + 1:
            pieces.append(decode([int(tokens[q]) for q in run]))
            run = []
        run.append(p)
    if run:
        pieces.append(decode([int(tokens[q]) for q in run]))
    return " ".join(pieces)


def gap_word_f1(filled: Sequence[int], reference: Sequence[int], anchor_positions: Iterable[int],
                decode: Callable[[list[int]], str]) -> float:
    """word_f1 restricted to the reference's non-anchor positions (see the module docstring).
    `decode` turns token ids into text, e.g. `lambda ids: tokenizer.decode(ids, skip_special_tokens=True)`."""
    gaps = gap_positions(len(reference), anchor_positions)
    return word_f1(_gap_text(filled, gaps, decode), _gap_text(reference, gaps, decode))


__all__ = ["gap_positions", "gap_token_accuracy", "gap_word_f1", "lcs_length", "rouge_l_f", "word_f1", "words"]
