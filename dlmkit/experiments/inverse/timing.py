"""Phase timing: is k DLM steps + a small AR's gap fill faster than the full DLM run?

Measured on this device in this run, one prompt at a time (latency, batch 1), after one
untimed warm-up of each model, over the first prompt with a non-empty answer of each stratum
of the evaluation set (answer lengths differ by task, and so does the fill's share):

  dream full        the full reference run (all steps); ms per DLM step = its time / steps
  dream k steps     the same run stopped after k = int(steps * f) steps (the reference schedule,
                    not a shorter one: a tokens hook ends it), which is the DLM's share of the
                    pipeline; its canvas gives the anchors
  fill              ar_small's forced decoding of those anchors (committed_end rule, KV cache,
                    anchor runs fed in one forward): prefill of prompt + leading anchors, then
                    one forward per gap token
  ar alone          ar_small's plain greedy answer: ms per AR token = its time / its tokens
  ar prefill        one forward over the AR's chat prompt alone

  sequential        dream k steps + fill
  async             the AR prefills the prompt while Dream runs its k steps (both read only the
                    prompt, so nothing waits), then decodes once the anchors exist:
                    max(dream k steps, ar prefill) + fill - ar prefill. A bound for two models
                    running side by side (two devices or streams) without slowing each other,
                    computed from the measured parts, not run concurrently here.
  speedup           mean dream full / mean pipeline

The paper's A100 numbers (dlmkit/data/published/published_timing.json, or --published-dir) sit
beside ours: 42.0 ms per Dream step, 18.2 ms per Qwen-0.5B token, pipeline 2371 ms vs 5383 ms (2.27x). Its
pipeline figure is an estimate (13 steps x 42 ms + 100 tokens x 18.2 ms), not a measurement.
Times depend on the machine and its load: this table is the one place where the same seed
does not give the same numbers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dlmkit.anchors import Anchors, steps_done_at
from dlmkit.cli import synchronize
from dlmkit.data.benchmarks import is_eval_item
from dlmkit.data.chat import chat_prompt_ids
from dlmkit.decoding.diffusion import diffusion_generate
from dlmkit.decoding.forced import forced_decode
from dlmkit.metrics.scoring import mean
from dlmkit.seeds import item_seed

ROLE = "ar_small"
PER_STRATUM = 1
PUBLISHED_FILE = "published_timing.json"


class _Stop(Exception):
    def __init__(self, canvas):
        self.canvas = canvas


def dream_run(context, item: dict, stop_after: int | None = None) -> tuple[float, torch.Tensor | None]:
    """(seconds, generation region) of the reference run, optionally stopped after `stop_after` steps."""
    model, tokenizer, settings = context.dlm(), context.dlm_tokenizer(), context.dream
    input_ids = torch.tensor([chat_prompt_ids(tokenizer, item["prompt"])], device=model.device)
    generator = torch.Generator(device=model.device).manual_seed(item_seed(context.seed, item["id"]))

    def stop(step, x, logits):
        if step is not None and step + 1 >= stop_after:
            raise _Stop(x)

    if stop_after == 0:
        return 0.0, torch.full((settings.max_new_tokens,), model.mask_token_id)
    synchronize(model.device)
    start = time.perf_counter()
    try:
        out = diffusion_generate(model, input_ids, max_new_tokens=settings.max_new_tokens, steps=settings.steps,
                                 alg=settings.alg, temperature=settings.temperature, top_p=settings.top_p,
                                 top_k=settings.top_k, eps=settings.eps, generator=generator,
                                 tokens_hook=stop if stop_after is not None else None)
        canvas = out.generated[0]
    except _Stop as stopped:
        canvas = stopped.canvas[0, input_ids.shape[1]:]
    synchronize(model.device)
    return time.perf_counter() - start, canvas.cpu()


def _timed_fill(context, prompt: list[int], anchors: dict) -> tuple[float, int, int]:
    model, _ = context.ar(ROLE)
    synchronize(context.device)
    start = time.perf_counter()
    result = forced_decode(model, [prompt], [anchors], max_new_tokens=context.dream.max_new_tokens,
                           rule="committed_end", end_token_ids=context.ar_end_ids(ROLE), batch_size=1)
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
    full_s, _ = dream_run(context, item)
    alone_s, alone_tokens, _ = _timed_fill(context, prompt, {})
    prefill_s = _timed_prefill(context, prompt)
    record = {"id": item["id"], "dream_full_ms": 1e3 * full_s, "dream_ms_per_step": 1e3 * full_s / context.dream.steps,
              "ar_alone_ms": 1e3 * alone_s, "ar_alone_tokens": alone_tokens,
              "ar_ms_per_token": 1e3 * alone_s / alone_tokens if alone_tokens else None,
              "ar_prefill_ms": 1e3 * prefill_s, "fractions": []}
    for fraction in context.fractions:
        k = steps_done_at(fraction, context.dream.steps)
        dlm_s, canvas = dream_run(context, item, stop_after=k)
        committed = (canvas != mask_id).nonzero().flatten().tolist()
        anchors = Anchors(tuple(committed), tuple(canvas[committed].tolist()), len(canvas))
        fill_s, tokens, passes = _timed_fill(context, prompt, anchors.as_dict())
        record["fractions"].append({
            "fraction": fraction, "k_steps": k, "dlm_k_ms": 1e3 * dlm_s, "fill_ms": 1e3 * fill_s,
            "fill_tokens": tokens, "fill_passes": passes, "n_anchors": len(anchors),
            "ar_ms_per_output_token": 1e3 * fill_s / tokens if tokens else None,
            "sequential_ms": 1e3 * (dlm_s + fill_s),
            "async_ms": 1e3 * (max(dlm_s, prefill_s) + max(fill_s - prefill_s, 0.0)),
        })
    return record


def load_published(directory: Path | None) -> dict | None:
    if directory is None:
        return None
    path = Path(directory) / PUBLISHED_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("derived")


def timing_table(records: list[dict], fractions, steps: int, published: dict | None) -> list[dict]:
    p = published or {}
    full = mean([r["dream_full_ms"] for r in records])
    n = len(records)
    rows = [
        {"measure": f"dream ms per step ({steps}-step run)", "fraction": None, "k_steps": None, "n": n,
         "ms": mean([r["dream_ms_per_step"] for r in records]), "speedup_vs_full_dlm": None,
         "published_a100_ms": p.get("dlm_per_step_ms"), "published_speedup": None},
        {"measure": f"{ROLE} ms per token (greedy, alone)", "fraction": None, "k_steps": None, "n": n,
         "ms": mean([r["ar_ms_per_token"] for r in records]), "speedup_vs_full_dlm": None,
         "published_a100_ms": p.get("ar_per_token_ms"), "published_speedup": None},
        {"measure": f"{ROLE} prompt prefill", "fraction": None, "k_steps": None, "n": n,
         "ms": mean([r["ar_prefill_ms"] for r in records]), "speedup_vs_full_dlm": None,
         "published_a100_ms": None, "published_speedup": None},
        {"measure": f"dream full run ({steps} steps)", "fraction": 1.0, "k_steps": steps, "n": n, "ms": full,
         "speedup_vs_full_dlm": 1.0, "published_a100_ms": p.get("estimated_dream_128_steps_ms"),
         "published_speedup": None},
    ]
    for fraction in fractions:
        parts = [next(x for x in r["fractions"] if x["fraction"] == fraction) for r in records]
        k = parts[0]["k_steps"]
        is_published = round(fraction, 4) == 0.1 and p
        for name, key in (("dream k steps", "dlm_k_ms"), ("fill (forced decoding)", "fill_ms")):
            rows.append({"measure": name, "fraction": fraction, "k_steps": k, "n": n,
                         "ms": mean([x[key] for x in parts]), "speedup_vs_full_dlm": None, "published_a100_ms": None, "published_speedup": None})
        rows.append({"measure": f"{ROLE} ms per output token (forced)", "fraction": fraction, "k_steps": k, "n": n,
                     "ms": mean([x["ar_ms_per_output_token"] for x in parts]), "speedup_vs_full_dlm": None,
                     "published_a100_ms": None, "published_speedup": None})
        for name, key in (("pipeline sequential", "sequential_ms"), ("pipeline async", "async_ms")):
            ms = mean([x[key] for x in parts])
            rows.append({"measure": name, "fraction": fraction, "k_steps": k, "n": n, "ms": ms,
                         "speedup_vs_full_dlm": full / ms if ms else None,
                         "published_a100_ms": p.get("estimated_pipeline_13_steps_100_tokens_ms")
                         if is_published and key == "sequential_ms" else None,
                         "published_speedup": p.get("estimated_speedup") if is_published and key == "sequential_ms"
                         else None})
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
    have = {r["id"]: r for r in log.records() if [x["fraction"] for x in r["fractions"]] == list(context.fractions)}
    todo = [i for i in items if i["id"] not in have]
    if todo:  # warm-up: first calls allocate and pick kernels
        dream_run(context, todo[0], stop_after=1)
        _timed_fill(context, chat_prompt_ids(context.ar(ROLE)[1], todo[0]["prompt"]), {})
    for item in tqdm(todo, desc="timing", disable=not todo):
        have[item["id"]] = time_prompt(context, item)
        log.append(have[item["id"]])
    published = load_published(context.published_dir)
    if published is None:
        run.note(f"table6_timing: no {PUBLISHED_FILE} in {context.published_dir}; published A100 columns left empty")
    run.summary["config"]["timing"] = {"prompts": [i["id"] for i in items], "model": ROLE, "batch_size": 1,
                                       "device": context.device}
    rows = timing_table([have[i["id"]] for i in items], context.fractions, context.dream.steps, published)
    run.add_table("table6_timing", rows)
    published_row = next((r for r in rows if r["published_speedup"] is not None), None)
    if published_row is not None:
        run.note(f"table6_timing: measured pipeline speedup at {published_row['fraction']} "
                 f"({published_row['k_steps']} DLM steps + fill) {published_row['speedup_vs_full_dlm']:.2f}x vs the "
                 f"paper's estimated {published_row['published_speedup']:.2f}x on an A100")
    run.note(f"table6_timing was measured on {context.device} with {context.preset}-preset models (batch 1, "
             f"{len(items)} prompts); the published A100 numbers are for Dream-7B and Qwen2.5-0.5B, so only the "
             "ratios compare, and CPU times move with the machine's load")


__all__ = ["dream_run", "load_published", "phase_timing", "time_prompt", "timing_table"]
