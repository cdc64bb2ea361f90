"""Phase B: gap fill. Anchors read from Dream's full run after a fraction of its steps, a small
AR fills the gaps by forced decoding, and the answer is scored against Dream's full answer.

Per prompt and gap-filler (ar_small, ar_medium, ar_control), in one record of B.jsonl:
  alone          the AR's plain greedy chat answer (no anchors), ended by its own end token
  f, oracle      anchors after f of the steps; the paper's end marker (3.3) as published:
                 above 40% coverage stop after the last anchor, else at the full run's
                 gen_len. gen_len is known only after the full DLM run: an oracle.
  f, committed_end  the deployable rule: stop at the first committed end-of-text anchor,
                 else at the AR's own end token (never before the last anchor).
  adaptive       ar_small at the stop of every rule of settings.STOP_GRID (stop.py): the
                 adaptive DLM stop against fixed fractions at equal mean DLM steps
                 (table adaptive_stop, adaptive_stop.png).
--gap-fill drafted fills the same tokens with Dream's drafts verified (decoding/drafted.py;
forward_passes then count its passes, drafts_fed / drafts_accepted beside them).
Each fill keeps its tokens, forced flags (1 = anchor), stop reason, forward passes, anchor
count and coverage (answer anchors / gen_len), text, word F1 and ROUGE-L against Dream's
answer and ground-truth correctness (GSM8K flexible and strict).

Anchors come from the whole canvas (positions past gen_len included: that is where Dream
commits its trailing end-of-text early, which the committed_end rule reads); coverage and
the oracle rule count only the answer's positions < gen_len.

table2_pipeline: the N=190 evaluation set (hard, medium, mixed strata), one row per method,
fraction and end rule: word F1 with a bootstrap CI, ground-truth accuracy with a Wilson CI,
and the published Table 2 numbers beside ours (they were measured with the oracle rule, so
they sit on the oracle rows).
"""

from __future__ import annotations

from tqdm.auto import tqdm

from dlmkit.anchors import Anchors, anchors_at_fraction, steps_done_at
from dlmkit.data.benchmarks import is_eval_item
from dlmkit.data.chat import chat_prompt_ids
from dlmkit.decoding.drafted import drafted_forced_decode
from dlmkit.decoding.early_stop import sent_drafts
from dlmkit.decoding.forced import forced_decode
from dlmkit.experiments.inverse.stop import (adaptive_by_task, adaptive_fills, adaptive_note, adaptive_table,
                                            grid_names, plot_adaptive)
from dlmkit.metrics.scoring import mean, mean_ci, not_reproduced, proportion_ci, score_answer
from dlmkit.plots import pyplot, save_figure

# ar_control knows what the DLM knows (tiny: every held-out fact; paper: Qwen2.5-7B-Instruct, Dream's
# base): the control in which anchors must add almost nothing.
MODELS = ("ar_small", "ar_medium", "ar_control")
RULES = ("oracle", "committed_end")
ALONE = "alone"

# Published Table 2 (N=190, Qwen2.5-0.5B gap-filler, Dream-7B anchors, oracle end marker).
PUBLISHED_TABLE2 = {
    ("ar_small", None): {"f1": 0.162, "accuracy": 0.284},
    ("ar_small", 0.1): {"f1": 0.820},
    ("ar_small", 0.15): {"f1": 0.888},
    ("ar_small", 0.25): {"f1": 0.934, "accuracy": 0.458},
    ("dlm", None): {"accuracy": 0.484},
}


# --------------------------------------------------------------------------- forced decoding jobs


def anchors_for(record: dict, fraction: float, steps: int) -> Anchors:
    """The anchors of a phase A record after `fraction` of `steps`, over the whole canvas."""
    return anchors_at_fraction(record["commit_step"], record["tokens"], fraction, steps)


