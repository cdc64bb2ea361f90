"""The speculative decoding loop: draft, score all drafts in one target call, verify, repeat.

    target = CachedLM(gpt2_xl)
    out = speculative_generate(target, MDLMDrafter(mdlm, steps=4), prefix_ids, max_new_tokens=256,
                               gamma=8, temperature=1.0, generator=torch.Generator().manual_seed(0))
    out.tokens, out.target_calls, out.drafter_nfe, out.accepted

One round with a drafter that proposes d_1..d_G (dlmkit/decoding/drafters.py):

    the target scores sequence + d_1..d_G in one forward and keeps the last G + 1 logits
    (p_1..p_G at the drafts, p_{G+1} after the last one: the bonus position)
    speculative_verify (temperature > 0) or greedy_verify (temperature 0) decides
    the accepted drafts and one more token (resampled or bonus) join the sequence

`CachedLM` keeps one transformers DynamicCache across rounds. The cache holds keys and
values for the ids it was fed; the next call finds the longest prefix those ids share
with the new sequence, crops the cache to it (`DynamicCache.crop`) and feeds only the
rest. After a rejection that drops the rejected drafts; after a full accept it keeps
every draft, and the round's extra token is fed with the next drafts. Batch 1, as
transformers' assisted generation.

`ar_generate` is the baseline (one target call per token, same cache, same draws), so a
target call means the same thing in every method.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from dlmkit.decoding.speculative import (greedy_verify, probs_from_logits, sample_from, speculative_verify,
                                         uniforms)
from dlmkit.errors import UserError
from dlmkit.models.cache import cache_kwargs


# --------------------------------------------------------------------------- the cached target


def context_length(model) -> int | None:
    config = model.config
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


class CachedLM:
    """A transformers causal LM that follows one growing (and sometimes shrinking) sequence with a
    KV cache: `logits(sequence, n)` gives the logits of the last n positions of `sequence`,
    feeding only the ids the cache does not already hold."""

    def __init__(self, model):
        self.model = model
        self.device = next(model.parameters()).device
        self.vocab_size = model.config.vocab_size
        self.max_length = context_length(model)
        self.calls = 0  # forward passes since the last reset
        self.reset()

    def reset(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache(config=self.model.config)
        self.fed: list[int] = []  # ids whose keys and values the cache holds, in order
        self.calls = 0

    def rollback(self, length: int) -> None:
        """Forget every position from `length` on."""
        extra = self.cache.get_seq_length() - length
        if extra > 0:
            self.cache.crop(-extra)  # a negative count removes that many positions
        del self.fed[length:]

    @torch.no_grad()
    def logits(self, sequence: list[int], n_last: int = 1) -> torch.Tensor:
        """(n_last, vocab) float32 logits at the last n_last positions of `sequence`."""
        if not 1 <= n_last <= len(sequence):
            raise ValueError(f"asked for {n_last} logits of a {len(sequence)}-token sequence")
        if self.max_length is not None and len(sequence) > self.max_length:
            raise UserError(f"the sequence reached {len(sequence)} tokens, past the model's context of "
                            f"{self.max_length}; shorten the prompt or lower --max-new-tokens")
        shared = 0
        limit = min(len(self.fed), len(sequence) - n_last)  # the last n_last positions must be fed anew
        while shared < limit and self.fed[shared] == sequence[shared]:
            shared += 1
        self.rollback(shared)
        new = torch.tensor([sequence[shared:]], dtype=torch.long, device=self.device)
        out = self.model(input_ids=new, use_cache=True, logits_to_keep=n_last, **cache_kwargs(self.cache))
        self.fed.extend(sequence[shared:])
        self.calls += 1
        return out.logits[0, -n_last:].float()


def next_token(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
    """Argmax at temperature 0, else an inverse-CDF draw (the primitive's `sample_from`)."""
    if temperature == 0:
        return int(logits.argmax())
    probs = probs_from_logits(logits, temperature)
    return int(sample_from(probs, uniforms((), generator, probs.device)))


def align_vocab(draft_probs: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """The drafter's distributions over the target's ids. An MDLM adds the mask as its last id
    (mdlm-owt: 50258 vs gpt2-xl's 50257); SUBS gives it probability 0, so slicing it off loses
    nothing. Mass on ids the target lacks would break losslessness, so it is an error."""
    extra = draft_probs.shape[-1] - vocab_size
    if extra < 0:
        return torch.nn.functional.pad(draft_probs, (0, -extra))
    if extra > 0:
        lost = float(draft_probs[..., vocab_size:].sum(-1).max())
        if lost > 1e-9:
            raise UserError(f"the drafter puts probability {lost:.3g} on ids the target's vocabulary "
                            f"({vocab_size}) lacks; pair models that share a tokenizer")
        return draft_probs[..., :vocab_size]
    return draft_probs


# --------------------------------------------------------------------------- the loops


@dataclass
class Generation:
    tokens: list[int]  # the new tokens only
    target_calls: int  # target forward passes, the prefill included
    drafter_nfe: int = 0  # drafter network calls
    accepted: list[int] = field(default_factory=list)  # drafts accepted in each round
    drafted: int = 0  # drafts proposed in all

    @property
    def rounds(self) -> int:
        return len(self.accepted)


def _check_prefix(target: CachedLM, prefix: list[int], max_new_tokens: int) -> list[int]:
    prefix = [int(t) for t in (prefix.tolist() if torch.is_tensor(prefix) else prefix)]
    if not prefix:
        raise UserError("the prompt is empty; speculative decoding needs at least one prefix token (e.g. BOS)")
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if target.max_length is not None and len(prefix) + max_new_tokens > target.max_length:
        raise UserError(f"a {len(prefix)}-token prompt plus {max_new_tokens} new tokens exceeds the target's "
                        f"context of {target.max_length}; shorten the prompt or lower --max-new-tokens")
    return prefix


def _finish(new: list[int], eos: int | None) -> tuple[list[int], bool]:
    if eos is not None and eos in new:
        return new[:new.index(eos) + 1], True
    return new, False


def ar_generate(target: CachedLM, prefix, max_new_tokens: int, temperature: float = 0.0,
                generator: torch.Generator | None = None, eos: int | None = None) -> Generation:
    """Plain autoregressive decoding with the KV cache: one target call per token."""
    sequence = _check_prefix(target, prefix, max_new_tokens)
    start = len(sequence)
    target.reset()
    while len(sequence) - start < max_new_tokens:
        sequence.append(next_token(target.logits(sequence, 1)[0], temperature, generator))
        if sequence[-1] == eos:
            break
    return Generation(tokens=sequence[start:], target_calls=target.calls)


def speculative_generate(target: CachedLM, drafter, prefix, max_new_tokens: int, gamma: int,
                         temperature: float = 0.0, generator: torch.Generator | None = None,
                         eos: int | None = None) -> Generation:
    """Speculative decoding: `drafter.draft(sequence, g, temperature, generator)` proposes g
    tokens (with the q each was drawn from when temperature > 0); the target verifies them
    in one call. At temperature 0 the output equals the target's greedy decoding; above it
    every token is distributed as the target's own samples (Leviathan et al. 2023)."""
    if gamma < 1:
        raise UserError(f"gamma (drafts per round) must be >= 1, got {gamma}")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0, got {temperature}")
    sequence = _check_prefix(target, prefix, max_new_tokens)
    start = len(sequence)
    target.reset()
    drafter.reset()
    out = Generation(tokens=[], target_calls=0)
    while len(sequence) - start < max_new_tokens:
        remaining = max_new_tokens - (len(sequence) - start)
        g = min(gamma, remaining)
        draft = drafter.draft(sequence, g, temperature, generator)
        drafts = torch.tensor([draft.tokens], dtype=torch.long, device=target.device)
        logits = target.logits(sequence + draft.tokens, g + 1)
        if temperature == 0:
            verdict = greedy_verify(drafts, logits[None])
        else:
            q = align_vocab(draft.probs.to(target.device, torch.float64), logits.shape[-1])
            verdict = speculative_verify(drafts, q[None], probs_from_logits(logits, temperature)[None], generator)
        new, stop = _finish(verdict.tokens[0, :int(verdict.n_new[0])].tolist()[:remaining], eos)
        sequence += new
        out.accepted.append(int(verdict.accepted[0]))
        out.drafted += g
        out.drafter_nfe += draft.nfe
        if stop:
            break
    out.tokens = sequence[start:]
    out.target_calls = target.calls
    return out
