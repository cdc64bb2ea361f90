#!/usr/bin/env python
"""Inverse speculation: a large DLM runs a fraction of its denoising steps, the tokens it
has committed become anchors, and a small AR model fills the gaps by forced decoding.

Phases: A (full Dream reference, commit curves), B (gap fill at several fractions),
C (minimum step count), ablation (random-token / random-position anchors), gap
(gap-only analysis), size (gap-filler size), payload (anchor payload bytes), timing.

    python run_full_suite.py --subset 2          # smoke test on the tiny preset (CPU)
    python run_full_suite.py --preset paper      # the 310-prompt set with Dream-7B (GPU)
"""

import sys

from tqdm.auto import tqdm

from dlmkit.cli import (build_parser, model_overrides, resolve_device, resolve_dtype, run_main,
                        seed_everything, selected_phases)
from dlmkit.data.benchmarks import prompt_set
from dlmkit.phases import reference
from dlmkit.presets import resolve_models
from dlmkit.results import Run, default_out

PHASES = ["A", "B", "C", "ablation", "gap", "size", "payload", "timing"]
BUILT = ["A"]
ROLES = ["dlm", "ar_small", "ar_medium"]


def phase_a(run, args, specs, device, dtype):
    from dlmkit.models.dream import load_dream, load_dream_tokenizer

    settings = reference.SETTINGS[args.preset]
    model = load_dream(specs["dlm"].source, device=device, dtype=dtype)
    tokenizer = load_dream_tokenizer(specs["dlm"].source)
    items = prompt_set(args.preset, args.subset)
    log = run.log("A")
    done = log.done_ids()
    for item in tqdm([i for i in items if i["id"] not in done], desc="phase A: Dream reference"):
        log.append(reference.reference_run(model, tokenizer, item, settings, args.seed))
    wanted = {i["id"] for i in items}
    records = [r for r in log.records() if r["id"] in wanted]
    run.summary["config"]["dream"] = reference.settings_dict(settings)
    run.add_table("phaseA_reference", reference.stratum_table(records))
    run.add_table("commit_curve", reference.commit_curve(records, settings.steps))
    reference.plot_commit_curves(records, settings.steps, run.dir / "commit_curves.png")
    if any(r["permanence_violations"] for r in records):
        run.note("PERMANENCE VIOLATED: a committed token changed during denoising (see A.jsonl)")


def main(argv=None) -> int:
    parser = build_parser("run_full_suite.py", __doc__, phases=PHASES, roles=ROLES)
    args = parser.parse_args(argv)
    phases = selected_phases(args)
    pending = [p for p in phases if p not in BUILT]
    todo = [p for p in phases if p in BUILT]
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    seed_everything(args.seed)
    specs = resolve_models(args.preset, ["dlm"] if todo else [], model_overrides(args))
    if todo:
        run = Run(args.out or default_out(parser.prog, args.preset), script=parser.prog,
                  argv=sys.argv if argv is None else [parser.prog, *argv], preset=args.preset, models=specs,
                  device=device, dtype=str(dtype).removeprefix("torch."), seed=args.seed,
                  config={"subset": args.subset, "phases": todo}, resume=args.resume, overwrite=args.overwrite)
        for phase in todo:
            {"A": phase_a}[phase](run, args, specs, device, dtype)
            run.phase_done(phase)
        print(f"results in {run.dir}/", file=sys.stderr)
    if pending:
        print(f"{parser.prog}: phase(s) {', '.join(pending)} not built yet (issue #9)", file=sys.stderr)
        return 2 if args.phase else 0
    return 0


if __name__ == "__main__":
    run_main(main)
