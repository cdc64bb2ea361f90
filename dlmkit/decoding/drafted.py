"""Drafted gap filling: forced decoding whose gaps come with free drafts, verified greedily.

When the DLM stops after c of its steps, its last forward has already produced a
distribution at every position it left masked; the argmax there is a draft of the gap that
costs the cloud nothing more. The AR checks drafts the way greedy speculative decoding does
(Leviathan et al. 2023 at temperature 0; Stern et al. 2018's blockwise check):

    output[p] = anchor[p]                       if p is an anchor
              = argmax_v P_AR(v | prompt, output[<p])   otherwise

is the forced decoder's definition (`forced.py`), and a draft d[p] at a gap changes nothing
in it: feed the pending tokens, then the longest run "d[p] (anchors after p) d[q] (anchors
after q) ..." that holds only drafts and anchors, in ONE forward. The logits after every fed
token are the AR's greedy choice for the next position *if everything before it is right*;
walking left to right,

    draft equal to the AR's greedy token  -> keep it, go on (its cache entry stays valid)
    draft differs                         -> emit the AR's token instead, drop the rest
    anchor                                -> emit it (forced, nothing to check)
    end of the run (a gap with no draft)  -> emit the AR's token there (the bonus token)

so every emitted token is exactly what the forced decoder emits at that position, and one
pass fills as many positions as the drafts get right in a row, plus one. End tokens follow
the same plan (`plan_end`): an AR greedy token that is an end token where the plan stops on
it ends the row whether a draft proposed it or not; before `no_end_before` end tokens are
masked out of the AR's argmax, so a drafted end there is simply rejected.

Batching as in forced.py: rows share one DynamicCache, chunks right-aligned behind padding
that the 2-D attention mask hides. After each pass the cache is cropped to the longest
valid chunk; a row that rejected earlier keeps its rejected slots (and the anchors fed after
them) as holes the same way: the mask hides them from then on and the position ids, which
count the row's real tokens, are reused by the tokens that replace them. Alone, a row never
keeps a hole. Ties between two
logits can break differently in different chunk shapes (float rounding), as in forced.py.

Cost: `forward_passes` counts sequential model calls; a row's passes are at most its gap
positions (every pass emits at least one AR token) and at best one pass per run of
correct drafts. `drafts_fed` / `drafts_accepted` count what was checked and kept.
"""

from __future__ import annotations

import time
from typing import Mapping

import torch

from dlmkit.decoding.forced import ForcedResult, _BatchCache, _prepare, _Row, greedy_token
from dlmkit.errors import UserError


class _DraftRow(_Row):
    """A forced-decoding row that also holds drafts for (some of) its gaps."""

    def __init__(self, prompt, plan, end_ids, drafts: dict[int, int], max_drafts: int | None = None):
        self.drafts = {p: t for p, t in drafts.items() if p not in plan.anchors and p < plan.limit}
        self.max_drafts = max_drafts
        self.drafts_fed = self.drafts_accepted = 0
        super().__init__(prompt, plan, end_ids)

    def speculation(self) -> list[tuple[int, int, bool]]:
        """(position, token, is_draft) from the current gap on: drafts and the anchors after
        them, up to the first gap without a draft (whose AR token the last slot's logits give),
        the limit, or a drafted end token that would end the row."""
        out, position, n = [], self.position, 0
        while position < self.plan.limit:
            if position in self.plan.anchors:
                out.append((position, self.plan.anchors[position], False))
            elif position in self.drafts and (self.max_drafts is None or n < self.max_drafts):
                n += 1
                token = self.drafts[position]
                out.append((position, token, True))
                if self.plan.stop_on_ar_end and token in self.end_ids:
                    break
            else:
                break
            position += 1
        return out

    def verify(self, logits: torch.Tensor, spec: list[tuple[int, int, bool]]) -> int:
        """Walk the speculated run with `logits` (one row per fed token of the run, the first
        predicting the current gap); emit what the forced decoder would. Returns how many
        speculated tokens stay valid in the cache."""
        kept = 0
        for k, (position, token, is_draft) in enumerate(spec):
            if not is_draft:  # an anchor after an accepted draft
                self.sequence.append(token)
                self.forced.append(True)
                kept += 1
                continue
            self.drafts_fed += 1
            choice = greedy_token(logits[k], position, self.plan, self.end_ids)
            if self.plan.stop_on_ar_end and choice in self.end_ids:
                self.done, self.reason = True, "ar_end"
                return kept
            if choice != token:
                self.sequence.append(choice)
                self.forced.append(False)
                self._append_anchor_run()
                return kept
            self.drafts_accepted += 1
            self.sequence.append(token)
            self.forced.append(False)
            kept += 1
        # every draft held: the position after the run gets the AR's own token (the bonus)
        self._append_anchor_run()
        if not self.done:
            self.accept(logits[len(spec)])
        return kept

    def result(self):
        row = super().result()
        row.drafts_fed, row.drafts_accepted = self.drafts_fed, self.drafts_accepted
        return row


