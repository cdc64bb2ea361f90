"""What SpecDiff's phases share: the target, the AR drafter and the MDLM (loaded once, checked
against each other), the prompts, and one timed `generate` per method."""

from __future__ import annotations

import time

import torch

from dlmkit.cli import synchronize
from dlmkit.decoding.assisted import assisted_generate
from dlmkit.decoding.drafters import ARDrafter, MDLMDrafter
from dlmkit.decoding.spec_loop import CachedLM, Generation, ar_generate, speculative_generate
from dlmkit.errors import UserError
from dlmkit.experiments.specdiff.methods import Method
from dlmkit.experiments.specdiff.prompts import load_prompts
from dlmkit.models.ar import load_ar
from dlmkit.models.mdlm import load_mdlm


def check_vocabularies(target, drafter=None, mdlm=None) -> None:
    """The drafters must speak the target's ids: the AR drafter the same vocabulary, the MDLM
    the same plus at most its mask as one extra last id (mdlm-owt 50258 vs gpt2-xl 50257)."""
    vocab = target.config.vocab_size
    if drafter is not None and drafter.config.vocab_size != vocab:
        raise UserError(f"the AR drafter's vocab_size {drafter.config.vocab_size} differs from the target's "
                        f"{vocab}; pass a --model-drafter with the target's tokenizer")
    if mdlm is not None and mdlm.config.vocab_size not in (vocab, vocab + 1):
        raise UserError(f"the MDLM's vocab_size {mdlm.config.vocab_size} fits neither the target's {vocab} nor "
                        f"{vocab} + its mask; pass a --model-mdlm trained with the target's tokenizer")


class Context:
    """The loaded models, the prompts and one `generate` per method."""

    def __init__(self, job, settings, specs: dict):
        self.job, self.settings, self.specs = job, settings, specs
        families, device, dtype, sampler = job.phases, job.device, job.dtype, settings.sampler

        def load_causal(role: str, **kwargs):  # load_ar turns an unreachable hub id into a one-line error
            return load_ar(specs[role].source, device=device, dtype=dtype, **kwargs)

        self.device = device
        self.target_model, self.tokenizer = load_causal("target")
        self.target = CachedLM(self.target_model)
        needs_drafter = bool({"sd", "hf"} & set(families))
        self.drafter_model = load_causal("drafter", with_tokenizer=False)[0] if needs_drafter else None
        self.ar_drafter = ARDrafter(self.drafter_model) if needs_drafter else None
        self.mdlm = load_mdlm(specs["mdlm"].source, device=device, dtype=dtype) if "specdiff" in families else None
        check_vocabularies(self.target_model, self.drafter_model, self.mdlm)
        self.sampler = sampler
        self.prompts = load_prompts(job.preset, self.tokenizer, settings.prompt_sets, settings.prompts,
                                    settings.prompt_tokens)

    def parameters(self) -> dict[str, int]:
        models = {"target": self.target_model, "AR drafter": self.drafter_model, "MDLM": self.mdlm}
        return {role: sum(p.numel() for p in m.parameters()) for role, m in models.items() if m is not None}

    def generate(self, method: Method, prefix: list[int], max_new_tokens: int, temperature: float,
                 seed: int) -> tuple[Generation, float, float]:
        """(generation, wall seconds, CPU seconds of this process) of one method on one prompt. On a
        shared CPU the process time is the steadier measure: it does not count time other processes
        held the cores."""
        generator = torch.Generator().manual_seed(seed)
        synchronize(self.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        if method.family == "ar":
            out = ar_generate(self.target, prefix, max_new_tokens, temperature, generator)
        elif method.family == "sd":
            out = speculative_generate(self.target, self.ar_drafter, prefix, max_new_tokens, method.gamma,
                                       temperature, generator)
        elif method.family == "specdiff":
            drafter = MDLMDrafter(self.mdlm, method.steps, sampler=self.sampler)
            out = speculative_generate(self.target, drafter, prefix, max_new_tokens, method.gamma, temperature,
                                       generator)
        elif method.family == "hf":
            out = self._assisted(prefix, max_new_tokens, method.gamma, temperature, seed)
        else:
            raise ValueError(method.family)
        synchronize(self.device)
        return out, time.perf_counter() - start, time.process_time() - start_cpu

    def _assisted(self, prefix: list[int], max_new_tokens: int, gamma: int, temperature: float,
                  seed: int) -> Generation:
        """transformers' assisted generation, batch 1, fixed length (EOS off, as in our loops), exactly
        gamma drafts per round (dlmkit/decoding/assisted.py); drafter_nfe counts assistant forwards."""
        out = assisted_generate(self.target_model, self.drafter_model, prefix, max_new_tokens, gamma, temperature,
                                seed, pad_token_id=self.tokenizer.eos_token_id)
        return Generation(tokens=out.tokens, target_calls=out.target_calls, drafter_nfe=out.assistant_calls)
