"""MDLM's ancestral samplers, `ddpm` and `ddpm_cache`, over a partly fixed canvas.

The canvas is a (batch, seq) tensor of ids: positions holding the mask id are
generated, every other position is fixed (a prompt prefix, or SpecDiff's context).
Time runs down a grid linspace(1, eps, steps + 1). From t to s a masked position
stays masked with probability move_chance(s) / move_chance(t) and otherwise takes a
token drawn from the SUBS distribution p(x0 | x_t) (MDLM draws the same categorical
over vocab + mask in one go; splitting it into "unmask?" then "which token?" is the
same distribution and lets us record the token's distribution). Unmasked positions
never change. After the loop, positions still masked get the SUBS argmax (MDLM's final
noise removal).

Held masks (`held=`): columns that hold the mask id and are never revealed. The network
sees a mask there at every step; nothing is drawn there, no call is spent on them, and the
reveal counts follow the schedule over the other masks. SpecDiff's drafter puts one after
its drafts (a slack mask; dlmkit/decoding/drafters.py).

Order (`order=`): "random" is MDLM's sampler, each masked position revealed by its own
coin. "left_to_right" draws the same coins but uses only their count: a row that would
reveal n positions at a step reveals its n leftmost masked positions instead. The number
of masks left is then the same Markov chain (Binomial thinning by mc(s)/mc(t) at each
step), so the counts per step, and with them the network calls, have the law of MDLM's
sampler; only which positions are revealed differs. Positions revealed at one step are
drawn independently from one network output that saw everything to their left and nothing
to their right, so the distribution recorded for each token conditions on the fixed
positions and the tokens to its left alone. SpecDiff's drafter needs that
(dlmkit/decoding/drafters.py).

`ddpm_cache` reuses the previous network output when no position changed in the
previous step and the model ignores time (the input is then identical), so its `nfe`
counts only the calls made. With the same generator the two samplers return the same
tokens: the cache only skips recomputing identical logits.

Randomness is drawn in float64 (MDLM's float32 Gumbel noise truncates the tail and
lowers sample entropy; Zheng et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlmkit.decoding.speculative import uniforms
from dlmkit.errors import UserError
from dlmkit.decoding.settings import SAMPLERS  # noqa: F401 (its home is light)
from dlmkit.models.mdlm_diffusion import LogLinearSchedule, subs_log_probs

ORDERS = ("random", "left_to_right")
_ROWS_PER_DRAW = 256  # bounds the (rows, vocab) float64 noise buffer


@dataclass
class MDLMSample:
    tokens: torch.Tensor  # (batch, seq) long; no mask left when noise_removal is on, but at held columns
    nfe: int  # network calls actually made
    unmask_step: torch.Tensor  # (batch, seq) long: loop step that unmasked each position;
    # -1 for fixed positions, `steps` for positions filled by the final argmax, and
    # `steps + 1` for positions left masked (noise_removal off, or held)
    q: torch.Tensor | None  # (batch, len(q_positions), vocab): distribution each token was drawn from
    q_positions: torch.Tensor | None  # (P,) columns that q describes


def make_canvas(prefix: torch.Tensor, length: int, mask_id: int) -> torch.Tensor:
    """prefix (seq,) or (batch, seq) followed by masks up to `length` positions."""
    prefix = prefix if prefix.dim() == 2 else prefix.unsqueeze(0)
    if prefix.shape[1] > length:
        raise UserError(f"prefix of {prefix.shape[1]} tokens is longer than the canvas ({length}); raise the length")
    suffix = torch.full((prefix.shape[0], length - prefix.shape[1]), mask_id, dtype=prefix.dtype, device=prefix.device)
    return torch.cat([prefix, suffix], dim=1)


def _draw_tokens(log_probs: torch.Tensor, generator) -> torch.Tensor:
    """One categorical draw per row by Gumbel-max in float64."""
    out = []
    for rows in log_probs.split(_ROWS_PER_DRAW):
        u = uniforms(rows.shape, generator, rows.device)
        gumbel = -torch.log(-torch.log(u.clamp_min(1e-300)))
        out.append((rows + gumbel).argmax(dim=-1))
    return torch.cat(out) if out else log_probs.new_zeros(0, dtype=torch.long)


def _q_columns(q_positions, fixed: torch.Tensor) -> torch.Tensor | None:
    if q_positions is None:
        return None
    if isinstance(q_positions, str):
        if q_positions != "masked":
            raise UserError(f"q_positions must be None, 'masked' or a list of columns, got {q_positions!r}")
        return (~fixed).any(0).nonzero().reshape(-1)
    seq = fixed.shape[1]
    columns = torch.as_tensor(q_positions, dtype=torch.long, device=fixed.device).reshape(-1)
    if columns.numel() and (columns.min() < 0 or columns.max() >= seq):
        raise UserError(f"q_positions must lie in [0, {seq}); got {columns.tolist()}")
    return columns


def _free_columns(held, fixed: torch.Tensor) -> torch.Tensor:
    """(seq,) bool, False at the held columns; they must hold the mask in every row."""
    seq = fixed.shape[1]
    free = torch.ones(seq, dtype=torch.bool, device=fixed.device)
    if held is None:
        return free
    columns = torch.as_tensor(held, dtype=torch.long, device=fixed.device).reshape(-1)
    if columns.numel() and (columns.min() < 0 or columns.max() >= seq):
        raise UserError(f"held columns must lie in [0, {seq}); got {columns.tolist()}")
    if bool(fixed[:, columns].any()):
        raise UserError(f"held columns {columns.tolist()} must hold the mask id in every row; mask them first")
    free[columns] = False
    return free


def _point_masses_at_fixed(columns, x, fixed, vocab, dtype) -> torch.Tensor:
    q = torch.zeros(x.shape[0], columns.numel(), vocab, dtype=dtype, device=x.device)
    rows, slots = fixed[:, columns].nonzero(as_tuple=True)
    q[rows, slots, x[rows, columns[slots]]] = 1
    return q


@torch.no_grad()
def sample(
    model,
    canvas: torch.Tensor,
    steps: int,
    *,
    sampler: str = "ddpm_cache",
    generator: torch.Generator | None = None,
    q_positions=None,
    q_dtype: torch.dtype = torch.float32,
    mask_id: int | None = None,
    eps: float = 1e-5,
    noise_removal: bool = True,
    schedule: LogLinearSchedule = LogLinearSchedule(),
    order: str = "random",
    held=None,
) -> MDLMSample:
    """Fill the masked positions of `canvas` with `steps` denoising steps.

    model: `model(ids, sigma) -> logits`, with `.config.time_conditioning` (and
    `.mask_id` unless mask_id is given). q_positions: None (record nothing), "masked"
    (every column masked in some row), or a list of column indices; fixed positions
    record a point mass on their token. order: "random" (MDLM) or "left_to_right" (the same
    number revealed per step, leftmost masked positions first; see the module docstring).
    held: None or a list of columns that hold the mask id in every row and stay masked.
    """
    if sampler not in SAMPLERS:
        raise UserError(f"unknown MDLM sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if order not in ORDERS:
        raise UserError(f"unknown unmasking order {order!r}; choose one of {', '.join(ORDERS)}")
    if not isinstance(steps, int) or steps < 1:
        raise UserError(f"steps must be a positive integer, got {steps!r}")
    if canvas.dim() != 2:
        raise UserError(f"canvas must have shape (batch, seq), got {tuple(canvas.shape)}")
    mask_id = model.mask_id if mask_id is None else mask_id
    config = getattr(model, "config", None)
    time_conditioning = bool(getattr(config, "time_conditioning", True))
    model_length = getattr(config, "model_length", None)
    if model_length is not None and canvas.shape[1] > model_length:
        raise UserError(f"canvas of {canvas.shape[1]} positions exceeds the model length {model_length}; shorten it")

    x = canvas.clone()
    batch, seq = x.shape
    device = x.device
    fixed = x != mask_id
    unmask_step = torch.where(fixed, -1, steps + 1).to(torch.long)
    free = _free_columns(held, fixed)  # (seq,) False at the held masks

    columns = _q_columns(q_positions, fixed | ~free)  # "masked" leaves the held masks out
    q = None
    if columns is not None:
        slot_of_column = torch.full((seq,), -1, dtype=torch.long, device=device)
        slot_of_column[columns] = torch.arange(columns.numel(), device=device)

    def record(rows, cols, probs):
        if q is not None:
            slots = slot_of_column[cols]
            keep = slots >= 0
            q[rows[keep], slots[keep]] = probs[keep].to(q_dtype)

    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    timesteps = torch.linspace(1, eps, steps + 1, dtype=torch.float64)
    nfe = 0
    logits = None
    for i in range(steps):
        t, s = timesteps[i], timesteps[i + 1]
        if logits is None:
            sigma = schedule.sigma(t).float().expand(batch).to(device)
            logits = model(x, sigma)
            nfe += 1
            if columns is not None and q is None:
                q = _point_masses_at_fixed(columns, x, fixed, logits.shape[-1], q_dtype)
        masked = (x == mask_id) & free
        # From t to s a masked token is revealed with probability 1 - mc(s)/mc(t).
        reveal_prob = 1 - schedule.move_chance(s) / schedule.move_chance(t)
        u = uniforms((batch, seq), generator, device)
        reveal = masked & (u < reveal_prob)
        if order == "left_to_right":  # as many as the coins say, the leftmost masked ones
            reveal = masked & (masked.long().cumsum(1) <= reveal.sum(1, keepdim=True))
        rows, cols = reveal.nonzero(as_tuple=True)
        if rows.numel():
            log_probs = subs_log_probs(logits[rows, cols].double(), x[rows, cols], mask_id)
            x[rows, cols] = _draw_tokens(log_probs, generator)
            unmask_step[rows, cols] = i
            record(rows, cols, log_probs.exp())
        if sampler == "ddpm" or time_conditioning or rows.numel():
            logits = None  # the next input differs (or the model reads time): recompute

    if noise_removal and bool(((x == mask_id) & free).any()):
        if logits is None:
            sigma = schedule.sigma(timesteps[-1]).float().expand(batch).to(device)
            logits = model(x, sigma)
            nfe += 1
        rows, cols = ((x == mask_id) & free).nonzero(as_tuple=True)
        log_probs = subs_log_probs(logits[rows, cols].double(), x[rows, cols], mask_id)
        x[rows, cols] = log_probs.argmax(dim=-1)
        unmask_step[rows, cols] = steps
        # An argmax is deterministic: the token's distribution is a point mass on it.
        record(rows, cols, torch.nn.functional.one_hot(x[rows, cols], log_probs.shape[-1]).double())
    if was_training:
        model.train()

    return MDLMSample(tokens=x, nfe=nfe, unmask_step=unmask_step, q=q, q_positions=columns)


def ddpm(model, canvas, steps, **kwargs) -> MDLMSample:
    """MDLM's `ddpm` predictor: one network call per step."""
    return sample(model, canvas, steps, sampler="ddpm", **kwargs)


def ddpm_cache(model, canvas, steps, **kwargs) -> MDLMSample:
    """MDLM's `ddpm_cache` predictor: skips calls whose input did not change."""
    return sample(model, canvas, steps, sampler="ddpm_cache", **kwargs)
