#!/usr/bin/env python
"""Self-speculative masked diffusion: a frozen MDLM drafts, one trained causal layer and
target head verify, inside masked-diffusion sampling (Campbell et al. 2025, 2510.03929).

Phases, in order:
  baseline  the MDLM alone: N unconditional samples with `ddpm` and `ddpm_cache` at each
            step count of a grid, scored by a causal judge (NLL, gen-PPL; MDLM's
            protocol: decode, retokenize, exp of the mean NLL) and by unigram entropy,
            beside two references scored the same way: uniformly random tokens (far
            worse) and held-out real text (the floor). NFE is the number of network
            calls actually made per sample batch.
  train     the causal layer and the target head on top of the frozen MDLM (the MDLM's
            own training data), AdamW + warmup + cosine, checkpoints under
            OUT/checkpoints (or --ckpt-dir) with resume; validation compares the draft's
            and the target's cross-entropy on held-out masked tokens.
  sample    self-speculative sampling at each NFE budget (dtau calibrated to it), and the
            same cosine windows with the draft alone as a control; scored as in baseline.
  eval      the table of NLL and entropy against NFE (MDLM beside self-speculation), the
            MDLM NFE that each self-speculative NLL is worth, and a plot.

Writes summary.json (tables `mdlm_baseline`, `references`, `self_spec_train`,
`self_spec_dtau`, `self_spec_vs_mdlm`), one JSONL record per sample (`--resume` skips
finished ones), self_spec_train_log.jsonl, and two plots.

    python train_self_spec.py                      # tiny preset, CPU, about half an hour
    python train_self_spec.py --out results/train_self_spec/tiny --resume --phase train --phase sample --phase eval
    python train_self_spec.py --preset paper --device cuda   # accelerate launch for several GPUs
"""

from __future__ import annotations

import sys
from pathlib import Path

from dlmkit.cli import (build_parser, count_list, model_overrides, positive_int, resolve_device,
                       resolve_dtype, run_main, seed_everything, selected_phases)
from dlmkit.decoding.mdlm_sampler import SAMPLERS
from dlmkit.errors import UserError
from dlmkit.experiments.self_spec.baseline import phase_baseline
from dlmkit.experiments.self_spec.phases import SAMPLE_DEFAULTS, TRAIN_DEFAULTS, phase_eval, phase_sample_trained, phase_train
from dlmkit.presets import resolve_models
from dlmkit.results import Run, default_out, portable_source

PHASES = ["baseline", "train", "sample", "eval"]
ROLES = ["mdlm", "judge"]

# Per preset: samples, tokens per sample, the step grid, samples drawn together.
# The paper grid is the proposal's NFE grid {28, 64, 128, 256, 512} plus 32, where MDLM's
# published OWT number (5.50) sits.
PRESET_DEFAULTS = {
    "tiny": dict(samples=64, length=128, steps=(8, 16, 32, 64, 128), batch_size=1),
    "paper": dict(samples=1000, length=1024, steps=(28, 32, 64, 128, 256, 512), batch_size=16),
}


