"""The CLSD drafter: a causal DiT grafted from a strided slice of the Qwen3.5 verifier.

    dit = graft(verifier, source_indices=[0, 3, 6, 9, 12, 15, 18, 21, 24, 26, 28, 31], block_len=128)
    velocity = dit(x_t, t, cond)          # x_t: (B, L, H) in the verifier's embedding space

The generator keeps the verifier's hybrid layers as they are (Gated DeltaNet and gated
attention, each with its MLP and zero-centred RMSNorms), copied from the chosen source
indices, so drafts live in the verifier's input-embedding space with no projection in or
out. DiT-style conditioning is added around each copied layer (Peebles & Xie, adaLN-Zero):

    shift1, scale1, gate1, shift2, scale2, gate2 = Linear(H, 6H)(SiLU(c))    # zero-init
    x = x + gate1 * mixer(norm1(x) * (1 + scale1) + shift1)
    x = x + gate2 * mlp(norm2(x) * (1 + scale2) + shift2)

with c = timestep_embedding(t) + C, where C is the verifier's final hidden state at the
last prompt position. A learned local position embedding (1, L, H), zero-init, is added
to the input. With all gates and the position table at zero, the DiT is the identity on
its input sequence at initialisation. Every mixer is causal (DeltaNet is a recurrence,
attention runs with a causal mask), so a later position never changes an earlier output.

The flow runs in the verifier's embedding space divided by one scalar, `embed_scale` (the
RMS of the verifier's embedding matrix), so that the N(0, I) noise and the data have the
same scale; `to_embeddings` multiplies it back before the verifier reads a draft.

Reading tokens off a draft: the nearest row of the verifier's embedding matrix (L2), see
`nearest_tokens`. The drafted tokens are then scored by the verifier on their real
embeddings, so accepted tokens are verified on exactly what is emitted.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from dlmkit.errors import UserError
from dlmkit.models.cache import cache_kwargs

PAPER_SOURCE_INDICES = [0, 3, 6, 9, 12, 15, 18, 21, 24, 26, 28, 31]
PAPER_SOURCE_LAYERS = 32


def scale_source_indices(num_layers: int, indices=PAPER_SOURCE_INDICES, source_layers: int = PAPER_SOURCE_LAYERS):
    """The paper's source indices (for 32 layers) placed proportionally in a `num_layers` stack.
    For 16 layers: [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 14, 15], again 9 DeltaNet + 3 attention."""
    if num_layers == source_layers:
        return list(indices)
    scaled = sorted({round(i * (num_layers - 1) / (source_layers - 1)) for i in indices})
    if len(scaled) != len(indices):
        raise UserError(f"a {num_layers}-layer verifier is too shallow for {len(indices)} distinct source layers; "
                        "pass --source-indices explicitly")
    return scaled


@dataclass
class DiTConfig:
    source_indices: list[int]
    block_len: int
    embed_scale: float
    text: dict = field(default_factory=dict)  # the grafted stack's Qwen3_5TextConfig as a dict
    freq_dim: int = 256

    @property
    def hidden_size(self) -> int:
        return self.text["hidden_size"]

    def text_config(self):
        from transformers import Qwen3_5TextConfig

        config = Qwen3_5TextConfig(**{k: v for k, v in self.text.items()
                                      if k not in ("model_type", "architectures", "transformers_version")})
        config._attn_implementation = "sdpa"
        return config


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Sinusoidal features of t in [0, 1] (scaled to DiT's 0..1000), then a two-layer MLP."""

    def __init__(self, hidden_size: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    @staticmethod
    def sinusoid(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = (t.float() * 1000.0)[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        features = self.sinusoid(t, self.freq_dim).to(self.mlp[0].weight.dtype)
        return self.mlp(features)


class DiTBlock(nn.Module):
    """One copied Qwen3.5 decoder layer with adaLN-Zero modulation around its mixer and MLP."""

    def __init__(self, layer: nn.Module, hidden_size: int):
        super().__init__()
        self.layer = layer
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))
        nn.init.zeros_(self.adaLN_modulation[1].weight)
        nn.init.zeros_(self.adaLN_modulation[1].bias)

    def forward(self, x, c, position_embeddings, attention_mask):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.adaLN_modulation(c)[:, None].chunk(6, dim=-1)
        layer = self.layer
        h = modulate(layer.input_layernorm(x), shift1, scale1)
        if layer.block_type == "linear_attention":
            h = layer.linear_attn(hidden_states=h)
        else:
            h, _ = layer.self_attn(hidden_states=h, attention_mask=attention_mask,
                                   position_embeddings=position_embeddings)
        x = x + gate1 * h
        h = modulate(layer.post_attention_layernorm(x), shift2, scale2)
        return x + gate2 * layer.mlp(h)


class CLSDDiT(nn.Module):
    def __init__(self, config: DiTConfig):
        super().__init__()
        from transformers.models.qwen3_5.modeling_qwen3_5 import Qwen3_5DecoderLayer, Qwen3_5TextRotaryEmbedding

        self.config = config
        text = config.text_config()
        self.text = text
        hidden = config.hidden_size
        self.blocks = nn.ModuleList(DiTBlock(Qwen3_5DecoderLayer(text, i), hidden)
                                    for i in range(text.num_hidden_layers))
        self.rotary_emb = Qwen3_5TextRotaryEmbedding(text)
        self.t_embedder = TimestepEmbedder(hidden, config.freq_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.block_len, hidden))

    @property
    def layer_types(self) -> list[str]:
        return list(self.text.layer_types)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Velocity at (x, t): x (B, L, H) scaled embeddings, t (B,) or scalar in [0, 1], cond (B, H) = C."""
        from transformers.masking_utils import create_causal_mask

        batch, length, _ = x.shape
        if length > self.config.block_len:
            raise UserError(f"a block of {length} positions exceeds the DiT's block_len {self.config.block_len}")
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device)
        if t.ndim == 0:
            t = t.expand(batch)
        c = self.t_embedder(t).to(x.dtype) + cond.to(x.dtype).expand(batch, -1)
        x = x + self.pos_embed[:, :length].to(x.dtype)
        position_ids = torch.arange(length, device=x.device)[None].expand(batch, -1)
        # Qwen3.5's rotary takes one row of positions per rope grid, (3, B, L), as its text model passes
        # them; transformers 5.17 (the GPU image's) indexes that shape and fails on (B, L).
        position_embeddings = self.rotary_emb(x, position_ids[None].expand(3, -1, -1))
        mask = create_causal_mask(config=self.text, inputs_embeds=x, attention_mask=None, **cache_kwargs(None),
                                  position_ids=position_ids)
        for block in self.blocks:
            x = block(x, c, position_embeddings, mask)
        return x

    def to_embeddings(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.config.embed_scale


def embedding_scale(verifier) -> float:
    """RMS of the verifier's input-embedding matrix: the data scale of the flow. Summed a chunk of
    rows at a time: a float32 copy of the whole table and its square would be 8 GB at 9B (found by
    benchmarks/real_geometry.py)."""
    weight = verifier.get_input_embeddings().weight.detach()
    total = sum(float(rows.float().pow(2).sum(dtype=torch.float64)) for rows in weight.split(4096))
    return (total / weight.numel()) ** 0.5


def graft(verifier, source_indices=None, *, block_len: int = 128) -> CLSDDiT:
    """A DiT whose blocks hold copies of the verifier's layers at `source_indices`."""
    layers = verifier.model.layers
    source_indices = list(source_indices if source_indices is not None else scale_source_indices(len(layers)))
    bad = [i for i in source_indices if not 0 <= i < len(layers)]
    if bad:
        raise UserError(f"source indices {bad} are outside the verifier's {len(layers)} layers; "
                        f"pass --source-indices with values in 0..{len(layers) - 1}")
    text = verifier.config.to_dict()
    text.update(num_hidden_layers=len(source_indices),
                layer_types=[verifier.config.layer_types[i] for i in source_indices])
    for key in ("model_type", "architectures", "transformers_version", "_attn_implementation_autoset", "dtype",
                "torch_dtype"):
        text.pop(key, None)
    config = DiTConfig(source_indices=source_indices, block_len=block_len,
                       embed_scale=embedding_scale(verifier), text=text)
    weight = verifier.get_input_embeddings().weight
    dit = CLSDDiT(config).to(device=weight.device, dtype=weight.dtype)
    for block, index in zip(dit.blocks, source_indices):
        block.layer.load_state_dict(layers[index].state_dict())
    return dit


