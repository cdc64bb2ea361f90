"""Dream: a Qwen2 transformer with bidirectional attention, read without remote code.

Dream-7B (Dream-org/Dream-v0-*-7B) is Qwen2.5-7B trained as a masked diffusion LM. Its
checkpoint stores Qwen2 parameter names under a config whose model_type is "Dream", so
we build transformers' own `Qwen2ForCausalLM` from Dream's config fields, load the
safetensors into it, and make attention non-causal:

  * every attention module gets `is_causal = False`, so SDPA never adds a causal mask
    when no mask tensor is passed;
  * the mask we do pass is bidirectional (`masking_utils.create_bidirectional_mask`):
    only padded keys are hidden, nothing depends on query/key order.

Dream predicts the token at position i from the hidden state at i-1 (it kept the AR
head's alignment), so `DreamModel.forward` shifts logits one place right.

    model = load_dream("Dream-org/Dream-v0-Instruct-7B", device="cuda", dtype=torch.bfloat16)
    logits = model(input_ids)            # (B, L, vocab), already shifted
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from dlmkit.errors import UserError
from dlmkit.models.hub import checkpoint_dir
# Dream-7B's geometry and special tokens (Qwen2 vocabulary) live with the other real sizes.
from dlmkit.models.real_configs import DREAM_7B, DREAM_EOS_TOKEN_ID, DREAM_MASK_TOKEN_ID

# ---------------------------------------------------------------------------------------
# Config


@dataclasses.dataclass
class DreamConfig:
    """The fields of a Dream config.json that define the network and its special tokens."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None = None  # None: as many as attention heads
    max_position_embeddings: int = 32768
    rope_theta: float = 1e6
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    mask_token_id: int | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    torch_dtype: str = "float32"
    rope_scaling: dict | None = None
    # Fields of config.json we do not interpret; kept so save_dream round-trips them.
    extra: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict:
        """Dream-format config.json content (model_type "Dream", DreamModel)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {
            **self.extra,
            "architectures": ["DreamModel"],
            "model_type": "Dream",
            **fields,
            "max_window_layers": self.num_hidden_layers,
            "sliding_window": None,
            "use_sliding_window": False,
            "use_cache": False,
        }

    @classmethod
    def from_dict(cls, raw: dict) -> "DreamConfig":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in raw.items() if k in names}
        # transformers >= 4.56 writes "dtype" where older versions wrote "torch_dtype".
        if "torch_dtype" not in known and isinstance(raw.get("dtype"), str):
            known["torch_dtype"] = raw["dtype"]
        for key in ("eos_token_id", "bos_token_id", "pad_token_id"):
            if isinstance(known.get(key), list):  # some configs list several eos ids
                known[key] = known[key][0] if known[key] else None
        dropped = {"architectures", "model_type", "max_window_layers", "sliding_window", "use_sliding_window",
                   "use_cache", "dtype", "auto_map", "transformers_version"}
        extra = {k: v for k, v in raw.items() if k not in names and k not in dropped}
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        absent = [name for name in required if name not in known]
        if absent:
            raise UserError(f"Dream config lacks {', '.join(absent)}; pass a complete Dream config.json")
        return cls(**known, extra=extra)


DREAM_SIZES = {
    # The size the parity fixture and the tiny preset use.
    "tiny": dict(vocab_size=384, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                 mask_token_id=380, pad_token_id=381, bos_token_id=381, eos_token_id=381),
    # Dream-v0-7B = Qwen2.5-7B geometry, untied head (models/real_configs.py).
    "dream-7b": DREAM_7B,
}


def dream_config(size: str = "tiny", **overrides) -> DreamConfig:
    """A DreamConfig of a named size ("tiny", "dream-7b") with any field overridden."""
    if size not in DREAM_SIZES:
        raise UserError(f"unknown Dream size {size!r}; pass one of {sorted(DREAM_SIZES)}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(DreamConfig)}
    if unknown:
        raise UserError(f"unknown Dream config field(s) {sorted(unknown)}; see dlmkit.models.dream.DreamConfig")
    return DreamConfig(**{**DREAM_SIZES[size], **overrides})


def _qwen2_config(cfg: DreamConfig):
    from transformers import Qwen2Config

    if cfg.hidden_size % cfg.num_attention_heads or cfg.num_attention_heads % cfg.num_key_value_heads:
        raise UserError(
            f"Dream config has hidden {cfg.hidden_size}, {cfg.num_attention_heads} heads, "
            f"{cfg.num_key_value_heads} KV heads; heads must divide hidden and KV heads must divide heads"
        )
    rope = {"rope_type": "default", "rope_theta": float(cfg.rope_theta)}
    if cfg.rope_scaling:  # e.g. YaRN for long context; Qwen2 calls the kind "rope_type" (older: "type")
        scaling = dict(cfg.rope_scaling)
        rope.update(scaling, rope_type=scaling.get("rope_type", scaling.get("type", "default")))
        rope.pop("type", None)
    return Qwen2Config(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        hidden_act=cfg.hidden_act,
        max_position_embeddings=cfg.max_position_embeddings,
        initializer_range=cfg.initializer_range,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters=rope,
        tie_word_embeddings=cfg.tie_word_embeddings,
        attention_dropout=cfg.attention_dropout,
        use_sliding_window=False,
        use_cache=False,
        # No pad id on purpose: Qwen2 would make it the embedding's padding_idx, which zeroes
        # that row at init and blocks its gradient; Dream pads with eos, so eos could never
        # be learned by our trainer. Loaded weights are unaffected either way.
        pad_token_id=None,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=cfg.eos_token_id,
    )


# ---------------------------------------------------------------------------------------
# Model


class DreamModel(nn.Module):
    """A Qwen2ForCausalLM run bidirectionally, returning Dream's shifted logits."""

    def __init__(self, lm, config: DreamConfig):
        super().__init__()
        self.lm = lm  # transformers.Qwen2ForCausalLM
        self.config = config
        for module in self.lm.modules():
            if hasattr(module, "is_causal"):
                module.is_causal = False  # SDPA must never fall back to its causal kernel

    @property
    def mask_token_id(self) -> int:
        return self.config.mask_token_id

    @property
    def eos_token_id(self) -> int | None:
        return self.config.eos_token_id

    @property
    def pad_token_id(self) -> int | None:
        return self.config.pad_token_id if self.config.pad_token_id is not None else self.config.eos_token_id

    @property
    def device(self) -> torch.device:
        return self.lm.model.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm.model.embed_tokens.weight.dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.lm.parameters())

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        """Shifted logits (B, L, vocab): logits[:, i] predicts the token at i.

        attention_mask: (B, L) with 1 for real tokens and 0 for padding, or None for none.
        position_ids: (B, L); default 0..L-1 (pass cumsum(mask)-1 with left padding).
        """
        from transformers.masking_utils import create_bidirectional_mask

        embeds = self.lm.model.embed_tokens(input_ids)
        # Padding-only mask (None when there is no padding); given as the per-layer-type
        # dict so Qwen2Model does not build its causal mask.
        mask = create_bidirectional_mask(config=self.lm.config, inputs_embeds=embeds, attention_mask=attention_mask)
        masks = {"full_attention": mask, "sliding_attention": mask}
        logits = self.lm(inputs_embeds=embeds, attention_mask=masks, position_ids=position_ids, use_cache=False).logits
        # Dream keeps the AR alignment: the hidden state at i-1 predicts token i.
        return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def random_dream(config: DreamConfig | str = "tiny", *, seed: int = 0, device=None, dtype=None) -> DreamModel:
    """A randomly initialised Dream (same module tree as a loaded one). Used by tests,
    the tiny-checkpoint trainer and the benchmark (size "dream-7b" on a GPU)."""
    from transformers import Qwen2ForCausalLM

    cfg = dream_config(config) if isinstance(config, str) else config
    _check_mask_token(cfg, "the given config")
    dtype = _resolve_dtype(dtype, cfg)
    torch.manual_seed(seed)
    # Build straight on the target device: a 7B model initialised on CPU would take minutes.
    with torch.device(_resolve_device(device)):
        lm = Qwen2ForCausalLM._from_config(_qwen2_config(cfg), dtype=dtype)
    cfg = dataclasses.replace(cfg, torch_dtype=str(dtype).removeprefix("torch."))
    return DreamModel(lm.eval(), cfg)


