"""transformers' assisted generation (`generate(assistant_model=...)`) with a draft length that holds.

    out = assisted_generate(gpt2_xl, gpt2, prefix_ids, max_new_tokens=256, gamma=8, temperature=1.0, seed=0)
    out.tokens, out.target_calls, out.assistant_calls

The external reference for our speculative loops (dlmkit/decoding/spec_loop.py): one
round drafts gamma tokens with the assistant, the target scores them in one forward, and
(Leviathan et al. 2023) greedy verification or speculative sampling keeps a prefix plus
one target token. Batch 1, as transformers requires.

In transformers 5 the draft length is not an argument of `generate`: a
`num_assistant_tokens` passed there is ignored, and the candidate generator reads the
ASSISTANT's generation_config instead:

    num_assistant_tokens             the starting draft length
    num_assistant_tokens_schedule    "heuristic" (the default) grows it by 2 after a full
                                     accept and shrinks it by 1 after a miss; "constant" keeps it
    assistant_confidence_threshold   default 0.4: the assistant stops drafting early once its
                                     top probability falls below it (adapted along the way)

So a sweep over gamma that passes it to `generate` measures the same thing at every
gamma. Here the assistant's generation_config is replaced, for the call only, by a copy
with num_assistant_tokens = gamma, the constant schedule and threshold 0 (never stop
early): every round drafts exactly min(gamma, room left) tokens. With an assistant that
always agrees, a round emits gamma + 1 tokens, so n new tokens take ceil(n / (gamma + 1))
target forwards.

Target forwards are counted with a forward hook on the target (every `generate` step
calls the module once); an assistant that is the target object itself is deep-copied
first, so its drafting is not counted as target calls. Sampling is plain temperature
sampling (top_k 0, top_p 1: transformers would otherwise fill an unset top_k with 50), from
torch's global generator seeded inside `torch.random.fork_rng`, so the caller's global
random state is left as it was. EOS is off unless eos_token_id is given (fixed-length
generations, as the throughput benchmarks use); since `generate` fills unset fields from
the model's own generation_config, the target's is also swapped for a copy during the call.
Both models' configs are restored afterwards.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from dlmkit.errors import UserError


@dataclass
class AssistedGeneration:
    tokens: list[int]  # the new tokens only
    target_calls: int  # target forward passes (the first one scores the prompt and the first drafts)
    assistant_calls: int  # assistant forward passes


class _CountCalls:
    """Counts forward calls of a module while the `with` block runs."""

    def __init__(self, module):
        self.module, self.calls = module, 0

    def __enter__(self):
        self.handle = self.module.register_forward_hook(self._hook)
        return self

    def _hook(self, module, args, output):
        self.calls += 1

    def __exit__(self, *exc):
        self.handle.remove()


@torch.no_grad()
def assisted_generate(target, assistant, prefix, max_new_tokens: int, gamma: int, temperature: float = 0.0,
                      seed: int = 0, eos_token_id: int | None = None,
                      pad_token_id: int | None = None) -> AssistedGeneration:
    """HF assisted generation of `max_new_tokens` after `prefix` (a list of ids), drafting exactly
    `gamma` tokens per round; greedy at temperature 0, else sampled at `temperature`."""
    if gamma < 1:
        raise UserError(f"gamma (assistant tokens per round) must be >= 1, got {gamma}")
    if temperature < 0:
        raise UserError(f"temperature must be >= 0, got {temperature}")
    prefix = [int(t) for t in (prefix.tolist() if torch.is_tensor(prefix) else prefix)]
    if not prefix:
        raise UserError("the prompt is empty; assisted generation needs at least one prefix token (e.g. BOS)")
    if assistant is target:
        assistant = copy.deepcopy(assistant)  # its forwards must not count as the target's

    device = next(target.parameters()).device
    ids = torch.tensor([prefix], dtype=torch.long, device=device)
    config = copy.deepcopy(target.generation_config)
    config.max_new_tokens, config.max_length, config.min_new_tokens = max_new_tokens, None, None
    config.eos_token_id = eos_token_id
    config.pad_token_id = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None
                                                                         else 0)
    config.do_sample = temperature > 0
    config.temperature, config.top_k, config.top_p = (temperature if temperature > 0 else 1.0), 0, 1.0
    drafting = copy.deepcopy(assistant.generation_config)
    drafting.num_assistant_tokens = gamma
    drafting.num_assistant_tokens_schedule = "constant"
    drafting.assistant_confidence_threshold = 0.0

    from transformers.utils import logging as hf_logging

    saved, verbosity = (target.generation_config, assistant.generation_config), hf_logging.get_verbosity()
    devices = [device] if device.type == "cuda" else []
    try:
        # `generate` fills the unset fields of the config it is given (eos_token_id None among them)
        # from the model's own generation_config: swap in the copies for the call.
        target.generation_config, assistant.generation_config = config, drafting
        hf_logging.set_verbosity_error()
        with torch.random.fork_rng(devices=devices), _CountCalls(target) as on_target, \
                _CountCalls(assistant) as on_assistant:
            torch.manual_seed(seed)  # transformers samples from the global generator
            # An explicit mask: a prompt may start with the id that is also the pad id.
            out = target.generate(ids, attention_mask=torch.ones_like(ids), assistant_model=assistant,
                                  generation_config=config)
    finally:
        target.generation_config, assistant.generation_config = saved
        hf_logging.set_verbosity(verbosity)
    return AssistedGeneration(tokens=out[0, len(prefix):].tolist(), target_calls=on_target.calls,
                              assistant_calls=on_assistant.calls)