def gap_fill(context, role: str, item: dict, record: dict, jobs: list[tuple[dict, Anchors | None, str]]) -> list[dict]:
    """Forced-decode one prompt under several anchor sets with the AR `role`; score each output.

    jobs: (labels, anchors, rule) with rule "alone" (anchors None: the AR's greedy answer),
    "oracle" or "committed_end". The jobs of one rule run as one batch, so a prompt's tokens
    do not depend on which other prompts ran (resuming changes nothing).
    Returns one row per job, in job order: the labels plus the fill and its scores.
    """
    model, tokenizer = context.ar(role)
    prompt = chat_prompt_ids(tokenizer, item["prompt"])
    end_ids = context.ar_end_ids(role)
    gen_len = record["gen_len"]
    drafted = context.settings.gap_fill == "drafted"
    rows: list[dict | None] = [None] * len(jobs)
    for rule in dict.fromkeys("committed_end" if r == ALONE else r for _, _, r in jobs):
        picked = [k for k, (_, _, r) in enumerate(jobs) if ("committed_end" if r == ALONE else r) == rule]
        anchor_sets = [jobs[k][1].as_dict() if jobs[k][1] is not None else {} for k in picked]
        kwargs = dict(max_new_tokens=context.dream.max_new_tokens, rule=rule, gen_lens=[gen_len] * len(picked),
                      end_token_ids=end_ids)
        if drafted:
            drafts = [job_drafts(context, record, jobs[k][0]) for k in picked]
            result = drafted_forced_decode(model, [prompt] * len(picked), anchor_sets, drafts, **kwargs)
        else:
            result = forced_decode(model, [prompt] * len(picked), anchor_sets, **kwargs)
        for k, out in zip(picked, result.rows):
            labels, anchors, job_rule = jobs[k]
            answer_anchors = anchors.truncated(gen_len) if anchors is not None else None
            text = context.decode(out.tokens)
            rows[k] = {
                "model": role, **labels, "rule": job_rule,
                "n_anchors": len(answer_anchors) if answer_anchors is not None else 0,
                "coverage": answer_anchors.coverage if answer_anchors is not None else 0.0,
                "gen_tokens": len(out.tokens), "stop_reason": out.stop_reason, "forward_passes": out.forward_passes,
                **({"drafts_fed": out.drafts_fed, "drafts_accepted": out.drafts_accepted} if drafted else {}),
                "text": text, **score_answer(item, text, record["text"]),
                "tokens": out.tokens, "forced": [int(f) for f in out.forced],
            }
    return rows


def job_drafts(context, record: dict, labels: dict) -> dict[int, int]:
    """Dream's drafts for a job of gap_fill (--gap-fill drafted): those phase A kept at the job's
    step count (its fraction's, or its adaptive stop's), as they would travel; none for the AR
    alone or at a step count phase A kept no drafts for (that job's fill is then plain forced)."""
    if labels.get("dlm_steps") is not None:
        steps = labels["dlm_steps"]
    elif labels.get("fraction") is not None:
        steps = steps_done_at(labels["fraction"], context.dream.steps)
    else:
        return {}
    kept = record.get("drafts", {}).get(str(steps))
    return sent_drafts(kept, context.dlm_end_ids()) if kept else {}


# --------------------------------------------------------------------------- phase B records


def fill_prompt(context, item: dict, record: dict) -> dict:
    """Phase B's record of one prompt: every gap-filler alone and at every fraction and end rule."""
    steps = context.dream.steps
    fills = []
    for role in MODELS:
        jobs = [({"fraction": None}, None, ALONE)]
        for fraction in context.fractions:
            anchors = anchors_for(record, fraction, steps)
            jobs += [({"fraction": fraction}, anchors, rule) for rule in RULES]
        fills += gap_fill(context, role, item, record, jobs)
    return {"id": item["id"], "task": item["task"], "difficulty": item["difficulty"], "eval": is_eval_item(item),
            "gen_len": record["gen_len"], "dream_correct": record["correct"],
            **({"dream_correct_strict": record["correct_strict"]} if "correct_strict" in record else {}),
            "fractions": list(context.fractions), "gap_fill": context.settings.gap_fill,
            "models": list(MODELS), "fills": fills,
            "stop_grid": grid_names(), "adaptive": adaptive_fills(context, item, record, gap_fill)}


