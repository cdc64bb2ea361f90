"""Per-call costs of SpecDiff's pieces at real size (random weights), and the speedups they imply.

Measured, each as the median (--stat) of --repeats timed calls after --warmup untimed ones, batch 1
(on a CPU shared with other jobs, --stat min is the steadier: preemption only ever adds time):

  target step      the target's forward of 1 token over a KV cache of --context tokens (an AR step)
  target verify g  the target's forward of g + 1 tokens over the same cache (one speculative round)
  drafter token    the AR drafter's forward of 1 token over a cache of --context tokens
  mdlm call        one MDLM denoising call over its whole canvas (model_length positions: once the
                   context is long, SpecDiff's canvas is the last model_length - g tokens + g masks)

Configs (transformers GPT2Config / our MDLMConfig; weights random, so only times mean anything):
  paper  target gpt2-xl (48 x 1600, 25 heads, 1.56 B), drafter gpt2 (12 x 768, 124 M),
         MDLM mdlm-owt (12 blocks, 768 hidden, 12 heads, vocab 50258, length 1024, 169 M);
         bf16 on CUDA (--dtype)
  tiny   the shipped tiny geometries of SpecDiff's roles (target 12 x 48, AR drafter 2 x 64, MDLM
         drafter 2 blocks x 64 over a 64-token canvas, vocab 1207): runs on a CPU in seconds

Implied speedup. With per-draft acceptance a (i.i.d., Leviathan et al. 2023) a round of g drafts
emits E(a, g) = (1 - a^(g+1)) / (1 - a) tokens in expectation, so per emitted token

  AR        target step
  SD        (g * drafter token + target verify g) / E(a_sd, g)
  SpecDiff  (T * mdlm call + target verify g) / E(a, g)      (T denoising calls; ddpm_cache may make fewer)

Acceptance comes from --acceptance / --sd-acceptance (a grid by default), or, with --summary,
from a specdiff_bench.py run: each cell's measured accepted drafts per round and drafter calls
per round (the tiny models' acceptance applied to real-size costs: a what-if, not a measurement
of the paper's models).

    OMP_NUM_THREADS=1 python benchmarks/bench_specdiff.py --config tiny
    python benchmarks/bench_specdiff.py --config paper --device cuda
    python benchmarks/bench_specdiff.py --config paper --device cuda --summary results/specdiff_bench/tiny/summary.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from dlmkit.cli import (OneLineParser, positive_int, probability, resolve_device, resolve_dtype,  # noqa: E402
                        run_main)
from dlmkit.errors import UserError  # noqa: E402
from dlmkit.models.cache import cache_kwargs  # noqa: E402
from dlmkit.models.real_configs import GPT2, GPT2_XL, MDLM_OWT  # noqa: E402
from dlmkit.results import atomic_write_json, markdown_table  # noqa: E402
from dlmkit.timing import time_calls  # noqa: E402
from dlmkit.train.recipes.causal_lm import SIZES as TINY_SIZES  # noqa: E402
from dlmkit.train.recipes.mdlm import DRAFTER_SIZE as TINY_MDLM_DRAFTER  # noqa: E402

CONFIGS = {
    "paper": {  # dlmkit/models/real_configs.py
        "target": GPT2_XL,
        "drafter": GPT2,
        "mdlm": {**MDLM_OWT, "dropout": 0.0},
        "context": 512,
    },
    "tiny": {  # the shipped tiny geometries, read from their recipes
        "target": dict(vocab_size=1207, bos_token_id=0, eos_token_id=0, **TINY_SIZES["target"][1]),
        "drafter": dict(vocab_size=1207, bos_token_id=0, eos_token_id=0, **TINY_SIZES["drafter"][1]),
        "mdlm": dict(vocab_size=1207, **TINY_MDLM_DRAFTER),
        "context": 64,
    },
}


def parse_args(argv=None):
    p = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="tiny",
                   help="model geometries: paper (gpt2-xl, gpt2, mdlm-owt; a GPU) or tiny (CPU) (default tiny)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="auto: bfloat16 on CUDA, float32 on CPU (default auto)")
    p.add_argument("--context", type=positive_int, default=None,
                   help="tokens already in the KV caches (default: paper 512, tiny 64)")
    p.add_argument("--gammas", type=positive_int, nargs="+", default=[2, 4, 8, 16], help="draft lengths (default 2 4 8 16)")
    p.add_argument("--steps", type=positive_int, nargs="+", default=[1, 2, 4, 8], help="MDLM steps T (default 1 2 4 8)")
    p.add_argument("--acceptance", type=probability, nargs="+", default=[0.5, 0.7, 0.9],
                   help="SpecDiff per-draft acceptance rates to evaluate (default 0.5 0.7 0.9)")
    p.add_argument("--sd-acceptance", type=probability, default=None,
                   help="the AR drafter's acceptance (default: the same as each --acceptance)")
    p.add_argument("--summary", type=Path, default=None,
                   help="a specdiff_bench.py summary.json: use its measured accepted drafts and drafter calls per round")
    p.add_argument("--repeats", type=positive_int, default=10, help="timed calls per measurement (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls first (default 3)")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="summary of the timed calls: median, or min on a loaded machine (default median)")
    p.add_argument("--out", type=Path, default=None, help="also write the measurements and tables to this JSON file")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- timing


STAT = {"median": statistics.median, "min": min}


def time_ms(fn, device, repeats: int, warmup: int, stat: str = "median", spread: dict | None = None,
            key: str | None = None) -> float:
    """The --stat of `repeats` timed calls; with `spread`, also spread[key] = median/min/max/n."""
    timing = time_calls(fn, device, repeats, warmup)
    if spread is not None:
        spread[key] = timing.to_dict()
    return STAT[stat](timing.samples_ms)


def cached_forward_ms(model, context: int, width: int, device, repeats: int, warmup: int, stat: str,
                      spread: dict | None = None, key: str | None = None) -> float:
    """A forward of `width` new tokens over a DynamicCache holding `context` tokens (cropped back after
    every call, as the speculative loop does after a rejection)."""
    from transformers import DynamicCache

    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, vocab, (1, context), generator=gen).to(device)
    new = torch.randint(0, vocab, (1, width), generator=gen).to(device)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(input_ids=prefix, use_cache=True, logits_to_keep=1, **cache_kwargs(cache))

        def call():
            model(input_ids=new, use_cache=True, logits_to_keep=width, **cache_kwargs(cache))
            cache.crop(-width)

        return time_ms(call, device, repeats, warmup, stat, spread, key)


def mdlm_call_ms(model, device, repeats: int, warmup: int, stat: str, spread: dict | None = None) -> float:
    length, mask = model.config.model_length, model.mask_id
    canvas = torch.randint(0, mask, (1, length), generator=torch.Generator().manual_seed(0)).to(device)
    canvas[:, -8:] = mask
    with torch.no_grad():
        return time_ms(lambda: model(canvas), device, repeats, warmup, stat, spread, "mdlm_call_ms")


def measure(config: dict, context: int, gammas: list[int], device, dtype, repeats: int, warmup: int,
            stat: str = "median", spread: dict | None = None) -> dict:
    """Per-call costs in ms (see the module docstring); with `spread`, each call's median/min/max/n
    lands there under the same key (the verify calls as target_verify_ms_G)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from dlmkit.models.mdlm import MDLM, MDLMConfig

    def build(cls, cfg):  # made on the device in its dtype: no CPU copy of gpt2-xl
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            with torch.device(device):
                return cls(cfg).eval()
        finally:
            torch.set_default_dtype(previous)

    costs = {}
    torch.manual_seed(0)
    target = build(GPT2LMHeadModel, GPT2Config(**config["target"]))
    costs["target_step_ms"] = cached_forward_ms(target, context, 1, device, repeats, warmup, stat, spread,
                                                "target_step_ms")
    costs["target_verify_ms"] = {g: cached_forward_ms(target, context, g + 1, device, repeats, warmup, stat, spread,
                                                      f"target_verify_ms_{g}")
                                 for g in gammas}
    del target
    drafter = build(GPT2LMHeadModel, GPT2Config(**config["drafter"]))
    costs["drafter_token_ms"] = cached_forward_ms(drafter, context, 1, device, repeats, warmup, stat, spread,
                                                  "drafter_token_ms")
    del drafter
    mdlm = build(MDLM, MDLMConfig(**config["mdlm"]))
    costs["mdlm_call_ms"] = mdlm_call_ms(mdlm, device, repeats, warmup, stat, spread)
    return costs


