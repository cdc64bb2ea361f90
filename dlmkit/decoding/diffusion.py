"""Dream's diffusion sampler: start from an all-mask answer and unmask it over `steps`
forward passes, most confident positions first.

Follows the reference `diffusion_generate` of Dream (Dream-org/Dream, also NVlabs/Fast-dLLM
dream/model/generation_utils.py) step for step, so a seeded run gives the same tokens:

  canvas    = prompt + max_new_tokens mask ids
  timesteps = linspace(1, eps, steps + 1); step i goes from t = ts[i] to s = ts[i + 1]
  each step: one bidirectional forward over the whole canvas (logits shifted one place),
             sample a token for every masked position, then commit some of them:
    origin        each masked position commits with probability 1 - s/t
    maskgit_plus  the k most confident (probability of the sampled token)
    topk_margin   the k largest top1 - top2 probability margins
    entropy       the k lowest entropies (confidence = sum p log p)
  with k = int(num_masked * (1 - s/t)), and everything still masked at the last step.
  Committed tokens are never re-masked.

On top of the reference we record, for every generation position, the step after which it
stopped being the mask (`commit_step`), so the anchors for any step fraction come from a
single run: the anchors after c steps are the positions with commit_step < c.

With both top_p and top_k set (Dream's defaults) the nucleus is found from the top_k + 1
largest logits instead of a sort of the whole vocabulary (`top_p_top_k_filter`): the same kept
tokens in every row, half the sampling time of a tiny-Dream step at 128 open positions.

Two deliberate differences, both invisible for one prompt without padding:
  * k is counted per row; the reference averages the masked count over the batch, which
    is the same number unless a row fills a position with the mask token itself (then the
    reference can pick an already committed position of the other rows and re-mask it).
  * padding hides only padded keys; the reference also hides padded queries, which only
    changes the (unused) outputs at padded positions and would make them NaN here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dlmkit.decoding.settings import DreamSettings  # noqa: F401 (its home is light; imported from here too)
from dlmkit.errors import UserError

ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")


class PermanenceCheck:
    """A tokens hook that counts committed positions whose token later changes."""

    def __init__(self, mask_id: int):
        self.mask_id, self.previous, self.violations, self.row_violations = mask_id, None, 0, None

    def __call__(self, step, x, logits):
        if self.previous is not None:
            committed = self.previous != self.mask_id
            changed = (committed & (x != self.previous)).sum(dim=1)
            self.row_violations = changed if self.row_violations is None else self.row_violations + changed
            self.violations = int(self.row_violations.sum())
        self.previous = x.clone()

    def violations_of(self, row: int) -> int:
        """The violations in one row of the batch."""
        return 0 if self.row_violations is None else int(self.row_violations[row])


@dataclass
class DiffusionOutput:
    sequences: torch.LongTensor  # (B, P + max_new_tokens): the (left-padded) prompt, then the answer
    commit_step: torch.LongTensor  # (B, max_new_tokens): 0-based step after which the position is not the mask;
    #                                 -1 = filled before step 0 (by tokens_hook), `steps` = never filled
    prompt_length: int  # P, the padded prompt width
    history: list[torch.LongTensor] | None = None  # canvas after each step (return_history=True)

    @property
    def generated(self) -> torch.LongTensor:
        return self.sequences[:, self.prompt_length:]

    def committed_by(self, steps_done: int) -> torch.BoolTensor:
        """(B, max_new_tokens): True where the position was filled within the first `steps_done` steps."""
        return self.commit_step < steps_done


# ---------------------------------------------------------------------------------------
# Token sampling (the reference's sample_tokens)


def top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest prefix of tokens (by probability) whose mass reaches
    top_p, always keeping the most likely one; the rest get the dtype's lowest value."""
    sorted_logits, sorted_idx = torch.sort(logits, descending=True)
    cum_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    remove = cum_probs > top_p
    remove[..., 1:] = remove[..., :-1].clone()  # shift right: keep the token that crosses top_p
    remove[..., 0] = False
    remove = torch.zeros_like(remove).scatter(-1, sorted_idx, remove)
    return logits.masked_fill(remove, torch.finfo(logits.dtype).min)


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the top_k largest logits (ties with the k-th included)."""
    top_k = min(top_k, logits.size(-1))
    kth = torch.topk(logits, top_k).values[..., -1:]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def top_p_top_k_filter(logits: torch.Tensor, top_p: float, top_k: int) -> torch.Tensor:
    """top_k_filter(top_p_filter(logits, top_p), top_k), without sorting the vocabulary.

    The reference sorts every row (152k tokens for Dream-7B; at 128 open positions that sort is
    half of a tiny-Dream step on a CPU). After both filters a row keeps a prefix of its sorted
    order: the nucleus (the tokens before the one whose cumulative mass first exceeds top_p,
    that one included), cut to top_k. So the top_k + 1 largest logits decide it:
      - cumulative mass of the top k still <= top_p: the nucleus is longer than k, top_k keeps
        the k largest;
      - else the nucleus is 1 + the number of those k cumulative masses <= top_p (<= k), and
        top_k keeps all of it.
    Our softmax sums the vocabulary in another order than the reference's sorted one; each sum is
    within vocab * eps of the exact one, so a row with a cumulative mass within 2 * vocab * eps of
    top_p (1207 tokens: 3e-4; 152k: 0.04), or whose cut falls between equal logits (where the
    reference's sort order decides), takes the reference's filters instead: the kept tokens, and
    so the returned logits (kept ones unchanged, the rest the dtype's lowest value), are the
    reference's in every row (tests compare them). Half-precision logits (a GPU's bf16 run, where
    sorting is cheap) take the reference's filters outright.
    """
    vocab = logits.size(-1)
    if top_k + 1 > vocab or logits.numel() == 0 or logits.dtype not in (torch.float32, torch.float64):
        return top_k_filter(top_p_filter(logits, top_p), top_k)
    tolerance = 2 * vocab * torch.finfo(logits.dtype).eps
    flat = logits.reshape(-1, vocab)
    values, order = torch.topk(flat, top_k + 1, dim=-1)  # sorted, largest first
    cum = torch.cumsum(torch.softmax(flat, dim=-1).gather(-1, order[:, :top_k]), dim=-1)
    inside = cum <= top_p
    kept = torch.where(inside[:, -1], top_k, 1 + inside.sum(dim=-1))  # (rows,) prefix lengths, 1..k
    rows = torch.arange(flat.shape[0], device=flat.device)
    last, after = values[rows, kept - 1], values[rows, kept]
    unsure = ((cum - top_p).abs() < tolerance).any(dim=-1) | (last == after) | ~torch.isfinite(last)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep.scatter_(-1, order[:, :top_k], torch.arange(top_k, device=flat.device) < kept[:, None])
    out = flat.masked_fill(~keep, torch.finfo(flat.dtype).min)
    if bool(unsure.any()):
        out[unsure] = top_k_filter(top_p_filter(flat[unsure], top_p), top_k)
    return out.reshape(logits.shape)


def _multinomial(probs: torch.Tensor, num_samples: int, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.multinomial(probs, num_samples)
    return torch.multinomial(probs.to(generator.device), num_samples, generator=generator).to(probs.device)


def _rand(n: int, device, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.rand(n, device=device)
    return torch.rand(n, device=generator.device, generator=generator).to(device)


def _row_draws(draw, counts: list[int], generators) -> torch.Tensor:
    """One draw per batch row with that row's generator, concatenated in row order: rows of a batch
    consume their generators exactly as they would alone (draw(n, generator) -> n values)."""
    return torch.cat([draw(n, g) for n, g in zip(counts, generators)]) if counts else draw(0, generators[0])


def sample_tokens(logits, temperature=0.0, top_p=None, top_k=None, confidence="prob", generator=None,
                  row_counts=None):
    """Sample one token per row of `logits` (N, V) and score how sure the model is.

    Order as the reference: divide by temperature, top_p, top_k, softmax, then sample
    (argmax at temperature 0). The filters act even at temperature 0, so they change the
    confidences (margin, entropy) though not the argmax.
    confidence: "prob" (of the chosen token), "margin" (top1 - top2) or "neg_entropy" (sum p log p).
    generator: one torch.Generator, or a list of one per batch row with row_counts (how many of the N
        rows of `logits` belong to each batch row, in order).
    Returns (confidence (N,), tokens (N,)).
    """
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1 and top_k is not None:
        logits = top_p_top_k_filter(logits, top_p, top_k)  # the same tokens as the two below, in order
    else:
        if top_p is not None and top_p < 1:
            logits = top_p_filter(logits, top_p)
        if top_k is not None:
            logits = top_k_filter(logits, top_k)
    probs = torch.softmax(logits, dim=-1)

    if temperature > 0:
        # torch.distributions.Categorical, as the reference uses, normalises then calls multinomial
        normalised = probs / probs.sum(-1, keepdim=True)
        if isinstance(generator, (list, tuple)):
            parts = normalised.split(row_counts)
            tokens = torch.cat([_multinomial(p, 1, g) for p, g in zip(parts, generator)]).squeeze(-1)
        else:
            tokens = _multinomial(normalised, 1, generator).squeeze(-1)
        score = torch.gather(probs, -1, tokens.unsqueeze(-1)).squeeze(-1)
    else:
        score, tokens = probs.max(dim=-1)

    if confidence == "margin":
        top2 = torch.topk(probs, 2, dim=-1).values
        score = top2[:, 0] - top2[:, 1]
    elif confidence == "neg_entropy":
        score = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return score, tokens


_CONFIDENCE = {"maskgit_plus": "prob", "topk_margin": "margin", "entropy": "neg_entropy"}


# ---------------------------------------------------------------------------------------
# The loop


def _check_args(input_ids, attention_mask, max_new_tokens, steps, alg, temperature, top_p, top_k, alg_temp, eps):
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise UserError("input_ids must be a (batch, prompt_length) tensor; add a batch dimension with [None]")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise UserError(f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
                        f"{tuple(input_ids.shape)}; pass the mask the tokenizer returned with them")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if not isinstance(steps, int) or steps < 1:
        raise UserError(f"steps must be an integer >= 1, got {steps!r}")
    if alg not in ALGS:
        raise UserError(f"unknown diffusion alg {alg!r}; pass one of {', '.join(ALGS)}")
    if temperature is None or temperature < 0:
        raise UserError(f"temperature must be >= 0, got {temperature!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise UserError(f"top_p must be in (0, 1] or None, got {top_p!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise UserError(f"top_k must be an integer >= 1 or None, got {top_k!r}")
    if alg_temp is not None and alg_temp < 0:
        raise UserError(f"alg_temp must be >= 0 or None, got {alg_temp!r}")
    if not 0 < eps < 1:
        raise UserError(f"eps must be in (0, 1), got {eps!r}")


@torch.inference_mode()
def diffusion_generate(
    model,
    input_ids,
    attention_mask=None,
    *,
    max_new_tokens,
    steps,
    alg="entropy",
    temperature=0.0,
    top_p=None,
    top_k=None,
    alg_temp=None,
    eps=1e-3,
    tokens_hook=None,
    logits_hook=None,
    generator=None,
    return_history=False,
    mask_token_id=None,
) -> DiffusionOutput:
    """Generate `max_new_tokens` tokens after each prompt in `steps` denoising steps.

    model: called as model(x, attention_mask=, position_ids=) and returning Dream's shifted
        logits (B, L, V), e.g. a DreamModel; its `mask_token_id` is used unless given here.
    input_ids, attention_mask: (B, P) prompts, left padded (mask 0 on padding).
    alg: "origin" | "maskgit_plus" | "topk_margin" | "entropy".
    temperature, top_p, top_k: token sampling (top_p / top_k shape the confidences even at
        temperature 0). alg_temp: > 0 samples the positions to commit from
        softmax(confidence / alg_temp) instead of taking the top k.
    tokens_hook(step, x, logits): called with step None (and logits None) before the first
        step and after every step with the updated canvas; may return a new canvas.
    logits_hook(step, x, logits): called before sampling with the shifted logits; may return
        new logits. Hooks that return None change nothing.
    generator: the torch.Generator for every random draw (default: torch's global RNG), or a list of
        one per row: each row then draws exactly what it would draw alone and breaks confidence ties
        as it would alone, so a batch of prompts samples what the prompts would one at a time
        (measured on the tiny Dream: the same tokens; a backend whose padded attention rounds the
        logits differently could still flip a draw that lands on a boundary).
    """
    per_row = isinstance(generator, (list, tuple))
    if per_row and len(generator) != input_ids.shape[0]:
        raise UserError(f"{len(generator)} generators for a batch of {input_ids.shape[0]}; pass one per row")
    _check_args(input_ids, attention_mask, max_new_tokens, steps, alg, temperature, top_p, top_k, alg_temp, eps)
    mask_id = mask_token_id if mask_token_id is not None else getattr(model, "mask_token_id", None)
    if mask_id is None:
        raise UserError("no mask token id: pass mask_token_id= or a model with a mask_token_id (a Dream checkpoint)")

    batch, prompt_len = input_ids.shape
    x = F.pad(input_ids, (0, max_new_tokens), value=mask_id)

    # Left padding: generation positions attend like real tokens; positions count real tokens
    # only, so a padded prompt sees the same positions as the unpadded one.
    position_ids = None
    if attention_mask is not None and bool((attention_mask == 0).any()):
        attention_mask = F.pad(attention_mask, (0, max_new_tokens), value=1)
        position_ids = attention_mask.long().cumsum(-1) - 1
        position_ids.masked_fill_(attention_mask == 0, 1)
    else:
        attention_mask = None  # nothing to hide: lets SDPA take its fastest unmasked path
    is_real = attention_mask.bool() if attention_mask is not None else torch.ones_like(x, dtype=torch.bool)
    pads = (~is_real).sum(dim=1).tolist()  # each row's left padding

    timesteps = torch.linspace(1, eps, steps + 1, device=x.device)
    never = steps
    commit_step = torch.full((batch, max_new_tokens), never, dtype=torch.long, device=x.device)
    history = [] if return_history else None

    def record_commits(step_index):
        still_masked = x[:, prompt_len:] == mask_id
        commit_step[still_masked] = never  # only a hook can re-mask; then the position is open again
        commit_step[~still_masked & (commit_step == never)] = step_index

    if tokens_hook is not None:
        x = _or_same(tokens_hook(None, x, None), x)
    record_commits(-1)  # anything a hook filled before step 0

    for i in range(steps):
        mask_index = (x == mask_id) & is_real
        logits = model(x, attention_mask=attention_mask, position_ids=position_ids)
        if logits_hook is not None:
            logits = _or_same(logits_hook(i, x, logits), logits)
        mask_logits = logits[mask_index]
        row_counts = mask_index.sum(dim=1).tolist() if per_row else None
        t, s = timesteps[i], timesteps[i + 1]
        last = i == steps - 1

        if alg == "origin":
            # Each masked position independently jumps from t to s with probability 1 - s/t.
            p_transfer = 1.0 if last else 1 - s / t
            x0 = torch.full_like(x[mask_index], mask_id)
            if per_row:
                transfer = _row_draws(lambda n, g: _rand(n, x.device, g), row_counts, generator) < p_transfer
            else:
                transfer = _rand(x0.numel(), x.device, generator) < p_transfer
            if transfer.any():
                counts = [int(part.sum()) for part in transfer.split(row_counts)] if per_row else None
                _, x0[transfer] = sample_tokens(mask_logits[transfer], temperature, top_p, top_k, generator=generator,
                                                row_counts=counts)
            x[mask_index] = x0
        else:
            confidence, x0 = sample_tokens(mask_logits, temperature, top_p, top_k, _CONFIDENCE[alg], generator,
                                           row_counts)
            # Non-masked positions score -inf so they are never chosen (permanence).
            full_confidence = torch.full(x.shape, -torch.inf, dtype=logits.dtype, device=x.device)
            full_confidence[mask_index] = confidence
            proposal = torch.full_like(x, mask_id)
            proposal[mask_index] = x0
            num_masked = mask_index.sum(dim=1)
            # Same float32 arithmetic and truncation as the reference's int(n * (1 - s/t)).
            num_commit = num_masked if last else (num_masked.float() * (1 - s / t)).long()
            for b, k in enumerate(num_commit.tolist()):
                if k == 0:
                    continue
                if alg_temp:
                    chosen = _multinomial(F.softmax(full_confidence[b] / alg_temp, dim=-1), k,
                                          generator[b] if per_row else generator)
                else:
                    # Over the row without its left padding, as the reference sees one prompt alone: equal
                    # confidences (common when the filters leave one token) then break the same way in a batch.
                    start = pads[b]
                    chosen = torch.topk(full_confidence[b, start:], k).indices + start
                x[b, chosen] = proposal[b, chosen]

        if tokens_hook is not None:
            x = _or_same(tokens_hook(i, x, logits), x)
        record_commits(i)
        if history is not None:
            history.append(x.clone())

    return DiffusionOutput(sequences=x, commit_step=commit_step, prompt_length=prompt_len, history=history)


def left_padded(prompts: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of different lengths as one left-padded batch: (input_ids, attention_mask), both (B, P)."""
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return ids, mask


def _or_same(returned, original):
    return original if returned is None else returned


__all__ = ["ALGS", "DiffusionOutput", "DreamSettings", "PermanenceCheck", "diffusion_generate", "sample_tokens", "top_k_filter", "top_p_filter",
           "top_p_top_k_filter"]
