"""Forced decoding (inverse speculation, paper 3.2): a causal AR model fills the gaps between
a diffusion LM's anchors.

At every generation position p the output is the anchor if p is an anchor, else the AR's
greedy token given the prompt and everything emitted before p. Three decoders produce the
same tokens and differ only in how many forward passes they need:

  forced_decode_naive      one full forward over prompt + output-so-far per position, the
                           cost the paper counts (no cache; quadratic in length).
  forced_decode(chunked=False)
                           KV cache, one token per forward: one pass per position, the
                           cost of an ordinary decode loop that overrides anchor tokens.
  forced_decode            KV cache; a gap token and the run of anchors after it are fed in
                           ONE forward (an anchor's logits are never needed, only those of a
                           run's last token, which predict the next gap), so a prompt costs one
                           pass per gap position it reaches; prompt + leading anchors are one
                           prefill. Batched over prompts.

Batching: all rows share one transformers DynamicCache. Every pass appends a chunk as wide
as the longest row's pending tokens; shorter rows are right-aligned in it and the slots in
front are padding, hidden by the 2-D attention mask (holes in the middle of the sequence
are fine: the mask is per key) and skipped by the position ids, which count real tokens
only. So logits[:, -1] is every row's next-token prediction, and a row's numbers equal its
unpadded run up to float rounding. Finished rows leave the cache (batch_select_indices).

End of output (`rule`, see plan_end):
  "committed_end"  deployable default: only what the partial DLM state shows. Stop at the
                   first anchor that is an end token (Dream commits trailing end-of-text
                   early); with none, stop when the AR's greedy token is an end token, at
                   max_new_tokens at the latest. The AR's end tokens are masked out before
                   the committed end, or before the last anchor, since the DLM says the
                   answer goes on.
  "oracle"         the paper's end marker (3.3) as published: with coverage over the full
                   run's answer length gen_len above 40%, stop after the last anchor; else
                   stop at gen_len (or the AR's end token after the last anchor). A
                   deployment cannot know gen_len, hence the name.
  "fixed"          exactly max_new_tokens positions, end tokens treated as ordinary tokens
                   (replay benchmarks and tests).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Mapping

import torch

from dlmkit.data.chat import default_end_token_ids
from dlmkit.errors import UserError
from dlmkit.models.cache import cache_kwargs

END_RULES = ("committed_end", "oracle", "fixed")
ORACLE_COVERAGE = 0.4  # paper 3.3: the end marker applies above 40% coverage


# --------------------------------------------------------------------------- end-of-output plan


@dataclass(frozen=True)
class EndPlan:
    """Where one row's output may end.

    limit: positions decoded at most; reaching it stops the row with `limit_reason`.
    no_end_before: the AR's end tokens are masked out of its argmax at gaps before this.
    stop_on_ar_end: a gap whose greedy token is an end token ends the output ("ar_end"),
        the end token itself not emitted.
    anchors: the anchors used (those below limit).
    """

    limit: int
    no_end_before: int
    stop_on_ar_end: bool
    limit_reason: str
    anchors: dict[int, int]


def plan_end(anchors, *, rule: str, max_new_tokens: int, end_token_ids=(), gen_len: int | None = None,
             coverage_threshold: float = ORACLE_COVERAGE) -> EndPlan:
    """The end-of-output plan of one row under `rule` (see the module docstring)."""
    anchors = _anchor_dict(anchors)
    ends = {int(t) for t in end_token_ids}
    if rule == "fixed":
        limit = max_new_tokens
        return EndPlan(limit, 0, False, "max_len", _below(anchors, limit))
    if rule == "oracle":
        if gen_len is None:
            raise UserError("the oracle end rule needs gen_len (the full DLM run's answer length) per prompt; "
                            "pass gen_lens= or use rule='committed_end'")
        length = min(int(gen_len), max_new_tokens)
        used = _below(anchors, length)
        last = max(used) + 1 if used else 0
        if gen_len > 0 and len(used) / gen_len > coverage_threshold:
            return EndPlan(last, last, True, "last_anchor", used)
        return EndPlan(length, last, True, "gen_len" if length == gen_len else "max_len", used)
    if rule == "committed_end":
        end_positions = [p for p, t in anchors.items() if t in ends]
        if end_positions and min(end_positions) <= max_new_tokens:
            limit = min(end_positions)
            return EndPlan(limit, limit, True, "end_anchor", _below(anchors, limit))
        used = _below(anchors, max_new_tokens)
        return EndPlan(max_new_tokens, max(used) + 1 if used else 0, True, "max_len", used)
    raise UserError(f"unknown end rule {rule!r}; pass one of {', '.join(END_RULES)}")


def _anchor_dict(anchors) -> dict[int, int]:
    if hasattr(anchors, "as_dict"):
        anchors = anchors.as_dict()
    if not isinstance(anchors, Mapping):
        raise UserError("anchors must be an Anchors object or a {position: token_id} mapping")
    out = {int(p): int(t) for p, t in anchors.items()}
    if any(p < 0 for p in out):
        raise UserError("anchor positions must be >= 0 (generation-relative, the prompt excluded)")
    return out


def _below(anchors: dict[int, int], limit: int) -> dict[int, int]:
    return {p: t for p, t in anchors.items() if p < limit}


# --------------------------------------------------------------------------- results


@dataclass
class ForcedRow:
    """One prompt's output. tokens exclude the end token that stopped it."""

    tokens: list[int]
    forced: list[bool]  # per token: True where it is an anchor, False where the AR chose it
    stop_reason: str  # end_anchor | last_anchor | gen_len | max_len | ar_end
    forward_passes: int = 0  # forwards this row took part in
    tokens_fed: int = 0  # of this row's tokens through the model (prompt included)
    drafts_fed: int = 0  # drafted decoding (drafted.py): drafts checked by the AR
    drafts_accepted: int = 0  # and kept (equal to the AR's greedy token)

    @property
    def gap_tokens(self) -> int:
        return len(self.forced) - sum(self.forced)


