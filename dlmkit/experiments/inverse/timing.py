"""Phase timing: is k DLM steps + a small AR's gap fill faster than the full DLM run?

Measured on this device in this run, one prompt at a time (latency, batch 1), after one
untimed warm-up of each model, over the first prompt with a non-empty answer of each stratum
of the evaluation set (answer lengths differ by task, and so does the fill's share):

  dream full        the full reference run (all steps); ms per DLM step = its time / steps
  dream k steps     the same run stopped after k = int(steps * f) steps (the reference schedule,
                    not a shorter one: a tokens hook ends it), or where the adaptive stop rule
                    (settings.ADAPTIVE, decided online every step, its cost included) says:
                    the DLM's share of the pipeline; its canvas gives the anchors, its last
                    forward the drafts
  fill              ar_small's forced decoding of those anchors (committed_end rule, KV cache,
                    anchor runs fed in one forward): prefill of prompt + leading anchors, then
                    one forward per gap token
  drafted fill      the same output with Dream's drafts verified (decoding/drafted.py): one
                    forward per run of right drafts
  ar alone          ar_small's plain greedy answer: ms per AR token = its time / its tokens
  ar prefill        one forward over the AR's chat prompt alone

  sequential        dream k steps + fill
  async             the AR prefills the prompt while Dream runs its k steps (both read only the
                    prompt, so nothing waits), then decodes once the anchors exist:
                    max(dream k steps, ar prefill) + fill - ar prefill. A bound for two models
                    running side by side (two devices or streams) without slowing each other,
                    computed from the measured parts, not run concurrently here.
  speedup           mean dream full / mean pipeline
  f1                beside each pipeline row, the evaluation set's F1 of that stop's fill
                    (table2_pipeline / adaptive_stop of phase B; drafted fill gives the same
                    tokens), empty when phase B has not run

Repeats (--timing-repeats, default 3; 1 with --subset): every repeat times all the prompts
once, repeats one after the other (so a slow spell of the machine falls on every measure of
a repeat alike), each record keeping its `repeat`. Every row is computed per repeat as above;
the table gives the median over the repeats (`ms`, `speedup_vs_full_dlm`) and their range
(`ms_min` .. `ms_max`, `speedup_min` .. `speedup_max`): the speedup is a ratio measured within
each repeat, not a ratio of medians.

The paper's A100 numbers (dlmkit/data/published/published_timing.json, or --published-dir) sit
beside ours: 42.0 ms per Dream step, 18.2 ms per Qwen-0.5B token, pipeline 2371 ms vs 5383 ms (2.27x). Its
pipeline figure is an estimate (13 steps x 42 ms + 100 tokens x 18.2 ms), not a measurement.
Times depend on the machine and its load: this table is the one place where the same seed
does not give the same numbers.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dlmkit.anchors import Anchors, steps_done_at
from dlmkit.cli import synchronize
from dlmkit.data.benchmarks import is_eval_item
from dlmkit.data.chat import chat_prompt_ids
from dlmkit.decoding.diffusion import diffusion_generate
from dlmkit.decoding.drafted import drafted_forced_decode
from dlmkit.decoding.early_stop import StopRule, online_state, sent_drafts
from dlmkit.decoding.forced import forced_decode
from dlmkit.experiments.inverse.settings import ADAPTIVE
from dlmkit.metrics.scoring import mean
from dlmkit.seeds import item_seed

ROLE = "ar_small"
PER_STRATUM = 1
PUBLISHED_FILE = "published_timing.json"


class _Stop(Exception):
    def __init__(self, canvas, steps_done, drafts=None):
        self.canvas, self.steps_done, self.drafts = canvas, steps_done, drafts


def dream_run(context, item: dict, stop_after: int | None = None, rule: StopRule | None = None,
              drafts: bool = False) -> tuple[float, torch.Tensor | None, int, dict | None]:
    """(seconds, generation region, steps done, drafts) of the reference run, optionally stopped
    after `stop_after` steps or when the adaptive `rule` says (read online, every step). drafts:
    also read Dream's drafts at the stop (its last forward's argmax at the open positions); the
    rule reads them every step anyway."""
    model, tokenizer, settings = context.dlm(), context.dlm_tokenizer(), context.dream
    input_ids = torch.tensor([chat_prompt_ids(tokenizer, item["prompt"])], device=model.device)
    generator = torch.Generator(device=model.device).manual_seed(item_seed(context.seed, item["id"]))
    width, mask_id, ends = settings.max_new_tokens, model.mask_token_id, context.dlm_end_ids()
    history = []

    def stop(step, x, logits):
        if step is None:
            return
        done = step + 1
        if rule is not None:
            state, found = online_state(x[0, -width:], logits[0, -width:], mask_id, ends)
            history.append(state)
            if rule.stops(history, settings.steps):
                raise _Stop(x, done, found)
        elif done >= stop_after:
            found = online_state(x[0, -width:], logits[0, -width:], mask_id, ends)[1] if drafts else None
            raise _Stop(x, done, found)

    if stop_after == 0:
        return 0.0, torch.full((width,), mask_id), 0, None
    synchronize(model.device)
    start = time.perf_counter()
    try:
        out = diffusion_generate(model, input_ids, max_new_tokens=width, steps=settings.steps,
                                 alg=settings.alg, temperature=settings.temperature, top_p=settings.top_p,
                                 top_k=settings.top_k, eps=settings.eps, generator=generator,
                                 tokens_hook=stop if (stop_after is not None or rule is not None) else None)
        canvas, done, found = out.generated[0], settings.steps, None
    except _Stop as stopped:
        canvas, done, found = stopped.canvas[0, input_ids.shape[1]:], stopped.steps_done, stopped.drafts
    synchronize(model.device)
    return time.perf_counter() - start, canvas.cpu(), done, found


def _timed_fill(context, prompt: list[int], anchors: dict, drafts: dict | None = None) -> tuple[float, int, int]:
    model, _ = context.ar(ROLE)
    kwargs = dict(max_new_tokens=context.dream.max_new_tokens, rule="committed_end",
                  end_token_ids=context.ar_end_ids(ROLE), batch_size=1)
    synchronize(context.device)
    start = time.perf_counter()
    if drafts is None:
        result = forced_decode(model, [prompt], [anchors], **kwargs)
    else:
        result = drafted_forced_decode(model, [prompt], [anchors], [drafts], **kwargs)
    synchronize(context.device)
    return time.perf_counter() - start, len(result.rows[0].tokens), result.forward_passes


@torch.no_grad()
def _timed_prefill(context, prompt: list[int]) -> float:
    model, _ = context.ar(ROLE)
    ids = torch.tensor([prompt], device=context.device)
    synchronize(context.device)
    start = time.perf_counter()
    model(input_ids=ids, use_cache=True, logits_to_keep=1)
    synchronize(context.device)
    return time.perf_counter() - start


def time_prompt(context, item: dict) -> dict:
    """Every measured component of one prompt, in ms."""
    mask_id = context.dlm_config().mask_token_id
    prompt = chat_prompt_ids(context.ar(ROLE)[1], item["prompt"])
    full_s = dream_run(context, item)[0]
    alone_s, alone_tokens, _ = _timed_fill(context, prompt, {})
    prefill_s = _timed_prefill(context, prompt)
    record = {"id": item["id"], "dream_full_ms": 1e3 * full_s, "dream_ms_per_step": 1e3 * full_s / context.dream.steps,
              "ar_alone_ms": 1e3 * alone_s, "ar_alone_tokens": alone_tokens,
              "ar_ms_per_token": 1e3 * alone_s / alone_tokens if alone_tokens else None,
              "ar_prefill_ms": 1e3 * prefill_s, "fractions": []}
    dlm_ends = context.dlm_end_ids()
    stops = [(fraction, None) for fraction in context.fractions] + [(None, ADAPTIVE)]
    for fraction, rule in stops:
        k = steps_done_at(fraction, context.dream.steps) if rule is None else None
        dlm_s, canvas, k, found = dream_run(context, item, stop_after=k, rule=rule, drafts=True)
        committed = (canvas != mask_id).nonzero().flatten().tolist()
        anchors = Anchors(tuple(committed), tuple(canvas[committed].tolist()), len(canvas))
        fill_s, tokens, passes = _timed_fill(context, prompt, anchors.as_dict())
        drafted = sent_drafts(found, dlm_ends) if found is not None else {}
        drafted_s, drafted_tokens, drafted_passes = _timed_fill(context, prompt, anchors.as_dict(), drafted)
        record["fractions"].append({
            "fraction": fraction, "stop": "fixed" if rule is None else rule.name, "k_steps": k,
            "dlm_k_ms": 1e3 * dlm_s, "fill_ms": 1e3 * fill_s, "fill_tokens": tokens, "fill_passes": passes,
            "drafted_fill_ms": 1e3 * drafted_s, "drafted_fill_passes": drafted_passes,
            "drafted_tokens_equal": drafted_tokens == tokens, "n_anchors": len(anchors),
            "ar_ms_per_output_token": 1e3 * fill_s / tokens if tokens else None,
            "sequential_ms": 1e3 * (dlm_s + fill_s),
            "async_ms": 1e3 * (max(dlm_s, prefill_s) + max(fill_s - prefill_s, 0.0)),
            "drafted_sequential_ms": 1e3 * (dlm_s + drafted_s),
        })
    return record


def load_published(directory: Path | None) -> dict | None:
    if directory is None:
        return None
    path = Path(directory) / PUBLISHED_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("derived")


def _f1_beside(tables: dict, fraction: float | None, rule_name: str | None) -> float | None:
    """The evaluation set's F1 of ar_small's committed_end fill at this stop (phase B's tables),
    the F1 the timed pipeline produces (drafted fill gives the same tokens)."""
    if fraction is not None:
        rows = tables.get("table2_pipeline", [])
        return next((r["f1"] for r in rows if r["method"] == f"{ROLE} + anchors" and r["end_rule"] == "committed_end"
                     and r["fraction"] is not None and abs(r["fraction"] - fraction) < 1e-9), None)
    return next((r["f1"] for r in tables.get("adaptive_stop", []) if r["rule"] == rule_name), None)


def timing_table(records: list[dict], fractions, steps: int, published: dict | None, tables: dict | None = None
                 ) -> list[dict]:
    p, tables = published or {}, tables or {}
    full = mean([r["dream_full_ms"] for r in records])
    n = len(records)

    def row(measure, method=None, stop=None, fraction=None, k=None, ms=None, speedup=None, f1=None, passes=None,
            published_ms=None, published_speedup=None):
        return {"measure": measure, "method": method, "stop": stop, "fraction": fraction, "k_steps": k, "n": n,
                "ms": ms, "speedup_vs_full_dlm": speedup, "f1": f1, "fill_passes": passes,
                "published_a100_ms": published_ms, "published_speedup": published_speedup}

    rows = [
        row(f"dream ms per step ({steps}-step run)", ms=mean([r["dream_ms_per_step"] for r in records]),
            published_ms=p.get("dlm_per_step_ms")),
        row(f"{ROLE} ms per token (greedy, alone)", ms=mean([r["ar_ms_per_token"] for r in records]),
            published_ms=p.get("ar_per_token_ms")),
        row(f"{ROLE} prompt prefill", ms=mean([r["ar_prefill_ms"] for r in records])),
        row(f"dream full run ({steps} steps)", method="full DLM run", stop="full", fraction=1.0, k=steps, ms=full,
            speedup=1.0, published_ms=p.get("estimated_dream_128_steps_ms")),
    ]
    stops = list(dict.fromkeys((x.get("stop", "fixed"), x["fraction"]) for x in records[0]["fractions"]))
    for stop, fraction in stops:
        parts = [next(x for x in r["fractions"] if (x.get("stop", "fixed"), x["fraction"]) == (stop, fraction))
                 for r in records]
        k = mean([x["k_steps"] for x in parts])
        label = f"fixed {fraction:g}" if stop == "fixed" else f"adaptive stop ({stop})"
        f1 = _f1_beside(tables, fraction, None if stop == "fixed" else stop)
        is_published = fraction is not None and round(fraction, 4) == 0.1 and p
        common = dict(stop=stop, fraction=fraction, k=k)
        rows += [
            row("dream k steps", **common, ms=mean([x["dlm_k_ms"] for x in parts])),
            row("fill (forced decoding)", **common, ms=mean([x["fill_ms"] for x in parts]),
                passes=mean([x["fill_passes"] for x in parts])),
            row("fill (drafted decoding)", **common, ms=mean([x.get("drafted_fill_ms") for x in parts]),
                passes=mean([x.get("drafted_fill_passes") for x in parts])),
            row(f"{ROLE} ms per output token (forced)", **common, ms=mean([x["ar_ms_per_output_token"] for x in parts])),
        ]
        for measure, method, key in (("pipeline sequential", f"{label}, forced fill", "sequential_ms"),
                                     ("pipeline async", f"{label}, forced fill (async bound)", "async_ms"),
                                     ("pipeline sequential", f"{label}, drafted fill", "drafted_sequential_ms")):
            ms = mean([x.get(key) for x in parts])
            published_row = is_published and key == "sequential_ms"
            rows.append(row(measure, method=method, **common, ms=ms, speedup=full / ms if ms else None, f1=f1,
                            published_ms=p.get("estimated_pipeline_13_steps_100_tokens_ms") if published_row else None,
                            published_speedup=p.get("estimated_speedup") if published_row else None))
    return rows


def repeated_timing_table(repeats: list[list[dict]], fractions, steps: int, published: dict | None,
                          tables: dict | None = None) -> list[dict]:
    """timing_table per repeat (each a list of per-prompt records), merged row by row: the median
    over the repeats and its range (see the module docstring)."""
    per = [timing_table(records, fractions, steps, published, tables) for records in repeats]
    rows = []
    for parts in zip(*per):
        row = dict(parts[0])
        for key, low, high in (("ms", "ms_min", "ms_max"), ("speedup_vs_full_dlm", "speedup_min", "speedup_max")):
            values = [r[key] for r in parts if r[key] is not None]
            row[key] = statistics.median(values) if values else None
            row[low], row[high] = (min(values), max(values)) if values else (None, None)
        row["repeats"] = len(parts)
        rows.append(row)
    return rows


def phase_timing(run, context) -> None:
    a_records = context.phase_a_records(run.dir, "timing")
    items, taken = [], {}
    for item in context.items():
        stratum = (item["task"], item["difficulty"])
        if is_eval_item(item) and a_records[item["id"]]["gen_len"] and taken.get(stratum, 0) < PER_STRATUM:
            items.append(item)
            taken[stratum] = taken.get(stratum, 0) + 1
    items = items or context.items()[:PER_STRATUM]
    log = run.log("timing")
    repeats = context.settings.timing_repeats
    wanted = [(f, "fixed") for f in context.fractions] + [(None, ADAPTIVE.name)]
    have = {(r["id"], r.get("repeat", 0)): r for r in log.records()
            if [(x["fraction"], x.get("stop")) for x in r["fractions"]] == wanted}
    todo = [(k, i) for k in range(repeats) for i in items if (i["id"], k) not in have]
    if todo:  # warm-up: first calls allocate and pick kernels
        dream_run(context, todo[0][1], stop_after=1, drafts=True)
        _timed_fill(context, chat_prompt_ids(context.ar(ROLE)[1], todo[0][1]["prompt"]), {})
    for k, item in tqdm(todo, desc="timing", disable=not todo):
        have[(item["id"], k)] = {**time_prompt(context, item), "repeat": k}
        log.append(have[(item["id"], k)])
    published = load_published(context.published_dir)
    if published is None:
        run.note(f"table6_timing: no {PUBLISHED_FILE} in {context.published_dir}; published A100 columns left empty")
    run.summary["config"]["timing"] = {"prompts": [i["id"] for i in items], "model": ROLE, "batch_size": 1,
                                       "device": context.device, "repeats": repeats}
    rows = repeated_timing_table([[have[(i["id"], k)] for i in items] for k in range(repeats)], context.fractions,
                                 context.dream.steps, published, run.summary["tables"])
    run.add_table("table6_timing", rows)
    published_row = next((r for r in rows if r["published_speedup"] is not None), None)
    if published_row is not None:
        run.note(f"table6_timing: measured pipeline speedup at {published_row['fraction']} "
                 f"({published_row['k_steps']} DLM steps + fill) {published_row['speedup_vs_full_dlm']:.2f}x vs the "
                 f"paper's estimated {published_row['published_speedup']:.2f}x on an A100")
    best = [r for r in rows if r["method"] and r["method"].startswith("adaptive") and r["method"].endswith("drafted fill")]
    for r in best:
        run.note(f"table6_timing: {r['method']}: {r['k_steps']:.1f} DLM steps on average, {r['ms']:.0f} ms, "
                 f"{r['speedup_vs_full_dlm']:.2f}x faster than the full {context.dream.steps}-step DLM run "
                 f"(median of {repeats} repeats, {r['speedup_min']:.2f}x..{r['speedup_max']:.2f}x)"
                 + (f" at F1 {r['f1']:.3f} (evaluation set)" if r["f1"] is not None else ""))
    run.note(f"table6_timing was measured on {context.device} with {context.preset}-preset models (batch 1, "
             f"{len(items)} prompts, {repeats} repeats); the published A100 numbers are for Dream-7B and Qwen2.5-0.5B, so only the "
             "ratios compare, and CPU times move with the machine's load")


__all__ = ["dream_run", "load_published", "phase_timing", "repeated_timing_table", "time_prompt", "timing_table"]
