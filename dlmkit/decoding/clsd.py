"""CLSD inference: draft blocks with the DiT, score them with the verifier, keep a prefix.

One round, with the verifier's cache holding the text so far:

1. C = the verifier's final hidden state at the last position; its next-token logits too.
2. The DiT drafts N candidate blocks of L embeddings from noise in K Euler steps.
3. Tokens are read off each draft as the nearest rows of the verifier's embedding matrix
   (dlmkit.models.clsd.nearest_tokens).
4. The verifier scores all N candidates' tokens in one batched pass over a copy of the
   cache: per position, the probability of the drafted token given the text and the
   candidate's earlier tokens; a candidate's score is its mean log-probability.
5. Causal guillotine: take the best candidate and keep its tokens up to (not including)
   the first position whose probability falls below the threshold.
6. The verifier supplies the next token: its argmax at the cut (or after a fully kept block).
7. One more verifier pass over the kept tokens and that token advances the cache.

With a threshold >= 0.5 every kept token is the verifier's argmax where it stands, so the
output equals greedy decoding with the verifier (up to float ties); lower thresholds
trade that for longer accepted runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from dlmkit.cli import synchronize
from dlmkit.decoding.flow import euler_sample
from dlmkit.models.clsd import NearestEmbedding
from dlmkit.models.cache import cache_kwargs, output_cache
from dlmkit.models.qwen35 import expand_cache


def draft(dit, cond: torch.Tensor, noise: torch.Tensor, euler_steps: int) -> torch.Tensor:
    """Scaled draft embeddings from noise in `euler_steps` Euler steps (differentiable)."""
    return euler_sample(lambda x, t: dit(x, t, cond), noise, euler_steps)


def guillotine(confidence: torch.Tensor, threshold: float) -> int:
    """How many leading positions to keep: up to the first confidence below the threshold."""
    low = (confidence < threshold).nonzero()
    return int(low[0, 0]) if len(low) else int(confidence.shape[0])


@dataclass
class BlockGeneration:
    """A CLSD (or plain greedy) decoding of one prompt: its tokens, verifier calls, per-round stats."""

    tokens: list[int]
    verifier_calls: int
    rounds: list[dict] = field(default_factory=list)
    seconds: float = 0.0


@torch.no_grad()
def verifier_step(verifier, ids: torch.Tensor, cache=None):
    """(cache, final hidden states, logits) of the verifier on ids after the cached text."""
    out = verifier.model(input_ids=ids, use_cache=True, **cache_kwargs(cache))
    hidden = out.last_hidden_state
    return output_cache(out), hidden, verifier.lm_head(hidden)


def _finish(tokens: list[int], max_new: int, stop_ids: set[int]) -> tuple[list[int], bool]:
    for i, token in enumerate(tokens[:max_new]):
        if token in stop_ids:
            return tokens[:i + 1], True
    return tokens[:max_new], len(tokens) >= max_new


@torch.no_grad()
def greedy_generate(verifier, prompt_ids: list[int], max_new: int, stop_ids: set[int]) -> BlockGeneration:
    """Plain greedy decoding with the verifier and its cache: one call per token."""
    device = verifier.get_input_embeddings().weight.device
    synchronize(device)
    start = time.perf_counter()
    cache, _, logits = verifier_step(verifier, torch.tensor([prompt_ids], device=device))
    calls, out = 1, []
    while True:
        token = int(logits[0, -1].argmax())
        out.append(token)
        if token in stop_ids or len(out) >= max_new:
            break
        cache, _, logits = verifier_step(verifier, torch.tensor([[token]], device=device), cache)
        calls += 1
    synchronize(device)
    return BlockGeneration(out, calls, seconds=time.perf_counter() - start)


@torch.no_grad()
def clsd_generate(verifier, dit, prompt_ids: list[int], max_new: int, stop_ids: set[int], *, candidates: int,
                  euler_steps: int, threshold: float, generator: torch.Generator) -> BlockGeneration:
    device = verifier.get_input_embeddings().weight.device
    embedding = verifier.get_input_embeddings().weight
    length = dit.config.block_len
    read_tokens = NearestEmbedding(embedding)
    synchronize(device)
    start = time.perf_counter()
    cache, hidden, logits = verifier_step(verifier, torch.tensor([prompt_ids], device=device))
    calls, out, rounds = 1, [], []
    while True:
        t0 = time.perf_counter()
        cond = hidden[:, -1]
        noise = torch.randn((candidates, length, embedding.shape[1]), generator=generator).to(device, dit_dtype(dit))
        drafts = dit.to_embeddings(draft(dit, cond, noise, euler_steps))
        tokens = read_tokens(drafts)  # (N, L)
        synchronize(device)
        t1 = time.perf_counter()
        _, _, scored = verifier_step(verifier, tokens, expand_cache(cache, candidates))
        calls += 1
        # log p of drafted token i: from the text's last logits (i = 0) or the candidate's own pass.
        logprobs = torch.cat([logits[:, -1:].expand(candidates, -1, -1), scored[:, :-1]], dim=1).float().log_softmax(-1)
        token_logprobs = logprobs.gather(-1, tokens[..., None])[..., 0]  # (N, L)
        best = int(token_logprobs.mean(-1).argmax())
        kept = guillotine(token_logprobs[best].exp(), threshold)
        next_logits = logits[0, -1] if kept == 0 else scored[best, kept - 1]
        emitted = tokens[best, :kept].tolist() + [int(next_logits.argmax())]
        synchronize(device)
        t2 = time.perf_counter()
        emitted, done = _finish(emitted, max_new - len(out), stop_ids)
        out += emitted
        rounds.append({"accepted": min(kept, len(emitted)), "emitted": len(emitted),
                       "best_mean_logprob": float(token_logprobs[best].mean()),
                       "draft_ms": 1000 * (t1 - t0), "score_ms": 1000 * (t2 - t1)})
        if done:
            break
        cache, hidden, logits = verifier_step(verifier, torch.tensor([emitted], device=device), cache)
        calls += 1
    synchronize(device)
    return BlockGeneration(out, calls, rounds, seconds=time.perf_counter() - start)


def dit_dtype(dit) -> torch.dtype:
    return dit.pos_embed.dtype
