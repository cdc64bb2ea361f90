"""Drafters for speculative decoding, behind one interface:

    drafter.reset()                                    # a new prompt
    draft = drafter.draft(sequence, gamma, temperature, generator)
    draft.tokens   # gamma ids
    draft.probs    # (gamma, vocab) float64: the q each token was drawn from (None at temperature 0)
    draft.nfe      # network calls this draft cost

ARDrafter: a small causal LM (GPT-2 for gpt2-xl) drafts gamma tokens one forward at a
time. Its KV cache follows the sequence like the target's (`CachedLM`), so after a
rejection the next draft crops it back to the accepted prefix.

MDLMDrafter (SpecDiff): the context followed by gamma masks is one MDLM canvas; T
denoising steps (`ddpm_cache` by default) fill the masks, and the q of each draft is the
SUBS distribution at the step that unmasked it (recorded by the sampler), which is the
distribution the token was actually drawn from. The canvas keeps the last
model_length - gamma - slack context tokens (model_length: 64 for the tiny MDLM drafter,
1024 for mdlm-owt).

The slack mask (a deliberate difference from SpecDiff, `slack=1` by default). MDLM trains on
wrapped blocks `[BOS] chunk [EOS]`, so its last position is always `<|endoftext|>` and a
bidirectional model learns that the last position of a canvas is one. A canvas that ends
at the last draft therefore drafts `<|endoftext|>` there: the tiny MDLM drafter did so in
155 of 156 drafts (T=1) where the target's text had it in 2 (benchmarks/specdiff_drafts.py),
so a draft's last token was never accepted. With `slack` masks after the drafts the last
draft sits where a stream token does in training. The slack masks are held: never revealed,
never drawn (`sample(..., held=)`), so no draft conditions on them beyond their being masks,
and losslessness is untouched. `slack=0` is SpecDiff's canvas.

Why the masks are revealed left to right. `speculative_verify` is lossless when, given
the prefix and the accepted drafts d_1..d_{i-1}, draft d_i is distributed as the q_i it
reports: then P(emit x at i) = min(p_i(x), q_i(x)) + P(reject) norm(max(0, p_i - q_i))(x)
= p_i(x). MDLM's own sampler reveals a random subset at each step. With T >= 2 and
gamma >= 2, d_j (j > i) can be revealed before d_i, and d_i is then drawn from
q_i(. | prefix, d_j): the reported q_i depends on a token after i, the law of d_i given
d_<i is no longer q_i but the mixture over d_j, and the accept test at i leaks d_j into
the output (a drafter whose two positions copy each other gives P(out2 == out1) = 0.556
instead of 0.5 at T = 2). So the drafter reveals left to right (`order="left_to_right"`):
each step reveals as many masks as MDLM's schedule for T steps says (the same law of
the count, so of the network calls), but the leftmost still masked ones, all drawn independently
from one network output that sees the prefix, the earlier drafts and masks. Each q_i
then conditions on the prefix and d_<i alone (on a subset of them, since d's revealed at
the same step are not seen), d_i given d_<i is exactly q_i, and the proof above holds
position by position. Masks the T steps leave (rare: probability eps = 1e-5 per token)
take the final argmax, a point-mass q given everything to their left: still lossless.
T keeps its meaning: T = 1 drafts all gamma tokens in one call (each from the prefix
alone), larger T reveals fewer per call (about gamma / T) with more context each.
The count per step is random (Binomial, as in MDLM), so T = gamma reveals one per call on
average, not always; ddpm_cache skips a call when the previous step revealed nothing.

Temperature: both drafters draw from their distribution at the target's temperature
(logits / T). At temperature 0 they draft greedily: the AR drafter by argmax, the MDLM by
taking the argmax of the SUBS distribution at the step a position is unmasked (how many
positions unmask at a step stays random, as in the sampler; which ones is left to right).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dlmkit.decoding.mdlm_sampler import SAMPLERS, make_canvas, sample
from dlmkit.decoding.spec_loop import CachedLM, next_token
from dlmkit.decoding.speculative import probs_from_logits, sample_from, uniforms
from dlmkit.errors import UserError
from dlmkit.models.mdlm_diffusion import mask_out


@dataclass
class Draft:
    tokens: list[int]
    probs: torch.Tensor | None  # (gamma, drafter vocab) float64; None for a greedy draft
    nfe: int


class ARDrafter:
    """Standard speculative decoding's drafter: a small causal LM with its own KV cache."""

    def __init__(self, model):
        self.lm = CachedLM(model)

    def reset(self) -> None:
        self.lm.reset()

    def draft(self, sequence: list[int], gamma: int, temperature: float,
              generator: torch.Generator | None) -> Draft:
        sequence = list(sequence)
        tokens, probs = [], []
        for _ in range(gamma):
            logits = self.lm.logits(sequence, 1)[0]
            if temperature == 0:
                token = next_token(logits, 0, None)
            else:
                q = probs_from_logits(logits, temperature)
                token = int(sample_from(q, uniforms((), generator, q.device)))
                probs.append(q)
            tokens.append(token)
            sequence.append(token)
        return Draft(tokens, torch.stack(probs) if probs else None, nfe=gamma)


