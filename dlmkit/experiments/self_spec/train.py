"""Phase train of train_self_spec.py: the causal layer and target head on a frozen MDLM
(`dlmkit/models/self_spec.py`) with the shared loop (AdamW, warmup + cosine, clipping,
accelerate, checkpoints, resume); validation reports the draft's and the target's
cross-entropy on the same held-out masked tokens."""

from __future__ import annotations

import shutil

import torch

from dlmkit.data.owt import load_owt_tokenizer, owt_blocks, tiny_blocks
from dlmkit.data.tiny_corpus import batch_sampler, load_tiny_tokenizer
from dlmkit.models.mdlm import load_mdlm
from dlmkit.models.self_spec import SelfSpecConfig, SelfSpecMDLM, save_self_spec, self_spec_loss
from dlmkit.experiments.self_spec.scoring import SPEC_NOTE
from dlmkit.results import echo, portable_source
from dlmkit.seeds import indexed_seed, validation_seed
from dlmkit.train.loop import TrainConfig, train


def train_blocks(preset: str, tokenizer, seed: int):
    """(train blocks, validation blocks): the data the MDLM was trained on, as (N, L) tensors or
    an indexable torch-format dataset (paper: OpenWebText)."""
    if preset == "tiny":
        return tiny_blocks("train", tokenizer=tokenizer, seed=0), tiny_blocks("validation", tokenizer=tokenizer, seed=0)
    return owt_blocks("train", tokenizer=tokenizer), owt_blocks("validation", tokenizer=tokenizer)


def _rows(blocks, indices) -> torch.Tensor:
    if torch.is_tensor(blocks):
        return blocks[indices]
    return torch.as_tensor(blocks[indices.tolist()]["input_ids"])


def validation_losses(model, blocks: torch.Tensor, *, seed: int, batch_size: int, max_window) -> dict:
    """Draft and target cross-entropy on held-out blocks with fixed noise and orders."""
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    sums = {"draft_loss": 0.0, "target_loss": 0.0}
    count = 0
    with torch.no_grad():
        for start in range(0, len(blocks), batch_size):
            out = self_spec_loss(model, blocks[start:start + batch_size].to(device), max_window=max_window,
                                 generator=gen)
            sums["draft_loss"] += float(out.draft_loss) * out.masked_tokens
            sums["target_loss"] += float(out.target_loss) * out.masked_tokens
            count += out.masked_tokens
    return {k: v / max(1, count) for k, v in sums.items()}


def phase_train(run, ctx) -> None:
    """Train the causal layer and target head; the trained parts go to CKPT_DIR/final."""
    preset, seed, tcfg, ckpt_dir = ctx.preset, ctx.settings.seed, ctx.settings.train, ctx.settings.ckpt_dir
    device, mdlm_source = ctx.device, ctx.specs["mdlm"].source
    final = ckpt_dir / "final"
    mdlm = load_mdlm(mdlm_source, device=device, dtype=torch.float32)  # trained parts learn in float32
    config = SelfSpecConfig.for_backbone(mdlm, dropout=tcfg.dropout, backbone=portable_source(mdlm_source),
                                         head_delta_scale=tcfg.head_delta_scale)
    model = SelfSpecMDLM(mdlm, config).to(device)
    frozen = {k: v.clone() for k, v in mdlm.state_dict().items()}
    tokenizer = load_tiny_tokenizer() if preset == "tiny" else load_owt_tokenizer()
    blocks, heldout = train_blocks(preset, tokenizer, seed)
    heldout = _rows(heldout, torch.arange(min(tcfg.val_blocks, len(heldout))))
    sampler = batch_sampler(len(blocks), tcfg.batch_size, seed)

    def make_batch(step):
        return _rows(blocks, sampler(step)).to(device), step

    def loss_fn(m, batch):
        x0, step = batch
        # The noise, the masks and the orders are a pure function of (seed, step): resuming is exact.
        gen = torch.Generator(device=x0.device).manual_seed(indexed_seed(seed, step))
        out = self_spec_loss(m, x0, max_window=tcfg.max_window, generator=gen)
        return out.loss, {"target_loss": out.target_loss, "draft_loss": out.draft_loss}

    def eval_fn(m):
        return validation_losses(m, heldout, seed=validation_seed(seed), batch_size=tcfg.batch_size,
                                 max_window=tcfg.max_window)

    train_config = TrainConfig(steps=tcfg.steps, lr=tcfg.lr, weight_decay=0.01, betas=(0.9, 0.999),
                      warmup_steps=tcfg.warmup_steps, min_lr_ratio=0.0, grad_clip=1.0,
                      eval_every=tcfg.eval_every, checkpoint_every=tcfg.checkpoint_every,
                      log_every=tcfg.log_every, seed=seed)
    history = train(model, loss_fn, make_batch, train_config, ckpt_dir, eval_fn=eval_fn, resume=ctx.job.resume, device=device,
                    desc="self-spec train")
    changed = [k for k, v in mdlm.state_dict().items() if not torch.equal(v, frozen[k])]
    if changed:
        raise RuntimeError(f"training changed frozen MDLM weights {changed[:3]}; the backbone must stay frozen")
    save_self_spec(model, final)
    shutil.copy(ckpt_dir / "train_log.jsonl", run.dir / "self_spec_train_log.jsonl")

    rows = [{"step": r["step"], "lr": r["lr"], "train_target_loss": r.get("target_loss"),
             "train_draft_loss": r.get("draft_loss"), "val_draft_loss": r["val_draft_loss"],
             "val_target_loss": r["val_target_loss"]} for r in history if "val_target_loss" in r]
    run.add_table("self_spec_train", rows)
    run.summary["notes"] = [n for n in run.summary["notes"] if not n.startswith(SPEC_NOTE + "train")]
    if rows:
        last = rows[-1]
        verdict = "below" if last["val_target_loss"] < last["val_draft_loss"] else "NOT below"
        note = (f"{SPEC_NOTE}train: after {last['step']} steps the target's held-out cross-entropy "
                f"{last['val_target_loss']:.3f} is {verdict} the frozen draft's {last['val_draft_loss']:.3f} "
                f"(nats per masked token, first {tcfg.max_window or 'all'} positions of a random order); "
                "the frozen MDLM's weights are bit-identical after training")
        run.note(note)
        echo(note)