@dataclass
class ForcedResult:
    rows: list[ForcedRow]
    decoder: str  # naive | stepwise | chunked
    forward_passes: int = 0  # sequential model calls (a batched call counts once)
    tokens_processed: int = 0  # real tokens through the model, summed over calls
    slots_processed: int = 0  # tokens + padding slots through the model
    wall_time_s: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- shared helpers


def _prepare(model, prompts, anchors, max_new_tokens, rule, gen_lens, end_token_ids):
    if len(prompts) != len(anchors):
        raise UserError(f"got {len(prompts)} prompts but {len(anchors)} anchor sets; pass one anchor set per prompt")
    n = len(prompts)
    try:
        limits = [int(max_new_tokens)] * n if not hasattr(max_new_tokens, "__len__") else [int(m) for m in max_new_tokens]
    except (TypeError, ValueError):
        limits = []
    if len(limits) != n or any(m < 0 for m in limits):
        raise UserError("max_new_tokens must be an integer >= 0 or a list of one such integer per prompt")
    if gen_lens is not None and len(gen_lens) != n:
        raise UserError(f"got {len(gen_lens)} gen_lens for {n} prompts; pass one per prompt")
    if end_token_ids is None:
        end_token_ids = default_end_token_ids(model)
    vocab = _vocab_size(model)
    prompt_lists, plans = [], []
    for i in range(n):
        ids = [int(t) for t in (prompts[i].tolist() if isinstance(prompts[i], torch.Tensor) else prompts[i])]
        if not ids:
            raise UserError(f"prompt {i} is empty; forced decoding needs at least one prompt token (the chat template)")
        plan = plan_end(anchors[i], rule=rule, max_new_tokens=limits[i], end_token_ids=end_token_ids,
                        gen_len=None if gen_lens is None else gen_lens[i])
        bad = [t for t in list(plan.anchors.values()) + ids if not 0 <= t < vocab]
        if bad:
            raise UserError(f"token id {bad[0]} (prompt {i}) is outside the AR's vocabulary of {vocab}; "
                            "the DLM and the AR must share a vocabulary (pick matching models or map the ids)")
        prompt_lists.append(ids)
        plans.append(plan)
    return prompt_lists, plans, sorted({int(t) for t in end_token_ids})


def _vocab_size(model) -> int:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and hasattr(head, "weight"):
        return head.weight.shape[0]
    return model.config.vocab_size


def _device(model) -> torch.device:
    return next(model.parameters()).device


