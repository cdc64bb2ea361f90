"""Train the tiny CLSD verifier: a 16-layer hybrid Qwen3.5 (12 Gated DeltaNet + 4 gated
attention layers, width 64) language model of the tiny world, math-heavy.

CLSD grafts 12 of its layers into the drafting DiT (the paper's 32-layer source indices
scaled to 16 layers keep the 9 DeltaNet + 3 attention split), so the verifier needs the
hybrid pattern, not a Qwen2 stand-in. The stream leans on math chain-of-thought, the
tiny world's NuminaMath-CoT.

    OMP_NUM_THREADS=1 python -m dlmkit.train.tiny verifier
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from dlmkit.data.tiny_corpus import batch_sampler, load_tiny_tokenizer, pack_blocks, text_stream
from dlmkit.data.tinyworld import TinyWorld
from dlmkit.models.qwen35 import TINY_VERIFIER, text_config
from dlmkit.train.loop import TrainConfig, train
from dlmkit.train.recipes.causal_lm import greedy_responses, heldout_nll, lm_loss
from dlmkit.train.recipes.ship import ship, work_dir

BLOCK = 128
STREAM = dict(n_chat=3000, n_docs=1000, n_math=8000)
STEPS = 450
BATCH_SIZE = 16
DEFAULTS = dict(lr=3e-3, warmup_steps=60, min_lr_ratio=0.05, weight_decay=0.01, grad_clip=1.0,
                log_every=25, eval_every=300, checkpoint_every=100)


def build_verifier(tokenizer):
    from transformers import Qwen3_5ForCausalLM

    return Qwen3_5ForCausalLM(text_config(len(tokenizer), eos_token_id=tokenizer.eos_token_id, **TINY_VERIFIER))


def math_accuracy(model, tokenizer, records: list[dict], max_new_tokens: int = 48) -> float:
    """Share of greedy chat answers (`causal_lm.greedy_responses`) whose boxed value is right."""
    answers = greedy_responses(model, tokenizer, records, max_new_tokens)
    return sum(f"\\boxed{{{r['answer']}}}" in text for r, text in zip(records, answers)) / len(records)


def train_tiny_verifier(out: Path, seed: int = 0, steps: int | None = None, device: str = "cpu") -> dict:
    torch.manual_seed(seed)
    tokenizer = load_tiny_tokenizer()
    world = TinyWorld(seed)
    blocks = pack_blocks(tokenizer, text_stream(world, **STREAM), BLOCK)
    heldout = pack_blocks(tokenizer, text_stream(world, 100, 50, 200, split="test"), BLOCK)
    model = build_verifier(tokenizer).to(device)
    sampler = batch_sampler(len(blocks), BATCH_SIZE, seed)

    def make_batch(step):
        return blocks[sampler(step)].to(device)

    def eval_fn(m):
        return {"heldout_nll": heldout_nll(m, heldout.to(device))}

    cfg = TrainConfig(**{**DEFAULTS, "steps": steps or STEPS, "seed": seed})
    history = train(model, lm_loss, make_batch, cfg, work_dir(out), eval_fn=eval_fn, device=device,
                    desc="tiny verifier")
    model.eval()
    nll = heldout_nll(model, heldout.to(device))
    accuracy = math_accuracy(model, tokenizer, world.math_cot(24, split="test"))
    model.save_pretrained(out, safe_serialization=True)
    card = {"recipe": "python -m dlmkit.train.tiny verifier", "role": "verifier", "seed": seed, "arch": "qwen3_5",
            "size": TINY_VERIFIER, "layer_types": list(model.config.layer_types), "block": BLOCK,
            "batch_size": BATCH_SIZE, "stream": STREAM, "train": {**DEFAULTS, "steps": cfg.steps},
            "parameters": sum(p.numel() for p in model.parameters()), "final_train_loss": history[-1]["loss"],
            "heldout_nll": nll, "heldout_ppl": math.exp(nll), "math_cot_greedy_accuracy": accuracy}
    return ship(out, card)
