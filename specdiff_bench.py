#!/usr/bin/env python
"""SpecDiff: an MDLM drafts gamma tokens in T denoising steps and an AR target verifies them
with lossless speculative sampling; AR decoding and AR-drafter speculative decoding are
the baselines.

Phases (method families), all run on the same prompts in one run:
  ar        plain AR decoding with the target (KV cache, one forward per token)
  sd        standard speculative decoding with the small AR drafter, for each --sd-gammas
  specdiff  SpecDiff over the grid --gammas x --steps (T denoising steps per draft)
  hf        transformers' assisted generation (generate(assistant_model=drafter), batch 1,
            constant --sd-gammas assistant tokens), timed as an external reference

Each method runs at every --temperatures (0 is greedy: drafts are argmaxes and the output
must equal the target's greedy decoding; above 0, lossless speculative sampling).

Prompts: tiny preset, held-out tiny-world documents (first --prompt-tokens tokens) and
chat prompts; paper preset, OpenWebText validation documents and CNN/DailyMail test
articles (first --prompt-tokens GPT-2 tokens; needs `datasets` and the hub).

Writes summary.json with tables `counts` (acceptance rate, accepted drafts per round,
tokens per target call, target calls saved over AR; the same for the same --seed on any
machine), `timing` (tokens/s, speedup over AR and over the fastest AR-drafter cell, by
wall clock and by process CPU time: this machine, this run) and `headline` (the best SpecDiff cell against both baselines),
one JSONL record per generation (<phase>.jsonl; --resume skips finished ones) and
speedup_vs_gamma.png.

    OMP_NUM_THREADS=1 python specdiff_bench.py                 # tiny preset, CPU, a few minutes
    python specdiff_bench.py --preset paper --device cuda      # mdlm-owt drafts for gpt2-xl
"""

from __future__ import annotations

import argparse
import sys

from dlmkit.cli import (build_parser, count_list, model_overrides, positive_int, resolve_device,
                       resolve_dtype, run_main, seed_everything, selected_phases)
from dlmkit.decoding.mdlm_sampler import SAMPLERS
from dlmkit.errors import UserError
from dlmkit.presets import resolve_models
from dlmkit.results import Run, default_out, echo, markdown_table, portable_source

PHASES = ["ar", "sd", "specdiff", "hf"]
ROLES = ["mdlm", "target", "drafter"]


