"""MDLM's masked diffusion: log-linear noise schedule, SUBS, continuous-time loss.

Forward process: each token is independently replaced by the mask with probability
move_chance(t) = (1 - eps) t, t in (0, 1]. The denoiser predicts x0 from x_t; SUBS
("substitution") constrains that prediction: it never predicts the mask, and a position
that is not masked keeps its token with probability 1. The training loss is the
continuous-time NELBO, which for this schedule weights the cross-entropy of each masked
token by 1/t.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dlmkit.errors import UserError


@dataclass(frozen=True)
class LogLinearSchedule:
    """Total noise sigma(t) = -log(1 - (1 - eps) t), so 1 - exp(-sigma) = (1 - eps) t."""

    eps: float = 1e-3

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return -torch.log1p(-(1 - self.eps) * t)

    def dsigma(self, t: torch.Tensor) -> torch.Tensor:
        return (1 - self.eps) / (1 - (1 - self.eps) * t)

    def move_chance(self, t: torch.Tensor) -> torch.Tensor:
        """Probability that a token is masked at time t."""
        return (1 - self.eps) * t

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """MDLM's dsigma / expm1(sigma); algebraically 1/t for this schedule."""
        t = t.double()
        return self.dsigma(t) / torch.expm1(self.sigma(t))


def mask_out(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """The logits with the mask id at -inf: SUBS never predicts the mask."""
    return logits.index_fill(-1, torch.tensor([mask_id], device=logits.device), float("-inf"))


def subs_log_probs(logits: torch.Tensor, xt: torch.Tensor, mask_id: int) -> torch.Tensor:
    """SUBS log-probabilities of x0 given x_t: shape (..., vocab) for xt of shape (...).

    The mask gets probability 0 everywhere; an unmasked position is a point mass on its
    own token; a masked position gets softmax over the other logits.
    """
    log_probs = mask_out(logits, mask_id).log_softmax(dim=-1)
    carried = torch.full_like(log_probs, float("-inf")).scatter(-1, xt.unsqueeze(-1), 0.0)
    return torch.where((xt != mask_id).unsqueeze(-1), carried, log_probs)


def sample_t(n: int, *, sampling_eps: float = 1e-3, antithetic: bool = True, generator=None, device=None) -> torch.Tensor:
    """Times in [sampling_eps, 1); antithetic = one draw per stratum [i/n, (i+1)/n) (low discrepancy)."""
    u = torch.rand(n, generator=generator, device=device)
    if antithetic:
        u = (u / n + torch.arange(n, device=u.device) / n) % 1
    return (1 - sampling_eps) * u + sampling_eps


def mask_tokens(x0: torch.Tensor, move_chance: torch.Tensor, mask_id: int, generator=None) -> torch.Tensor:
    """x_t: each token masked independently with its row's move_chance (shape (batch,) or (batch, 1))."""
    move = torch.rand(x0.shape, generator=generator, device=x0.device) < move_chance.reshape(-1, 1).to(x0.device)
    return torch.where(move, mask_id, x0)


@dataclass
class MDLMLoss:
    loss: torch.Tensor  # scalar: summed weighted NLL over counted tokens / number of counted tokens
    nlls: torch.Tensor  # (batch, seq): (1/t) CE at masked positions, 0 at unmasked or uncounted ones
    token_mask: torch.Tensor  # (batch, seq) float: positions counted in the mean
    t: torch.Tensor  # (batch,)
    xt: torch.Tensor  # (batch, seq): the noised input the model saw


def mdlm_loss(
    model,
    x0: torch.Tensor,
    *,
    attention_mask: torch.Tensor | None = None,
    t: torch.Tensor | None = None,
    xt: torch.Tensor | None = None,
    schedule: LogLinearSchedule = LogLinearSchedule(),
    sampling_eps: float = 1e-3,
    antithetic: bool = True,
    mask_id: int | None = None,
    generator: torch.Generator | None = None,
) -> MDLMLoss:
    """MDLM's continuous-time SUBS loss (the NELBO per token) on a batch of clean ids x0.

    `model(xt, sigma)` must return raw logits. t is drawn antithetically unless given; xt
    is drawn from t unless given. `attention_mask` only selects which positions count in
    the mean (MDLM trains on packed sequences, so the model sees every position).
    """
    mask_id = model.mask_id if mask_id is None else mask_id
    if x0.dim() != 2:
        raise UserError(f"mdlm_loss expects token ids of shape (batch, seq), got {tuple(x0.shape)}")
    if bool((x0 == mask_id).any()):
        raise UserError(f"training data contains the mask id {mask_id}; remove it from the text or fix the tokenizer")
    batch = x0.shape[0]
    if t is None:
        t = sample_t(batch, sampling_eps=sampling_eps, antithetic=antithetic, generator=generator, device=x0.device)
    t = t.reshape(batch).to(x0.device)
    if xt is None:
        xt = mask_tokens(x0, schedule.move_chance(t), mask_id, generator)

    logits = model(xt, schedule.sigma(t))
    # At a masked position SUBS gives log p(x0) = CE over the logits without the mask;
    # at an unmasked one it gives log 1 = 0, so only masked positions carry loss.
    logits = mask_out(logits.float(), mask_id)
    ce = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")
    ce = torch.where(xt == mask_id, ce, torch.zeros_like(ce))
    nlls = ce * schedule.loss_weight(t).to(ce.dtype)[:, None]

    token_mask = torch.ones_like(nlls) if attention_mask is None else attention_mask.to(nlls.dtype)
    nlls = nlls * token_mask
    loss = nlls.sum() / token_mask.sum().clamp_min(1)
    return MDLMLoss(loss=loss, nlls=nlls, token_mask=token_mask, t=t, xt=xt)
