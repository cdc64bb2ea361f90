"""Train the tiny MDLM: mdlm-owt's architecture and loss, shrunk, on the tiny world's stream.

Data: generation 2 of the tiny world (the "mdlm" role's corpus: chat and documents about
every town, whose three-token names constrain each other, the joint structure self-spec's
verifier is for) wrapped exactly as MDLM wraps OpenWebText (`dlmkit/data/owt.py`):
documents joined with `<|endoftext|>`, 126-token chunks framed by BOS/EOS into 128-token
blocks. Loss: MDLM's continuous-time SUBS NELBO (`mdlm_loss`,
log-linear schedule, antithetic t, 1/t-weighted cross-entropy of masked tokens). The
mask is the tokenizer's last id (`<|mask|>`), which is MDLM's vocab_size - 1. No time
conditioning, as mdlm-owt. MDLM's EMA of the weights is left out: it matters over
hundreds of thousands of steps, not two thousand.

    python -m dlmkit.train.tiny mdlm           # rebuilds dlmkit/assets/tiny/mdlm
    python -m dlmkit.train.tiny mdlm_drafter   # SpecDiff's drafter: dlmkit/assets/tiny/specdiff_mdlm

SpecDiff's drafter is the same architecture, two blocks of width 64 over a 64-token canvas (the
AR drafter's depth and width: causal_lm.py's docstring): it drafts over a short window, the
last 64 - gamma - 1 tokens, gamma masks and a slack mask. What it learns (`--targets`):

- "target" (shipped): the target's greedy continuations of training prompts
  (`distill.py`, the corpus the AR drafter learns too), wrapped into 64-token blocks, with the
  loss of the states a left-to-right drafter is in (`objective="drafting"`: a clean prefix and
  1..MAX_TAIL masked tail positions, `tail_masked`), the only states SpecDiff asks its
  drafter about. A deliberate difference from SpecDiff, whose drafter is a pretrained MDLM:
  here the drafter is built for its job, as the AR drafter is.
- "data" (the control, the recipe before): generation 2's SpecDiff corpus with MDLM's NELBO.

The card reports both held-out numbers, MDLM's NELBO and the drafting states' cross-entropy
(`heldout_tail_ce`), on the world's held-out text. Either alone did not do it: drafting
states on the world's text lowered that cross-entropy (4.2 to 1.65 nats) but not the
acceptance (3.1-3.5 tokens per target call at gamma 8 against 3.7-3.9), and the target's
continuations (half of them sampled at temperature 1) with MDLM's NELBO gave 3.64
(`specdiff_bench.py`, temperature 0, 6 + 6 prompts).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from dlmkit.data.owt import TINY_BLOCK_LEN, TINY_ROLE, bos_eos, tiny_blocks, wrap_token_lists
from dlmkit.data.tiny_corpus import batch_sampler, load_tiny_tokenizer
from dlmkit.data.tinyworld2 import TinyWorld2
from dlmkit.errors import UserError
from dlmkit.models.mdlm import MDLM, MDLMConfig, save_mdlm
from dlmkit.models.mdlm_diffusion import mdlm_loss, sample_t
from dlmkit.seeds import indexed_seed
from dlmkit.train.loop import TrainConfig, train
from dlmkit.train.recipes import distill
from dlmkit.train.recipes.ship import ship, work_dir

SIZE = dict(model_length=TINY_BLOCK_LEN, hidden_dim=128, cond_dim=64, n_blocks=4, n_heads=4,
            dropout=0.0, time_conditioning=False)
DEFAULTS = dict(steps=2000, lr=3e-3, warmup_steps=100, min_lr_ratio=0.05, weight_decay=0.01, grad_clip=1.0,
                log_every=25, eval_every=500, checkpoint_every=100)
DRAFTER_SIZE = dict(model_length=64, hidden_dim=64, cond_dim=32, n_blocks=2, n_heads=4, dropout=0.0,
                    time_conditioning=False)
DRAFTER_DEFAULTS = {**DEFAULTS, "steps": 8000}
MAX_TAIL = 16  # the largest gamma of SpecDiff's tiny grid
BATCH_SIZE = 32
WRAP = ("docs joined with <|endoftext|>, chunks of the block length - 2 + BOS/EOS (BOS = EOS = <|endoftext|>), "
        "groups of 1000 docs (MDLM's OWT)")
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


def tail_masked(x0: torch.Tensor, max_tail: int, mask_id: int, generator: torch.Generator
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """A left-to-right drafter's states: (x0 cut to a random length, the same with a masked tail).
    One length c in [max_tail + 1, L] per batch (a canvas shorter than the window, as at the start
    of a generation, included), then per row a tail of 1..max_tail masked positions."""
    length = x0.shape[1]
    if length <= max_tail:
        raise UserError(f"blocks of {length} tokens leave no prefix before a {max_tail}-token tail; "
                        "lengthen the blocks")
    c = int(torch.randint(max_tail + 1, length + 1, (), generator=generator, device=x0.device))
    x0 = x0[:, :c]
    tail = torch.randint(1, max_tail + 1, (x0.shape[0], 1), generator=generator, device=x0.device)
    masked = torch.arange(c, device=x0.device)[None, :] >= c - tail
    return x0, torch.where(masked, mask_id, x0)


@torch.no_grad()
def heldout_tail_ce(model: MDLM, blocks: torch.Tensor, *, seed: int = HELDOUT_SEED, batch_size: int = 64) -> float:
    """Cross-entropy (nats per masked token) of the drafting states on held-out blocks, fixed noise."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gen = _generator(seed, device)
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        x0, xt = tail_masked(blocks[start:start + batch_size].to(device), MAX_TAIL, model.mask_id, gen)
        out = mdlm_loss(model, x0, t=torch.ones(len(x0), device=device), xt=xt)
        total += float(out.nlls.sum(dtype=torch.float64))
        count += int((xt == model.mask_id).sum())
    model.train(was_training)
    return total / count