def _draft_dicts(drafts, n: int) -> list[dict[int, int]]:
    if len(drafts) != n:
        raise UserError(f"got {len(drafts)} draft sets for {n} prompts; pass one per prompt ({{}} for none)")
    out = []
    for d in drafts:
        if hasattr(d, "as_dict"):
            d = d.as_dict()
        if not isinstance(d, Mapping):
            raise UserError("drafts must be an Anchors object or a {position: token_id} mapping per prompt")
        out.append({int(p): int(t) for p, t in d.items()})
    return out


@torch.inference_mode()
def drafted_forced_decode(model, prompts, anchors, drafts, *, max_new_tokens, rule: str = "committed_end",
                          gen_lens=None, end_token_ids=None, batch_size: int | None = None,
                          pad_token_id: int = 0, max_drafts: int | None = None) -> ForcedResult:
    """forced_decode's output (anchors forced, the AR's greedy token elsewhere) with the gaps'
    drafts verified in the same passes. Arguments as forced_decode, plus
    drafts: per prompt an `Anchors` or {generation position: token id} for any gap positions
        (positions that are anchors or past the row's end are ignored).
    max_drafts: drafts checked per pass at most (default: the whole run up to the next undrafted
        gap); fewer waste less compute on a long wrong run and cost a pass per run of that length.
    Returns a ForcedResult (decoder "drafted"); each row counts its drafts_fed and drafts_accepted.
    """
    prompt_lists, plans, end_ids = _prepare(model, prompts, anchors, max_new_tokens, rule, gen_lens, end_token_ids)
    draft_sets = _draft_dicts(drafts, len(prompt_lists))
    vocab = model.get_output_embeddings().weight.shape[0] if model.get_output_embeddings() is not None else None
    for i, d in enumerate(draft_sets):
        bad = [t for t in d.values() if vocab is not None and not 0 <= t < vocab]
        if bad:
            raise UserError(f"draft token id {bad[0]} (prompt {i}) is outside the AR's vocabulary of {vocab}; "
                            "the DLM and the AR must share a vocabulary")
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = batch_size or max(len(prompt_lists), 1)
    start = time.perf_counter()
    result = ForcedResult([], "drafted")
    for lo in range(0, len(prompt_lists), batch_size):
        rows = [_DraftRow(p, plan, end_ids, d, max_drafts) for p, plan, d in
                zip(prompt_lists[lo:lo + batch_size], plans[lo:lo + batch_size], draft_sets[lo:lo + batch_size])]
        _decode_batch(model, rows, pad_token_id, result)
        result.rows += [row.result() for row in rows]
    result.wall_time_s = time.perf_counter() - start
    return result


def _decode_batch(model, rows: list[_DraftRow], pad_token_id: int, result: ForcedResult) -> None:
    in_cache = [r for r in rows if not r.done]
    batch = _BatchCache(model, len(in_cache))

    while True:
        live = [i for i, r in enumerate(in_cache) if not r.done]
        if not live:
            return
        if len(live) < len(in_cache):
            batch.keep_rows(live)
            in_cache = [in_cache[i] for i in live]

        # Each row: the emitted tokens the cache lacks, then its speculated run.
        pending = [r.sequence[r.fed:] for r in in_cache]
        specs = [r.speculation() for r in in_cache]
        chunks = [p + [t for _, t, _ in s] for p, s in zip(pending, specs)]
        logits = batch.feed(chunks, [r.fed for r in in_cache], pad_token_id, None, result)
        total, width = batch.seen.shape[1], logits.shape[1]
        ends = []  # per row: the end (exclusive, in this chunk) of the slots that stay valid
        for i, (r, p, s) in enumerate(zip(in_cache, pending, specs)):
            r.passes += 1
            r.fed += len(p)
            # logits[i, width - len(s) - 1 + k] predict the position of spec[k] (and, after the run, the next)
            kept = r.verify(logits[i, width - len(s) - 1:], s)
            r.fed += kept
            ends.append(width - (len(s) - kept))
        # Rejected slots: the tail no row still needs is cropped off the cache; a row's rejected slots
        # before that become holes, hidden by its mask (alone, a row never keeps holes).
        keep = total - width + max(ends)
        if keep < total:
            batch.cache.crop(keep - total)  # a negative count removes that many (transformers 5.23 and 5.24 alike)
            batch.seen = batch.seen[:, :keep]
        for i, end in enumerate(ends):
            batch.seen[i, total - width + end:] = 0


__all__ = ["drafted_forced_decode"]