class _Row:
    """One prompt's decoding state: the tokens so far and what the model has not yet seen."""

    def __init__(self, prompt: list[int], plan: EndPlan, end_ids: list[int]):
        self.plan, self.end_ids = plan, end_ids
        self.prompt_len = len(prompt)
        self.sequence = list(prompt)  # prompt + emitted
        self.forced: list[bool] = []
        self.fed = 0  # tokens of `sequence` already in the model's cache
        self.done, self.reason = False, None
        self.passes = 0
        self._append_anchor_run()

    @property
    def position(self) -> int:  # the next generation position
        return len(self.sequence) - self.prompt_len

    def _append_anchor_run(self):
        """Emit every anchor from the current position on, until a gap or the limit."""
        while self.position < self.plan.limit and self.position in self.plan.anchors:
            self.sequence.append(self.plan.anchors[self.position])
            self.forced.append(True)
        if self.position >= self.plan.limit:
            self.done, self.reason = True, self.plan.limit_reason

    def accept(self, next_logits: torch.Tensor):
        """The gap at the current position gets the AR's greedy token from `next_logits`."""
        token = greedy_token(next_logits, self.position, self.plan, self.end_ids)
        if self.plan.stop_on_ar_end and token in self.end_ids:
            self.done, self.reason = True, "ar_end"
            return
        self.sequence.append(token)
        self.forced.append(False)
        self._append_anchor_run()

    def result(self) -> ForcedRow:
        return ForcedRow(self.sequence[self.prompt_len:], self.forced, self.reason, self.passes, self.fed)


def greedy_token(logits: torch.Tensor, position: int, plan: EndPlan, end_ids: list[int]) -> int:
    """argmax of the next-token logits, end tokens excluded before plan.no_end_before."""
    if position < plan.no_end_before and end_ids:
        logits = logits.clone()
        logits[end_ids] = -torch.inf
    return int(logits.argmax())


# --------------------------------------------------------------------------- naive reference


@torch.inference_mode()
def forced_decode_naive(model, prompts, anchors, *, max_new_tokens, rule: str = "committed_end",
                        gen_lens=None, end_token_ids=None) -> ForcedResult:
    """One full forward over prompt + output-so-far for every position, anchors included (the
    paper's cost model, 18.3 ms per token for Qwen-0.5B), one prompt at a time, no cache."""
    prompt_lists, plans, end_ids = _prepare(model, prompts, anchors, max_new_tokens, rule, gen_lens, end_token_ids)
    device, start = _device(model), time.perf_counter()
    result = ForcedResult([], "naive")
    for prompt, plan in zip(prompt_lists, plans):
        sequence, forced, reason, passes, fed = list(prompt), [], plan.limit_reason, 0, 0
        for position in range(plan.limit):
            logits = model(torch.tensor([sequence], device=device), use_cache=False, logits_to_keep=1).logits[0, -1]
            passes, fed = passes + 1, fed + len(sequence)
            if position in plan.anchors:
                sequence.append(plan.anchors[position])
                forced.append(True)
                continue
            token = greedy_token(logits.float(), position, plan, end_ids)
            if plan.stop_on_ar_end and token in end_ids:
                reason = "ar_end"
                break
            sequence.append(token)
            forced.append(False)
        result.rows.append(ForcedRow(sequence[len(prompt):], forced, reason, passes, fed))
        result.forward_passes += passes
        result.tokens_processed += fed
    result.slots_processed = result.tokens_processed
    result.wall_time_s = time.perf_counter() - start
    return result


# --------------------------------------------------------------------------- cached, batched


@torch.inference_mode()
def forced_decode(model, prompts, anchors, *, max_new_tokens, rule: str = "committed_end", gen_lens=None,
                  end_token_ids=None, batch_size: int | None = None, chunked: bool = True,
                  pad_token_id: int = 0) -> ForcedResult:
    """Forced decoding with a KV cache, batched over prompts.

    model: a causal LM (e.g. Qwen2ForCausalLM) taking input_ids, attention_mask, position_ids,
        past_key_values, use_cache, logits_to_keep.
    prompts: token id lists (or 1-D tensors), unpadded, e.g. the chat-templated questions.
    anchors: per prompt an `Anchors` or {generation position: token id}.
    max_new_tokens: an int or one per prompt. rule: "committed_end" | "oracle" | "fixed".
    gen_lens: per prompt the full DLM answer length (only the oracle rule reads it).
    end_token_ids: default: the model's eos id(s) (pass default_end_token_ids(model, tokenizer)
        to add <|im_end|>).
    batch_size: prompts decoded together (default: all of them).
    chunked: True feeds a gap token with the anchor run after it in one forward; False feeds
        one token per forward (the KV-cached token-by-token reference).
    Returns a ForcedResult; its forward_passes counts sequential model calls.
    """
    prompt_lists, plans, end_ids = _prepare(model, prompts, anchors, max_new_tokens, rule, gen_lens, end_token_ids)
    if batch_size is not None and batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    batch_size = batch_size or max(len(prompt_lists), 1)
    start = time.perf_counter()
    result = ForcedResult([], "chunked" if chunked else "stepwise")
    for lo in range(0, len(prompt_lists), batch_size):
        rows = [_Row(p, plan, end_ids) for p, plan in zip(prompt_lists[lo:lo + batch_size], plans[lo:lo + batch_size])]
        _decode_batch(model, rows, chunked, pad_token_id, result)
        result.rows += [row.result() for row in rows]
    result.wall_time_s = time.perf_counter() - start
    return result


