"""MDLM's diffusion transformer (DiT), readable top to bottom.

The network of Sahoo et al. 2024 ("Simple and Effective Masked Diffusion Language
Models", checkpoint `kuleshov-group/mdlm-owt`): token embedding, a timestep MLP that
feeds adaLN modulation in every block, rotary attention without a causal mask, and a
modulated output layer. Parameter names equal the released checkpoint's keys, so its
safetensors load here natively: plain torch SDPA instead of flash-attn, no
trust_remote_code.

The diffusion itself (noise schedule, SUBS, loss) lives in `mdlm_diffusion.py`; the
samplers in `dlmkit/decoding/mdlm_sampler.py`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from dlmkit.errors import UserError
from dlmkit.models.hub import checkpoint_dir

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"


@dataclass
class MDLMConfig:
    """Exactly the keys of mdlm-owt's config.json (the defaults are that model)."""

    vocab_size: int = 50258  # GPT-2's 50257 + the mask, which is the last id
    model_length: int = 1024
    hidden_dim: int = 768
    cond_dim: int = 128
    n_blocks: int = 12
    n_heads: int = 12
    dropout: float = 0.1
    time_conditioning: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "model_length", "hidden_dim", "cond_dim", "n_blocks", "n_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserError(f"MDLM config: {name} must be a positive integer, got {value!r}")
        if self.vocab_size < 2:
            raise UserError("MDLM config: vocab_size must be >= 2 (tokens plus the mask id)")
        if self.hidden_dim % self.n_heads or (self.hidden_dim // self.n_heads) % 2:
            raise UserError(
                f"MDLM config: hidden_dim {self.hidden_dim} must split into {self.n_heads} heads "
                "of even size (rotary pairs dimensions); change hidden_dim or n_heads"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise UserError(f"MDLM config: dropout must be in [0, 1), got {self.dropout}")

    @property
    def mask_id(self) -> int:
        """MDLM appends the mask after the tokenizer's vocabulary."""
        return self.vocab_size - 1

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "MDLMConfig":
        # HF bookkeeping keys (architectures, model_type, auto_map, torch_dtype, ...) are ignored.
        missing = [f.name for f in fields(cls) if f.name not in raw]
        if missing:
            raise UserError(
                f"{source} lacks MDLM keys {missing}; pass an mdlm-owt style checkpoint "
                "(config.json with vocab_size, model_length, hidden_dim, cond_dim, n_blocks, "
                "n_heads, dropout, time_conditioning)"
            )
        if raw.get("model_type", "mdlm") != "mdlm":
            raise UserError(f"{source} has model_type {raw['model_type']!r}, not 'mdlm'; pass an MDLM checkpoint")
        return cls(**{f.name: raw[f.name] for f in fields(cls)})

    def to_dict(self) -> dict:
        return {"architectures": ["MDLM"], "model_type": "mdlm", **asdict(self)}


# ----------------------------------------------------------------------------- layers


class LayerNorm(nn.Module):
    """LayerNorm with a weight and no bias, computed in float32 as MDLM does."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        work_dtype = torch.promote_types(x.dtype, torch.float32)
        normed = F.layer_norm(x.to(work_dtype), (x.shape[-1],)).to(x.dtype)
        return normed * self.weight


def modulate(x, shift, scale):
    """adaLN: per-sequence shift and scale of normalised activations."""
    return x * (1 + scale[:, None]) + shift[:, None]


class TimestepEmbedder(nn.Module):
    """sigma -> sinusoidal features (cos then sin, 256 of them) -> MLP to cond_dim."""

    def __init__(self, cond_dim: int, frequency_dim: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, cond_dim), nn.SiLU(), nn.Linear(cond_dim, cond_dim)
        )

    def forward(self, sigma):
        half = self.frequency_dim // 2
        freqs = torch.exp(
            -math.log(self.max_period) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half
        )
        angles = sigma.float()[:, None] * freqs[None]
        features = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding, rotate-half (non-interleaved) over the whole head."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq)  # persistent: it is a key of the checkpoint

    def _apply(self, fn, recurse=True):
        # Casting the model to bf16 would round the frequencies and blur long-range
        # positions; follow device moves but keep them in float32.
        inv_freq = self.inv_freq
        super()._apply(fn, recurse)
        self.inv_freq = inv_freq.to(self.inv_freq.device)
        return self

    def forward(self, seq_len: int, device):
        positions = torch.arange(seq_len, device=device, dtype=torch.float32)
        angles = torch.outer(positions, self.inv_freq.to(device=device, dtype=torch.float32))
        angles = torch.cat([angles, angles], dim=-1)  # (seq, head_dim)
        return angles.cos(), angles.sin()


def rotate_half(x):
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary(x, cos, sin):
    """x: (batch, heads, seq, head_dim); rotated in float32 at least."""
    work = x.to(torch.promote_types(x.dtype, torch.float32))
    return (work * cos + rotate_half(work) * sin).to(x.dtype)


class DDiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-Zero: 6 modulations from the condition."""

    def __init__(self, config: MDLMConfig):
        super().__init__()
        dim = config.hidden_dim
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        self.norm1 = LayerNorm(dim)
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        self.adaLN_modulation = nn.Linear(config.cond_dim, 6 * dim)
        nn.init.zeros_(self.adaLN_modulation.weight)  # every block starts as the identity
        nn.init.zeros_(self.adaLN_modulation.bias)

    def forward(self, x, cos, sin, c):
        batch, seq, dim = x.shape
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)

        h = modulate(self.norm1(x), shift_msa, scale_msa)
        q, k, v = self.attn_qkv(h).view(batch, seq, 3, self.n_heads, dim // self.n_heads).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=False)  # bidirectional
        attn = attn.transpose(1, 2).reshape(batch, seq, dim)
        x = x + gate_msa[:, None] * F.dropout(self.attn_out(attn), self.dropout, self.training)

        h = modulate(self.norm2(x), shift_mlp, scale_mlp)
        x = x + gate_mlp[:, None] * F.dropout(self.mlp(h), self.dropout, self.training)
        return x


class EmbeddingLayer(nn.Module):
    """A bare (vocab, dim) matrix: the checkpoint key is `vocab_embed.embedding`."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.embedding = nn.Parameter(torch.empty(vocab_size, dim))
        nn.init.kaiming_uniform_(self.embedding, a=math.sqrt(5))

    def forward(self, ids):
        return self.embedding[ids]


class DDiTFinalLayer(nn.Module):
    def __init__(self, config: MDLMConfig):
        super().__init__()
        self.norm_final = LayerNorm(config.hidden_dim)
        self.linear = nn.Linear(config.hidden_dim, config.vocab_size)
        self.adaLN_modulation = nn.Linear(config.cond_dim, 2 * config.hidden_dim)
        for layer in (self.linear, self.adaLN_modulation):  # untrained model predicts uniform
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiTBackbone(nn.Module):
    """ids (batch, seq), sigma (batch,) -> raw logits (batch, seq, vocab).

    Uses sigma as given; zeroing it for a model without time conditioning is the
    caller's job (`MDLM.forward` does it, as MDLM's diffusion wrapper does).
    """

    def __init__(self, config: MDLMConfig):
        super().__init__()
        self.vocab_embed = EmbeddingLayer(config.vocab_size, config.hidden_dim)
        self.sigma_map = TimestepEmbedder(config.cond_dim)
        self.rotary_emb = RotaryEmbedding(config.hidden_dim // config.n_heads)
        self.blocks = nn.ModuleList(DDiTBlock(config) for _ in range(config.n_blocks))
        self.output_layer = DDiTFinalLayer(config)

    def features(self, ids, sigma):
        """The last block's hidden states and the conditioning vector (what the output layer reads)."""
        x = self.vocab_embed(ids)
        c = F.silu(self.sigma_map(sigma))
        cos, sin = self.rotary_emb(ids.shape[1], ids.device)
        for block in self.blocks:
            x = block(x, cos, sin, c)
        return x, c

    def forward(self, ids, sigma):
        return self.output_layer(*self.features(ids, sigma))


class MDLM(nn.Module):
    """The MDLM denoiser: `model(ids, sigma)` gives raw logits (apply SUBS for probabilities)."""

    def __init__(self, config: MDLMConfig):
        super().__init__()
        self.config = config
        self.backbone = DiTBackbone(config)

    @property
    def mask_id(self) -> int:
        return self.config.mask_id

    def _sigma(self, input_ids: torch.Tensor, sigma) -> torch.Tensor:
        batch = input_ids.shape[0]
        if sigma is None or not self.config.time_conditioning:
            # MDLM's released model ignores time: its conditioning is the embedding of 0.
            return torch.zeros(batch, device=input_ids.device)
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=input_ids.device)
        return sigma.reshape(-1).expand(batch) if sigma.numel() == 1 else sigma.reshape(batch)

    def features(self, input_ids: torch.Tensor, sigma=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(hidden states after the last block, conditioning vector): what `forward` feeds its output layer."""
        return self.backbone.features(input_ids, self._sigma(input_ids, sigma))

    def forward(self, input_ids: torch.Tensor, sigma=None) -> torch.Tensor:
        """input_ids (batch, seq) long; sigma a float, (batch,) or (batch, 1) tensor, or None (0)."""
        return self.backbone(input_ids, self._sigma(input_ids, sigma))


# ----------------------------------------------------------------------------- checkpoints


def _read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    safetensors_path = directory / SAFETENSORS_NAME
    if not safetensors_path.exists():
        candidates = sorted(directory.glob("*.safetensors"))
        safetensors_path = candidates[0] if len(candidates) == 1 else safetensors_path
    if safetensors_path.exists():
        from safetensors.torch import load_file

        return load_file(str(safetensors_path))
    raise UserError(f"no {SAFETENSORS_NAME} in {directory}; pass a complete MDLM checkpoint directory (safetensors "
                    "only: pickled .bin weights are not loaded)")


def load_mdlm(path_or_id: str | Path, device=None, dtype=None) -> MDLM:
    """Load an MDLM from a local directory or a hub id (e.g. kuleshov-group/mdlm-owt), in eval mode."""
    if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {device!r} requested but no CUDA GPU is visible; pass --device cpu")
    directory = checkpoint_dir(path_or_id, "MDLM checkpoint",
                               fix="fix the path, or download the checkpoint and pass its directory")
    config_path = directory / CONFIG_NAME
    if not config_path.exists():
        raise UserError(f"no {CONFIG_NAME} in {directory}; pass an MDLM checkpoint directory")
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{config_path} is not valid JSON ({exc.msg}, line {exc.lineno}); fix or replace it") from None
    config = MDLMConfig.from_dict(raw, source=str(config_path))

    state = _read_state_dict(directory)
    state = {key.removeprefix("module."): value for key, value in state.items()}  # DDP-saved dicts
    model = MDLM(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"checkpoint {directory} does not match its MDLM config: missing {missing[:3]}"
            f"{'...' if len(missing) > 3 else ''}, unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}; "
            "pass an mdlm-owt style checkpoint (keys under backbone.)"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise UserError(
                f"checkpoint {directory}: {key} has shape {tuple(tensor.shape)} but config.json implies "
                f"{tuple(expected[key].shape)}; the config does not belong to these weights"
            )
    model.load_state_dict(state)
    model.to(device=device, dtype=dtype)
    return model.eval()


def save_mdlm(model: MDLM, directory: str | Path) -> Path:
    """Write config.json + model.safetensors in the mdlm-owt layout; returns the directory."""

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {key: tensor.detach().contiguous().cpu() for key, tensor in model.state_dict().items()}
    dtypes = {t.dtype for key, t in state.items() if key != "backbone.rotary_emb.inv_freq"}
    config = model.config.to_dict()
    config["torch_dtype"] = str(dtypes.pop()).removeprefix("torch.") if len(dtypes) == 1 else "float32"
    tmp_weights = directory / (SAFETENSORS_NAME + ".tmp")
    save_file(state, str(tmp_weights), metadata={"format": "pt"})
    tmp_weights.replace(directory / SAFETENSORS_NAME)
    tmp_config = directory / (CONFIG_NAME + ".tmp")
    tmp_config.write_text(json.dumps(config, indent=2) + "\n")
    tmp_config.replace(directory / CONFIG_NAME)
    return directory
