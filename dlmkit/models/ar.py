"""Autoregressive models (Qwen2, GPT-2, ...) through transformers' own classes.

    model, tokenizer = load_ar("Qwen/Qwen2.5-0.5B-Instruct", device="cuda", dtype=torch.bfloat16)

Reads a local HF-format directory or a hub id; safetensors only, never remote code.
"""

from __future__ import annotations

import json

import torch

from dlmkit.errors import UserError, first_line
from dlmkit.models.hub import checkpoint_dir

CAUSAL_TYPES = {"qwen2", "gpt2", "llama", "qwen3", "mistral"}


def load_ar(path_or_id, device="cpu", dtype=None, *, with_tokenizer: bool = True):
    """(model, tokenizer) for a causal LM; the model in eval mode on `device`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = str(path_or_id)
    local = checkpoint_dir(source, "model", fix=f"download it first (huggingface-cli download {source}) and pass "
                                                 "its local directory, or check the id")
    config = local / "config.json"
    if not config.exists():
        raise UserError(f"{local} has no config.json; pass an HF-format model directory or a hub id")
    model_type = json.loads(config.read_text()).get("model_type")
    if model_type not in CAUSAL_TYPES:
        raise UserError(f"{local} holds a {model_type!r} model, not a causal LM ({', '.join(sorted(CAUSAL_TYPES))})")
    try:
        model = AutoModelForCausalLM.from_pretrained(local, dtype=dtype or torch.float32, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(local) if with_tokenizer else None
    except OSError as error:  # no safetensors weights, a broken tokenizer
        raise UserError(f"cannot load {source}: {first_line(error, limit=None)}; pass an HF-format directory with "
                        "safetensors weights") from None
    model.to(device).eval()
    return model, tokenizer
