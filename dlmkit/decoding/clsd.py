"""CLSD inference: draft blocks with the DiT, score them with the verifier, keep a prefix.

Each round, with the text so far (prompt + emitted), its last hidden state h and next-token
logits (from the previous verifier pass):

1. The verifier supplies the next token n = argmax of those logits (emitted at once).
2. C = h. The DiT drafts N candidate blocks of L embeddings from noise in K Euler steps;
   tokens are read off each as the nearest rows of the verifier's embedding matrix
   (dlmkit.models.clsd.nearest_tokens). Position 0 of every candidate is the token n itself:
   it stands where the verifier's next token does, and that token is known.
3. One batched verifier pass scores all N candidates over a copy of the cache: per
   position j >= 1, the probability of drafted token j given the text, n and the
   candidate's earlier tokens; a candidate's score is its mean log-probability.
4. Causal guillotine: take the best candidate and keep its drafted tokens 1..k up to (not
   including) the first whose probability falls below the threshold.
5. That pass also gives the next round's h and logits: the best row's, at its last kept
   position. Nothing else is called: the verifier is called once per round.

Deliberate differences from the model card's loop (draft, score, keep, "the verifier supplies
the next token", advance the cache, repeat), for the same output:
- The verifier's next token is not a second call. It rides as position 0 of the next
  candidates, where the DiT drafted the same position from the same C, so nothing is lost:
  the card's loop rejected the DiT's token 0 in most blocks (61% after stage C in the tiny
  run) and then kept nothing of the block.
- The cache is not advanced by a call of its own. Qwen3.5's Gated DeltaNet layers keep a
  recurrent state, which cannot be cropped back to the last kept position of a scored row,
  so the tokens emitted since the cache was last advanced (n and the kept drafts) are
  replayed in front of every candidate of the next pass. When a row is kept whole its state
  is the text's and becomes the cache; otherwise the cache is advanced by a separate call
  once the replay reaches L tokens (at most one block's tokens ride along).

With a threshold >= 0.5 every kept token is the verifier's argmax where it stands, so the
output equals greedy decoding with the verifier (up to float ties); lower thresholds
trade that for longer accepted runs. Verifier calls per emitted token are at most 1 (one
per round, 1 + k tokens per round) plus the rare advance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from dlmkit.cli import synchronize
from dlmkit.decoding.flow import euler_sample
from dlmkit.models.clsd import NearestEmbedding
from dlmkit.models.cache import cache_kwargs, output_cache
from dlmkit.models.qwen35 import expand_cache, select_cache_row


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
    confidence: list[float] = field(default_factory=list)  # greedy: the verifier's probability of each token


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
    calls, out, confidence = 1, [], []
    while True:
        probs = logits[0, -1].float().softmax(-1)
        token = int(probs.argmax())
        out.append(token)
        confidence.append(float(probs[token]))
        if token in stop_ids or len(out) >= max_new:
            break
        cache, _, logits = verifier_step(verifier, torch.tensor([[token]], device=device), cache)
        calls += 1
    synchronize(device)
    return BlockGeneration(out, calls, seconds=time.perf_counter() - start, confidence=confidence)


def oracle_rounds(confidence: list[float], threshold: float, block_len: int) -> list[int]:
    """Drafted tokens each round would keep if every draft were the verifier's own greedy token:
    after the verifier's token, the run of following greedy tokens whose probability is >= the
    threshold, at most block_len - 1. The bound on acceptance that the verifier sets, whatever the
    drafter (`confidence`: the verifier's probability of each greedy token, `greedy_generate`)."""
    kept, at = [], 0
    while at < len(confidence):
        at += 1  # the verifier's token
        k = 0
        while at < len(confidence) and k < block_len - 1 and confidence[at] >= threshold:
            at, k = at + 1, k + 1
        kept.append(k)
    return kept


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
    h, next_logits = hidden[0, -1], logits[0, -1]
    replay: list[int] = []  # emitted tokens the cache does not hold yet
    while True:
        t0 = time.perf_counter()
        n = int(next_logits.argmax())  # the verifier supplies the next token
        emitted, done = _finish([n], max_new - len(out), stop_ids)
        out += emitted
        if done:
            break
        noise = torch.randn((candidates, length, embedding.shape[1]), generator=generator).to(device, dit_dtype(dit))
        tokens = read_tokens(dit.to_embeddings(draft(dit, h[None], noise, euler_steps)))  # (N, L)
        tokens[:, 0] = n
        synchronize(device)
        t1 = time.perf_counter()
        rows = torch.cat([torch.tensor(replay, dtype=tokens.dtype, device=device).expand(candidates, -1), tokens], 1)
        scored_cache, scored_hidden, scored = verifier_step(verifier, rows, expand_cache(cache, candidates))
        calls += 1
        r = len(replay)
        # log p of drafted token j >= 1: the logits at the position before it
        logprobs = scored[:, r:r + length - 1].float().log_softmax(-1)
        token_logprobs = logprobs.gather(-1, tokens[:, 1:, None])[..., 0]  # (N, L - 1)
        best = int(token_logprobs.mean(-1).argmax())
        kept = guillotine(token_logprobs[best].exp(), threshold)
        h, next_logits = scored_hidden[best, r + kept], scored[best, r + kept]
        emitted, done = _finish(tokens[best, 1:1 + kept].tolist(), max_new - len(out), stop_ids)
        out += emitted
        synchronize(device)
        t2 = time.perf_counter()
        rounds.append({"accepted": len(emitted), "emitted": 1 + len(emitted), "replayed": r,
                       "best_mean_logprob": float(token_logprobs[best].mean()),
                       "draft_ms": 1000 * (t1 - t0), "score_ms": 1000 * (t2 - t1)})
        if done:
            break
        replay += [n] + emitted
        if kept == length - 1:  # the best row holds exactly the text: its state is the cache
            cache, replay = select_cache_row(scored_cache, best, candidates), []
        elif len(replay) >= length:
            cache, _, _ = verifier_step(verifier, torch.tensor([replay], device=device), cache)
            calls, replay = calls + 1, []
    synchronize(device)
    return BlockGeneration(out, calls, rounds, seconds=time.perf_counter() - start)


def dit_dtype(dit) -> torch.dtype:
    return dit.pos_embed.dtype
