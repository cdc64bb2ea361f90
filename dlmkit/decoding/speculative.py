"""Speculative sampling: verify a block of drafted tokens against a target, losslessly.

One primitive serves every method in the suite (SpecDiff's MDLM drafter, the AR drafter of
standard speculative decoding, self-speculative masked diffusion): a drafter proposed
tokens x_1..x_G, drawing x_i from q_i; the target gives p_i for the same positions (and
p_{G+1} after the last draft when it scores one more position). Leviathan et al. 2023,
Chen et al. 2023:

    accept x_i while r_i <= p_i(x_i) / q_i(x_i)            r_i ~ U[0, 1)
    at the first rejection j, draw x_j ~ norm(max(0, p_j - q_j))
    if all G are accepted and p_{G+1} is given, draw a bonus token from p_{G+1}

Every emitted token is then distributed exactly as the target alone would draw it. The
acceptance test is evaluated as r * q <= p so a zero q (impossible for a draft that was
really drawn from q, possible in hand-built tests) never divides.

Greedy verification (temperature 0) accepts while the draft equals the target's argmax
and emits the target's argmax at the first mismatch: its output equals the target's own
greedy decoding token for token.

Randomness comes from float64 uniforms drawn on the generator's device, and categorical
draws use the inverse CDF of those uniforms, so a seed gives the same tokens on any
device and the draws are independent of how many tokens the target scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

PAD = -1  # fills `tokens` after the last emitted token of a row


@dataclass
class Verdict:
    accepted: torch.Tensor  # (batch,) long: drafts accepted, 0..G
    tokens: torch.Tensor  # (batch, G + 1) long: the accepted drafts, then the resampled or bonus token, then PAD
    n_new: torch.Tensor  # (batch,) long: tokens emitted this round (accepted + 1, or G when all accepted and no bonus)


def probs_from_logits(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sampling distribution at `temperature` (> 0) in float64, so tiny p/q ratios keep their precision."""
    if temperature <= 0:
        raise ValueError("temperature 0 is greedy: use greedy_verify, not probabilities")
    return torch.softmax(logits.double() / temperature, dim=-1)


def uniforms(shape, generator: torch.Generator | None, device) -> torch.Tensor:
    """float64 uniforms drawn where the generator lives, so a seed gives the same draws on any device."""
    source = generator.device if generator is not None else device
    return torch.rand(shape, dtype=torch.float64, generator=generator, device=source).to(device)


def sample_from(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw: probs (..., V) (need not be normalised), u (...) in [0, 1) -> ids (...)."""
    cdf = probs.double().cumsum(-1)
    threshold = (u.double() * cdf[..., -1]).unsqueeze(-1)
    ids = torch.searchsorted(cdf, threshold, right=True).squeeze(-1)
    return ids.clamp_(max=probs.shape[-1] - 1)


def residual_distribution(target_probs: torch.Tensor, draft_probs: torch.Tensor) -> torch.Tensor:
    """norm(max(0, p - q)) over the last dim; where p == q exactly (nothing left) it falls back to p,
    which is never used by an exact sampler (rejection has probability 0 there) but keeps rows finite."""
    residual = (target_probs.double() - draft_probs.double()).clamp_(min=0)
    total = residual.sum(-1, keepdim=True)
    fallback = target_probs.double() / target_probs.double().sum(-1, keepdim=True)
    return torch.where(total > 0, residual / total.clamp(min=torch.finfo(torch.float64).tiny), fallback)


def _assemble(draft_tokens: torch.Tensor, accepted: torch.Tensor, next_token: torch.Tensor,
              has_next: torch.Tensor) -> Verdict:
    batch, gamma = draft_tokens.shape
    cols = torch.arange(gamma + 1, device=draft_tokens.device).expand(batch, -1)
    padded = torch.cat([draft_tokens, draft_tokens.new_full((batch, 1), PAD)], dim=1)
    tokens = torch.where(cols < accepted[:, None], padded, torch.full_like(padded, PAD))
    at_next = (cols == accepted[:, None]) & has_next[:, None]
    tokens = torch.where(at_next, next_token[:, None].expand_as(tokens), tokens)
    return Verdict(accepted=accepted, tokens=tokens, n_new=accepted + has_next.long())


def _first_false(ok: torch.Tensor) -> torch.Tensor:
    """(batch, G) bool -> (batch,) number of leading True values."""
    return ok.long().cumprod(dim=1).sum(dim=1)


def speculative_verify(draft_tokens: torch.Tensor, draft_probs: torch.Tensor, target_probs: torch.Tensor,
                       generator: torch.Generator | None = None) -> Verdict:
    """Lossless accept/resample of one drafted block.

    draft_tokens (B, G) long; draft_probs (B, G, V): the q each draft was drawn from;
    target_probs (B, G, V) or (B, G + 1, V): p at the drafted positions, plus the position
    after the last draft when a bonus token is wanted. Both over the same vocabulary.
    """
    batch, gamma = draft_tokens.shape
    if draft_probs.shape[:2] != (batch, gamma) or target_probs.shape[1] not in (gamma, gamma + 1):
        raise ValueError(f"shapes disagree: drafts {tuple(draft_tokens.shape)}, q {tuple(draft_probs.shape)}, "
                         f"p {tuple(target_probs.shape)}")
    if draft_probs.shape[-1] != target_probs.shape[-1]:
        raise ValueError(f"drafter and target vocabularies differ ({draft_probs.shape[-1]} vs "
                         f"{target_probs.shape[-1]}); slice both to the shared ids first")
    device = draft_tokens.device
    index = draft_tokens.unsqueeze(-1)
    q = draft_probs.double().gather(-1, index).squeeze(-1)
    p = target_probs[:, :gamma].double().gather(-1, index).squeeze(-1)
    r = uniforms((batch, gamma), generator, device)
    accepted = _first_false(r * q <= p)

    # One uniform per row for the token after the accepted run, drawn whatever happens, so
    # the stream of draws does not depend on the outcome.
    u_next = uniforms((batch,), generator, device)
    rows = torch.arange(batch, device=device)
    rejected = accepted < gamma
    at = accepted.clamp(max=gamma - 1)
    residual = residual_distribution(target_probs[rows, at], draft_probs[rows, at])
    next_token = sample_from(residual, u_next)
    has_bonus = target_probs.shape[1] == gamma + 1
    if has_bonus:
        bonus = sample_from(target_probs[:, gamma], u_next)
        next_token = torch.where(rejected, next_token, bonus)
    has_next = rejected | torch.tensor(has_bonus, device=device)
    return _assemble(draft_tokens, accepted, next_token, has_next)


def greedy_verify(draft_tokens: torch.Tensor, target_logits: torch.Tensor) -> Verdict:
    """Accept while the draft equals the target's argmax; emit the target's argmax at the first
    mismatch (or as the bonus after the last draft when target_logits has G + 1 positions)."""
    batch, gamma = draft_tokens.shape
    if target_logits.shape[1] not in (gamma, gamma + 1):
        raise ValueError(f"target logits cover {target_logits.shape[1]} positions for {gamma} drafts")
    choice = target_logits.argmax(-1)
    accepted = _first_false(draft_tokens == choice[:, :gamma])
    rows = torch.arange(batch, device=draft_tokens.device)
    has_bonus = target_logits.shape[1] == gamma + 1
    next_token = choice[rows, accepted.clamp(max=choice.shape[1] - 1)]
    has_next = (accepted < gamma) | torch.tensor(has_bonus, device=draft_tokens.device)
    return _assemble(draft_tokens, accepted, next_token, has_next)
