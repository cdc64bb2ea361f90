"""Self-speculative masked diffusion (Campbell et al. 2025, arXiv 2510.03929) on a frozen MDLM.

A pretrained MDLM is kept whole and frozen: one pass of its non-causal stack over x_t
gives hidden states h (the input of its output layer) and, through its own output layer,
the factorized *draft* distribution p at every masked position. On top sits one added
*causal* transformer layer and a new *target* head, the only parts that train:

    the masked positions, in a random order sigma = (s_0, s_1, ...), form a stream;
    slot j predicts the token at s_j and sees
        input      h[s_{j-1}] + W_tok E[x_{s_{j-1}}]   (the previous token of the order: the
                                                       true token in training, a draft at
                                                       sampling; slot 0 sees h[s_0] + the mask)
        positions  s_{j-1} (where its token sits) and s_j (what it predicts): rotary on half
                   of each head's channels pairs a query's s_j with a key's s_{j-1}, the other
                   half pairs the two tokens' positions (the double position encoding; slot 0
                   uses s_0 twice)
        attention  slots 0..j only (lower-triangular in sigma order)
    output residual: the head reads norm(h[s_j]) + W_out y_j (added after the head's norm,
    where both have unit scale), so the causal layer only has to add what the tokens
    revealed earlier in the order say about position s_j.

The target head starts as a copy of the draft head and W_out starts at zero: an untrained
model's target equals its draft exactly, so every draft would be accepted, and training
only learns the correction. The product of the target conditionals over a window is the
non-factorized distribution that speculative sampling (`dlmkit/decoding/self_spec_sampler.py`)
draws from; the objective here is its cross-entropy under teacher forcing.

Saved as config.json + model.safetensors holding only the trained parts; the backbone is
loaded from its own checkpoint, named in the config.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from dlmkit.errors import UserError
from dlmkit.models.mdlm import MDLM, LayerNorm, RotaryEmbedding, apply_rotary, modulate
from dlmkit.models.mdlm_diffusion import LogLinearSchedule, mask_out, mask_tokens, sample_t

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
MODEL_TYPE = "mdlm_self_spec"


@dataclass
class SelfSpecConfig:
    hidden_dim: int = 768  # the backbone's
    n_heads: int = 12
    vocab_size: int = 50258  # the backbone's (mask last)
    mlp_ratio: int = 4
    dropout: float = 0.1
    output_residual: bool = True
    rotary_base: float = 10000.0
    head_delta_scale: float = 1.0  # see TargetHead
    backbone: str = ""  # where the frozen MDLM came from (a hub id or a directory), for the record

    def __post_init__(self):
        if self.hidden_dim % self.n_heads or (self.hidden_dim // self.n_heads) % 4:
            raise UserError(f"self-spec config: hidden_dim {self.hidden_dim} must split into {self.n_heads} heads "
                            "whose size is a multiple of 4 (two rotary halves of even size); change n_heads")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise UserError(f"self-spec config: dropout must be in [0, 1), got {self.dropout}")

    @classmethod
    def for_backbone(cls, mdlm: MDLM, **overrides) -> "SelfSpecConfig":
        c = mdlm.config
        return cls(**{"hidden_dim": c.hidden_dim, "n_heads": c.n_heads, "vocab_size": c.vocab_size, **overrides})

    def to_dict(self) -> dict:
        return {"architectures": ["SelfSpecMDLM"], "model_type": MODEL_TYPE, **asdict(self)}

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "SelfSpecConfig":
        if raw.get("model_type") != MODEL_TYPE:
            raise UserError(f"{source} has model_type {raw.get('model_type')!r}, not {MODEL_TYPE!r}; pass a "
                            "directory written by train_self_spec.py --phase train")
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def rotary_at(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of rotary angles at arbitrary positions (batch, seq) -> (batch, 1, seq, 2 * len(inv_freq))."""
    angles = positions.float()[..., None] * inv_freq.to(positions.device, torch.float32)
    angles = torch.cat([angles, angles], dim=-1)[:, None]
    return angles.cos(), angles.sin()


