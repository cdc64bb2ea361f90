"""Phase stage_a of train_clsd.py: graft the DiT from the verifier (--source-indices) and train it
by rectified flow: regress v(x_t, t, C) onto target - noise (`objectives.py`)."""

from __future__ import annotations

import torch

from dlmkit.experiments.clsd.data import Shards, read_meta
from dlmkit.experiments.clsd.objectives import evaluate_drafts, flow_batch, stage_a_loss
from dlmkit.models.clsd import graft, save_dit
from dlmkit.plots import line_plot
from dlmkit.results import markdown_table
from dlmkit.train.loop import TrainConfig, train

# The model card's stage A flow MSE after 50K steps at 9B scale (units not stated).
PUBLISHED_STAGE_A_MSE = 0.013


def train_rows(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in ("elapsed_s", "grad_norm")} for record in history]


def phase_stage_a(run, ctx) -> None:
    cfg = ctx.settings
    ctx.claim_ckpt_dir()
    work = cfg.ckpt_dir / "stage_a"
    meta = read_meta(cfg.ckpt_dir / "embed")
    shards, val = Shards(cfg.ckpt_dir / "embed", "train"), Shards(cfg.ckpt_dir / "embed", "val")
    scale = meta["embed_scale"]
    torch.manual_seed(cfg.seed)
    indices = list(cfg.source_indices) if cfg.source_indices else None
    dit = graft(ctx.verifier, indices, block_len=cfg.block_len).to(ctx.device)
    val_batch = ctx.val_batch(val, scale)

    def make_batch(step):
        return flow_batch(shards, step, cfg.batch_size, cfg.seed, ctx.device, scale)

    def eval_fn(model):
        return evaluate_drafts(model, ctx.verifier, val_batch, cfg.euler_steps)

    steps = cfg.stage_a_steps
    tc = TrainConfig(steps=steps, lr=cfg.stage_a_lr, warmup_steps=max(1, steps // 20), min_lr_ratio=0.05,
                     weight_decay=0.0, log_every=max(1, steps // 30), eval_every=max(1, steps // 6),
                     checkpoint_every=max(1, steps // 6), seed=cfg.seed)
    history = train(dit, stage_a_loss, make_batch, tc, work, eval_fn=eval_fn, resume=ctx.job.resume,
                    device=ctx.device, desc="stage A")
    save_dit(dit, work / "dit")
    rows = train_rows(history)
    run.add_table("stage_a", rows, echo=False)
    evals = [r for r in rows if "val_flow_mse" in r]
    print("\n### stage_a (evaluations)\n\n" + markdown_table(evals, ".4f") + "\n", flush=True)  # tables: stdout
    run.summary["config"]["dit"] = {"source_indices": dit.config.source_indices, "layer_types": dit.layer_types,
                                    "parameters": sum(p.numel() for p in dit.parameters())}
    final = rows[-1]
    run.note(f"stage_a: final train flow MSE {final['loss']:.4f} (per element, in the embedding space divided by "
             f"embed_scale {scale:.4g}; x scale^2 in raw embedding units = {final['loss'] * scale ** 2:.3g}); the "
             f"model card reports MSE ~{PUBLISHED_STAGE_A_MSE} after 50K steps at 9B scale, units not stated")
    line_plot(run.dir / "stage_a_loss.png",
         [("train flow MSE", [r["step"] for r in rows], [r["loss"] for r in rows]),
          ("held-out flow MSE", [r["step"] for r in evals], [r["val_flow_mse"] for r in evals])],
         "step", "velocity MSE (scaled embedding space)", f"CLSD stage A ({ctx.preset})", logy=True)
