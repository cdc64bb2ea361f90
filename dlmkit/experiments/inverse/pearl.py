"""Phase C: the pearl point, the fewest DLM steps that keep 95% of the full run's word F1 on GSM8K.

What the published code meant: for each GSM8K prompt it ran Dream again with n total
denoising steps, n in (8, 13, 16, 24, 32, 48, 64, 96, 128), scored each answer's word F1
against the 128-step reference answer, and called the smallest n whose F1 reached 95% of the
F1 of a fresh 128-step run the prompt's pearl point. That shortens Dream's whole schedule
(more tokens committed per step), it does not stop a 128-step run early. We keep that
meaning and make it well defined:

  dream_steps      Dream on the same canvas with n total steps (n scaled from the grid above
                   to the preset's step count), sampled with a seed of its own per (prompt, n).
                   Its F1 against phase A's reference answer, and its ground-truth accuracy.
  baseline         the n = full-steps run of that grid: an independent rerun of the reference
                   settings, so its F1 is the run-to-run agreement at temperature 0.2, the
                   most any shortened schedule can be asked for (the reference against itself,
                   F1 = 1, would demand the impossible).
  pearl point      the smallest n with mean F1(n) >= 0.95 x mean F1(rerun), over the prompts of a
                   stratum (and over all GSM8K prompts). Means, not per-prompt ratios: a single
                   prompt's F1 at temperature 0.2 is noisy, and its ratio is undefined when the
                   rerun scores 0 (a stratum whose reruns all score 0 has no pearl point).
                   The published per-prompt form (first n with F1(n) >= 0.95 x
                   the prompt's rerun F1) is kept per prompt in C.jsonl and its median reported.

Beside it, the same curve for the inverse-speculation pipeline, which is what the suite is
about: anchors read from the reference run after n of its steps, ar_small fills the gaps
(committed_end rule), scored the same way, with its own pearl point. Its anchors are the
reference's own tokens, so at n = full steps it reproduces the reference (F1 1): its curve
says how much of the DLM run the pipeline needs to be as close to the reference as a rerun
of Dream is.

Tables: pearl_point (per stratum and method: the pearl step count and fraction, the F1 and
accuracy there, the rerun baseline) and pearl_curve (F1 and accuracy at every n); plot
pearl_curve.png.
"""

from __future__ import annotations

import statistics
import sys
from tqdm.auto import tqdm

from dlmkit.anchors import anchors_after
from dlmkit.data.chat import end_token_ids, response_length
from dlmkit.experiments.inverse.fill import gap_fill
from dlmkit.experiments.inverse.reference import BATCH, dream_batch
from dlmkit.metrics.scoring import by_stratum, mean, score_answer
from dlmkit.plots import pyplot, save_figure
from dlmkit.seeds import item_seed

GRID_128 = (8, 13, 16, 24, 32, 48, 64, 96, 128)
KEEP = 0.95
ROLE = "ar_small"
METHODS = ("dream_steps", f"anchors+{ROLE}")


def step_grid(steps: int) -> list[int]:
    """The published step counts scaled from 128 to `steps` (distinct, the full count last)."""
    return sorted({max(1, round(n * steps / 128)) for n in GRID_128} | {steps})


def dream_answers(context, items: list[dict], steps: int, on_step=None) -> list[dict]:
    """Dream's answers to a batch of prompts with `steps` total steps (otherwise the reference settings),
    each prompt sampled with its own seed for (prompt, steps): what it would answer alone."""
    model, tokenizer = context.dlm(), context.dlm_tokenizer()
    seeds = [item_seed(context.seed, f"{item['id']}/steps={steps}") for item in items]

    def hook(step, x, logits):  # returns None: the canvas is left as it is
        if step is not None and on_step is not None:
            on_step()
    _, out = dream_batch(model, tokenizer, items, context.dream, seeds, steps=steps, tokens_hook=hook)
    answers = []
    for row in range(len(items)):
        tokens = out.generated[row].tolist()
        length = response_length(tokens, end_token_ids(tokenizer))
        answers.append({"gen_len": length, "text": tokenizer.decode(tokens[:length], skip_special_tokens=True)})
    return answers


def pearl_prompts(context, items: list[dict], records: dict, bar=None) -> list[dict]:
    """Phase C's records of a batch of GSM8K prompts: both methods at every step count of the grid
    (Dream runs the batch at once per step count; the gap fills run per prompt)."""
    grid = step_grid(context.dream.steps)
    answers = {}
    for n in grid:
        answers[n] = dream_answers(context, items, n, (lambda: bar.update(len(items))) if bar is not None else None)
    out = []
    for row, item in enumerate(items):
        out.append(pearl_prompt(context, item, records[item["id"]], {n: answers[n][row] for n in grid}))
        if bar is not None:
            bar.update(len(grid))  # the gap fills count as one step per step count
    return out


