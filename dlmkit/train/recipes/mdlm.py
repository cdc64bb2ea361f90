"""Train the tiny MDLM: mdlm-owt's architecture and loss, shrunk, on the tiny world's stream.

Data: the tiny world's pretraining stream wrapped exactly as MDLM wraps OpenWebText
(`dlmkit/data/owt.py`): documents joined with `<|endoftext|>`, 126-token chunks framed
by BOS/EOS into 128-token blocks. Loss: MDLM's continuous-time SUBS NELBO (`mdlm_loss`,
log-linear schedule, antithetic t, 1/t-weighted cross-entropy of masked tokens). The
mask is the tokenizer's last id (`<|mask|>`), which is MDLM's vocab_size - 1. No time
conditioning, as mdlm-owt. MDLM's EMA of the weights is left out: it matters over
hundreds of thousands of steps, not two thousand.

    python -m dlmkit.train.tiny mdlm           # rebuilds dlmkit/assets/tiny/mdlm
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from dlmkit.data.owt import TINY_BLOCK_LEN, TINY_STREAMS, tiny_blocks
from dlmkit.data.tiny_corpus import batch_sampler, load_tiny_tokenizer
from dlmkit.errors import UserError
from dlmkit.models.mdlm import MDLM, MDLMConfig, save_mdlm
from dlmkit.models.mdlm_diffusion import mdlm_loss, sample_t
from dlmkit.seeds import indexed_seed
from dlmkit.train.loop import TrainConfig, train
from dlmkit.train.recipes.ship import ship, work_dir

SIZE = dict(model_length=TINY_BLOCK_LEN, hidden_dim=128, cond_dim=64, n_blocks=4, n_heads=4,
            dropout=0.0, time_conditioning=False)
DEFAULTS = dict(steps=2000, lr=3e-3, warmup_steps=100, min_lr_ratio=0.05, weight_decay=0.01, grad_clip=1.0,
                log_every=25, eval_every=500, checkpoint_every=100)
BATCH_SIZE = 32
HELDOUT_SEED = 1234


def _generator(seed: int, device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


@torch.no_grad()
def heldout_nelbo(model: MDLM, blocks: torch.Tensor, *, seed: int = HELDOUT_SEED, batch_size: int = 64,
                  passes: int = 2) -> float:
    """MDLM's validation number: the NELBO (nats per token, an upper bound on the NLL) on
    held-out blocks, with antithetic t over the whole set and fixed noise."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for p in range(passes):
        gen = _generator(seed + p, device)
        t = sample_t(len(blocks), generator=gen, device=device)
        for start in range(0, len(blocks), batch_size):
            x0 = blocks[start:start + batch_size].to(device)
            out = mdlm_loss(model, x0, t=t[start:start + batch_size], generator=gen)
            total += float(out.nlls.sum(dtype=torch.float64))
            count += int(out.token_mask.sum())
    model.train(was_training)
    return total / count


def train_tiny_mdlm(out: Path, seed: int = 0, steps: int | None = None, device: str = "cpu") -> dict:
    started = time.time()
    torch.manual_seed(seed)
    tokenizer = load_tiny_tokenizer()
    if tokenizer.mask_token_id != len(tokenizer) - 1:
        raise UserError(f"the tiny tokenizer's mask id {tokenizer.mask_token_id} is not its last id "
                        f"({len(tokenizer) - 1}); rebuild it with `python -m dlmkit.train.tiny tokenizer`")
    blocks = tiny_blocks("train", tokenizer=tokenizer, seed=seed)
    heldout = tiny_blocks("validation", tokenizer=tokenizer, seed=seed)
    config = MDLMConfig(vocab_size=len(tokenizer), **SIZE)
    model = MDLM(config).to(device)
    sampler = batch_sampler(len(blocks), BATCH_SIZE, seed)

    def make_batch(step):
        return blocks[sampler(step)].to(device), step

    def loss_fn(m, batch):
        x0, step = batch
        # Noise is a pure function of (seed, step), so a resumed run sees the same t and masks.
        out = mdlm_loss(m, x0, generator=_generator(indexed_seed(seed, step), x0.device))
        masked = out.xt == config.mask_id
        return out.loss, {"masked_fraction": masked.float().mean().detach()}

    def eval_fn(m):
        return {"heldout_nelbo": heldout_nelbo(m, heldout)}

    cfg = TrainConfig(**{**DEFAULTS, **({"steps": steps} if steps else {}), "seed": seed})
    work = work_dir(out)
    history = train(model, loss_fn, make_batch, cfg, work, eval_fn=eval_fn, device=device, desc="tiny mdlm")

    model.eval()
    nelbo = heldout_nelbo(model, heldout)
    save_mdlm(model, out)
    card = {
        "recipe": "python -m dlmkit.train.tiny mdlm", "role": "mdlm", "seed": seed, "arch": "mdlm",
        "size": {"vocab_size": config.vocab_size, **SIZE}, "mask_id": config.mask_id,
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": {"stream": TINY_STREAMS["train"], "train_blocks": len(blocks), "heldout_blocks": len(heldout),
                 "block": TINY_BLOCK_LEN, "wrap": "docs joined with <|endoftext|>, 126-token chunks + BOS/EOS "
                                                  "(BOS = EOS = <|endoftext|>), groups of 1000 docs (MDLM's OWT)"},
        "batch_size": BATCH_SIZE, "train": {**DEFAULTS, "steps": cfg.steps},
        "tokens_seen": cfg.steps * BATCH_SIZE * TINY_BLOCK_LEN,
        "final_train_loss": history[-1]["loss"],
        "heldout_nelbo": nelbo, "heldout_ppl_bound": math.exp(nelbo),
        "wall_time_s": round(time.time() - started, 1), "device": device,
    }
    return ship(out, card)