def _current(record: dict, context) -> bool:
    return (record.get("fractions") == list(context.fractions) and record.get("models") == list(MODELS)
            and record.get("stop_grid") == grid_names() and record.get("gap_fill", "forced") == context.settings.gap_fill)


def ensure_fills(run, context, a_records: dict, desc: str = "phase B: gap fill") -> dict[str, dict]:
    """Phase B's record of every selected prompt, computing (and logging to B.jsonl) the missing
    ones. Phases gap and size read these records; run alone they fill in what B has not done."""
    log = run.log("B")
    have = {r["id"]: r for r in log.records() if _current(r, context)}
    todo = [i for i in context.items() if i["id"] not in have]
    for item in tqdm(todo, desc=desc, disable=not todo):
        record = fill_prompt(context, item, a_records[item["id"]])
        log.append(record)
        have[item["id"]] = record
    return {i["id"]: have[i["id"]] for i in context.items()}


def pick(record: dict, model: str, fraction: float | None, rule: str) -> dict:
    for fill in record["fills"]:
        if fill["model"] == model and fill["fraction"] == fraction and fill["rule"] == rule:
            return fill
    raise KeyError(f"{record['id']}: no fill for {model} at {fraction} with {rule}")


# --------------------------------------------------------------------------- table and plot


def _summary(fills: list[dict]) -> dict:
    strict = [f["correct_strict"] for f in fills if "correct_strict" in f]
    return {"n": len(fills), **mean_ci([f["f1"] for f in fills], "f1"), "rouge_l": mean([f["rouge_l"] for f in fills]),
            **proportion_ci([f["correct"] for f in fills], "accuracy"),
            "gsm8k_strict_accuracy": mean([float(s) for s in strict]), "coverage": mean([f["coverage"] for f in fills]),
            "forward_passes": mean([f["forward_passes"] for f in fills])}


def pipeline_table(records: list[dict], fractions) -> list[dict]:
    """table2_pipeline over the evaluation-set records."""
    # Dream's own answer is the reference, so its F1 is 1 by construction and left empty.
    strict = [r["dream_correct_strict"] for r in records if "dream_correct_strict" in r]
    rows = [{"method": "Dream (full)", "fraction": 1.0, "end_rule": "dlm", "n": len(records),
             "f1": None, "f1_low": None, "f1_high": None, "rouge_l": None,
             **proportion_ci([r["dream_correct"] for r in records], "accuracy"),
             "gsm8k_strict_accuracy": mean([float(s) for s in strict]), "coverage": 1.0, "forward_passes": None,
             "published_f1": None, "published_accuracy": PUBLISHED_TABLE2[("dlm", None)]["accuracy"]}]
    for model in MODELS:
        published = PUBLISHED_TABLE2.get((model, None), {})
        rows.append({"method": f"{model} alone", "fraction": None, "end_rule": "ar_end",
                     **_summary([pick(r, model, None, ALONE) for r in records]),
                     "published_f1": published.get("f1"), "published_accuracy": published.get("accuracy")})
        for rule in RULES:
            for fraction in fractions:
                published = PUBLISHED_TABLE2.get((model, round(fraction, 4)), {}) if rule == "oracle" else {}
                rows.append({"method": f"{model} + anchors", "fraction": fraction, "end_rule": rule,
                             **_summary([pick(r, model, fraction, rule) for r in records]),
                             "published_f1": published.get("f1"), "published_accuracy": published.get("accuracy")})
    return rows


