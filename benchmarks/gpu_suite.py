"""One command for a GPU: every timing the project has, random bf16 weights at the real
geometries, one JSON with the paper's number beside each figure.

    python benchmarks/gpu_suite.py                       # one H100/H200-class GPU, ~6-8 minutes
    python benchmarks/gpu_suite.py --smoke               # the same code at tiny sizes on a CPU, ~1 minute
    python benchmarks/gpu_suite.py --only dream,clsd     # some groups only

On this workplace's lent H200 (python3 3.12, torch 2.11, transformers 5.17, no network; the repo
travels, files come back only from $OUT): run `PYTHONUNBUFFERED=1 python3 benchmarks/gpu_suite.py
--out $OUT/gpu_suite.json` with a timeout of 600 s, and copy the JSON into results/gpu/. The
published anchor patterns ship with the package (dlmkit/data/published).

Groups, in order (each builds its own random models, or shares them where noted, and frees them):

  peaks      bf16 matmul TFLOP/s (8192^2) and device copy TB/s (4 GB, read + write) on random data,
             measured now: the roofline's ceilings
  dream      Dream-7B: forward and full-sampler ms per denoising step at a 512-token canvas
             (64 prompt + 448 masks, batch 1, the paper's sampling: entropy order, T 0.2, top_p 0.95,
             top_k 50) and the forward against the roofline
             (bench_dream.roofline_seconds at the measured peaks)     paper: 42.0 ms/step (A100)
  forced     Qwen2.5-0.5B: plain KV-cached decoding ms/token (batch 1)  paper: 18.3 ms/token
             and forced decoding (bench_forced.run_fraction, KV cache + anchor runs) over the
             published 10% anchor patterns, batch 1 and batch 16, ms per prompt
  pipeline   Dream's full 128-step run on the same canvas, timed whole and to step 13 (one run);
             pipeline = 13 steps + 100 AR tokens (the paper's formula, our measured parts),
             and 13 steps + forced decoding of a published pattern      paper: 2371 vs 5383 ms (2.3x)
  specdiff   per-call costs at real size (bench_specdiff.measure: gpt2-xl target, gpt2 drafter,
             mdlm-owt) and the speedups they imply over the i.i.d.-acceptance grid
                                                                         paper: up to 7.2x / 1.75x
  clsd       one CLSD block at Qwen3.5-9B: the DiT drafts 32 x 128 in 2 Euler steps, the verifier
             scores all 32 in one cached pass (bench_clsd.measure_blocks) paper: < 500 ms (B200)
  self_spec  one self-speculative step at mdlm-owt size (draft pass + causal verify pass +
             accept, dlmkit.decoding.self_spec_sampler, batch 1, 1024 positions)

Every time is the median of repeats after warm-up, the device synchronised around each call,
with min/max/n beside it. Each group has a time budget (--budget-scale scales them all): its
repeats stop early when the budget runs short, and a hard alarm ends a group that overruns by
more than half its budget. A failing group records its error string on each of its figures and
the suite goes on. The JSON (results/gpu/<device>-<UTC time>.json by default, written atomically
after every group) holds:

  {"suite": "gpu_suite", "schema": 1, "smoke": bool, "started_utc", "wall_s", "status": "running|done",
   "device": {"type", "name", "capability", "memory_gib", "count"}, "dtype",
   "versions": {python, dlmkit, torch, transformers, ..., cuda, cudnn}, "git": {...}, "argv",
   "groups": {group: {"seconds", "budget_s", "error", "peak_memory_gib", "sizes"}},
   "figures": {name: {"group", "value", "unit", "spread": {median, min, max, n, rel_spread} | null,
                      "paper", "paper_note", "ratio_to_paper", "error", "details"}}}
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import signal
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing; makes benchmarks/ importable

from benchmarks import bench_clsd, bench_dream, bench_forced, bench_specdiff  # noqa: E402
from dlmkit.anchors import Anchors  # noqa: E402
from dlmkit.cli import OneLineParser, resolve_device, run_main, synchronize  # noqa: E402
from dlmkit.decoding.diffusion import DreamSettings, diffusion_generate  # noqa: E402
from dlmkit.decoding.forced import forced_decode  # noqa: E402
from dlmkit.decoding.self_spec_sampler import self_spec_sample  # noqa: E402
from dlmkit.errors import UserError  # noqa: E402
from dlmkit.models.dream import dream_config, random_dream  # noqa: E402
from dlmkit.models.mdlm import MDLM, MDLMConfig  # noqa: E402
from dlmkit.models.real_configs import MDLM_OWT  # noqa: E402
from dlmkit.models.self_spec import SelfSpecConfig, SelfSpecMDLM  # noqa: E402
from dlmkit.results import atomic_write_json, git_state, package_versions  # noqa: E402
from dlmkit.timing import Timing, time_calls  # noqa: E402

SCHEMA = 1

# The published numbers (REFERENCE.md; dlmkit/data/published/published_timing.json, A100).
PAPER = {
    "dream_ms_per_step": 42.0,
    "ar_ms_per_token": 18.3,
    "pipeline_ms": 2371.0,
    "dream_128_steps_ms": 5383.0,
    "pipeline_speedup": 2.27,
    "specdiff_vs_ar": 7.2,
    "specdiff_vs_sd": 1.75,
    "clsd_block_ms": 500.0,
    "h100_matmul_tflops": 790.0,
    "h100_copy_tbps": 3.0,
}

# Sizes of the real run and of the smoke run: the same code, only these differ.
SIZES = {
    "real": {
        "peaks": dict(size=8192, copy_bytes=1 << 32),
        "dream": dict(config="dream-7b", canvas=512, prompt_len=64, repeats=10, warmup=3, sampler_steps=8,
                      sampler_repeats=3),
        "forced": dict(config="qwen2.5-0.5b", prompts=16, batch=16, fraction=0.10, ar_tokens=128, prompt_len=64,
                       repeats=3, synthetic_anchors=47),
        "pipeline": dict(steps=128, cutoff=13, ar_tokens=100, repeats=3, warmup=0),
        "specdiff": dict(config="paper", context=512, gammas=[2, 4, 8, 16], steps=[1, 2, 4, 8],
                         acceptance=[0.5, 0.7, 0.9], repeats=10, warmup=3),
        "clsd": dict(config="qwen3.5-9b", candidates=32, block_len=128, euler_steps=2, prompt_len=256, repeats=5,
                     warmup=2),
        "self_spec": dict(mdlm=dict(MDLM_OWT, dropout=0.0), batch=1, prefix=0, dtau=1 / 32, repeats=10, warmup=3),
    },
    "smoke": {
        "peaks": dict(size=256, copy_bytes=1 << 22),
        "dream": dict(config="tiny", canvas=32, prompt_len=8, repeats=3, warmup=1, sampler_steps=4,
                      sampler_repeats=2),
        "forced": dict(config="tiny", prompts=3, batch=3, fraction=0.10, ar_tokens=8, prompt_len=8, repeats=2,
                       max_gen_len=24, synthetic_anchors=6),
        "pipeline": dict(steps=8, cutoff=2, ar_tokens=10, repeats=2, warmup=0),
        "specdiff": dict(config="tiny", context=16, gammas=[2, 4], steps=[1, 2], acceptance=[0.7], repeats=2,
                         warmup=1),
        "clsd": dict(config="tiny", candidates=2, block_len=8, euler_steps=2, prompt_len=8, repeats=2, warmup=1),
        "self_spec": dict(mdlm=dict(vocab_size=64, model_length=32, hidden_dim=32, cond_dim=8, n_blocks=1, n_heads=2,
                                    dropout=0.0), batch=1, prefix=0, dtau=1 / 8, repeats=2, warmup=1),
    },
}

# Seconds per group on a GPU; the whole suite stays under 8 minutes.
BUDGETS = {"peaks": 20, "dream": 75, "forced": 100, "pipeline": 60, "specdiff": 60, "clsd": 100, "self_spec": 30}
SUITE_LIMIT_S = 480


class BudgetExceeded(Exception):
    pass


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes on a CPU (under a minute): checks code, not times")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="auto: bfloat16 on CUDA, float32 on a CPU (default auto)")
    p.add_argument("--only", default=None, help=f"comma list of groups (default all: {','.join(BUDGETS)})")
    p.add_argument("--out", type=Path, default=None,
                   help="the JSON to write (default results/gpu/<device>-<time>.json)")
    p.add_argument("--published", type=Path, default=bench_forced.PUBLISHED,
                   help="published anchor patterns for the forced group (synthetic patterns when absent)")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiply every group's time budget (default 1)")
    args = p.parse_args(argv)
    groups = args.only.split(",") if args.only else list(BUDGETS)
    unknown = [g for g in groups if g not in BUDGETS]
    if unknown:
        p.error(f"unknown group(s) {unknown}; choose from {','.join(BUDGETS)}")
    args.groups = groups
    return args


# --------------------------------------------------------------------------- the record


def figure(value, unit: str, *, paper=None, paper_note: str = "", spread: Timing | dict | None = None, **details):
    if isinstance(spread, Timing):
        spread = spread.to_dict()
    ratio = value / paper if (value is not None and paper) else None
    return {"value": value, "unit": unit, "spread": spread, "paper": paper, "paper_note": paper_note,
            "ratio_to_paper": ratio, "error": None, "details": details}


def device_record(device: str) -> dict:
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        return {"type": "cuda", "name": props.name, "capability": f"{props.major}.{props.minor}",
                "memory_gib": props.total_memory / 2**30, "count": torch.cuda.device_count(),
                "multiprocessors": props.multi_processor_count}
    import os
    import platform

    return {"type": "cpu", "name": platform.processor() or platform.machine(), "capability": None,
            "memory_gib": None, "count": os.cpu_count(), "threads": torch.get_num_threads()}


def versions() -> dict:
    out = package_versions()
    out["cuda"] = torch.version.cuda
    out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    import importlib.util

    out["flash_linear_attention"] = importlib.util.find_spec("fla") is not None
    return out


def peak_memory_gib(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux: the process's high-water mark


@contextlib.contextmanager
def alarm(seconds: float):
    """Raise BudgetExceeded in this (main) thread after `seconds`; a no-op where SIGALRM is absent."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def ring(signum, frame):
        raise BudgetExceeded(f"over its hard limit of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --------------------------------------------------------------------------- shared models


def build_dream(ctx):
    if "dream" not in ctx.models:
        s = ctx.sizes["dream"]
        config = dream_config(s["config"])
        ctx.models["dream"] = random_dream(config, seed=0, device=ctx.device, dtype=ctx.dtype)
    return ctx.models["dream"]


def build_ar(ctx):
    if "ar" not in ctx.models:
        s = ctx.sizes["forced"]
        args = SimpleNamespace(device=ctx.device, config=s["config"], dtype=str(ctx.dtype).removeprefix("torch."),
                               seed=0)
        model, _, _ = bench_forced.build_model(args)
        ctx.models["ar"] = model
    return ctx.models["ar"]


def paper_sampling() -> dict:
    """The paper's Dream sampling settings (entropy order, T 0.2, top_p 0.95, top_k 50): top-p sorts the
    152064-way distribution at every masked position, part of what a step costs."""
    d = DreamSettings(max_new_tokens=1)
    return dict(alg=d.alg, temperature=d.temperature, top_p=d.top_p, top_k=d.top_k, eps=d.eps)


def dream_prompt(ctx, model):
    s = ctx.sizes["dream"]
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, model.config.vocab_size, (1, s["prompt_len"]), generator=gen)
    prompt[prompt == model.mask_token_id] = 0
    return prompt.to(ctx.device)


