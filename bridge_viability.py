#!/usr/bin/env python
"""Bridge viability: can a large AR model's intermediate layers seed Dream?

Phases (default: both, in order; resumable per prompt with --resume):
  probe   ar_large answers each prompt greedily; one teacher-forced pass over prompt + answer
          with hooks at the layer taps; the logit lens (final norm, then lm_head) at every
          answer position. Per layer and confidence threshold: qualifying tokens, their
          accuracy against the final answer, structural vs content; a (layer, threshold) is
          viable with >= --viable-min-tokens qualifying tokens per prompt on average, at a
          pooled accuracy >= --viable-min-accuracy. Tables ar_answers, probe_layers, probe_depth, viable_configs;
          plot probe_accuracy_by_layer.png.
  inject  for each viable configuration (at most --max-inject-configs), the layer's confident
          tokens go into Dream's canvas at their generation positions before the first step
          (through text when the vocabularies differ), stay fixed, and Dream denoises the rest
          at every budget of --step-grid; cold Dream runs the same budgets with the same seeds.
          Word F1 against ar_large's answer and against cold Dream, accuracy, and the DLM steps
          saved for equal F1. Tables inject_f1, inject_steps_saved, inject_by_difficulty,
          inject_vs_cold; plot inject_f1_by_steps.png.
The science lives in dlmkit/bridge/ and dlmkit/models/logit_lens.py.

    python bridge_viability.py                               # tiny preset on a CPU, a few minutes
    python bridge_viability.py --preset paper --device cuda  # Qwen2.5-32B (4-bit) -> Dream-7B
    python bridge_viability.py --layer-taps 2 4 6 --phase probe
"""

import sys

from dlmkit.experiments.bridge.context import (DREAM, QUANTIZATIONS, THRESHOLDS, Bridge, BridgeSettings, default_step_grid,
                                   resolve_quantization)
from dlmkit.experiments.bridge.phases import phase_inject, phase_probe
from dlmkit.experiments.bridge.prompts import PROMPT_SETS, bridge_prompts, default_prompt_set
from dlmkit.experiments.bridge.token_kinds import KINDS
from dlmkit.cli import (build_parser, model_overrides, positive_int, probability, resolve_device,
                       resolve_dtype, run_main, seed_everything, selected_phases)
from dlmkit.errors import UserError
from dlmkit.presets import resolve_models
from dlmkit.results import Run, default_out, echo

PHASES = ["probe", "inject"]
ROLES = ["ar_large", "dlm"]
PHASE_ROLES = {"probe": ["ar_large"], "inject": ["ar_large", "dlm"]}  # inject reads ar_large's tokenizer only
RUNNERS = {"probe": phase_probe, "inject": phase_inject}


def add_flags(parser) -> None:
    own = parser.add_argument_group("bridge")
    own.add_argument("--layer-taps", type=positive_int, nargs="+", default=None, metavar="L",
                     help="layers to read, 1-based (L = after L decoder blocks; the last = the model's own "
                          "output). Default: paper 4 8 16 32 48 64 of Qwen2.5-32B's 64; tiny every layer")
    own.add_argument("--thresholds", type=probability, nargs="+", default=list(THRESHOLDS), metavar="P",
                     help="lens confidence thresholds; a token qualifies when its top probability is >= P")
    own.add_argument("--viable-min-tokens", type=positive_int, default=10, metavar="N",
                     help="viability: at least N qualifying tokens per prompt on average (the paper's 10) ...")
    own.add_argument("--viable-min-accuracy", type=probability, default=0.90, metavar="A",
                     help="... at accuracy >= A against the final answer (the paper's 0.90)")
    own.add_argument("--max-inject-configs", type=positive_int, default=3, metavar="K",
                     help="viable layers injected (each at its lowest viable threshold): the earliest K - 1 "
                          "and the deepest")
    own.add_argument("--inject-kinds", nargs="+", choices=("all",) + KINDS, default=["all"], metavar="KIND",
                     help="which qualifying tokens to inject: all, structural, content (each a condition)")
    own.add_argument("--step-grid", type=positive_int, nargs="+", default=None, metavar="N",
                     help="Dream step budgets for cold and injected runs (default: powers of two up to 1/8 of "
                          "the full 128 steps, and 128: 1 2 4 8 16 128; the full count is always added)")
    own.add_argument("--prompt-set", choices=PROMPT_SETS, default=None,
                     help="published: the published script's 20 open questions (paper default); benchmark: the "
                          "suite's prompts with ground truth (tiny default: 2 tiny-world prompts per stratum "
                          "unless --subset)")
    own.add_argument("--ar-quantization", choices=QUANTIZATIONS, default="auto",
                     help="load ar_large in 4-bit NF4 through bitsandbytes (CUDA only); auto: 4-bit for the "
                          "paper preset when CUDA and bitsandbytes are there")


def main(argv=None) -> int:
    parser = build_parser("bridge_viability.py", __doc__, phases=PHASES, roles=ROLES)
    add_flags(parser)
    args = parser.parse_args(argv)
    phases = selected_phases(args)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    seed_everything(args.seed)
    quantization, message = resolve_quantization(args.ar_quantization, args.preset, device)
    if message:
        echo(f"{parser.prog}: {message}")
    dream = DREAM[args.preset]
    grid = sorted(set(args.step_grid or default_step_grid(dream.steps)) | {dream.steps})
    if grid[-1] > dream.steps:
        raise UserError(f"--step-grid {grid[-1]} exceeds Dream's full {dream.steps} steps; pass budgets <= {dream.steps}")
    settings = BridgeSettings(dream=dream, taps=tuple(args.layer_taps) if args.layer_taps else None,
                              thresholds=tuple(sorted(set(args.thresholds))), min_tokens=args.viable_min_tokens,
                              min_accuracy=args.viable_min_accuracy, max_inject_configs=args.max_inject_configs,
                              inject_kinds=tuple(dict.fromkeys(args.inject_kinds)), step_grid=tuple(grid))
    prompt_set = args.prompt_set or default_prompt_set(args.preset)
    items = bridge_prompts(args.preset, prompt_set, args.subset)
    roles = [r for r in ROLES if any(r in PHASE_ROLES[p] for p in phases)]
    specs = resolve_models(args.preset, roles, model_overrides(args))
    bridge = Bridge(args.preset, items, args.seed, device, dtype, specs, settings, quantization, prog=parser.prog)
    out = args.out or default_out(parser.prog, args.preset, args.subset)
    if "probe" not in phases and args.overwrite:
        raise UserError(f"--overwrite would discard the probe records in {out} that phase inject reads; "
                        "pass --resume instead")
    run = Run(out, script=parser.prog, argv=sys.argv if argv is None else [parser.prog, *argv], preset=args.preset,
              models=specs, device=device, dtype=str(dtype).removeprefix("torch."), seed=args.seed,
              config={"subset": args.subset, "phases": phases, "prompt_set": prompt_set, "prompts": len(items),
                      "ar_quantization": quantization, **settings.to_dict()},
              resume=args.resume, overwrite=args.overwrite)
    for phase in phases:
        RUNNERS[phase](run, bridge)
        run.phase_done(phase)
    print(f"results in {run.dir}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