def by_task_table(records: list[dict], fractions, model: str = "ar_small") -> list[dict]:
    """table2_by_task: table2_pipeline's F1 and accuracy per task for one gap-filler, with the
    share of outputs that stopped at the last anchor (the oracle rule above 40% coverage): a
    drop in accuracy with anchors is either the anchors' content or that cut."""
    rows = []
    for task in dict.fromkeys(r["task"] for r in records):
        mine = [r for r in records if r["task"] == task]
        rows.append({"task": task, "method": "Dream (full)", "fraction": 1.0, "end_rule": "dlm", "n": len(mine),
                     "f1": None, "accuracy": mean([float(r["dream_correct"]) for r in mine]),
                     "cut_at_last_anchor": None})
        jobs = [(f"{model} alone", None, ALONE)] + [(f"{model} + anchors", f, rule) for rule in RULES for f in fractions]
        for method, fraction, rule in jobs:
            fills = [pick(r, model, fraction, rule) for r in mine]
            rows.append({"task": task, "method": method, "fraction": fraction,
                         "end_rule": "ar_end" if rule == ALONE else rule, "n": len(fills),
                         "f1": mean([f["f1"] for f in fills]), "accuracy": mean([float(f["correct"]) for f in fills]),
                         "cut_at_last_anchor": mean([float(f["stop_reason"] == "last_anchor") for f in fills])})
    return rows


def by_task_note(rows: list[dict], fraction: float, model: str = "ar_small") -> str:
    """Where accuracy moves between the AR alone and each end rule at `fraction`, task by task."""
    parts = []
    for task in dict.fromkeys(r["task"] for r in rows):
        alone = next(r for r in rows if r["task"] == task and r["end_rule"] == "ar_end")
        cells = [f"{alone['accuracy']:.2f} alone"]
        for r in rows:
            if r["task"] == task and r["fraction"] == fraction and r["end_rule"] in RULES:
                cells.append(f"{r['accuracy']:.2f} {r['end_rule']} ({r['cut_at_last_anchor']:.0%} cut at the last "
                             "anchor)")
        parts.append(f"{task} " + ", ".join(cells))
    return (f"table2_by_task, accuracy of {model} at {fraction:g}: " + "; ".join(parts)
            + ". A drop under the oracle rule where many outputs were cut at the last anchor is the cut, not the "
            "anchors' content")


def plot_gapfill(rows: list[dict], path) -> None:
    """F1 and accuracy against the step fraction, per gap-filler and end rule."""
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    panels = ((axes[0], "f1", "word F1 vs Dream's full answer"), (axes[1], "accuracy", "ground-truth accuracy"))
    for ax, key, title in panels:
        for model, color in zip(MODELS, ("C0", "C1", "C2")):
            for rule, style in zip(RULES, ("-o", "--s")):
                pts = [(r["fraction"], r[key]) for r in rows
                       if r["method"] == f"{model} + anchors" and r["end_rule"] == rule and r[key] is not None]
                if pts:
                    ax.plot(*zip(*pts), style, color=color, label=f"{model} ({rule})")
            alone = next((r[key] for r in rows if r["method"] == f"{model} alone"), None)
            if alone is not None:
                ax.axhline(alone, color=color, lw=0.8, ls=":", label=f"{model} alone")
        if key == "accuracy" and rows[0].get("accuracy") is not None:
            ax.axhline(rows[0]["accuracy"], color="black", lw=0.8, label="Dream (full)")
        ax.set_xlabel("fraction of Dream's steps read as anchors")
        ax.set_title(title)
        ax.set_ylim(0, 1.02)
    axes[1].legend(fontsize=7)
    fig.suptitle(f"gap fill, evaluation set (n={rows[0]['n']})")
    fig.tight_layout()
    save_figure(fig, path)


