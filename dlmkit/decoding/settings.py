"""The decoders' settings and names, importable without torch: the scripts build --help from them
(diffusion.py and mdlm_sampler.py re-export them)."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLERS = ("ddpm", "ddpm_cache")  # MDLM's samplers (mdlm_sampler.py)


@dataclass(frozen=True)
class DreamSettings:
    """Dream's generation settings (the paper: 128 entropy-ordered steps, T=0.2, top_p 0.95)."""

    max_new_tokens: int
    steps: int = 128
    alg: str = "entropy"
    temperature: float = 0.2
    top_p: float | None = 0.95
    # The published runs loaded Dream with from_pretrained, which inherits top_k=50 from
    # transformers' defaults unless the caller passes top_k; we make it explicit.
    top_k: int | None = 50
    eps: float = 1e-3