# ---------------------------------------------------------------------------------------
# Loading and saving


def _resolve_device(device) -> torch.device:
    if device is None:
        return torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA requested but no GPU is visible; pass --device cpu")
    return device


def _resolve_dtype(dtype, cfg: DreamConfig) -> torch.dtype:
    if dtype is None:
        dtype = cfg.torch_dtype or "float32"
    if isinstance(dtype, str):
        resolved = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(resolved, torch.dtype):
            raise UserError(f"unknown dtype {dtype!r}; pass float32, bfloat16 or float16")
        dtype = resolved
    return dtype


def _check_mask_token(cfg: DreamConfig, where: str) -> None:
    if cfg.mask_token_id is None:
        raise UserError(
            f"{where} has no mask_token_id; add \"mask_token_id\": {DREAM_MASK_TOKEN_ID} "
            "(Dream's <|mask|>) to its config.json"
        )


def read_dream_config(directory) -> DreamConfig:
    """The DreamConfig of a checkpoint directory, with the mask id checked."""
    directory = Path(directory)
    config_path = directory / "config.json"
    if not config_path.is_file():
        raise UserError(f"no config.json in {directory}; pass a Dream checkpoint directory")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{config_path} is not valid JSON ({exc.msg} at line {exc.lineno}); fix or re-download it")
    model_type = raw.get("model_type")
    if str(model_type).lower() != "dream":
        raise UserError(
            f"{directory} holds a {model_type!r} config, not a Dream one; pass a Dream checkpoint "
            "(config.json with model_type \"Dream\")"
        )
    if raw.get("use_sliding_window"):
        raise UserError(f"{config_path} enables sliding-window attention, which Dream does not use; set it false")
    if raw.get("mask_token_id") is None:
        # Some exports keep the special ids only in generation_config.json.
        gen_path = directory / "generation_config.json"
        if gen_path.is_file():
            raw["mask_token_id"] = json.loads(gen_path.read_text()).get("mask_token_id")
    try:
        cfg = DreamConfig.from_dict(raw)
    except UserError as err:
        raise UserError(f"{config_path}: {err}") from None
    _check_mask_token(cfg, str(config_path))
    return cfg