def records_from_fills(run, context, name: str, table: str, compute) -> list[dict] | None:
    """The evaluation-set records of a phase derived per prompt from phase A's record and
    phase B's fills (`compute(a_record, b_record)`), logged to NAME.jsonl and resumed from it.
    None, with a note, when the selection holds no prompt of the evaluation set."""
    a_records = context.phase_a_records(run.dir, name)
    b_records = ensure_fills(run, context, a_records, desc=f"{name}: phase B fills it reads")
    log = run.log(name)
    have = {r["id"]: r for r in log.records() if r.get("fractions") == list(context.fractions)}
    for item in context.items():
        if item["id"] not in have:
            have[item["id"]] = compute(a_records[item["id"]], b_records[item["id"]])
            log.append(have[item["id"]])
    evaluation = [have[i["id"]] for i in context.items() if have[i["id"]]["eval"]]
    if not evaluation:
        run.note(f"{table}: no prompt of the evaluation set was selected")
        return None
    return evaluation


def phase_b(run, context) -> None:
    a_records = context.phase_a_records(run.dir, "B")
    records = ensure_fills(run, context, a_records)
    evaluation = [r for r in records.values() if r["eval"]]
    run.summary["config"]["gap_fill"] = {"fractions": list(context.fractions), "models": list(MODELS),
                                         "end_rules": list(RULES), "max_new_tokens": context.dream.max_new_tokens,
                                         "decoder": context.settings.gap_fill}
    if not evaluation:
        run.note("table2_pipeline: no prompt of the evaluation set (hard, medium, mixed strata) was selected")
        return
    rows = pipeline_table(evaluation, context.fractions)
    run.add_table("table2_pipeline", rows)
    by_task = by_task_table(evaluation, context.fractions)
    run.add_table("table2_by_task", by_task, echo=False)
    run.note(by_task_note(by_task, max(context.fractions)))
    plot_gapfill(rows, run.dir / "gapfill_f1_accuracy.png")
    from dlmkit.experiments.inverse.carry import carry_rows, content_commit_note, gain_note, gain_rows

    run.add_table("table_anchor_content", carry_rows(context, a_records, evaluation, MODELS,
                                                     lambda b, m: pick(b, m, None, ALONE)["tokens"]), echo=False)
    run.note(content_commit_note(context, a_records, evaluation))
    references = {item["id"]: item.get("target") for item in context.items()}
    gains = gain_rows(context, a_records, evaluation, MODELS,
                      lambda b, m, f: pick(b, m, None, ALONE) if f is None else pick(b, m, f, "committed_end"), references)
    run.add_table("table_gain_sources", gains, echo=False)
    run.note(gain_note(gains))
    for model in MODELS:
        alone = next(r for r in rows if r["method"] == f"{model} alone")
        anchored = [r for r in rows if r["method"] == f"{model} + anchors"]
        run.note(f"table2_pipeline: {model} alone F1 {alone['f1']:.3f} (accuracy {alone['accuracy']:.3f}); with anchors "
                 + ", ".join(f"@{r['fraction']} {r['end_rule']} {r['f1']:.3f} ({r['accuracy']:.3f})" for r in anchored)
                 + f"; Dream (full) accuracy {rows[0]['accuracy']:.3f}. The paper: anchors raise F1 well above the AR "
                 "alone (0.162 -> 0.820 at 10%)")
    misses = not_reproduced(rows, {"f1": "published_f1", "accuracy": "published_accuracy"},
                            lambda r: f"{r['method']} @{r['fraction']} ({r['end_rule']})")
    if misses:
        run.note(f"table2_pipeline ({context.preset} preset, n={len(evaluation)}) does not reproduce: "
                 + "; ".join(misses))
    stop_rows = adaptive_table(evaluation)
    run.add_table("adaptive_stop", stop_rows)
    run.add_table("adaptive_stop_by_task", adaptive_by_task(evaluation), echo=False)
    run.note(adaptive_note(stop_rows))
    plot_adaptive(stop_rows, run.dir / "adaptive_stop.png")


__all__ = ["ALONE", "MODELS", "RULES", "anchors_for", "by_task_table", "ensure_fills", "records_from_fills", "fill_prompt", "gap_fill", "phase_b", "pick",
           "pipeline_table"]