# --------------------------------------------------------------------------- the cost model


def expected_tokens(acceptance: float, gamma: int) -> float:
    """Tokens one round emits in expectation (accepted drafts + the resampled or bonus token)."""
    if acceptance >= 1:
        return gamma + 1.0
    return (1 - acceptance ** (gamma + 1)) / (1 - acceptance)


def implied(costs: dict, gamma: int, steps: float, tokens_specdiff: float, tokens_sd: float) -> dict:
    verify = costs["target_verify_ms"][gamma]
    ar = costs["target_step_ms"]
    sd = (gamma * costs["drafter_token_ms"] + verify) / tokens_sd
    spec = (steps * costs["mdlm_call_ms"] + verify) / tokens_specdiff
    return {"ms_per_token_ar": ar, "ms_per_token_sd": sd, "ms_per_token_specdiff": spec,
            "sd_speedup_vs_ar": ar / sd, "specdiff_speedup_vs_ar": ar / spec, "specdiff_speedup_vs_sd": sd / spec}


def grid_rows(costs: dict, gammas, steps, acceptances, sd_acceptance) -> list[dict]:
    rows = []
    for a in acceptances:
        for g in gammas:
            for t in steps:
                a_sd = a if sd_acceptance is None else sd_acceptance
                rows.append({"acceptance": a, "sd_acceptance": a_sd, "gamma": g, "steps": t,
                             **implied(costs, g, t, expected_tokens(a, g), expected_tokens(a_sd, g))})
    return rows


