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
                        f"{vocab} + its mask; pass a --model-mdlm-drafter trained with the target's tokenizer")


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
        self.mdlm = (load_mdlm(specs["mdlm_drafter"].source, device=device, dtype=dtype) if "specdiff" in families
                     else None)
        check_vocabularies(self.target_model, self.drafter_model, self.mdlm)
        self.sampler = sampler
        self.prompts = load_prompts(job.preset, self.tokenizer, settings.prompt_sets, settings.prompts,
                                    settings.prompt_tokens)

    def parameters(self) -> dict[str, int]:
        models = {"target": self.target_model, "AR drafter": self.drafter_model, "MDLM drafter": self.mdlm}
        return {role: sum(p.numel() for p in m.parameters()) for role, m in models.items() if m is not None}

    def call_costs(self, gammas, sd_gammas, repeats: int = 20) -> list[dict]:
        """Each model's cost per call, measured here: the target's cached step (one new token) and its
        scoring of g drafts (g + 1 new tokens, for every gamma of the grid), the AR drafter's
        cached step, the MDLM drafter's call on a full canvas (its window: the context it keeps
        plus gamma masks). The context is the first prompt continued to prompt + max_new_tokens / 2
        tokens (a mid-generation length), at least the MDLM drafter's canvas. Median of `repeats` calls
        after a warm-up, ms."""
        from dlmkit.timing import time_calls

        ids = list(self.prompts[0]["ids"])
        length = len(ids) + self.settings.max_new_tokens // 2
        if self.mdlm is not None:
            length = max(length, self.mdlm.config.model_length)
        ids = (ids * (length // len(ids) + 1))[:length]  # real ids; only their count matters here
        rows = []

        def add(model: str, call: str, fn) -> None:
            timing = time_calls(fn, self.device, repeats, warmup=2)
            rows.append({"model": model, "call": call, "median_ms": timing.median_ms, "min_ms": timing.min_ms,
                         "max_ms": timing.max_ms, "n": timing.n})

        def cached(lm: CachedLM, sequence: list[int], new: int):
            def fn():
                lm.rollback(len(sequence) - new)
                lm.logits(sequence, new)
            lm.reset()
            lm.logits(sequence[:-new], 1)
            return fn

        for gamma in sorted({1, *(g + 1 for g in gammas), *(g + 1 for g in sd_gammas)}):
            extra = list(range(1, gamma + 1))
            add("target", "cached step" if gamma == 1 else f"scores {gamma - 1} drafts ({gamma} new tokens)",
                cached(CachedLM(self.target_model), ids + extra, gamma))
        if self.drafter_model is not None:
            add("AR drafter", "cached step", cached(CachedLM(self.drafter_model), ids + [1], 1))
        if self.mdlm is not None:
            canvas = torch.tensor([ids[-self.mdlm.config.model_length:]], device=self.device)
            canvas[0, -max(gammas):] = self.mdlm.mask_id

            @torch.no_grad()
            def call():
                self.mdlm(canvas, None)
            add("MDLM drafter", f"one call on its {canvas.shape[1]}-token canvas", call)
        return rows

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