def pearl_prompt(context, item: dict, record: dict, answers: dict | None = None) -> dict:
    """Phase C's record of one GSM8K prompt: both methods at every step count of the grid.
    answers: {steps: Dream's answer} already computed (a batch), else Dream runs here."""
    full = context.dream.steps
    grid = step_grid(full)
    runs = []
    for n in grid:
        answer = answers[n] if answers else dream_answers(context, [item], n)[0]
        runs.append({"method": METHODS[0], "steps": n, "fraction": n / full, "gen_len": answer["gen_len"],
                     "text": answer["text"], **score_answer(item, answer["text"], record["text"])})
    jobs = [({"method": METHODS[1], "steps": n, "fraction": n / full},
             anchors_after(record["commit_step"], record["tokens"], n), "committed_end")
            for n in grid]
    for fill in gap_fill(context, ROLE, item, record, jobs):
        runs.append({k: fill[k] for k in ("method", "steps", "fraction", "coverage", "gen_tokens", "text", "f1",
                                          "rouge_l", "correct", "correct_strict") if k in fill})
    rerun = next(r["f1"] for r in runs if r["method"] == METHODS[0] and r["steps"] == full)
    pearl = {m: next((r["steps"] for r in runs if r["method"] == m and rerun > 0 and r["f1"] >= KEEP * rerun), None)
             for m in METHODS}
    return {"id": item["id"], "task": item["task"], "difficulty": item["difficulty"], "steps": full, "grid": grid,
            "reference_correct": record["correct"], "rerun_f1": rerun, "pearl_steps_per_prompt": pearl, "runs": runs}


def _strata(records: list[dict]) -> list[tuple[str, list[dict]]]:
    return sorted(by_stratum(records).items()) + [("gsm8k/all", records)]


def curve_table(records: list[dict]) -> list[dict]:
    rows = []
    for method in METHODS:
        for n in records[0]["grid"]:
            runs = [next(x for x in r["runs"] if x["method"] == method and x["steps"] == n) for r in records]
            rows.append({"method": method, "steps": n, "fraction": n / records[0]["steps"], "n": len(runs),
                         "f1": mean([x["f1"] for x in runs]), "accuracy": mean([float(x["correct"]) for x in runs])})
    return rows


def pearl_table(records: list[dict]) -> list[dict]:
    rows = []
    for stratum, group in _strata(records):
        curve = curve_table(group)
        rerun = mean([r["rerun_f1"] for r in group])
        for method in METHODS:
            points = [c for c in curve if c["method"] == method]
            # No agreement between two full runs leaves nothing to keep 95% of: no pearl point.
            pearl = next((c for c in points if c["f1"] >= KEEP * rerun), None) if rerun else None
            per_prompt = [r["pearl_steps_per_prompt"][method] for r in group
                          if r["pearl_steps_per_prompt"][method] is not None]
            rows.append({"stratum": stratum, "method": method, "n": len(group), "full_steps": group[0]["steps"],
                         "rerun_f1": rerun, "threshold_f1": KEEP * rerun,
                         "pearl_steps": pearl["steps"] if pearl else None,
                         "pearl_fraction": pearl["fraction"] if pearl else None,
                         "f1_at_pearl": pearl["f1"] if pearl else None,
                         "accuracy_at_pearl": pearl["accuracy"] if pearl else None,
                         "accuracy_full_reference": mean([float(r["reference_correct"]) for r in group]),
                         "median_per_prompt_pearl_steps": statistics.median(per_prompt) if per_prompt else None,
                         "n_with_per_prompt_pearl": len(per_prompt)})
    return rows


def plot_pearl(curve: list[dict], threshold: float, path) -> None:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("f1", "accuracy")):
        for method in METHODS:
            pts = [(c["steps"], c[key]) for c in curve if c["method"] == method and c[key] is not None]
            ax.plot(*zip(*pts), "-o", label=method)
        if key == "f1":
            ax.axhline(threshold, color="grey", ls=":", lw=0.8, label=f"{KEEP:.0%} of rerun F1")
        ax.set_xscale("log", base=2)
        grid = sorted({c["steps"] for c in curve})
        ax.set_xticks(grid, [str(n) for n in grid])
        ax.minorticks_off()
        ax.set_xlabel("DLM steps")
        ax.set_ylabel("word F1 vs the full-run answer" if key == "f1" else "ground-truth accuracy")
        ax.set_ylim(0, 1.02)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"GSM8K: F1 and accuracy against DLM steps (n={curve[0]['n']})")
    fig.tight_layout()
    save_figure(fig, path)


def phase_c(run, context) -> None:
    a_records = context.phase_a_records(run.dir, "C")
    items = [i for i in context.items() if i["task"] == "gsm8k"]
    log = run.log("C")
    grid = step_grid(context.dream.steps)
    have = {r["id"]: r for r in log.records() if r.get("grid") == grid}
    todo = [i for i in items if i["id"] not in have]
    # progress in prompt-steps (Dream's steps over the grid, and one per gap fill): C's items are long
    per_prompt = sum(grid) + len(grid)
    with tqdm(total=len(todo) * per_prompt, desc=f"phase C: pearl point, {len(todo)} GSM8K prompts x "
              f"{len(grid)} step counts", unit="step", disable=not todo, file=sys.stderr) as bar:
        for start in range(0, len(todo), BATCH):
            for record in pearl_prompts(context, todo[start:start + BATCH], a_records, bar):
                log.append(record)
                have[record["id"]] = record
    run.summary["config"]["pearl"] = {"grid": grid, "keep": KEEP, "methods": list(METHODS)}
    records = [have[i["id"]] for i in items]
    if not records:
        run.note("pearl_point: no GSM8K prompt was selected")
        return
    rows = pearl_table(records)
    run.add_table("pearl_point", rows)
    curve = curve_table(records)
    run.add_table("pearl_curve", curve)
    plot_pearl(curve, KEEP * mean([r["rerun_f1"] for r in records]), run.dir / "pearl_curve.png")


__all__ = ["GRID_128", "METHODS", "curve_table", "dream_answers", "pearl_prompt", "pearl_prompts",
           "pearl_table", "phase_c", "step_grid"]
