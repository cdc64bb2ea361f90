"""Phase infer of train_clsd.py: CLSD decoding (`dlmkit/decoding/clsd.py`: draft --candidates
blocks per round, score them in one batched verifier pass, keep the best candidate's confident
prefix) against plain greedy decoding with the verifier, for the DiT after stage A and after
stage C."""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from dlmkit.data.chat import chat_prompt_ids, end_token_ids
from dlmkit.decoding.clsd import clsd_generate, greedy_generate, oracle_rounds
from dlmkit.errors import UserError
from dlmkit.experiments.clsd.data import transcripts
from dlmkit.models.clsd import load_dit
from dlmkit.plots import pyplot, save_figure
from dlmkit.seeds import indexed_seed


def infer_prompts(ctx) -> list[dict]:
    """Held-out math problems as chat prompts (the tiny world's test split / NuminaMath test)."""
    conversations = transcripts(ctx.preset, "val", ctx.settings.prompts, seed=ctx.settings.seed,
                                data_dir=ctx.settings.data_dir)[:ctx.settings.prompts]
    out = []
    for i, messages in enumerate(conversations):
        if messages[0]["role"] != "user":
            raise UserError(f"prompt {i} does not open with a user turn; CLSD prompts are the first user turn")
        out.append({"id": i, "prompt_ids": chat_prompt_ids(ctx.tokenizer, messages[0]["content"])})
    return out


def first_rejection_rows(accepted: dict[str, list[int]], block_len: int) -> list[dict]:
    """Where drafts fail: per DiT, how many blocks the guillotine cut at each block position. A
    block's position 0 is the verifier's own token (dlmkit/decoding/clsd.py), so a block that kept
    k drafted tokens was cut at position k + 1; one that kept all block_len - 1 was kept whole."""
    rows = []
    for name, values in accepted.items():
        for kept in sorted(set(values)):
            n = values.count(kept)
            rows.append({"drafter": f"DiT after {name}",
                         "first_rejection": kept + 1 if kept < block_len - 1 else "none (block kept whole)",
                         "blocks": n, "share": n / len(values)})
    return rows


def phase_infer(run, ctx) -> None:
    cfg = ctx.settings
    tokenizer, verifier = ctx.tokenizer, ctx.verifier
    stop_ids = end_token_ids(tokenizer)
    drafters = [(name, cfg.ckpt_dir / name / "dit") for name in ("stage_a", "stage_c")
                if (cfg.ckpt_dir / name / "dit" / "config.json").exists()]
    if not drafters:
        raise UserError(f"no trained DiT in {cfg.ckpt_dir}; run the stage_a (and stage_c) phases first")
    log = run.log("infer")
    done = log.done_ids()
    prompts = infer_prompts(ctx)
    dits = {name: load_dit(path, device=ctx.device, dtype=ctx.dtype) for name, path in drafters}
    ar_tokens = {r["id"]: r["tokens"] for r in log.records() if r["drafter"] == "ar"}  # read once, not per prompt
    for item in tqdm(prompts, desc="infer", unit="prompt"):
        ar_id = f"ar/{item['id']}"
        if ar_id not in done:
            ar = greedy_generate(verifier, item["prompt_ids"], cfg.gen_length, stop_ids)
            log.append({"id": ar_id, "drafter": "ar", "prompt": item["id"], "tokens": ar.tokens,
                        "verifier_calls": ar.verifier_calls, "seconds": ar.seconds, "confidence": ar.confidence})
            done.add(ar_id)
            ar_tokens[ar_id] = ar.tokens
        reference = ar_tokens[ar_id]
        for name, dit in dits.items():
            record_id = f"{name}/{item['id']}"
            if record_id in done:
                continue
            gen = torch.Generator().manual_seed(indexed_seed(cfg.seed, item["id"]))
            out = clsd_generate(verifier, dit, item["prompt_ids"], cfg.gen_length, stop_ids,
                                candidates=cfg.candidates, euler_steps=cfg.euler_steps,
                                threshold=cfg.threshold, generator=gen)
            log.append({"id": record_id, "drafter": name, "prompt": item["id"], "tokens": out.tokens,
                        "verifier_calls": out.verifier_calls, "seconds": out.seconds, "rounds": out.rounds,
                        "matches_ar": out.tokens == reference, "text": tokenizer.decode(out.tokens)})
    records = [r for r in log.records() if r["prompt"] < cfg.prompts]
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
    greedy = [r for r in records if r["drafter"] == "ar" and "confidence" in r]
    bound = None
    if greedy:  # the bound: every draft the verifier's own greedy token
        kept = [k for r in greedy for k in oracle_rounds(r["confidence"], cfg.threshold, cfg.block_len)]
        tokens = sum(len(r["tokens"]) for r in greedy)
        bound = {"decoder": "bound: drafts = the verifier's own greedy tokens", "prompts": len(greedy),
                 "tokens": tokens, "verifier_calls": len(greedy) + len(kept),
                 "verifier_calls_per_token": (len(greedy) + len(kept)) / tokens, "blocks": len(kept),
                 "accepted_per_block": sum(kept) / len(kept), "tokens_per_block": tokens / len(kept),
                 "blocks_with_any_accepted": sum(k > 0 for k in kept) / len(kept), "max_accepted": max(kept),
                 "outputs_equal_to_ar": 1.0}
    run.add_table("infer", rows + ([bound] if bound else []))
    run.add_table("infer_timing", timing)
    run.add_table("first_rejection", first_rejection_rows(accepted, cfg.block_len))
    for name, values in accepted.items():
        at_first = values.count(0) / len(values)
        run.note(f"infer: DiT after {name}: the first drafted token (block position 1; position 0 is the "
                 f"verifier's token) is rejected in {at_first:.0%} of {len(values)} blocks (table first_rejection: "
                 "where each block's draft was cut)")
    for row in rows[1:]:
        run.note(f"infer: {row['decoder']}: {row['accepted_per_block']:.2f} drafted tokens accepted per "
                 f"{cfg.block_len}-token block (positions 1..{cfg.block_len - 1}) ({cfg.candidates} candidates, K={cfg.euler_steps}, threshold "
                 f"{cfg.threshold}); {row['verifier_calls_per_token']:.3f} verifier calls per token against "
                 f"{rows[0]['verifier_calls_per_token']:.3f} for greedy AR; outputs equal to greedy AR in "
                 f"{row['outputs_equal_to_ar']:.0%} of prompts")
    if bound:
        run.note(f"infer: with drafts equal to the verifier's own greedy tokens, {bound['accepted_per_block']:.2f} "
                 f"drafted tokens per block would pass the guillotine (threshold {cfg.threshold}) and "
                 f"{bound['verifier_calls_per_token']:.3f} verifier calls per token: what the verifier's confidence "
                 "allows, whatever the drafter")
    run.note("infer: timings (infer_timing) are wall-clock on this device and vary between runs; the "
             "model card's target is < 500 ms per 128-token block on a B200 at 9B (see benchmarks/bench_clsd.py)")
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = range(0, cfg.block_len + 1)
    for name, values in accepted.items():
        ax.hist(values, bins=bins, alpha=0.6, label=f"DiT after {name}", align="left")
    ax.set_xlabel(f"drafted tokens accepted per block (of {cfg.block_len - 1} after the verifier's token)")
    ax.set_ylabel("blocks")
    ax.set_title(f"CLSD inference ({ctx.preset}): {cfg.candidates} candidates, K={cfg.euler_steps}, "
                 f"threshold {cfg.threshold}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, run.dir / "infer_accepted.png")
