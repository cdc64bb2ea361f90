"""dlmkit: experiments on diffusion language models for faster, cheaper generation."""

__version__ = "0.1.0"