def load_dream(path_or_id, device=None, dtype=None) -> DreamModel:
    """Load a Dream checkpoint (local directory or hub id) as a bidirectional Qwen2.

    device: "cpu" (default), "cuda", ...; dtype: torch dtype or name, default the
    checkpoint's own (bfloat16 for Dream-7B). Single-file and sharded
    (model.safetensors.index.json) checkpoints load alike; only safetensors are read.
    """
    from transformers import Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    directory = checkpoint_dir(path_or_id, "Dream checkpoint")
    cfg = read_dream_config(directory)
    if not any(directory.glob("*.safetensors")):
        raise UserError(
            f"no *.safetensors weights in {directory}; convert the checkpoint to safetensors "
            "(pickled .bin weights are not loaded)"
        )
    device, dtype = _resolve_device(device), _resolve_dtype(dtype, cfg)

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        # Qwen2's own loader: reads single files and shard indexes alike, memory-mapped,
        # and places weights straight on the device. The config we pass wins over the
        # directory's Dream config.json, which transformers cannot parse by itself.
        lm, info = Qwen2ForCausalLM.from_pretrained(
            directory,
            config=_qwen2_config(cfg),
            dtype=dtype,
            device_map=str(device),
            use_safetensors=True,
            output_loading_info=True,
        )
    except RuntimeError as exc:
        if "mismatch" not in str(exc):
            raise
        raise UserError(
            f"the weights in {directory} have other shapes than its config.json says; "
            "re-download or re-save the checkpoint"
        ) from exc
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    missing = sorted(k for k in info.get("missing_keys", []) if not (cfg.tie_word_embeddings and k == "lm_head.weight"))
    if missing:  # transformers would have left them randomly initialised
        raise UserError(
            f"{directory} lacks {len(missing)} weight(s) its config.json needs (e.g. {missing[0]}); "
            "re-download or re-save the checkpoint"
        )
    return DreamModel(lm.eval(), dataclasses.replace(cfg, torch_dtype=str(dtype).removeprefix("torch.")))