class CausalLayer(nn.Module):
    """One pre-norm transformer layer over the sigma-ordered stream: double rotary, causal mask.

    Rotary makes a score depend on the difference of the positions that rotated the query and
    the key; with two positions per slot, the pairing decides which differences attention can
    see. Rotating both with the same position per half would give s_{j-1} - s_{k-1} and
    s_j - s_k, never the offset between the predicted position and a revealed token's."""

    def __init__(self, config: SelfSpecConfig):
        super().__init__()
        dim = config.hidden_dim
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        # The frozen hidden states are ~100x larger than token embeddings: each input is
        # normalised on its own, or the revealed token would be lost in the sum.
        self.norm_hidden = LayerNorm(dim)
        self.token_proj = nn.Linear(dim, dim, bias=False)  # the (frozen) token embedding into the stream
        self.norm_token = LayerNorm(dim)
        self.norm1 = LayerNorm(dim)
        # Biased q/k (unlike MDLM's blocks): a position-only attention pattern ("the token next to
        # what I predict") needs query and key parts that do not depend on the content.
        self.attn_qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.attn_out = nn.Linear(dim, dim, bias=False)
        self.norm2 = LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, config.mlp_ratio * dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(config.mlp_ratio * dim, dim))
        self.norm_out = LayerNorm(dim)
        self.out_proj = nn.Linear(dim, dim, bias=False)
        if config.output_residual:
            nn.init.zeros_(self.out_proj.weight)  # target == draft until training says otherwise
        # Each half of a head rotates with one of the two positions.
        self.rotary = RotaryEmbedding(dim // config.n_heads // 2, base=config.rotary_base)

    def forward(self, x, current, following, attend):
        """x (B, S, D); current / following (B, S) positions; attend (B, S, S) bool -> (B, S, D)."""
        batch, seq, dim = x.shape
        head = dim // self.n_heads
        cos_a, sin_a = rotary_at(current, self.rotary.inv_freq)
        cos_b, sin_b = rotary_at(following, self.rotary.inv_freq)

        def rotate(t, first_at, second_at):
            first, second = t.split(head // 2, dim=-1)
            return torch.cat([apply_rotary(first, *first_at), apply_rotary(second, *second_at)], dim=-1)

        q, k, v = self.attn_qkv(self.norm1(x)).view(batch, seq, 3, self.n_heads, head).permute(2, 0, 3, 1, 4)
        # First half: a query at the position it predicts, a key at the position of the token it
        # carries, so a score sees "this revealed token sits d places from what I predict".
        # Second half: both at the token's position (where revealed tokens sit relative to each other).
        q = rotate(q, (cos_b, sin_b), (cos_a, sin_a))
        k = rotate(k, (cos_a, sin_a), (cos_a, sin_a))
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=attend[:, None])
        attn = attn.transpose(1, 2).reshape(batch, seq, dim)
        x = x + F.dropout(self.attn_out(attn), self.dropout, self.training)
        x = x + F.dropout(self.mlp(self.norm2(x)), self.dropout, self.training)
        return self.out_proj(self.norm_out(x))


class TargetHead(nn.Module):
    """The draft head's layout (norm, adaLN, linear to the vocabulary) and, at first, its
    weights: each weight is the draft head's (a buffer, rebuilt from the MDLM on load) plus
    delta_scale * a trained delta that starts at zero. Weight decay then pulls towards the
    draft head, not towards zero logits, and delta_scale < 1 slows the head against the
    gradient noise of a small batch (Adam moves every weight by about lr per step)."""

    def __init__(self, draft_head, delta_scale: float = 1.0):
        super().__init__()
        self.delta_scale = float(delta_scale)
        self.norm_final = copy.deepcopy(draft_head.norm_final)
        for name in ("linear", "adaLN_modulation"):
            layer = getattr(draft_head, name)
            for kind in ("weight", "bias"):
                start = getattr(layer, kind).detach().clone()
                self.register_buffer(f"{name}_{kind}_start", start, persistent=False)
                setattr(self, f"{name}_{kind}_delta", nn.Parameter(torch.zeros_like(start)))
        for param in self.parameters():
            param.requires_grad_(True)

    def _weights(self, name):
        return [getattr(self, f"{name}_{kind}_start") + self.delta_scale * getattr(self, f"{name}_{kind}_delta")
                for kind in ("weight", "bias")]

    def forward(self, hidden, cond, residual=None):
        """Logits from hidden states; `residual` is added after the norm (see SelfSpecMDLM)."""
        shift, scale = F.linear(cond, *self._weights("adaLN_modulation")).chunk(2, dim=-1)
        normed = self.norm_final(hidden) if hidden is not None else 0
        if residual is not None:
            normed = normed + residual
        return F.linear(modulate(normed, shift, scale), *self._weights("linear"))


@dataclass
class Draft:
    hidden: torch.Tensor  # (B, L, D): input of the MDLM's output layer
    cond: torch.Tensor  # (B, cond_dim): adaLN conditioning (constant without time conditioning)
    logits: torch.Tensor  # (B, L, V): the draft's raw logits (apply SUBS for probabilities)


class SelfSpecMDLM(nn.Module):
    """Frozen MDLM (draft) + causal layer and target head (trained)."""

    def __init__(self, backbone: MDLM, config: SelfSpecConfig):
        super().__init__()
        b = backbone.config
        if (config.hidden_dim, config.vocab_size) != (b.hidden_dim, b.vocab_size):
            raise UserError(f"self-spec parts (hidden {config.hidden_dim}, vocab {config.vocab_size}) do not fit the "
                            f"MDLM (hidden {b.hidden_dim}, vocab {b.vocab_size}); pass the MDLM they were trained on")
        self.config = config
        self.backbone = backbone
        for param in self.backbone.parameters():
            param.requires_grad_(False)
        self.causal = CausalLayer(config)
        self.target_head = TargetHead(backbone.backbone.output_layer, config.head_delta_scale)
        self.backbone.eval()

    @property
    def mask_id(self) -> int:
        return self.backbone.mask_id

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()  # the draft is frozen: no dropout in it, ever
        return self

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if not k.startswith("backbone.")}

    # ------------------------------------------------------------------ the two passes

    def draft(self, ids: torch.Tensor, sigma=None) -> Draft:
        """One pass of the frozen MDLM: hidden states and draft logits (what `MDLM.forward` computes)."""
        with torch.no_grad():
            x, cond = self.backbone.features(ids, sigma)
            return Draft(hidden=x, cond=cond, logits=self.backbone.backbone.output_layer(x, cond))

    def target_logits(self, draft: Draft, order: torch.Tensor, tokens: torch.Tensor,
                      valid: torch.Tensor | None = None) -> torch.Tensor:
        """Target logits (B, S, V) for the stream `order` (B, S) of positions.

        tokens (B, S): the token at each slot's position (slot j reads tokens[:, j - 1]; the last
        one is never read). valid (B, S) bool: slots that exist (rows may have fewer); other
        slots attend only to themselves and their logits are meaningless.
        """
        batch, seq = order.shape
        device = order.device
        if valid is None:
            valid = torch.ones(batch, seq, dtype=torch.bool, device=device)
        hidden = draft.hidden.gather(1, order[..., None].expand(-1, -1, draft.hidden.shape[-1]))
        previous = torch.cat([order[:, :1], order[:, :-1]], dim=1)
        mask = torch.full((batch, 1), self.mask_id, dtype=tokens.dtype, device=device)
        previous_tokens = torch.cat([mask, tokens[:, :-1]], dim=1)
        previous_hidden = torch.cat([hidden[:, :1], hidden[:, :-1]], dim=1)

        embed = self.backbone.backbone.vocab_embed.embedding[previous_tokens].to(hidden.dtype)
        causal_layer = self.causal
        x = causal_layer.norm_hidden(previous_hidden) + causal_layer.norm_token(causal_layer.token_proj(embed))
        slots = torch.arange(seq, device=device)
        causal = slots[None, :, None] >= slots[None, None, :]
        attend = (causal & valid[:, None, :]) | torch.eye(seq, dtype=torch.bool, device=device)[None]
        y = causal_layer(x, previous, order, attend)
        # The head as the MDLM's output layer computes it, with the residual added after its
        # norm, where the causal layer's unit-scale output weighs as much as the hidden state.
        if self.config.output_residual:
            return self.target_head(hidden, draft.cond, residual=y)
        return self.target_head(None, draft.cond, residual=y)


