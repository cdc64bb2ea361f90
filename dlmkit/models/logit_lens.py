"""The logit lens: read a causal LM's residual stream after layer L as if the model stopped there.

    h_L      = output of decoder block L (1-based: after L of the model's N blocks)
    logits_L = lm_head(final_norm(h_L))

The final norm matters: the residual stream is unnormalised, and lm_head was trained on
normed states, so skipping it (as the published bridge script did) gives logits of the
wrong scale and often the wrong argmax. At L = N this is exactly the model's own logits.

Taps are forward hooks on the decoder blocks (`model.model.layers[L - 1]` in Qwen2 /
LLaMA-style models, `model.transformer.h[L - 1]` in GPT-2), so one forward pass serves every
tap and nothing in transformers is patched.

    with LayerTaps(model, [2, 4, 6]) as taps:
        model(input_ids)
    logits = lens_logits(model, taps.hidden[2][:, positions])
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlmkit.errors import UserError


def decoder_layers(model) -> nn.ModuleList:
    """The stack of decoder blocks of a transformers causal LM."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "layers"):
        return inner.layers  # Qwen2, LLaMA, Mistral, Qwen3
    transformer = getattr(model, "transformer", None)
    if transformer is not None and hasattr(transformer, "h"):
        return transformer.h  # GPT-2
    raise UserError(f"cannot find the decoder blocks of a {type(model).__name__}; "
                    "pass a Qwen2/LLaMA-style or GPT-2 causal LM")


def final_norm(model) -> nn.Module:
    """The norm applied after the last block, before lm_head."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "norm"):
        return inner.norm
    transformer = getattr(model, "transformer", None)
    if transformer is not None and hasattr(transformer, "ln_f"):
        return transformer.ln_f
    raise UserError(f"cannot find the final norm of a {type(model).__name__}; "
                    "pass a Qwen2/LLaMA-style or GPT-2 causal LM")


def num_layers(model) -> int:
    return len(decoder_layers(model))


def check_taps(taps, n_layers: int) -> list[int]:
    """Sorted distinct taps, each in 1..n_layers; a one-line error otherwise."""
    taps = sorted(set(int(t) for t in taps))
    bad = [t for t in taps if not 1 <= t <= n_layers]
    if not taps or bad:
        raise UserError(f"layer taps {bad or taps} are outside 1..{n_layers} (the model has {n_layers} layers); "
                        f"pass --layer-taps with values in 1..{n_layers}")
    return taps


class LayerTaps:
    """Forward hooks that keep the residual stream after each tapped block (1-based)."""

    def __init__(self, model, taps):
        self.layers = decoder_layers(model)
        self.taps = check_taps(taps, len(self.layers))
        self.hidden: dict[int, torch.Tensor] = {}
        self._handles = []

    def _hook(self, tap: int):
        def keep(module, inputs, output):
            self.hidden[tap] = (output[0] if isinstance(output, tuple) else output).detach()
        return keep

    def __enter__(self) -> "LayerTaps":
        self.hidden.clear()
        self._handles = [self.layers[t - 1].register_forward_hook(self._hook(t)) for t in self.taps]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


@torch.no_grad()
def lens_logits(model, hidden: torch.Tensor) -> torch.Tensor:
    """lm_head(final_norm(hidden)): the vocabulary logits a residual state stands for."""
    return model.get_output_embeddings()(final_norm(model)(hidden))


@dataclass
class LensReadout:
    """Per tap, at each read position: the lens's top token and its probability."""

    taps: list[int]
    n_layers: int
    top_ids: dict[int, list[int]]
    top_probs: dict[int, list[float]]


@torch.no_grad()
def teacher_forced_lens(model, input_ids: torch.Tensor, positions: list[int], taps) -> LensReadout:
    """One causal forward over `input_ids` (1, L) with hooks at `taps`; the lens's argmax and
    its softmax probability at each of `positions` (the logits there predict position + 1)."""
    with LayerTaps(model, taps) as tapped:
        model(input_ids=input_ids, use_cache=False)
    index = torch.tensor(positions, dtype=torch.long, device=input_ids.device)
    top_ids, top_probs = {}, {}
    for tap in tapped.taps:
        probs = torch.softmax(lens_logits(model, tapped.hidden[tap][0, index]).float(), dim=-1)
        p, i = probs.max(dim=-1)
        top_ids[tap], top_probs[tap] = i.tolist(), p.tolist()
    return LensReadout(tapped.taps, len(tapped.layers), top_ids, top_probs)


__all__ = ["LayerTaps", "LensReadout", "check_taps", "decoder_layers", "final_norm", "lens_logits", "num_layers",
           "teacher_forced_lens"]