def load_dream_tokenizer(path_or_id):
    """Dream's tokenizer without remote code.

    Dream's hub repository names a custom `DreamTokenizer` class; it is the Qwen2 BPE with
    Dream's added tokens (`<|mask|>` among them), so transformers' own Qwen2 tokenizer
    reads the same files. Directories whose tokenizer AutoTokenizer can build (the tiny
    preset's) load as they are.
    """
    import transformers

    source = str(checkpoint_dir(path_or_id, "Dream checkpoint"))
    config_path = Path(source) / "tokenizer_config.json"
    declared = json.loads(config_path.read_text()).get("tokenizer_class", "") if config_path.exists() else ""
    if declared.startswith("Dream"):
        return transformers.Qwen2TokenizerFast.from_pretrained(source)
    # Name the class ourselves: AutoTokenizer would read config.json, whose model_type
    # "Dream" transformers does not know.
    tokenizer_class = getattr(transformers, declared, None) or transformers.AutoTokenizer
    return tokenizer_class.from_pretrained(source)


def save_dream(model: DreamModel, directory, *, max_shard_bytes: int | None = None) -> Path:
    """Write a Dream-format checkpoint: config.json (model_type "Dream"),
    generation_config.json and safetensors with Qwen2 names. With max_shard_bytes the
    weights are split into model-0000i-of-0000n.safetensors plus an index, like the
    real 7B checkpoint."""

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = dataclasses.replace(model.config, torch_dtype=str(model.dtype).removeprefix("torch."))

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.lm.state_dict().items()}
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # shared with embed_tokens; safetensors refuses aliases
    shards = _split_into_shards(state, max_shard_bytes)
    for old in directory.glob("model*.safetensors*"):
        old.unlink()  # a stale shard of an earlier save would be read with the new ones
    if len(shards) == 1:
        save_file(shards[0], directory / "model.safetensors", metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, shard in enumerate(shards, start=1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            save_file(shard, directory / name, metadata={"format": "pt"})
            weight_map.update({key: name for key in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")

    (directory / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    generation = {key: getattr(cfg, key) for key in ("bos_token_id", "eos_token_id", "pad_token_id", "mask_token_id")}
    (directory / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    return directory


def _split_into_shards(state: dict, max_shard_bytes: int | None) -> list[dict]:
    if not max_shard_bytes:
        return [state]
    shards, current, size = [], {}, 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = {}, 0
        current[key] = tensor
        size += nbytes
    return shards + [current] if current else shards


def count_matmul_parameters(config: DreamConfig) -> int:
    """Parameters that take part in a matmul per token (everything but the embedding
    lookup and the norms); the head counts even when tied. Used by the roofline."""
    h, kv = config.hidden_size, config.num_key_value_heads * config.head_dim
    attention = h * h + 2 * h * kv + h * h  # q, k, v, o
    mlp = 3 * h * config.intermediate_size
    return config.num_hidden_layers * (attention + mlp) + h * config.vocab_size


def count_parameters(config: DreamConfig) -> int:
    """All stored parameters (biases and norms included)."""
    h, kv = config.hidden_size, config.num_key_value_heads * config.head_dim
    per_layer = 2 * h * h + 2 * h * kv + (h + 2 * kv) + 3 * h * config.intermediate_size + 2 * h
    embeddings = config.vocab_size * h * (1 if config.tie_word_embeddings else 2)
    return config.num_hidden_layers * per_layer + embeddings + h


__all__ = [
    "load_dream_tokenizer",
    "DREAM_EOS_TOKEN_ID", "DREAM_MASK_TOKEN_ID", "DREAM_SIZES", "DreamConfig", "DreamModel",
    "count_matmul_parameters", "count_parameters", "dream_config", "load_dream", "random_dream",
    "read_dream_config", "save_dream",
]