def float_list(text: str) -> list[float]:
    try:
        values = sorted({float(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values or values[0] < 0:
        raise argparse.ArgumentTypeError(f"temperatures must be >= 0, got {text!r}")
    return values


def name_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def make_parser():
    parser = build_parser("specdiff_bench.py", __doc__, phases=PHASES, roles=ROLES)
    own = parser.add_argument_group("benchmark")
    own.add_argument("--prompt-sets", type=name_list, default=None, metavar="A,B",
                     help="prompt sets (default: tiny documents,chat; paper owt,cnn_dm); --subset N = prompts per set "
                          "(default: tiny 6, paper 50)")
    own.add_argument("--prompt-tokens", type=positive_int, default=None, metavar="N",
                     help="tokens of each document or article used as the prompt (default: tiny 12, paper 128)")
    own.add_argument("--max-new-tokens", type=positive_int, default=None, metavar="N",
                     help="tokens generated per prompt, a fixed length (default: tiny 64, paper 256)")
    own.add_argument("--gammas", type=count_list, default=None, metavar="G1,G2",
                     help="SpecDiff draft lengths (default: tiny 4,8,16; paper 5,10,15,20)")
    own.add_argument("--steps", type=count_list, default=None, metavar="T1,T2",
                     help="SpecDiff denoising steps per draft (default: tiny 1,2,4; paper 1,2,4,8)")
    own.add_argument("--sd-gammas", type=count_list, default=None, metavar="G1,G2",
                     help="draft lengths of the AR drafter (phases sd and hf) (default: tiny 2,4,8; paper 3,5,8)")
    own.add_argument("--temperatures", type=float_list, default=None, metavar="T1,T2",
                     help="sampling temperatures; 0 = greedy (default: 0,1)")
    own.add_argument("--sampler", choices=SAMPLERS, default="ddpm_cache",
                     help="MDLM sampler of the drafter; ddpm_cache skips calls whose input did not change")
    return parser


def main(argv=None) -> int:
    from dlmkit.experiments.specdiff import bench as specdiff

    parser = make_parser()
    args = parser.parse_args(argv)
    phases = selected_phases(args)
    defaults = specdiff.PRESET_DEFAULTS[args.preset]
    cfg = {
        "prompt_sets": args.prompt_sets or list(defaults["prompt_sets"]),
        "prompts": args.subset or defaults["prompts"],
        "prompt_tokens": args.prompt_tokens or defaults["prompt_tokens"],
        "max_new_tokens": args.max_new_tokens or defaults["max_new_tokens"],
        "gammas": args.gammas or list(defaults["gammas"]), "steps": args.steps or list(defaults["steps"]),
        "sd_gammas": args.sd_gammas or list(defaults["sd_gammas"]),
        "temperatures": args.temperatures or list(defaults["temperatures"]),
        "sampler": args.sampler, "seed": args.seed,
    }
    unknown = [s for s in cfg["prompt_sets"] if s not in specdiff.PROMPT_SETS[args.preset]]
    if unknown:
        raise UserError(f"--prompt-sets {','.join(unknown)} does not exist on the {args.preset} preset; choose from "
                        f"{','.join(specdiff.PROMPT_SETS[args.preset])}")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    roles = ["target"] + (["drafter"] if {"sd", "hf"} & set(phases) else []) + (["mdlm"] if "specdiff" in phases else [])
    specs = resolve_models(args.preset, roles, model_overrides(args))
    out = args.out or default_out(parser.prog, args.preset, args.subset)

    # Records carry no model or length: resuming with other ones would mix two runs.
    identity = {"seed": args.seed, "prompt_tokens": cfg["prompt_tokens"], "max_new_tokens": cfg["max_new_tokens"],
                "sampler": cfg["sampler"],
                "models": {role: portable_source(spec.source) for role, spec in specs.items()}}
    seed_everything(args.seed)
    run = Run(out, script=parser.prog, argv=sys.argv[1:] if argv is None else list(argv), preset=args.preset,
              models=specs, device=device, dtype=str(dtype).removeprefix("torch."), seed=args.seed,
              config={**cfg, "phases": phases}, identity=identity, resume=args.resume, overwrite=args.overwrite)

    bench = specdiff.Bench(specs, phases, device, dtype, cfg["sampler"])
    prompts = specdiff.load_prompts(args.preset, bench.tokenizer, cfg["prompt_sets"], cfg["prompts"],
                                    cfg["prompt_tokens"])
    methods = specdiff.methods_for(phases, cfg)
    specdiff.run_generations(run, bench, prompts, methods, cfg)
    for phase in phases:
        run.phase_done(phase)

    # Tables over every method in the run directory (a resumed run may add cells).
    wanted = {(p["set"], p["index"]) for p in prompts}
    records = [r for family in PHASES for r in run.log(family).records()
               if (r["prompt_set"], r["prompt_index"]) in wanted and r["temperature"] in cfg["temperatures"]]
    present = {r["method"] for r in records}
    all_methods = [m for m in specdiff.methods_for(PHASES, cfg) if m.name in present]
    result = specdiff.tables(records, all_methods, cfg)
    for name in ("counts", "timing"):
        run.add_table(name, result[name], echo=False)
        echo(f"\n### {name} (all prompt sets)\n\n"
             f"{markdown_table([r for r in result[name] if r['prompt_set'] == 'all'])}\n")
    run.add_table("headline", result["headline"])
    run.summary["notes"] = []
    for note in specdiff.notes(result, args.preset, run.summary["provenance"]["device_name"], bench.parameters()):
        run.note(note)
        echo(note)
    if result["headline"]:
        specdiff.plot(run.dir / "speedup_vs_gamma.png", result, cfg,
                      f"SpecDiff ({args.preset}, {cfg['max_new_tokens']} new tokens, "
                      f"{len(prompts)} prompts)")
    run.save()
    return 0


if __name__ == "__main__":
    run_main(main)
