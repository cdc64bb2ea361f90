"""The KV-cache keyword of transformers' forward passes, in one place: transformers 5.24 renamed
`past_key_values` to `cache` (in the call and in the outputs) and warns on the old name; 5.23 knows
only the old one. Every call site passes `**cache_kwargs(cache)` and reads `output_cache(out)`."""

from __future__ import annotations

from dataclasses import fields

from transformers.modeling_outputs import BaseModelOutputWithPast

CACHE_NAME = "cache" if "cache" in {f.name for f in fields(BaseModelOutputWithPast)} else "past_key_values"


def cache_kwargs(cache) -> dict:
    """{name: cache} for a model's forward, under the name this transformers expects."""
    return {CACHE_NAME: cache}


def output_cache(out):
    """The cache a forward pass returned."""
    return getattr(out, CACHE_NAME)
