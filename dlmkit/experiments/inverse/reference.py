"""Phase A: the full Dream run per prompt, the reference every later phase compares against.

One run per prompt records when every answer position was committed, so anchors for any
step fraction come from it without running Dream again. Per prompt it keeps the answer,
its length (tokens before the first end marker), the commit step of every position, the
commit curve's S50 (steps until half the answer is committed), coverage and the
contiguous-prefix share of the anchors at the paper's fractions, a permanence check
(no committed token ever changes) and ground-truth correctness.
"""

from __future__ import annotations

import sys
import time

import torch
from tqdm.auto import tqdm

from dlmkit.anchors import anchors_at_fraction, contiguous_prefix_fraction, steps_done_at
from dlmkit.data.chat import chat_prompt_ids, end_token_ids, response_length
from dlmkit.decoding.diffusion import DreamSettings, PermanenceCheck, diffusion_generate, left_padded
from dlmkit.decoding.early_stop import PartialStates, StopRule, stop_step
from dlmkit.experiments.inverse.settings import ADAPTIVE, FRACTIONS
from dlmkit.metrics.answers import check_answer
from dlmkit.metrics.scoring import by_stratum, mean
from dlmkit.plots import pyplot, save_figure
from dlmkit.seeds import item_seed

CURVE_POINTS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.375, 0.50, 0.75, 1.0)
# Prompts Dream runs at once (phases A and C): per-step work on a tiny model is mostly overhead that a
# batch shares; each prompt keeps its own generator, and a batch's records are appended when it ends.
BATCH = 8



def dream_batch(model, tokenizer, items: list[dict], settings: DreamSettings, seeds: list[int], steps: int | None = None,
                tokens_hook=None):
    """Dream on several prompts at once, left padded, each prompt sampling from its own generator
    (seeded by `seeds`), so each row draws what it would draw alone (see diffusion_generate)."""
    prompts = [chat_prompt_ids(tokenizer, item["prompt"]) for item in items]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids, attention_mask = left_padded(prompts, pad, device=model.device)
    generators = [torch.Generator(device=model.device).manual_seed(seed) for seed in seeds]
    out = diffusion_generate(model, input_ids, attention_mask, max_new_tokens=settings.max_new_tokens,
                             steps=steps or settings.steps, alg=settings.alg, temperature=settings.temperature,
                             top_p=settings.top_p, top_k=settings.top_k, eps=settings.eps, tokens_hook=tokens_hook,
                             generator=generators)
    return prompts, out


def reference_runs(model, tokenizer, items: list[dict], settings: DreamSettings, seed: int,
                   on_step=None, stop_rule: StopRule | None = None, fractions=FRACTIONS) -> list[dict]:
    """Dream's full run on a batch of prompts, one JSON-ready record per prompt (dlm_seconds: the
    batch's time over its prompts). on_step(): called after each denoising step (progress).
    stop_rule, fractions: the adaptive stop and the step fractions whose steps (and Dream's drafts
    there) each record keeps (see draft_steps)."""
    check = PermanenceCheck(model.mask_token_id)
    ends = end_token_ids(tokenizer)
    states = PartialStates(settings.max_new_tokens, model.mask_token_id, ends)

    def hook(step, x, logits):
        check(step, x, logits)
        states(step, x, logits)
        if step is not None and on_step is not None:
            on_step()

    start = time.perf_counter()
    prompts, out = dream_batch(model, tokenizer, items, settings, [item_seed(seed, item["id"]) for item in items],
                               tokens_hook=hook)
    seconds = (time.perf_counter() - start) / len(items)
    records = []
    for row, (item, prompt) in enumerate(zip(items, prompts)):
        record = _reference_record(tokenizer, item, settings, prompt, out.generated[row].tolist(),
                                   out.commit_step[row].tolist(), check.violations_of(row), seconds)
        record["signals"] = states.signals_of(row)
        steps = draft_steps(record, settings.steps, ends, stop_rule, fractions)
        record["drafts"] = {str(c): states.drafts(row, c) for c in sorted(set(steps.values()))}
        record["draft_steps"] = steps
        records.append(record)
    return records


def draft_steps(record: dict, steps: int, end_ids, stop_rule: StopRule | None, fractions=FRACTIONS
                ) -> dict[str, int]:
    """The step counts whose drafts a record keeps: each fraction's (keyed by the fraction) and,
    keyed "adaptive", the stop step of `stop_rule` (read from the record's own signals)."""
    out = {str(f): steps_done_at(f, steps) for f in fractions}
    if stop_rule is not None:
        out["adaptive"] = stop_step(stop_rule, record["commit_step"], record["tokens"], record["signals"], end_ids,
                                    steps)
    return out


def reference_run(model, tokenizer, item: dict, settings: DreamSettings, seed: int) -> dict:
    """Dream's full run on one prompt, as a JSON-ready record."""
    return reference_runs(model, tokenizer, [item], settings, seed)[0]


def _reference_record(tokenizer, item, settings, prompt, tokens, commit_step, violations, seconds) -> dict:
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
        "permanence_violations": violations, "dlm_seconds": round(seconds, 4),
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
    todo = [i for i in items if i["id"] not in done]
    # progress in prompt-steps: a batch of 8 prompts x 128 steps moves the bar 8 per step
    with tqdm(total=len(todo) * settings.steps, desc=f"phase A: Dream reference, {len(todo)} prompts x "
              f"{settings.steps} steps", unit="step", disable=not todo, file=sys.stderr) as bar:
        for start in range(0, len(todo), BATCH):
            batch = todo[start:start + BATCH]
            for record in reference_runs(model, tokenizer, batch, settings, context.seed,
                                         on_step=lambda n=len(batch): bar.update(n), stop_rule=ADAPTIVE,
                                         fractions=sorted(set(FRACTIONS) | set(context.fractions))):
                log.append(record)
    wanted = {i["id"] for i in items}
    records = [r for r in log.records() if r["id"] in wanted]
    run.add_table("phaseA_reference", stratum_table(records))
    answered = sum(1 for r in records if r["gen_len"])  # the curves average over non-empty answers
    run.add_table("commit_curve", [{**row, "n": answered} for row in commit_curve(records, settings.steps)])
    plot_commit_curves(records, settings.steps, run.dir / "commit_curves.png")
    if any(r["permanence_violations"] for r in records):
        run.note("PERMANENCE VIOLATED: a committed token changed during denoising (see A.jsonl)")