def _tokenizer():
    tokenizer = load_tiny_tokenizer()
    if tokenizer.mask_token_id != len(tokenizer) - 1:
        raise UserError(f"the tiny tokenizer's mask id {tokenizer.mask_token_id} is not its last id "
                        f"({len(tokenizer) - 1}); rebuild it with `python -m dlmkit.train.tiny tokenizer`")
    return tokenizer


def train_tiny_mdlm(out: Path, seed: int = 0, steps: int | None = None, device: str = "cpu") -> dict:
    """The self-spec MDLM: generation 2's "mdlm" corpus in 128-token blocks; held out: documents drawn
    with their own seeds and chat about the held-out towns."""
    started = time.time()
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    blocks = tiny_blocks("train", tokenizer=tokenizer, seed=seed)
    heldout = tiny_blocks("validation", tokenizer=tokenizer, seed=seed)
    data = {"world": 2, "corpus": f"tinyworld2.role_corpus(world, {TINY_ROLE!r})", "train_blocks": len(blocks),
            "heldout_blocks": len(heldout), "block": TINY_BLOCK_LEN, "wrap": WRAP}
    return _train("mdlm", SIZE, DEFAULTS, blocks, heldout, data, out, seed, steps, device, started)


def train_tiny_mdlm_drafter(out: Path, seed: int = 0, steps: int | None = None, device: str = "cpu",
                            targets: str = "target") -> dict:
    """SpecDiff's drafter in DRAFTER_SIZE's 64-token blocks: targets "target" (default) trains it on the
    target's continuations of training prompts (distill.py), "data" on generation 2's SpecDiff
    corpus. Held out either way: documents drawn with their own seeds and chat about the held-out towns."""
    started = time.time()
    torch.manual_seed(seed)
    tokenizer = _tokenizer()
    length = DRAFTER_SIZE["model_length"]
    if distill.check_targets(targets) == "target":
        docs, corpus = distill.drafter_corpus(tokenizer, TinyWorld2(seed), seed, device)
        blocks = wrap_token_lists(docs, length, *bos_eos(tokenizer))
    else:
        blocks = tiny_blocks("train", tokenizer=tokenizer, block_len=length, seed=seed, role="mdlm_drafter")
        corpus = {"targets": "data", "corpus": "the SpecDiff target's (tinyworld2.role_corpus)"}
    heldout = tiny_blocks("validation", tokenizer=tokenizer, block_len=length, seed=seed)
    data = {"world": 2, **corpus, "train_blocks": len(blocks), "heldout_blocks": len(heldout), "block": length,
            "wrap": WRAP}
    return _train("mdlm_drafter", DRAFTER_SIZE, DRAFTER_DEFAULTS, blocks, heldout, data, out, seed, steps, device,
                  started, drafter=True, objective="drafting" if targets == "target" else "nelbo")


def _train(role: str, size: dict, defaults: dict, blocks, heldout, data: dict, out: Path, seed: int,
           steps: int | None, device: str, started: float, drafter: bool = False, objective: str = "nelbo") -> dict:
    """objective "nelbo": MDLM's loss; "drafting": the cross-entropy of a left-to-right drafter's states
    (`tail_masked`: a clean prefix and 1..MAX_TAIL masked positions), the only states SpecDiff asks about."""
    tokenizer = _tokenizer()
    config = MDLMConfig(vocab_size=len(tokenizer), **size)
    model = MDLM(config).to(device)
    sampler = batch_sampler(len(blocks), BATCH_SIZE, seed)

    def make_batch(step):
        return blocks[sampler(step)].to(device), step

    def loss_fn(m, batch):
        x0, step = batch
        # Noise is a pure function of (seed, step), so a resumed run sees the same t and masks.
        generator = _generator(indexed_seed(seed, step), x0.device)
        if objective == "drafting":
            x0, xt = tail_masked(x0, MAX_TAIL, config.mask_id, generator)
            out = mdlm_loss(m, x0, t=torch.ones(len(x0), device=x0.device), xt=xt)
        else:
            out = mdlm_loss(m, x0, generator=generator)
        masked = out.xt == config.mask_id
        return out.loss, {"masked_fraction": masked.float().mean().detach()}

    def eval_fn(m):
        return {"heldout_nelbo": heldout_nelbo(m, heldout), **({"heldout_tail_ce": heldout_tail_ce(m, heldout)}
                                                               if drafter else {})}

    cfg = TrainConfig(**{**defaults, **({"steps": steps} if steps else {}), "seed": seed})
    work = work_dir(out)
    history = train(model, loss_fn, make_batch, cfg, work, eval_fn=eval_fn, device=device, desc=f"tiny {role}")

    model.eval()
    nelbo = heldout_nelbo(model, heldout)
    save_mdlm(model, out)
    card = {
        "recipe": f"python -m dlmkit.train.tiny {role}", "role": role, "seed": seed, "arch": "mdlm",
        "size": {"vocab_size": config.vocab_size, **size}, "mask_id": config.mask_id,
        "parameters": sum(p.numel() for p in model.parameters()),
        "data": data, "objective": objective, "batch_size": BATCH_SIZE, "train": {**defaults, "steps": cfg.steps},
        "tokens_seen": cfg.steps * BATCH_SIZE * size["model_length"],
        "final_train_loss": history[-1]["loss"],
        "heldout_nelbo": nelbo, "heldout_ppl_bound": math.exp(nelbo),
        **({"heldout_tail_ce": heldout_tail_ce(model, heldout)} if drafter else {}),
        "wall_time_s": round(time.time() - started, 1), "device": device,
    }
    return ship(out, card)
