"""Self-speculative sampling of a masked diffusion (Campbell et al. 2025, arXiv 2510.03929).

Every step, for each row of the canvas:

1. one pass of the frozen MDLM gives the factorized draft p at every masked position
   (this pass is the step's one network function evaluation, NFE);
2. the masked positions are put in a uniformly random order sigma and the first w of
   them form the window (w from the cosine schedule below); a token is drafted at each
   window position from p, independently;
3. one pass of the causal layer over the window, fed the drafts in sigma order, gives
   the target q at each window position, conditioned on the drafts before it;
4. `speculative_verify` accepts drafts in sigma order while r * p <= q (probability
   min(1, q/p)); at the first rejection it draws from norm(max(0, q - p)); the window
   positions after it stay masked. At least one token is revealed per step, and every
   revealed run is distributed as the target's joint over it.

The loop ends when nothing is masked; a row's NFE is the number of steps it took (rows
that finish drop out of the batch, so batching never adds passes to a row).

Window (cosine in tau): the masked fraction follows cos(pi/2 * tau) over tau in [0, 1].
With m of the L generated positions still masked, tau = (2/pi) arccos(m / L) and the
window reaches tau + dtau: w = m - floor(L cos(pi/2 min(1, tau + dtau))), at least 1.
Windows are small while little is known and widen as the canvas fills. Smaller dtau
means more steps; `calibrate_dtau` finds the dtau whose mean NFE meets a budget.

Randomness: one generator per row (or one shared), float64 uniforms, inverse-CDF draws,
so a row's tokens do not depend on which other rows share its batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dlmkit.decoding.speculative import PAD, sample_from, speculative_verify, uniforms
from dlmkit.errors import UserError
from dlmkit.models.mdlm_diffusion import mask_out
from dlmkit.seeds import indexed_seed


@dataclass
class SelfSpecSample:
    tokens: torch.Tensor  # (B, L) long, nothing masked
    nfe: torch.Tensor  # (B,) backbone passes per row (= steps)
    causal_passes: torch.Tensor  # (B,) causal-layer passes per row
    drafted: torch.Tensor  # (B,) drafts proposed (sum of window sizes)
    accepted: torch.Tensor  # (B,) drafts accepted
    revealed_per_step: list[list[int]]  # per row: tokens revealed at each step
    reveal_rank: torch.Tensor  # (B, L) long: 0 for the first token revealed in a row, 1 for the next,
    # ... (sigma order within a step); -1 for fixed positions and any left masked


def window_size(masked: int, total: int, dtau: float) -> int:
    """Positions speculated this step under the cosine schedule (1 <= w <= masked)."""
    if masked <= 0:
        return 0
    tau = (2 / math.pi) * math.acos(min(1.0, masked / total))
    after = math.floor(total * math.cos(math.pi / 2 * min(1.0, tau + dtau)) + 1e-9)
    return int(min(masked, max(1, masked - after)))


def steps_if_all_accepted(total: int, dtau: float) -> int:
    """NFE when every draft is accepted (the draft-only control; a lower bound for speculation)."""
    masked, steps = total, 0
    while masked > 0:
        masked -= window_size(masked, total, dtau)
        steps += 1
    return steps


def _generators(generator, batch: int) -> list:
    if generator is None or isinstance(generator, torch.Generator):
        return [generator] * batch
    generator = list(generator)
    if len(generator) != batch:
        raise UserError(f"{len(generator)} generators for {batch} rows; pass one per row or one for all")
    return generator


def _subs_probs(logits: torch.Tensor, mask_id: int) -> torch.Tensor:
    """float64 probabilities with the mask excluded (SUBS at a masked position)."""
    return mask_out(logits.double(), mask_id).softmax(-1)


def _pad(rows: list[torch.Tensor]) -> torch.Tensor:
    """Equal-length stack of 1-D tensors, zero-filled (the filler slots are marked invalid)."""
    width = max(len(r) for r in rows)
    return torch.stack([torch.cat([r, r.new_zeros(width - len(r))]) for r in rows])


@torch.no_grad()
def self_spec_sample(model, canvas: torch.Tensor, dtau: float, *, generator=None, verify: bool = True,
                     max_steps: int | None = None) -> SelfSpecSample:
    """Fill the masked positions of `canvas` (B, L) by self-speculative steps.

    model: a `SelfSpecMDLM` (or anything with `.mask_id`, `.draft(ids)` and
    `.target_logits(draft, order, tokens, valid)`). verify=False accepts every draft: the
    cosine-window draft alone, the control that shows what verification adds. max_steps
    stops early and returns the partly filled canvas (default: run until nothing is masked).
    """
    if not dtau > 0:
        raise UserError(f"dtau must be > 0, got {dtau}")
    if canvas.dim() != 2:
        raise UserError(f"canvas must have shape (batch, seq), got {tuple(canvas.shape)}")
    mask_id = model.mask_id
    x = canvas.clone()
    batch, length = x.shape
    device = x.device
    gens = _generators(generator, batch)
    total = (x == mask_id).sum(1).tolist()
    nfe = torch.zeros(batch, dtype=torch.long)
    drafted = torch.zeros(batch, dtype=torch.long)
    accepted = torch.zeros(batch, dtype=torch.long)
    revealed: list[list[int]] = [[] for _ in range(batch)]
    reveal_rank = torch.full((batch, length), -1, dtype=torch.long, device=device)
    limit = max_steps or length + 1  # at least one token per step: length steps always suffice

    was_training = getattr(model, "training", False)
    model.eval()
    for _ in range(limit):
        active = [b for b in range(batch) if bool((x[b] == mask_id).any())]
        if not active:
            break
        rows = torch.tensor(active, device=device)
        draft = model.draft(x[rows])
        nfe[active] += 1

        # Per row: a random order of its masked positions, the window, drafts from p.
        windows, orders, drafts, draft_probs = [], [], [], []
        for i, b in enumerate(active):
            masked = (x[b] == mask_id).nonzero().reshape(-1)
            w = window_size(len(masked), total[b], dtau)
            keys = uniforms((len(masked),), gens[b], device)
            order = masked[keys.argsort()[:w]]
            p = _subs_probs(draft.logits[i, order], mask_id)
            tokens = sample_from(p, uniforms((w,), gens[b], device))
            windows.append(w)
            orders.append(order)
            drafts.append(tokens)
            draft_probs.append(p)
        order, tokens = _pad(orders), _pad(drafts)
        valid = torch.arange(max(windows), device=device)[None] < torch.tensor(windows, device=device)[:, None]

        if verify:
            target = model.target_logits(draft, order, tokens, valid)
        for i, b in enumerate(active):
            w = windows[i]
            if verify:
                q = _subs_probs(target[i, :w], mask_id)
                verdict = speculative_verify(drafts[i][None], draft_probs[i][None], q[None], gens[b])
                emitted = verdict.tokens[0]
                emitted = emitted[emitted != PAD]
                accepted[b] += int(verdict.accepted[0])
            else:
                emitted = drafts[i]
                accepted[b] += w
            positions = orders[i][:len(emitted)]
            x[b, positions] = emitted.to(x.dtype)
            reveal_rank[b, positions] = sum(revealed[b]) + torch.arange(len(emitted), device=device)
            drafted[b] += w
            revealed[b].append(len(emitted))
    else:
        if max_steps is None and bool((x == mask_id).any()):
            raise RuntimeError(f"self-speculative sampling left positions masked after {limit} steps")
    if was_training:
        model.train()
    return SelfSpecSample(tokens=x, nfe=nfe, causal_passes=nfe.clone() if verify else torch.zeros_like(nfe),
                          drafted=drafted, accepted=accepted, revealed_per_step=revealed, reveal_rank=reveal_rank)


def calibrate_dtau(model, canvas: torch.Tensor, target_nfe: float, *, seed: int = 0, iterations: int = 8,
                   low: float = 1e-3, high: float = 1.0) -> dict:
    """Bisect log(dtau) until the mean NFE over `canvas`'s rows is closest to target_nfe.

    Fixed seeds per row, so the mean NFE is a (noisy but) reproducible function of dtau.
    Returns {"dtau", "nfe", "reachable", "tried": [(dtau, nfe), ...]}; reachable is False
    when even the widest window (dtau = high) needs more steps than the budget.
    """
    tried = []

    def mean_nfe(dtau):
        gens = [torch.Generator().manual_seed(indexed_seed(seed, row)) for row in range(canvas.shape[0])]
        out = self_spec_sample(model, canvas, dtau, generator=gens)
        value = float(out.nfe.double().mean())
        tried.append((dtau, value))
        return value

    if mean_nfe(high) > target_nfe:
        return {"dtau": high, "nfe": tried[-1][1], "reachable": False, "tried": tried}
    lo, hi = math.log(low), math.log(high)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if mean_nfe(math.exp(mid)) > target_nfe:
            lo = mid  # too many steps: widen the windows
        else:
            hi = mid
    best = min(tried, key=lambda pair: (abs(pair[1] - target_nfe), -pair[0]))
    return {"dtau": best[0], "nfe": best[1], "reachable": True, "tried": tried}