# ----------------------------------------------------------------------------- the objective


def random_order(masked: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A uniformly random order of each row's masked positions, padded: order (B, S), valid (B, S);
    S is the largest masked count (at least 1)."""
    keys = torch.rand(masked.shape, generator=generator, device=masked.device)
    keys = torch.where(masked, keys, torch.full_like(keys, 2.0))
    order = keys.argsort(dim=1)
    counts = masked.sum(1)
    width = max(1, int(counts.max()))
    order = order[:, :width]
    valid = torch.arange(width, device=masked.device)[None] < counts[:, None]
    return order, valid


def _ce(logits, targets, mask_id):
    return F.cross_entropy(mask_out(logits.float(), mask_id).transpose(1, 2), targets, reduction="none")


@dataclass
class SelfSpecLoss:
    loss: torch.Tensor  # the target cross-entropy, mean over masked tokens (what trains)
    target_loss: torch.Tensor
    draft_loss: torch.Tensor  # the frozen draft's cross-entropy on the same tokens (the bar to beat)
    masked_tokens: int


def self_spec_loss(model: SelfSpecMDLM, x0: torch.Tensor, *, t: torch.Tensor | None = None,
                   max_window: int | None = None, schedule: LogLinearSchedule = LogLinearSchedule(),
                   generator=None) -> SelfSpecLoss:
    """Teacher-forced objective: mask x0 at MDLM's noise level t (uniform, antithetic), order the
    masked positions uniformly at random, and score the target's cross-entropy of each masked
    token given the unmasked ones (through the frozen pass) and the earlier ones in the order.

    max_window keeps the first slots of each order only (sampling never speculates further, and
    the stream's cost grows with its length). The draft is scored on the same tokens; both
    losses are plain means over them, so they compare directly.
    """
    if t is None:
        t = sample_t(x0.shape[0], generator=generator, device=x0.device)
    xt = mask_tokens(x0, schedule.move_chance(t), model.mask_id, generator)
    draft = model.draft(xt)
    order, valid = random_order(xt == model.mask_id, generator)
    if max_window:
        order, valid = order[:, :max_window], valid[:, :max_window]
    tokens = x0.gather(1, order)
    target = _ce(model.target_logits(draft, order, tokens, valid), tokens, model.mask_id)
    draft_logits = draft.logits.gather(1, order[..., None].expand(-1, -1, draft.logits.shape[-1]))
    drafted = _ce(draft_logits, tokens, model.mask_id)
    count = valid.sum().clamp_min(1)
    target_loss = (target * valid).sum() / count
    draft_loss = (drafted * valid).sum() / count
    return SelfSpecLoss(loss=target_loss, target_loss=target_loss.detach(), draft_loss=draft_loss.detach(),
                        masked_tokens=int(valid.sum()))


# ----------------------------------------------------------------------------- checkpoints


def save_self_spec(model: SelfSpecMDLM, directory: str | Path) -> Path:
    """config.json + model.safetensors with the trained parts only (atomic renames)."""

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.trainable_state().items()}
    tmp = directory / (SAFETENSORS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.replace(directory / SAFETENSORS_NAME)
    tmp = directory / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    tmp.replace(directory / CONFIG_NAME)
    return directory


def load_self_spec(directory: str | Path, backbone: MDLM, device=None, dtype=None) -> SelfSpecMDLM:
    """The trained parts in `directory` on top of `backbone` (an MDLM already loaded), in eval mode."""

    directory = Path(directory)
    config_path, weights = directory / CONFIG_NAME, directory / SAFETENSORS_NAME
    if not (config_path.exists() and weights.exists()):
        raise UserError(f"no {CONFIG_NAME} and {SAFETENSORS_NAME} in {directory}; run train_self_spec.py --phase "
                        "train first or pass the directory it wrote")
    config = SelfSpecConfig.from_dict(json.loads(config_path.read_text()), source=str(config_path))
    model = SelfSpecMDLM(backbone, config)
    state = load_file(str(weights))
    expected = model.trainable_state()
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise UserError(f"{weights} does not match its config: missing {missing[:3]}, unexpected {unexpected[:3]}; "
                        "retrain or pass the matching directory")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise UserError(f"{weights}: {key} has shape {tuple(tensor.shape)}, the MDLM implies "
                            f"{tuple(expected[key].shape)}; pass the MDLM these parts were trained on")
    model.load_state_dict(state, strict=False)
    model.to(device=device, dtype=dtype)
    return model.eval()
