"""Carry tokens chosen in one tokenizer's answer into another tokenizer's positions.

The AR model's answer is a list of its token ids; the bridge picks some of them (the ones a
layer predicts confidently) and must place them on Dream's canvas, which counts positions
in Dream's tokens. Two cases:

  same vocabulary  every regular id of the AR tokenizer is the same token string for the
                   DLM (tiny preset: one shared tokenizer; paper: Qwen2.5 and Dream share
                   the Qwen2 vocabulary): positions and ids carry over unchanged.
  otherwise        go through text. Decode the AR answer and give each AR token its
                   character span; re-tokenize the text with the DLM tokenizer and give each
                   DLM token its span the same way; keep the DLM tokens whose span lies wholly
                   inside a stretch of text covered by chosen AR tokens. A DLM token that
                   straddles a chosen and an unchosen AR token is dropped: part of its text
                   was never predicted.

Spans come from decoding growing prefixes (the end of token k is len(decode(ids[:k+1]))),
which is exact for any tokenizer that decodes to the text, byte-level BPE included. A token
that ends inside a multi-byte character (its prefix does not decode to a prefix of the
text) shares one span with the tokens up to the one that completes the character; that
span counts as chosen only if all of them are.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlmkit.errors import UserError


def _decode(tokenizer, ids) -> str:
    return tokenizer.decode([int(i) for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)


def token_spans(tokenizer, ids) -> tuple[str, list[tuple[int, int]]]:
    """(text, [(start, end) per token]) with text = decode(ids); tokens fused by a split
    multi-byte character all get the span of the fused group."""
    ids = [int(i) for i in ids]
    text = _decode(tokenizer, ids)
    spans: list[tuple[int, int]] = []
    start, pending = 0, 0  # pending: tokens waiting for the one that completes their character
    for k in range(len(ids)):
        prefix = _decode(tokenizer, ids[:k + 1])
        if not text.startswith(prefix):  # ends inside a character the next token completes
            pending += 1
            continue
        end = len(prefix)
        spans += [(start, end)] * (pending + 1)
        start, pending = end, 0
    spans += [(start, len(text))] * pending
    return text, spans


def same_vocabulary(tokenizer_a, tokenizer_b) -> bool:
    """True when every regular (non-added) id of `a` is the same token string in `b`."""
    if tokenizer_a is tokenizer_b:
        return True
    vocab_b = {i: t for t, i in tokenizer_b.get_vocab().items()}
    added = set(getattr(tokenizer_a, "added_tokens_decoder", {}) or {})
    return all(vocab_b.get(i) == t for t, i in tokenizer_a.get_vocab().items() if i not in added)


@dataclass(frozen=True)
class Translation:
    """Chosen tokens in the target tokenizer: {generation position: target token id}."""

    tokens: dict[int, int]
    identity: bool  # positions and ids carried over unchanged
    target_length: int  # length of the whole answer in target tokens


def _covered(spans, chosen) -> list[tuple[int, int]]:
    """Merged character intervals covered by chosen tokens (a fused group only if all chosen)."""
    groups: dict[tuple[int, int], bool] = {}
    for k, span in enumerate(spans):
        groups[span] = groups.get(span, True) and k in chosen
    intervals: list[list[int]] = []
    for (s, e), ok in sorted(groups.items()):
        if not ok or e <= s:
            continue
        if intervals and s <= intervals[-1][1]:
            intervals[-1][1] = max(intervals[-1][1], e)
        else:
            intervals.append([s, e])
    return [(s, e) for s, e in intervals]


def translate_tokens(answer_ids, chosen_positions, source_tokenizer, target_tokenizer,
                     identity: bool | None = None) -> Translation:
    """Map the chosen positions of a source-tokenizer answer onto target-tokenizer positions.

    answer_ids: the whole answer in source ids (generation-relative, position 0 first).
    chosen_positions: positions of answer_ids to carry over.
    identity: skip the vocabulary comparison when the caller already knows the answer.
    """
    answer_ids = [int(i) for i in answer_ids]
    chosen = {int(p) for p in chosen_positions if 0 <= int(p) < len(answer_ids)}
    if identity is None:
        identity = same_vocabulary(source_tokenizer, target_tokenizer)
    if identity:
        return Translation({p: answer_ids[p] for p in sorted(chosen)}, True, len(answer_ids))
    text, source_spans = token_spans(source_tokenizer, answer_ids)
    target_ids = target_tokenizer.encode(text, add_special_tokens=False)
    target_text, target_spans = token_spans(target_tokenizer, target_ids)
    if target_text != text:
        raise UserError("the DLM tokenizer does not decode the AR answer back to the same text "
                        f"({text[:40]!r} became {target_text[:40]!r}), so positions cannot be mapped; "
                        "pass a DLM whose tokenizer round-trips text")
    intervals = _covered(source_spans, chosen)
    tokens = {}
    for q, (s, e) in enumerate(target_spans):
        if e > s and any(lo <= s and e <= hi for lo, hi in intervals):
            tokens[q] = int(target_ids[q])
    return Translation(tokens, False, len(target_ids))


__all__ = ["Translation", "same_vocabulary", "token_spans", "translate_tokens"]
