"""The Qwen3.5 text tower (transformers' `Qwen3_5ForCausalLM`): configs, loading, caches.

Qwen3.5 interleaves Gated DeltaNet ("linear_attention") with gated softmax attention
("full_attention") every 4th layer. Its hub checkpoints are vision-language models whose
text weights sit under `model.language_model.*`; `load_verifier` maps them to the text
tower's `model.*` and drops `model.visual.*` and the multi-token-prediction head `mtp.*`.

    verifier = load_verifier("Qwen/Qwen3.5-9B", device="cuda", dtype=torch.bfloat16)

transformers runs DeltaNet with its pure-torch fallback when flash-linear-attention is
not installed (on CPU always); attention uses SDPA, which is causal without a mask.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from dlmkit.errors import UserError
from dlmkit.models.hub import checkpoint_dir
from dlmkit.models.real_configs import QWEN35_9B  # the 9B text tower (REFERENCE.md section 4)

# The tiny verifier: 16 hybrid layers of width 64 (12 DeltaNet + 4 attention), tied
# embeddings to keep the shipped checkpoint small.
TINY_VERIFIER = dict(hidden_size=64, intermediate_size=192, num_hidden_layers=16, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
                     linear_key_head_dim=16, linear_value_head_dim=16, max_position_embeddings=2048,
                     tie_word_embeddings=True)

TEXT_PREFIX, MULTIMODAL_PREFIX = "model.", "model.language_model."
DROPPED_PREFIXES = ("model.visual.", "mtp.")


def text_config(vocab_size: int | None = None, *, rope_theta: float = 10_000.0, partial_rotary_factor: float = 0.5,
                eos_token_id: int | None = None, **size):
    """A `Qwen3_5TextConfig` with the default hybrid pattern (full attention every 4th layer)."""
    from transformers import Qwen3_5TextConfig

    if vocab_size is not None:
        size["vocab_size"] = vocab_size
    config = Qwen3_5TextConfig(rope_parameters={"rope_type": "default", "rope_theta": rope_theta,
                                                "partial_rotary_factor": partial_rotary_factor},
                               eos_token_id=eos_token_id, pad_token_id=eos_token_id, bos_token_id=eos_token_id,
                               **size)
    config._attn_implementation = "sdpa"
    return config


def qwen35_9b_config():
    """Qwen3.5-9B's text tower as a config (for shapes and benchmarks; no weights)."""
    return text_config(**QWEN35_9B)


def text_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hub Qwen3.5 keys -> `Qwen3_5ForCausalLM` keys: `model.language_model.*` -> `model.*`,
    vision tower and MTP head dropped, `lm_head.*` kept; text-only keys pass unchanged."""
    out = {}
    for key, value in state.items():
        if key.startswith(DROPPED_PREFIXES):
            continue
        if key.startswith(MULTIMODAL_PREFIX):
            key = TEXT_PREFIX + key[len(MULTIMODAL_PREFIX):]
        out[key] = value
    return out


def _read_config(directory: Path):
    """The text config of a Qwen3.5 directory (composite `qwen3_5` or text-only `qwen3_5_text`)."""
    from transformers import Qwen3_5TextConfig

    raw = json.loads((directory / "config.json").read_text())
    model_type = raw.get("model_type")
    if model_type == "qwen3_5":
        raw = raw.get("text_config") or {}
    elif model_type != "qwen3_5_text":
        raise UserError(f"{directory} holds a {model_type!r} model, not Qwen3.5 (qwen3_5 or qwen3_5_text); "
                        "pass a Qwen3.5 checkpoint as the verifier")
    raw = {k: v for k, v in raw.items() if k not in ("model_type", "architectures", "transformers_version")}
    config = Qwen3_5TextConfig(**raw)
    config._attn_implementation = "sdpa"
    return config


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    index = directory / "model.safetensors.index.json"
    if index.exists():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (directory / "model.safetensors").exists():
        files = ["model.safetensors"]
    else:
        raise UserError(f"{directory} has no model.safetensors (or index); pass an HF-format Qwen3.5 directory")
    state = {}
    for name in files:
        state.update(text_state_dict(load_file(str(directory / name))))
    return state


def load_verifier(source, device: str = "cpu", dtype=None):
    """A frozen `Qwen3_5ForCausalLM` in eval mode from a local directory or a hub id."""
    from transformers import Qwen3_5ForCausalLM

    source = str(source)
    directory = checkpoint_dir(source, "verifier",
                               fix="pass --preset tiny, or --model-verifier DIR with a downloaded copy")
    if not (directory / "config.json").exists():
        raise UserError(f"{directory} has no config.json; pass an HF-format Qwen3.5 directory")
    config = _read_config(directory)
    state = _read_weights(directory)
    with torch.device("meta"):
        model = Qwen3_5ForCausalLM(config)
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise UserError(f"{directory} does not match its Qwen3.5 config (missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}); pass an unmodified checkpoint")
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    # Non-persistent buffers (rotary frequencies) are not in checkpoints: rebuild them off meta.
    model.model.rotary_emb = type(model.model.rotary_emb)(config)
    model.to(device=device, dtype=dtype or torch.float32).eval()
    model.requires_grad_(False)
    return model


def _map_batch_tensors(cache, batch: int, fn):
    """`cache` (modified in place and returned) with fn(t) in place of every tensor t of its
    layers' states whose leading (batch) dimension is `batch`, however nested in lists, tuples
    and dicts: attention KV and DeltaNet conv / recurrent states alike (transformers' own
    batch_repeat_interleave leaves the DeltaNet states alone)."""

    def walk(value):
        if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == batch:
            return fn(value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, tuple):
            return tuple(walk(v) for v in value)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    for layer in cache.layers:
        for name, value in vars(layer).items():
            setattr(layer, name, walk(value))
    return cache


def select_cache_row(cache, row: int, batch: int):
    """A batch-1 copy of row `row` of a batch-`batch` Qwen3.5 cache: the inverse of `expand_cache`
    for the row kept. The cache and its layers are copied shallowly; their states are sliced anew."""
    import copy

    out = copy.copy(cache)
    out.layers = [copy.copy(layer) for layer in cache.layers]
    return _map_batch_tensors(out, batch, lambda t: t[row:row + 1].clone())


def expand_cache(cache, repeats: int):
    """A copy of a batch-1 Qwen3.5 cache repeated `repeats` times along the batch."""
    import copy

    return _map_batch_tensors(copy.deepcopy(cache), 1, lambda t: t.repeat_interleave(repeats, dim=0))
