"""Phase stage_c of train_clsd.py: noise -> DiT (--euler-steps) -> frozen verifier -> CE against
the true tokens + beta * MSE, beta annealed from --beta0 to 0; gradients reach the DiT only."""

from __future__ import annotations

from dlmkit.experiments.clsd.data import Shards, read_meta
from dlmkit.experiments.clsd.objectives import StageC, beta_at, evaluate_drafts, flow_batch, reference_ce, stage_c_loss
from dlmkit.experiments.clsd.stage_a import train_rows
from dlmkit.models.clsd import load_dit, save_dit
from dlmkit.plots import line_plot
from dlmkit.seeds import stage_c_seed
from dlmkit.train.loop import TrainConfig, train


def phase_stage_c(run, ctx) -> None:
    cfg = ctx.settings
    ctx.claim_ckpt_dir()
    work = cfg.ckpt_dir / "stage_c"
    meta = read_meta(cfg.ckpt_dir / "embed")
    shards, val = Shards(cfg.ckpt_dir / "embed", "train"), Shards(cfg.ckpt_dir / "embed", "val")
    scale = meta["embed_scale"]
    dit = load_dit(cfg.ckpt_dir / "stage_a" / "dit", device=ctx.device, dtype=ctx.dtype)
    model = StageC(dit, ctx.verifier)
    val_batch = ctx.val_batch(val, scale)
    steps, k = cfg.stage_c_steps, cfg.euler_steps
    before = evaluate_drafts(dit, ctx.verifier, val_batch, k)
    floor = reference_ce(ctx.verifier, val_batch)

    def make_batch(step):
        return {**flow_batch(shards, step, cfg.batch_size, stage_c_seed(cfg.seed), ctx.device, scale),
                "beta": beta_at(step, steps, cfg.beta0)}

    def eval_fn(m):
        return evaluate_drafts(m.dit, m.verifier, val_batch, k)

    tc = TrainConfig(steps=steps, lr=cfg.stage_c_lr, warmup_steps=max(1, steps // 20), min_lr_ratio=0.05,
                     weight_decay=0.0, log_every=max(1, steps // 20), eval_every=max(1, steps // 4),
                     checkpoint_every=max(1, steps // 4), seed=cfg.seed)
    history = train(model, lambda m, b: stage_c_loss(m, b, k), make_batch, tc, work, eval_fn=eval_fn,
                    resume=ctx.job.resume, device=ctx.device, desc="stage C")
    save_dit(dit, work / "dit")
    rows = [{"step": 0, **{f"val_{n}": v for n, v in before.items()}}] + train_rows(history)
    run.add_table("stage_c", rows, echo=False)
    run.add_table("stage_c_reference", [{"verifier_ce_on_true_tokens": floor, "draft_ce_after_stage_a":
                                         before["draft_ce"], "draft_ce_after_stage_c": rows[-1]["val_draft_ce"],
                                         "draft_token_acc_after_stage_a": before["draft_token_acc"],
                                         "draft_token_acc_after_stage_c": rows[-1]["val_draft_token_acc"]}])
    trained = rows[1:]
    evals = [r for r in rows if "val_draft_ce" in r]
    run.note(f"stage_c: held-out CE of the verifier reading {k}-step drafts went from {before['draft_ce']:.3f} "
             f"(after stage A) to {rows[-1]['val_draft_ce']:.3f}; reading the true tokens it is {floor:.3f} (floor). "
             "The CE covers block tokens 1..G-1: the verifier predicts token 0 from the prefix alone, so its CE has "
             "no gradient to the DiT (objectives.stage_c_terms)")
    line_plot(run.dir / "stage_c_ce.png",
         [("train CE", [r["step"] for r in trained], [r["ce"] for r in trained]),
          ("held-out CE (fixed noise)", [r["step"] for r in evals], [r["val_draft_ce"] for r in evals])],
         "step", "verifier CE on drafts (nats/token)", f"CLSD stage C ({ctx.preset}, K={k})",
         hlines=[("verifier on true tokens", floor)])
