"""The phases of train_clsd.py (continuous latent speculative decoding), run in order by the script.

embed    math chain-of-thought tokenized with the verifier's tokenizer, cut into (prefix, chunk)
         windows; chunk embeddings and C (the verifier's hidden state after the prefix) written
         as safetensors shards (`clsd_data.py`)
stage_a  graft the DiT from the verifier and train it by rectified flow (`clsd_train.py`)
stage_c  noise -> DiT -> frozen verifier -> CE against the true tokens + annealed MSE
infer    draft candidate blocks, score them in one batched verifier pass, keep the best
         candidate's confident prefix (`clsd_infer.py`); against greedy decoding

Each phase takes the Run and a Context (settings, device, the verifier loaded once).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dlmkit.data.chat import end_token_ids
from dlmkit.errors import UserError
from dlmkit.results import Run, echo, markdown_table
from dlmkit.plots import pyplot, save_figure
from dlmkit.seeds import indexed_seed

# The model card's stage A flow MSE after 50K steps at 9B scale (units not stated).
PUBLISHED_STAGE_A_MSE = 0.013


# --------------------------------------------------------------------------- helpers


def plot(path: Path, series: list[tuple[str, list, list]], xlabel: str, ylabel: str, title: str,
         hlines: list[tuple[str, float]] = (), logy: bool = False) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, xs, ys in series:
        ax.plot(xs, ys, marker=".", label=label)
    for label, value in hlines:
        ax.axhline(value, linestyle=":", color="gray", label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


class Context:
    """What the phases share: settings, device, the verifier and its tokenizer (loaded once)."""

    def __init__(self, args, cfg: dict, specs: dict, device: str, dtype, ckpt: Path):
        self.args, self.cfg, self.specs, self.device, self.dtype, self.ckpt = args, cfg, specs, device, dtype, ckpt
        self._verifier = self._tokenizer = None

    @property
    def verifier(self):
        if self._verifier is None:
            from dlmkit.models.qwen35 import load_verifier

            self._verifier = load_verifier(self.specs["verifier"].source, device=self.device, dtype=self.dtype)
        return self._verifier

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.specs["verifier"].source)
            if len(self._tokenizer) > self.verifier.config.vocab_size:
                raise UserError(f"the verifier's tokenizer has {len(self._tokenizer)} ids but its vocab_size is "
                                f"{self.verifier.config.vocab_size}; pass a matching checkpoint")
        return self._tokenizer

    def val_batch(self, shards, scale: float) -> dict:
        from dlmkit.experiments.clsd.objectives import flow_batch

        return flow_batch(shards, 0, min(self.cfg["val_batch"], len(shards)), self.cfg["seed"] + 1, self.device, scale)


# --------------------------------------------------------------------------- phases


def phase_embed(run: Run, ctx: Context) -> None:
    from dlmkit.experiments.clsd.data import encode_windows, token_stream, transcripts, windows, write_shards
    from dlmkit.results import atomic_write_json

    cfg, directory = ctx.cfg, ctx.ckpt / "embed"
    meta_path = directory / "meta.json"
    wanted = {k: cfg[k] for k in ("block_len", "prefix_len", "train_records", "val_records")} | \
        {"verifier": cfg["identity"]["verifier"]}
    if ctx.args.resume and meta_path.exists() and json.loads(meta_path.read_text())["settings"] == wanted:
        meta = json.loads(meta_path.read_text())
        echo("embed: shards already written, skipped (--resume)")
    else:
        from dlmkit.models.clsd import embedding_scale

        store = torch.float32 if ctx.args.preset == "tiny" else torch.bfloat16
        meta = {"settings": wanted, "hidden_size": ctx.verifier.config.hidden_size,
                "embed_scale": embedding_scale(ctx.verifier), "shards": {}, "counts": {}}
        for split, records in (("train", cfg["train_records"]), ("val", cfg["val_records"])):
            conversations = transcripts(ctx.args.preset, split, records, seed=cfg["seed"], data_dir=ctx.args.data_dir)
            stream = token_stream(ctx.tokenizer, conversations)
            prefix, chunk = windows(stream, cfg["prefix_len"], cfg["block_len"])
            tensors = encode_windows(ctx.verifier, prefix, chunk, store_dtype=store, desc=f"embed {split}")
            meta["shards"][split] = write_shards(directory, split, tensors, shard_size=4096)
            meta["counts"][split] = {"records": len(conversations), "stream_tokens": len(stream),
                                     "windows": len(chunk)}
        atomic_write_json(meta_path, meta)
    rows = [{"split": split, **counts, "block_len": cfg["block_len"], "prefix_len": cfg["prefix_len"],
             "hidden_size": meta["hidden_size"], "embed_scale": meta["embed_scale"]}
            for split, counts in meta["counts"].items()]
    run.add_table("embed", rows)
    run.phase_done("embed")


def _train_rows(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in ("elapsed_s", "grad_norm")} for record in history]


def phase_stage_a(run: Run, ctx: Context) -> None:
    from dlmkit.models.clsd import graft, save_dit
    from dlmkit.experiments.clsd.data import Shards, read_meta
    from dlmkit.experiments.clsd.objectives import evaluate_drafts, flow_batch, stage_a_loss
    from dlmkit.train.loop import TrainConfig, train

    cfg, work = ctx.cfg, ctx.ckpt / "stage_a"
    meta = read_meta(ctx.ckpt / "embed")
    shards, val = Shards(ctx.ckpt / "embed", "train"), Shards(ctx.ckpt / "embed", "val")
    scale = meta["embed_scale"]
    torch.manual_seed(cfg["seed"])
    dit = graft(ctx.verifier, ctx.args.source_indices, block_len=cfg["block_len"]).to(ctx.device)
    val_batch = ctx.val_batch(val, scale)

    def make_batch(step):
        return flow_batch(shards, step, cfg["batch_size"], cfg["seed"], ctx.device, scale)

    def eval_fn(model):
        return evaluate_drafts(model, ctx.verifier, val_batch, cfg["euler_steps"])

    steps = cfg["stage_a_steps"]
    tc = TrainConfig(steps=steps, lr=cfg["stage_a_lr"], warmup_steps=max(1, steps // 20), min_lr_ratio=0.05,
                     weight_decay=0.0, log_every=max(1, steps // 30), eval_every=max(1, steps // 6),
                     checkpoint_every=max(1, steps // 6), seed=cfg["seed"])
    history = train(dit, stage_a_loss, make_batch, tc, work, eval_fn=eval_fn, resume=ctx.args.resume,
                    device=ctx.device, desc="stage A")
    save_dit(dit, work / "dit")
    rows = _train_rows(history)
    run.add_table("stage_a", rows, echo=False)
    evals = [r for r in rows if "val_flow_mse" in r]
    echo("\n### stage_a (evaluations)\n\n" + markdown_table(evals, ".4f"))
    run.summary["config"]["dit"] = {"source_indices": dit.config.source_indices, "layer_types": dit.layer_types,
                                    "parameters": sum(p.numel() for p in dit.parameters())}
    final = rows[-1]
    run.note(f"stage_a: final train flow MSE {final['loss']:.4f} (per element, in the embedding space divided by "
             f"embed_scale {scale:.4g}; x scale^2 in raw embedding units = {final['loss'] * scale ** 2:.3g}); the "
             f"model card reports MSE ~{PUBLISHED_STAGE_A_MSE} after 50K steps at 9B scale, units not stated")
    plot(run.dir / "stage_a_loss.png",
         [("train flow MSE", [r["step"] for r in rows], [r["loss"] for r in rows]),
          ("held-out flow MSE", [r["step"] for r in evals], [r["val_flow_mse"] for r in evals])],
         "step", "velocity MSE (scaled embedding space)", f"CLSD stage A ({ctx.args.preset})", logy=True)
    run.phase_done("stage_a")


def phase_stage_c(run: Run, ctx: Context) -> None:
    from dlmkit.models.clsd import load_dit, save_dit
    from dlmkit.experiments.clsd.data import Shards, read_meta
    from dlmkit.experiments.clsd.objectives import (StageC, beta_at, evaluate_drafts, flow_batch, reference_ce,
                                          stage_c_loss)
    from dlmkit.train.loop import TrainConfig, train

    cfg, work = ctx.cfg, ctx.ckpt / "stage_c"
    meta = read_meta(ctx.ckpt / "embed")
    shards, val = Shards(ctx.ckpt / "embed", "train"), Shards(ctx.ckpt / "embed", "val")
    scale = meta["embed_scale"]
    dit = load_dit(ctx.ckpt / "stage_a" / "dit", device=ctx.device, dtype=ctx.dtype)
    model = StageC(dit, ctx.verifier)
    val_batch = ctx.val_batch(val, scale)
    steps, k = cfg["stage_c_steps"], cfg["euler_steps"]
    before = evaluate_drafts(dit, ctx.verifier, val_batch, k)
    floor = reference_ce(ctx.verifier, val_batch)

    def make_batch(step):
        return {**flow_batch(shards, step, cfg["batch_size"], cfg["seed"] + 2, ctx.device, scale),
                "beta": beta_at(step, steps, cfg["beta0"])}

    def eval_fn(m):
        return evaluate_drafts(m.dit, m.verifier, val_batch, k)

    tc = TrainConfig(steps=steps, lr=cfg["stage_c_lr"], warmup_steps=max(1, steps // 20), min_lr_ratio=0.05,
                     weight_decay=0.0, log_every=max(1, steps // 20), eval_every=max(1, steps // 4),
                     checkpoint_every=max(1, steps // 4), seed=cfg["seed"])
    history = train(model, lambda m, b: stage_c_loss(m, b, k), make_batch, tc, work, eval_fn=eval_fn,
                    resume=ctx.args.resume, device=ctx.device, desc="stage C")
    save_dit(dit, work / "dit")
    rows = [{"step": 0, **{f"val_{n}": v for n, v in before.items()}}] + _train_rows(history)
    run.add_table("stage_c", rows, echo=False)
    run.add_table("stage_c_reference", [{"verifier_ce_on_true_tokens": floor, "draft_ce_after_stage_a":
                                         before["draft_ce"], "draft_ce_after_stage_c": rows[-1]["val_draft_ce"],
                                         "draft_token_acc_after_stage_a": before["draft_token_acc"],
                                         "draft_token_acc_after_stage_c": rows[-1]["val_draft_token_acc"]}])
    trained = rows[1:]
    evals = [r for r in rows if "val_draft_ce" in r]
    run.note(f"stage_c: held-out CE of the verifier reading {k}-step drafts went from {before['draft_ce']:.3f} "
             f"(after stage A) to {rows[-1]['val_draft_ce']:.3f}; reading the true tokens it is {floor:.3f} (floor)")
    plot(run.dir / "stage_c_ce.png",
         [("train CE", [r["step"] for r in trained], [r["ce"] for r in trained]),
          ("held-out CE (fixed noise)", [r["step"] for r in evals], [r["val_draft_ce"] for r in evals])],
         "step", "verifier CE on drafts (nats/token)", f"CLSD stage C ({ctx.args.preset}, K={k})",
         hlines=[("verifier on true tokens", floor)])
    run.phase_done("stage_c")


def infer_prompts(ctx: Context) -> list[dict]:
    """Held-out math problems as chat prompts (the tiny world's test split / NuminaMath test)."""
    from dlmkit.experiments.clsd.data import transcripts

    conversations = transcripts(ctx.args.preset, "val", ctx.cfg["prompts"], seed=ctx.cfg["seed"],
                                data_dir=ctx.args.data_dir)[:ctx.cfg["prompts"]]
    out = []
    for i, messages in enumerate(conversations):
        text = ctx.tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
        out.append({"id": i, "prompt_ids": ctx.tokenizer(text, add_special_tokens=False)["input_ids"]})
    return out


def phase_infer(run: Run, ctx: Context) -> None:
    from tqdm.auto import tqdm

    from dlmkit.models.clsd import load_dit
    from dlmkit.decoding.clsd import ar_generate, clsd_generate

    cfg = ctx.cfg
    tokenizer, verifier = ctx.tokenizer, ctx.verifier
    stop_ids = end_token_ids(tokenizer)
    drafters = [(name, ctx.ckpt / name / "dit") for name in ("stage_a", "stage_c")
                if (ctx.ckpt / name / "dit" / "config.json").exists()]
    if not drafters:
        raise UserError(f"no trained DiT in {ctx.ckpt}; run the stage_a (and stage_c) phases first")
    log = run.log("infer")
    done = log.done_ids()
    prompts = infer_prompts(ctx)
    dits = {name: load_dit(path, device=ctx.device, dtype=ctx.dtype) for name, path in drafters}
    ar_tokens = {r["id"]: r["tokens"] for r in log.records() if r["drafter"] == "ar"}  # read once, not per prompt
    for item in tqdm(prompts, desc="infer", unit="prompt"):
        ar_id = f"ar/{item['id']}"
        if ar_id not in done:
            ar = ar_generate(verifier, item["prompt_ids"], cfg["gen_length"], stop_ids)
            log.append({"id": ar_id, "drafter": "ar", "prompt": item["id"], "tokens": ar.tokens,
                        "verifier_calls": ar.verifier_calls, "seconds": ar.seconds})
            done.add(ar_id)
            ar_tokens[ar_id] = ar.tokens
        reference = ar_tokens[ar_id]
        for name, dit in dits.items():
            record_id = f"{name}/{item['id']}"
            if record_id in done:
                continue
            gen = torch.Generator().manual_seed(indexed_seed(cfg["seed"], item["id"]))
            out = clsd_generate(verifier, dit, item["prompt_ids"], cfg["gen_length"], stop_ids,
                                candidates=cfg["candidates"], euler_steps=cfg["euler_steps"],
                                threshold=cfg["threshold"], generator=gen)
            log.append({"id": record_id, "drafter": name, "prompt": item["id"], "tokens": out.tokens,
                        "verifier_calls": out.verifier_calls, "seconds": out.seconds, "rounds": out.rounds,
                        "matches_ar": out.tokens == reference, "text": tokenizer.decode(out.tokens)})
    records = [r for r in log.records() if r["prompt"] < cfg["prompts"]]
    rows, timing, accepted = [], [], {}
    for name in ["ar"] + [n for n, _ in drafters]:
        chosen = [r for r in records if r["drafter"] == name]
        tokens = sum(len(r["tokens"]) for r in chosen)
        calls = sum(r["verifier_calls"] for r in chosen)
        row = {"decoder": "greedy AR (verifier alone)" if name == "ar" else f"CLSD, DiT after {name}",
               "prompts": len(chosen), "tokens": tokens, "verifier_calls": calls,
               "verifier_calls_per_token": calls / tokens if tokens else None}
        time_row = {"decoder": row["decoder"], "ms_per_token": 1000 * sum(r["seconds"] for r in chosen) / tokens
                    if tokens else None}
        if name != "ar":
            rounds = [rd for r in chosen for rd in r["rounds"]]
            accepted[name] = [rd["accepted"] for rd in rounds]
            row.update({"blocks": len(rounds),
                        "accepted_per_block": sum(accepted[name]) / len(rounds),
                        "tokens_per_block": sum(rd["emitted"] for rd in rounds) / len(rounds),
                        "blocks_with_any_accepted": sum(a > 0 for a in accepted[name]) / len(rounds),
                        "max_accepted": max(accepted[name]),
                        "outputs_equal_to_ar": sum(r["matches_ar"] for r in chosen) / len(chosen)})
            time_row.update({"draft_ms_per_block": sum(rd["draft_ms"] for rd in rounds) / len(rounds),
                             "score_ms_per_block": sum(rd["score_ms"] for rd in rounds) / len(rounds)})
            time_row["latency_ms_per_block"] = time_row["draft_ms_per_block"] + time_row["score_ms_per_block"]
        rows.append(row)
        timing.append(time_row)
    run.add_table("infer", rows)
    run.add_table("infer_timing", timing)
    for row in rows[1:]:
        run.note(f"infer: {row['decoder']}: {row['accepted_per_block']:.2f} drafted tokens accepted per "
                 f"{cfg['block_len']}-token block ({cfg['candidates']} candidates, K={cfg['euler_steps']}, threshold "
                 f"{cfg['threshold']}); {row['verifier_calls_per_token']:.3f} verifier calls per token against "
                 f"{rows[0]['verifier_calls_per_token']:.3f} for greedy AR; outputs equal to greedy AR in "
                 f"{row['outputs_equal_to_ar']:.0%} of prompts")
    run.note("infer: timings (infer_timing) are wall-clock on this device and vary between runs; the "
             "model card's target is < 500 ms per 128-token block on a B200 at 9B (see benchmarks/bench_clsd.py)")
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = range(0, cfg["block_len"] + 2)
    for name, values in accepted.items():
        ax.hist(values, bins=bins, alpha=0.6, label=f"DiT after {name}", align="left")
    ax.set_xlabel(f"drafted tokens accepted per block (of {cfg['block_len']})")
    ax.set_ylabel("blocks")
    ax.set_title(f"CLSD inference ({ctx.args.preset}): {cfg['candidates']} candidates, K={cfg['euler_steps']}, "
                 f"threshold {cfg['threshold']}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, run.dir / "infer_accepted.png")
    run.phase_done("infer")