def make_parser():
    parser = build_parser("train_self_spec.py", __doc__, phases=PHASES, roles=ROLES)
    own = parser.add_argument_group("baseline phase")
    own.add_argument("--steps", type=count_list, default=None, metavar="S1,S2,...",
                     help="denoising step counts (default: tiny 8,16,32,64,128; paper 28,32,64,128,256,512)")
    own.add_argument("--length", type=int, default=None, metavar="L",
                     help="tokens per sample (default: tiny 128, paper 1024; at most the MDLM's model_length)")
    own.add_argument("--batch-size", type=int, default=None, metavar="B",
                     help="samples drawn together (default: tiny 1, paper 16); ddpm_cache skips a call only "
                          "when no sample of the batch changed, so NFE depends on it")
    train = parser.add_argument_group("train phase")
    train.add_argument("--train-steps", type=positive_int, default=None, metavar="N",
                       help="optimizer steps (default: tiny 1500, paper 50000)")
    train.add_argument("--train-batch-size", type=positive_int, default=None, metavar="B",
                       help="blocks per step (default: tiny 16, paper 256)")
    train.add_argument("--lr", type=float, default=None,
                       help="peak learning rate after linear warmup, then cosine to 0 "
                            "(default: tiny 1e-3, paper 1.5e-4)")
    train.add_argument("--ckpt-dir", type=Path, default=None, metavar="DIR",
                       help="training checkpoints and the trained parts (final/) (default: OUT/checkpoints; "
                            "keep it out of git)")
    spec = parser.add_argument_group("sample and eval phases")
    spec.add_argument("--self-spec", type=Path, default=None, metavar="DIR",
                      help="trained causal layer + target head to sample with (default: CKPT_DIR/final, "
                           "what --phase train wrote)")
    spec.add_argument("--nfe", type=count_list, default=None, metavar="N1,N2,...",
                      help="NFE budgets; dtau is calibrated to each (default: tiny 8,16,32,64,128, matching the "
                           "baseline steps; paper 28,64,128,256,512)")
    spec.add_argument("--spec-batch-size", type=positive_int, default=None, metavar="B",
                      help="self-speculative samples drawn together (default 16; a sample's tokens and NFE do not "
                           "depend on it: every row has its own generator)")
    spec.add_argument("--calibration-samples", type=positive_int, default=None, metavar="N",
                      help="rows (never evaluated) on which dtau is calibrated to each budget "
                           "(default: tiny 8, paper 16)")
    return parser


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    phases = selected_phases(args)

    defaults, tdefaults = PRESET_DEFAULTS[args.preset], TRAIN_DEFAULTS[args.preset]
    sdefaults = SAMPLE_DEFAULTS[args.preset]
    cfg = {"samples": args.subset or defaults["samples"], "length": args.length or defaults["length"],
           "steps": args.steps or list(defaults["steps"]), "batch_size": args.batch_size or defaults["batch_size"],
           "samplers": list(SAMPLERS), "seed": args.seed,
           "nfe": args.nfe or list(sdefaults["nfe"]),
           "spec_batch_size": args.spec_batch_size or sdefaults["spec_batch_size"],
           "calibration_samples": args.calibration_samples or sdefaults["calibration_samples"]}
    tcfg = {**tdefaults, **{k: v for k, v in (("steps", args.train_steps), ("batch_size", args.train_batch_size),
                                               ("lr", args.lr)) if v is not None}}
    if cfg["length"] < 2 or cfg["batch_size"] < 1:
        raise UserError("--length must be >= 2 and --batch-size >= 1")
    if not tcfg["lr"] > 0:
        raise UserError(f"--lr must be > 0, got {tcfg['lr']}")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    specs = resolve_models(args.preset, ROLES, model_overrides(args))
    out = args.out or default_out(parser.prog, args.preset, args.subset)
    ckpt_dir = args.ckpt_dir or Path(out) / "checkpoints"
    trained = args.self_spec or ckpt_dir / "final"
    if "sample" in phases and "train" not in phases and not (trained / "model.safetensors").exists():
        raise UserError(f"no trained self-spec parts at {trained}; run --phase train first or pass --self-spec DIR")

    # Records carry no seed, length or model: resuming with other ones would mix two runs.
    identity = {"seed": args.seed, "length": cfg["length"], "batch_size": cfg["batch_size"],
                "models": {role: portable_source(spec.source) for role, spec in specs.items()}}
    seed_everything(args.seed)
    run = Run(out, script=parser.prog, argv=sys.argv[1:] if argv is None else list(argv), preset=args.preset,
              models=specs, device=device, dtype=str(dtype).removeprefix("torch."), seed=args.seed,
              config={**cfg, "phases": phases, "train": tcfg}, identity=identity, resume=args.resume,
              overwrite=args.overwrite)
    for phase in phases:
        if phase == "baseline":
            phase_baseline(run, args, cfg, specs, device, dtype)
        elif phase == "train":
            final = phase_train(run, preset=args.preset, seed=args.seed, tcfg=tcfg,
                                mdlm_source=specs["mdlm"].source, mdlm_label=portable_source(specs["mdlm"].source),
                                ckpt_dir=ckpt_dir, device=device, resume=args.resume)
            trained = args.self_spec or final
        elif phase == "sample":
            phase_sample_trained(run, args, cfg, specs, device, dtype, trained, portable_source(str(trained)))
        elif phase == "eval":
            phase_eval(run, cfg=cfg, preset=args.preset)
    run.save()
    return 0


if __name__ == "__main__":
    run_main(main)