def summary_rows(costs: dict, summary_path: Path) -> list[dict]:
    """Cells of a specdiff_bench.py run: measured tokens per round and drafter calls per round."""
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read --summary {summary_path} ({type(exc).__name__}); pass a specdiff_bench.py "
                        "summary.json") from None
    counts = [r for r in summary.get("tables", {}).get("counts", []) if r.get("prompt_set") == "all"]
    if not counts:
        raise UserError(f"{summary_path} has no `counts` table; pass a specdiff_bench.py summary.json")
    rows = []
    for temperature in sorted({r["temperature"] for r in counts}):
        cells = [r for r in counts if r["temperature"] == temperature]
        sd = [r for r in cells if r["family"] == "sd" and r["gamma"] in costs["target_verify_ms"]]
        for r in cells:
            if r["family"] != "specdiff" or r["gamma"] not in costs["target_verify_ms"]:
                continue
            per_round = r["tokens_per_target_call"]
            nfe = r["drafter_nfe"] / r["target_calls"]
            best_sd = None
            for s in sd:
                cost = implied(costs, s["gamma"], 0, 1, s["tokens_per_target_call"])["ms_per_token_sd"]
                best_sd = cost if best_sd is None else min(best_sd, cost)
            model = implied(costs, r["gamma"], nfe, per_round, 1.0)
            rows.append({"temperature": temperature, "cell": r["method"], "tokens_per_round": per_round,
                         "mdlm_calls_per_round": nfe, "specdiff_speedup_vs_ar": model["specdiff_speedup_vs_ar"],
                         "specdiff_speedup_vs_best_sd": best_sd / model["ms_per_token_specdiff"] if best_sd else None})
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    config = CONFIGS[args.config]
    context = args.context or config["context"]
    if context + max(args.gammas) + 1 > config["target"]["n_positions"]:
        raise UserError(f"--context {context} + gamma exceeds the target's {config['target']['n_positions']} positions")
    if device == "cpu" and args.config == "paper":
        print("note: the paper config on a CPU takes minutes per MDLM call; pass --config tiny for a quick run",
              file=sys.stderr)
    costs = measure(config, context, sorted(set(args.gammas)), device, dtype, args.repeats, args.warmup, args.stat)
    print(f"\n## per-call costs ({args.config}, {device}, {str(dtype).removeprefix('torch.')}, "
          f"context {context}, {args.stat} of {args.repeats})\n")
    print(markdown_table([{"call": "target step (1 token)", "ms": costs["target_step_ms"]}]
                         + [{"call": f"target verify ({g} + 1 tokens)", "ms": ms}
                            for g, ms in costs["target_verify_ms"].items()]
                         + [{"call": "drafter token", "ms": costs["drafter_token_ms"]},
                            {"call": f"mdlm call ({config['mdlm']['model_length']} canvas)", "ms": costs["mdlm_call_ms"]}]))
    rows = grid_rows(costs, sorted(set(args.gammas)), sorted(set(args.steps)), args.acceptance, args.sd_acceptance)
    print("\n## implied speedups (i.i.d. acceptance)\n")
    print(markdown_table(rows))
    best = max(rows, key=lambda r: r["specdiff_speedup_vs_ar"])
    print(f"\nbest: gamma {best['gamma']}, T {best['steps']}, acceptance {best['acceptance']}: "
          f"{best['specdiff_speedup_vs_ar']:.2f}x over AR, {best['specdiff_speedup_vs_sd']:.2f}x over SD "
          "(the paper: up to 7.2x and 1.75x)")
    measured = summary_rows(costs, args.summary) if args.summary else []
    if measured:
        print(f"\n## {args.summary}: measured acceptance at these costs\n")
        print(markdown_table(measured))
    if args.out:
        atomic_write_json(args.out, {"config": args.config, "device": device, "dtype": str(dtype), "context": context,
                                     "stat": args.stat, "repeats": args.repeats,
                                     "costs": costs, "implied": rows, "from_summary": measured})
    return 0


if __name__ == "__main__":
    run_main(main)