class _BatchCache:
    """One transformers DynamicCache shared by a batch of rows (see the module docstring): each
    feed appends one chunk per row, right-aligned behind padding that the 2-D attention mask
    hides; position ids count each row's real tokens (padding slots reuse a valid one)."""

    def __init__(self, model, n_rows: int):
        from transformers import DynamicCache

        self.model, self.device = model, _device(model)
        self.cache = DynamicCache(config=model.config)
        self.seen = torch.zeros((n_rows, 0), dtype=torch.long, device=self.device)  # 1 = a real token's slot

    def keep_rows(self, live: list[int]) -> None:
        """Drop the rows not in `live` (indices, in cache order) so no compute is spent on them."""
        keep = torch.tensor(live, device=self.device)
        if self.cache.get_seq_length() > 0:
            self.cache.batch_select_indices(keep)
        self.seen = self.seen[keep]

    def feed(self, chunks: list[list[int]], starts: list[int], pad_token_id: int, logits_to_keep: int | None,
             result: ForcedResult) -> torch.Tensor:
        """One forward over every row's chunk (row i's first token at position starts[i]);
        float logits of the last `logits_to_keep` slots (None: all of them)."""
        width = max(len(c) for c in chunks)
        ids = torch.full((len(chunks), width), pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(chunks), width), dtype=torch.long)
        positions = torch.zeros((len(chunks), width), dtype=torch.long)
        for i, (start, c) in enumerate(zip(starts, chunks)):
            k = len(c)
            ids[i, width - k:] = torch.tensor(c)
            mask[i, width - k:] = 1
            positions[i, :] = start
            positions[i, width - k:] = torch.arange(start, start + k)
        self.seen = torch.cat([self.seen, mask.to(self.device)], dim=1)
        logits = self.model(input_ids=ids.to(self.device), attention_mask=self.seen,
                            position_ids=positions.to(self.device), use_cache=True,
                            logits_to_keep=logits_to_keep or width, **cache_kwargs(self.cache)).logits.float()
        result.forward_passes += 1
        result.tokens_processed += sum(len(c) for c in chunks)
        result.slots_processed += len(chunks) * width
        return logits


def _decode_batch(model, rows: list[_Row], chunked: bool, pad_token_id: int, result: ForcedResult) -> None:
    # The token-by-token reference runs one forward per position, like an ordinary decode
    # loop with forced tokens, even where trailing anchors need no more logits.
    def needs_pass(r: _Row) -> bool:
        return not r.done or (not chunked and r.reason != "ar_end" and r.passes < r.position)

    in_cache = [r for r in rows if needs_pass(r)]  # rows whose keys and values the cache holds, in its order
    batch = _BatchCache(model, len(in_cache))

    while True:
        live = [i for i, r in enumerate(in_cache) if needs_pass(r)]
        if not live:
            return
        if len(live) < len(in_cache):
            batch.keep_rows(live)
            in_cache = [in_cache[i] for i in live]

        # Each row feeds what it has not fed: a prefill (prompt + leading anchors) or a gap
        # token + the anchor run after it; token by token only the prompt goes in at once.
        chunks = []
        for r in in_cache:
            pending = r.sequence[r.fed:]
            if not chunked and r.fed > 0:
                pending = pending[:1]
            elif not chunked:
                pending = pending[:r.prompt_len]
            chunks.append(pending)
        logits = batch.feed(chunks, [r.fed for r in in_cache], pad_token_id, 1, result)[:, -1]

        for i, (r, c) in enumerate(zip(in_cache, chunks)):
            r.fed += len(c)
            r.passes += 1
            if r.fed == len(r.sequence) and not r.done:  # all emitted is in: logits[i] predict the next gap
                r.accept(logits[i])


__all__ = [
    "END_RULES", "EndPlan", "ForcedResult", "ForcedRow", "forced_decode",
    "forced_decode_naive", "greedy_token", "plan_end",
]