# --------------------------------------------------------------------------- groups


def group_peaks(ctx):
    """Matmul rate and copy bandwidth, each the median of timed calls on random data (METHOD.md)."""
    s = ctx.sizes["peaks"]
    size, nbytes = s["size"], s["copy_bytes"]

    def matmul_timing():  # operands freed on return
        a = torch.randn(size, size, dtype=ctx.dtype, device=ctx.device)
        b = torch.randn(size, size, dtype=ctx.dtype, device=ctx.device)
        return time_calls(lambda: a @ b, ctx.device, 10, 2, deadline=ctx.soft_deadline(0.5))

    def copy_timing():
        src = torch.randn(nbytes // 4, dtype=torch.float32, device=ctx.device)
        dst = torch.empty_like(src)
        return time_calls(lambda: dst.copy_(src), ctx.device, 10, 2, deadline=ctx.soft_deadline())

    matmul, copy = matmul_timing(), copy_timing()

    def rate(timing: Timing, work: float) -> dict:  # a time spread as a rate spread (fast = max)
        return {"median": work / timing.median_ms, "min": work / timing.max_ms, "max": work / timing.min_ms,
                "n": timing.n, "rel_spread": (timing.max_ms - timing.min_ms) / timing.median_ms}

    tflops = rate(matmul, 2 * size**3 / 1e9)  # per ms -> TFLOP/s
    tbps = rate(copy, 2 * nbytes / 1e9)  # read + write
    ctx.peaks = (tflops["median"] * 1e12, tbps["median"] * 1e12)
    return {
        "matmul_tflops": figure(tflops["median"], "TFLOP/s", paper=PAPER["h100_matmul_tflops"], spread=tflops,
                                paper_note="REFERENCE.md section 5: H100 bf16 matmul (not a paper figure)",
                                size=size, dtype=str(ctx.dtype)),
        "copy_tbps": figure(tbps["median"], "TB/s", paper=PAPER["h100_copy_tbps"], spread=tbps,
                            paper_note="REFERENCE.md section 5: H100 device copy, read + write (not a paper figure)",
                            bytes=nbytes),
    }


def group_dream(ctx):
    s = ctx.sizes["dream"]
    model = build_dream(ctx)
    prompt = dream_prompt(ctx, model)
    answer = s["canvas"] - s["prompt_len"]
    canvas = torch.cat([prompt, torch.full((1, answer), model.mask_token_id, device=ctx.device)], dim=1)
    with torch.no_grad():
        forward = time_calls(lambda: model(canvas), ctx.device, s["repeats"], s["warmup"],
                             deadline=ctx.soft_deadline(0.5))
        steps = s["sampler_steps"]
        run = time_calls(lambda: diffusion_generate(model, prompt, max_new_tokens=answer, steps=steps,
                                                    **paper_sampling(),
                                                    generator=torch.Generator(device=ctx.device).manual_seed(0)),
                         ctx.device, s["sampler_repeats"], 1, deadline=ctx.soft_deadline())
    step = Timing([t / steps for t in run.samples_ms])
    flops_peak, bw_peak = ctx.peaks or (PAPER["h100_matmul_tflops"] * 1e12, PAPER["h100_copy_tbps"] * 1e12)
    bytes_per_param = torch.finfo(ctx.dtype).bits // 8
    flops, nbytes, bound = bench_dream.roofline_seconds(model.config, s["canvas"], 1, bytes_per_param, flops_peak,
                                                       bw_peak)
    ctx.shared["dream_step_ms"] = step.median_ms
    note = "A100, Dream-v0-Instruct-7B, prompt + 256 new tokens, 128 steps (published_timing.json)"
    geometry = dict(config=s["config"], canvas=s["canvas"], prompt_len=s["prompt_len"], batch=1,
                    params=model.num_parameters())
    return {
        "dream_forward_ms": figure(forward.median_ms, "ms/step", paper=PAPER["dream_ms_per_step"], spread=forward,
                                   paper_note=note + "; the paper's step includes the sampler", **geometry),
        "dream_step_ms": figure(step.median_ms, "ms/step", paper=PAPER["dream_ms_per_step"], spread=step,
                                paper_note=note, sampler_steps=steps, sampling=paper_sampling(), **geometry),
        "dream_roofline_ratio": figure(forward.median_ms / (bound * 1e3), "x over the roofline bound",
                                       bound_ms=bound * 1e3, gflop=flops / 1e9, weight_gb=nbytes / 1e9,
                                       peaks="measured (peaks group)" if ctx.peaks else "H100 defaults",
                                       peak_tflops=flops_peak / 1e12, peak_tbps=bw_peak / 1e12),
    }


def synthetic_patterns(count: int, max_gen_len: int, fraction: float, anchors: int) -> list[dict]:
    """Stand-ins for the published patterns when the file is absent: answers of a few lengths whose
    anchors are a contiguous prefix of `anchors` positions (47 = Dream's commits by 10% of 128 steps
    on a 512 canvas; ~91% of published 10% anchor sets are a prefix), ids drawn at random."""
    gen = torch.Generator().manual_seed(0)
    lengths = [20, 60, 120, 250, 400]
    items = []
    for i in range(count):
        gen_len = min(lengths[i % len(lengths)], max_gen_len)
        n = min(gen_len, anchors)
        ids = torch.randint(0, 151643, (n,), generator=gen).tolist()
        items.append({"name": f"synthetic:{i}", "gen_len": gen_len,
                      "anchors": {fraction: Anchors.from_mapping(dict(zip(range(n), ids)), gen_len)}})
    return items


def forced_patterns(ctx) -> tuple[list[dict], str]:
    s = ctx.sizes["forced"]
    max_len = s.get("max_gen_len")
    if ctx.published.exists() and max_len is None:
        args = SimpleNamespace(anchors=None, published=ctx.published, limit=None, fractions=[s["fraction"]],
                               steps=128)
        items = bench_forced.load_patterns(args)
        stride = max(1, len(items) // s["prompts"])  # evenly through the file: MMLU, ARC, GSM8K and HumanEval
        return items[::stride][:s["prompts"]], f"{ctx.published} (every {stride}th)"
    return (synthetic_patterns(s["prompts"], max_len or 512, s["fraction"], s["synthetic_anchors"]),
            "synthetic (see synthetic_patterns)")


def group_forced(ctx):
    s = ctx.sizes["forced"]
    model = build_ar(ctx)
    vocab = model.config.vocab_size
    bench_forced.warm_up(model, ctx.device, vocab)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (s["prompt_len"],), generator=gen).tolist()
    n = s["ar_tokens"]
    # Plain decoding: one token per forward over a KV cache, no anchors (the paper's AR cost).
    plain = time_calls(lambda: forced_decode(model, [prompt], [{}], max_new_tokens=n, rule="fixed", chunked=False),
                       ctx.device, s["repeats"], 1, deadline=ctx.soft_deadline(0.3))
    per_token = Timing([t / n for t in plain.samples_ms])
    ctx.shared["ar_ms_per_token"] = per_token.median_ms

    items, source = forced_patterns(ctx)
    prompts = [torch.randint(0, vocab, (s["prompt_len"],), generator=gen).tolist() for _ in items]
    b1, b16, passes = [], [], None
    for i in range(s["repeats"]):
        if i and time.perf_counter() > ctx.soft_deadline():
            break
        result = bench_forced.run_fraction(model, ctx.device, prompts, items, s["fraction"], vocab, ["ours"],
                                           s["batch"])
        summary = bench_forced.summarize(result, ["ours"])
        b1.append(summary["ours_ms"] / len(items))
        b16.append(result["batched"]["ms"] / len(items) if result["batched"] else summary["ours_ms"] / len(items))
        passes = {"positions": summary["positions"], "gap_positions": summary["gap_positions"],
                  "ours_passes": summary["ours_passes"],
                  "batched_passes": result["batched"]["passes"] if result["batched"] else None,
                  "batched_identical_to_unbatched": result["batched"]["identical_to_unbatched"]
                  if result["batched"] else None}
    ctx.shared["forced_ms_per_prompt"] = statistics.median(b1)
    ctx.shared["forced_per_prompt_ms"] = [r["ours_ms"] for r in result["rows"]]
    common = dict(config=s["config"], prompts=len(items), patterns=source, fraction=s["fraction"], **passes)
    b1, b16 = Timing(b1), Timing(b16)
    return {
        "ar_ms_per_token": figure(per_token.median_ms, "ms/token", paper=PAPER["ar_ms_per_token"], spread=per_token,
                                  paper_note="A100, Qwen2.5-0.5B-Instruct, HF generate, batch 1",
                                  config=s["config"], tokens=n, prompt_len=s["prompt_len"],
                                  note="includes one prefill of the prompt"),
        "forced_ms_per_prompt_b1": figure(b1.median_ms, "ms/prompt", spread=b1, **common),
        "forced_ms_per_prompt_b16": figure(b16.median_ms, "ms/prompt", spread=b16, batch=s["batch"], **common),
        "forced_batch_speedup": figure(b1.median_ms / b16.median_ms, "x (batch 1 / batched, per prompt)",
                                       batch=s["batch"]),
    }


def group_pipeline(ctx):
    s = ctx.sizes["pipeline"]
    d = ctx.sizes["dream"]
    model = build_dream(ctx)
    prompt = dream_prompt(ctx, model)
    answer = d["canvas"] - d["prompt_len"]
    cutoff, steps = s["cutoff"], s["steps"]
    marks = {}

    def hook(step, x, logits):
        if step == cutoff - 1:
            synchronize(ctx.device)
            marks["cutoff"] = time.perf_counter()

    def run():
        return diffusion_generate(model, prompt, max_new_tokens=answer, steps=steps, **paper_sampling(),
                                  tokens_hook=hook, generator=torch.Generator(device=ctx.device).manual_seed(0))

    full, first = [], []
    with torch.no_grad():
        for _ in range(s["warmup"]):
            run()
        for i in range(s["repeats"]):
            if i and time.perf_counter() + full[-1] / 1e3 > ctx.soft_deadline():
                break
            synchronize(ctx.device)
            start = time.perf_counter()
            out = run()
            synchronize(ctx.device)
            full.append(1000 * (time.perf_counter() - start))
            first.append(1000 * (marks["cutoff"] - start))
    full, first = Timing(full), Timing(first)
    commits = int(out.committed_by(cutoff).sum())
    figures = {
        "dream_128_steps_ms": figure(full.median_ms, "ms", paper=PAPER["dream_128_steps_ms"], spread=full,
                                     paper_note="A100, 128 steps, prompt + 256 new tokens", steps=steps,
                                     canvas=d["canvas"], config=d["config"]),
    }
    ar = ctx.shared.get("ar_ms_per_token")
    if ar is None:
        raise UserError("the forced group did not measure ar_ms_per_token; the pipeline figures need it")
    pipeline = first.median_ms + s["ar_tokens"] * ar
    figures["pipeline_ms"] = figure(pipeline, "ms", paper=PAPER["pipeline_ms"],
                                    paper_note="the paper's estimate: 13 Dream steps + 100 Qwen-0.5B tokens (A100)",
                                    dream_steps_ms=first.median_ms, dream_steps=cutoff, ar_tokens=s["ar_tokens"],
                                    ar_ms_per_token=ar, committed_at_cutoff=commits, first_steps_spread=first.to_dict())
    figures["pipeline_speedup"] = figure(full.median_ms / pipeline, "x (full run / pipeline)",
                                         paper=PAPER["pipeline_speedup"], paper_note="5383 / 2371 ms")
    forced = ctx.shared.get("forced_ms_per_prompt")
    if forced is not None:
        figures["pipeline_forced_ms"] = figure(
            first.median_ms + forced, "ms", dream_steps=cutoff,
            note="13 steps + the mean forced-decoding time per published 10% pattern (batch 1), measured")
    return figures


def group_specdiff(ctx):
    s = ctx.sizes["specdiff"]
    config = bench_specdiff.CONFIGS[s["config"]]
    spread = {}
    costs = bench_specdiff.measure(config, s["context"], s["gammas"], ctx.device, ctx.dtype, s["repeats"], s["warmup"],
                                   "median", spread)
    rows = bench_specdiff.grid_rows(costs, s["gammas"], s["steps"], s["acceptance"], None)
    best_ar = max(rows, key=lambda r: r["specdiff_speedup_vs_ar"])
    best_sd = max(rows, key=lambda r: r["specdiff_speedup_vs_sd"])
    cell = ("gamma", "steps", "acceptance")
    note = "cost model at an assumed i.i.d. acceptance (not measured with trained models): the grid's best cell"
    return {
        "specdiff_target_step_ms": figure(costs["target_step_ms"], "ms", spread=spread["target_step_ms"],
                                          target=s["config"], context=s["context"]),
        "specdiff_drafter_token_ms": figure(costs["drafter_token_ms"], "ms", spread=spread["drafter_token_ms"]),
        "specdiff_mdlm_call_ms": figure(costs["mdlm_call_ms"], "ms", spread=spread["mdlm_call_ms"],
                                        canvas=config["mdlm"]["model_length"]),
        "specdiff_speedup_vs_ar": figure(best_ar["specdiff_speedup_vs_ar"], "x", paper=PAPER["specdiff_vs_ar"],
                                         paper_note="SpecDiff summary: up to 7.2x over AR decoding", note=note,
                                         **{k: best_ar[k] for k in cell}),
        "specdiff_speedup_vs_sd": figure(best_sd["specdiff_speedup_vs_sd"], "x", paper=PAPER["specdiff_vs_sd"],
                                         paper_note="SpecDiff summary: up to 1.75x over speculative decoding "
                                                    "with an AR drafter", note=note,
                                         **{k: best_sd[k] for k in cell},
                                         verify_ms={str(g): v for g, v in costs["target_verify_ms"].items()}),
    }


def group_clsd(ctx):
    s = ctx.sizes["clsd"]
    config = bench_clsd.build_config(s["config"])
    times, info = bench_clsd.measure_blocks(config, ctx.device, ctx.dtype, candidates=s["candidates"],
                                            block_len=s["block_len"], euler_steps=s["euler_steps"],
                                            prompt_len=s["prompt_len"], repeats=s["repeats"], warmup=s["warmup"],
                                            deadline=ctx.soft_deadline())
    total = Timing([a + b for a, b in times])
    return {
        "clsd_block_ms": figure(total.median_ms, "ms/block", paper=PAPER["clsd_block_ms"], spread=total,
                                paper_note="model card target: < 500 ms per 128-token block (B200, 9B)",
                                draft_ms=statistics.median(t[0] for t in times),
                                score_ms=statistics.median(t[1] for t in times),
                                **{k: s[k] for k in ("config", "candidates", "block_len", "euler_steps", "prompt_len")},
                                **info),
    }


def group_self_spec(ctx):
    s = ctx.sizes["self_spec"]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(ctx.dtype)
    try:
        torch.manual_seed(0)
        with torch.device(ctx.device):
            mdlm = MDLM(MDLMConfig(**s["mdlm"]))
            model = SelfSpecMDLM(mdlm, SelfSpecConfig.for_backbone(mdlm, dropout=0.0)).eval()
    finally:
        torch.set_default_dtype(previous)
    with torch.no_grad():  # off the zero-initialised output layer, so the draft is not uniform
        mdlm.backbone.output_layer.linear.weight.normal_(0, 0.02)
    length = mdlm.config.model_length
    canvas = torch.full((s["batch"], length), model.mask_id, dtype=torch.long, device=ctx.device)
    if s["prefix"]:
        canvas[:, :s["prefix"]] = torch.randint(0, model.mask_id, (s["batch"], s["prefix"]), device=ctx.device)
    outs = []

    def step():
        gen = torch.Generator(device=ctx.device).manual_seed(0)
        outs.append(self_spec_sample(model, canvas, s["dtau"], generator=gen, max_steps=1))

    timing = time_calls(step, ctx.device, s["repeats"], s["warmup"], deadline=ctx.soft_deadline())
    last = outs[-1]
    return {
        "self_spec_step_ms": figure(timing.median_ms, "ms/step", spread=timing,
                                    note="one step: non-causal draft pass + causal verify pass + accept/resample",
                                    batch=s["batch"], model_length=length, vocab=mdlm.config.vocab_size,
                                    params=sum(p.numel() for p in model.parameters()), dtau=s["dtau"],
                                    drafted=int(last.drafted.sum()), accepted=int(last.accepted.sum())),
    }


GROUPS = {"peaks": group_peaks, "dream": group_dream, "forced": group_forced, "pipeline": group_pipeline,
          "specdiff": group_specdiff, "clsd": group_clsd, "self_spec": group_self_spec}
# The last group that uses a shared model frees it.
RELEASE_AFTER = {"pipeline": ("dream", "ar")}
FIGURES = {  # every figure each group writes (an error fills them all)
    "peaks": ["matmul_tflops", "copy_tbps"],
    "dream": ["dream_forward_ms", "dream_step_ms", "dream_roofline_ratio"],
    "forced": ["ar_ms_per_token", "forced_ms_per_prompt_b1", "forced_ms_per_prompt_b16", "forced_batch_speedup"],
    "pipeline": ["dream_128_steps_ms", "pipeline_ms", "pipeline_speedup", "pipeline_forced_ms"],
    "specdiff": ["specdiff_target_step_ms", "specdiff_drafter_token_ms", "specdiff_mdlm_call_ms",
                 "specdiff_speedup_vs_ar", "specdiff_speedup_vs_sd"],
    "clsd": ["clsd_block_ms"],
    "self_spec": ["self_spec_step_ms"],
}


# --------------------------------------------------------------------------- the run


class Context:
    def __init__(self, device, dtype, sizes, published, budget_scale):
        self.device, self.dtype, self.sizes, self.published = device, dtype, sizes, published
        self.budget_scale = budget_scale
        self.models, self.shared, self.peaks = {}, {}, None
        self.start = self.budget = None

    def soft_deadline(self, share: float = 1.0) -> float:
        """perf_counter() by which the repeats of this group (or `share` of its budget) should end."""
        return self.start + share * 0.8 * self.budget

    def free(self, *names):
        for name in names:
            self.models.pop(name, None)
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()


def default_out(device_name: str, smoke: bool) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    slug = "".join(c if c.isalnum() else "-" for c in device_name.lower()).strip("-")
    return REPO / "results" / "gpu" / f"{'smoke-' if smoke else ''}{slug}-{stamp}.json"


def run_suite(args) -> dict:
    device = resolve_device(args.device)
    dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
             "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    sizes = SIZES["smoke" if args.smoke else "real"]
    if not args.smoke and not device.startswith("cuda"):
        print("note: the real sizes on a CPU take far longer than the budgets allow; pass --smoke", file=sys.stderr)
    dev = device_record(device)
    out = args.out or default_out(dev["name"], args.smoke)
    record = {"suite": "gpu_suite", "schema": SCHEMA, "smoke": args.smoke,
              "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "wall_s": None,
              "status": "running", "device": dev, "dtype": str(dtype).removeprefix("torch."), "versions": versions(),
              "git": git_state(), "argv": getattr(args, "argv", sys.argv[1:]),
              "paper": PAPER, "groups": {}, "figures": {}}
    ctx = Context(device, dtype, sizes, args.published, args.budget_scale)
    suite_start = time.perf_counter()
    for name in args.groups:
        budget = BUDGETS[name] * args.budget_scale
        ctx.start, ctx.budget = time.perf_counter(), budget
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(torch.device(device))
        error, figures = None, {}
        spent = ctx.start - suite_start
        print(f"[gpu_suite] {name} (budget {budget:.0f} s, {spent:.0f} s spent)", file=sys.stderr, flush=True)
        try:
            if not args.smoke and spent + budget > SUITE_LIMIT_S * args.budget_scale + 30:
                raise BudgetExceeded(f"skipped: the suite's {SUITE_LIMIT_S} s would be exceeded")
            with alarm(1.5 * budget):
                figures = GROUPS[name](ctx)
        except Exception as exc:  # noqa: BLE001 - one figure's failure is recorded and the suite goes on
            error = f"{type(exc).__name__}: {exc}".strip()[:2000]
            ctx.free(*ctx.models)  # a failed group may leave half-built models behind
        seconds = time.perf_counter() - ctx.start
        record["groups"][name] = {"seconds": seconds, "budget_s": budget, "error": error,
                                  "peak_memory_gib": peak_memory_gib(device), "sizes": sizes[name]}
        for fig in FIGURES[name]:
            entry = figures.get(fig) or {"value": None, "unit": None, "spread": None, "paper": None, "paper_note": "",
                                         "ratio_to_paper": None, "details": {},
                                         "error": error or "not measured (a figure it needs failed)"}
            record["figures"][fig] = {"group": name, **entry}
        ctx.free(*RELEASE_AFTER.get(name, ()))
        record["wall_s"] = time.perf_counter() - suite_start
        atomic_write_json(out, record)
    ctx.free(*list(ctx.models))
    record["status"] = "done"
    record["wall_s"] = time.perf_counter() - suite_start
    atomic_write_json(out, record)
    record["out"] = str(out)
    return record


def print_table(record: dict) -> None:
    print(f"\n## gpu_suite on {record['device']['name']} ({record['dtype']}{', smoke' if record['smoke'] else ''}), "
          f"{record['wall_s']:.0f} s\n")
    print("| figure | value | unit | spread (min..max, n) | paper | ratio |")
    print("|---|---|---|---|---|---|")
    for name, f in record["figures"].items():
        if f["error"]:
            print(f"| {name} | ERROR | | {f['error'][:80]} | {f['paper'] or ''} | |")
            continue
        sp = f["spread"]
        spread = f"{sp['min']:.4g}..{sp['max']:.4g}, {sp['n']}" if sp else ""
        ratio = f"{f['ratio_to_paper']:.3g}" if f["ratio_to_paper"] else ""
        print(f"| {name} | {f['value']:.4g} | {f['unit']} | {spread} | {f['paper'] or ''} | {ratio} |")
    print(f"\nwrote {record['out']}")


def main(argv=None) -> int:
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    record = run_suite(args)
    print_table(record)
    return 0


if __name__ == "__main__":
    run_main(main)