class _TemperedDenoiser:
    """The MDLM with its logits divided by a temperature, or (temperature 0) replaced by a point
    mass on the argmax over real tokens, so the sampler's draw at unmask time is the argmax.
    A plain callable, not a module, so the sampler never toggles train/eval through it."""

    training = False

    def __init__(self, model, temperature: float):
        self.model = model
        self.temperature = temperature
        self.config = model.config
        self.mask_id = model.mask_id

    def __call__(self, ids, sigma=None):
        logits = self.model(ids, sigma)
        if self.temperature > 0:
            return logits / self.temperature
        choice = mask_out(logits, self.mask_id).argmax(-1)
        return torch.full_like(logits, float("-inf")).scatter(-1, choice.unsqueeze(-1), 0.0)


class MDLMDrafter:
    """SpecDiff's drafter: gamma masked positions after the context, `steps` denoising steps."""

    def __init__(self, model, steps: int, sampler: str = "ddpm_cache", slack: int = 1):
        if sampler not in SAMPLERS:
            raise UserError(f"unknown MDLM sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if not isinstance(steps, int) or steps < 1:
            raise UserError(f"denoising steps T must be a positive integer, got {steps!r}")
        if not isinstance(slack, int) or slack < 0:
            raise UserError(f"slack masks must be a non-negative integer, got {slack!r}")
        self.model = model
        self.steps = steps
        self.sampler = sampler
        self.slack = slack
        self.model_length = model.config.model_length
        self.device = next(model.parameters()).device

    def reset(self) -> None:
        pass  # the canvas is rebuilt every round: nothing carries over

    def draft(self, sequence: list[int], gamma: int, temperature: float,
              generator: torch.Generator | None) -> Draft:
        window = self.model_length
        if gamma + self.slack >= window:
            raise UserError(f"gamma {gamma} + {self.slack} slack mask(s) leave no room for context in the MDLM's "
                            f"{window}-position canvas; lower gamma")
        context = torch.tensor(sequence[-(window - gamma - self.slack):], dtype=torch.long, device=self.device)
        start = context.numel()
        canvas = make_canvas(context, start + gamma + self.slack, self.model.mask_id)
        net = self.model if temperature == 1 else _TemperedDenoiser(self.model, temperature)
        drafted = range(start, start + gamma)
        out = sample(net, canvas, self.steps, sampler=self.sampler, generator=generator,
                     q_positions=None if temperature == 0 else list(drafted), q_dtype=torch.float64,
                     mask_id=self.model.mask_id, order="left_to_right",
                     held=list(range(start + gamma, start + gamma + self.slack)))
        tokens = out.tokens[0, start:start + gamma].tolist()
        return Draft(tokens, None if temperature == 0 else out.q[0], nfe=out.nfe)