def save_dit(dit: CLSDDiT, directory: Path) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(asdict(dit.config), indent=2) + "\n")
    save_file({k: v.detach().contiguous().cpu() for k, v in dit.state_dict().items()},
              str(directory / "model.safetensors"))


def load_dit(directory: Path, device: str = "cpu", dtype=None) -> CLSDDiT:
    directory = Path(directory)
    if not (directory / "config.json").exists():
        raise UserError(f"no DiT at {directory}; run the stage_a phase first (or pass the same --ckpt-dir)")
    config = DiTConfig(**json.loads((directory / "config.json").read_text()))
    dit = CLSDDiT(config)
    dit.load_state_dict(load_file(str(directory / "model.safetensors")))
    return dit.to(device=device, dtype=dtype or torch.float32).eval()


class NearestEmbedding:
    """Reads tokens off drafts: the ids of the nearest rows (L2) of an embedding matrix (V, H).
    The float32 table and its squared norms are made once, not per round (at 9B the table is
    248320 x 4096: 4 GB in float32). The squared norms are summed a chunk of rows at a time, so no
    second table-sized temporary is made (found by benchmarks/real_geometry.py: +4 GB at 9B)."""

    def __init__(self, embedding: torch.Tensor, chunk: int = 4096):
        self.table = embedding.float()
        self.norms = torch.cat([rows.pow(2).sum(-1) for rows in self.table.split(chunk)])
        self.chunk = chunk

    def __call__(self, embeds: torch.Tensor) -> torch.Tensor:
        flat = embeds.reshape(-1, embeds.shape[-1]).float()
        out = []
        for start in range(0, flat.shape[0], self.chunk):
            part = flat[start:start + self.chunk]
            out.append((2 * part @ self.table.T - self.norms).argmax(-1))  # argmin |e - E_v|^2
        return torch.cat(out).view(embeds.shape[:-1])


def nearest_tokens(embeds: torch.Tensor, embedding: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Ids of the nearest rows (L2) of `embedding` (V, H) to each vector of `embeds` (..., H)."""
    return NearestEmbedding(embedding, chunk)(embeds)
