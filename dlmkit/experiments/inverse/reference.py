"""Phase A: the full Dream run per prompt, the reference every later phase compares against.

One run per prompt records when every answer position was committed, so anchors for any
step fraction come from it without running Dream again. Per prompt it keeps the answer,
its length (tokens before the first end marker), the commit step of every position, the
commit curve's S50 (steps until half the answer is committed), coverage and the
contiguous-prefix share of the anchors at the paper's fractions, a permanence check
(no committed token ever changes) and ground-truth correctness.
"""

from __future__ import annotations

import time

import torch
from tqdm.auto import tqdm

from dlmkit.anchors import anchors_at_fraction, contiguous_prefix_fraction, steps_done_at
from dlmkit.data.chat import chat_prompt_ids, end_token_ids, response_length
from dlmkit.decoding.diffusion import DreamSettings, PermanenceCheck, diffusion_generate
from dlmkit.experiments.inverse.settings import FRACTIONS
from dlmkit.metrics.answers import check_answer
from dlmkit.metrics.scoring import by_stratum, mean
from dlmkit.plots import pyplot, save_figure
from dlmkit.seeds import item_seed

CURVE_POINTS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.375, 0.50, 0.75, 1.0)



def reference_run(model, tokenizer, item: dict, settings: DreamSettings, seed: int) -> dict:
    """Dream's full run on one prompt, as a JSON-ready record."""
    prompt = chat_prompt_ids(tokenizer, item["prompt"])
    input_ids = torch.tensor([prompt], device=model.device)
    generator = torch.Generator(device=model.device).manual_seed(item_seed(seed, item["id"]))
    check = PermanenceCheck(model.mask_token_id)
    start = time.perf_counter()
    out = diffusion_generate(model, input_ids, max_new_tokens=settings.max_new_tokens, steps=settings.steps,
                             alg=settings.alg, temperature=settings.temperature, top_p=settings.top_p,
                             top_k=settings.top_k, eps=settings.eps, tokens_hook=check, generator=generator)
    seconds = time.perf_counter() - start
    tokens = out.generated[0].tolist()
    commit_step = out.commit_step[0].tolist()
    length = response_length(tokens, end_token_ids(tokenizer))
    text = tokenizer.decode(tokens[:length], skip_special_tokens=True)

    committed_by = [sum(1 for c in commit_step[:length] if c < k) for k in range(settings.steps + 1)]
    s50 = next((k for k, n in enumerate(committed_by) if length and n >= 0.5 * length), None)
    record = {
        "id": item["id"], "task": item["task"], "difficulty": item["difficulty"],
        "prompt_tokens": len(prompt), "gen_len": length, "text": text,
        "correct": check_answer(item, text) if item["task"] != "humaneval" or length else False,
        "tokens": tokens, "commit_step": commit_step,
        "s50_step": s50, "s50_frac": s50 / settings.steps if s50 is not None else None,
        "permanence_violations": check.violations, "dlm_seconds": round(seconds, 4),
    }
    if item["task"] == "gsm8k":
        record["correct_strict"] = check_answer(item, text, gsm8k_mode="strict-match")
    for fraction in FRACTIONS:
        anchors = anchors_at_fraction(commit_step, tokens, fraction, settings.steps, length=length)
        record[f"coverage@{fraction}"] = anchors.coverage
        record[f"contiguous_prefix@{fraction}"] = contiguous_prefix_fraction(anchors)
    return record


def committed_share(record: dict, steps_done: int) -> float:
    """Share of a run's answer positions committed after `steps_done` steps."""
    return sum(1 for c in record["commit_step"][:record["gen_len"]] if c < steps_done) / record["gen_len"]


def stratum_table(records: list[dict]) -> list[dict]:
    """Per-stratum summary of the reference runs, plus an "all" row."""
    groups = {**by_stratum(records), "all": records}
    rows = []
    for name, rs in groups.items():
        row = {"stratum": name, "n": len(rs), "accuracy": mean([float(r["correct"]) for r in rs]),
               "gen_len": mean([r["gen_len"] for r in rs]), "s50_frac": mean([r["s50_frac"] for r in rs])}
        for fraction in FRACTIONS:
            row[f"coverage@{fraction}"] = mean([r[f"coverage@{fraction}"] for r in rs])
        row["contiguous_prefix@0.1"] = mean([r["contiguous_prefix@0.1"] for r in rs])
        row["permanence_violations"] = sum(r["permanence_violations"] for r in rs)
        rows.append(row)
    return rows


def commit_curve(records: list[dict], steps: int) -> list[dict]:
    """Mean share of answer positions committed after a fraction of the steps, per task."""
    rows = []
    tasks = sorted({r["task"] for r in records})
    for point in CURVE_POINTS:
        done = steps_done_at(point, steps)
        row = {"step_fraction": point, "steps_done": done}
        for task in tasks + ["all"]:
            rs = [r for r in records if task in ("all", r["task"]) and r["gen_len"]]
            row[task] = mean([committed_share(r, done) for r in rs])
        rows.append(row)
    return rows


def plot_commit_curves(records: list[dict], steps: int, path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = list(range(steps + 1))
    for task in sorted({r["task"] for r in records}):
        rs = [r for r in records if r["task"] == task and r["gen_len"]]
        curve = [mean([committed_share(r, k) for r in rs]) for k in xs]
        ax.plot([x / steps for x in xs], curve, label=f"{task} (n={len(rs)})")
    for fraction in FRACTIONS:
        ax.axvline(fraction, color="grey", lw=0.5, ls=":")
    ax.set_xlabel("fraction of denoising steps done")
    ax.set_ylabel("share of answer tokens committed")
    ax.set_title("Dream commit curves")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def phase_a(run, context) -> None:
    """Dream's full run per prompt (A.jsonl), the stratum table, the commit curves and their plot."""
    settings = context.dream
    model, tokenizer = context.dlm(), context.dlm_tokenizer()
    items = context.items()
    log = run.log("A")
    done = log.done_ids()
    for item in tqdm([i for i in items if i["id"] not in done], desc="phase A: Dream reference"):
        log.append(reference_run(model, tokenizer, item, settings, context.seed))
    wanted = {i["id"] for i in items}
    records = [r for r in log.records() if r["id"] in wanted]
    run.add_table("phaseA_reference", stratum_table(records))
    answered = sum(1 for r in records if r["gen_len"])  # the curves average over non-empty answers
    run.add_table("commit_curve", [{**row, "n": answered} for row in commit_curve(records, settings.steps)])
    plot_commit_curves(records, settings.steps, run.dir / "commit_curves.png")
    if any(r["permanence_violations"] for r in records):
        run.note("PERMANENCE VIOLATED: a committed token changed during denoising (see A.jsonl)")
