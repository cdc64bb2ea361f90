#!/usr/bin/env python
"""Inverse speculation: a large DLM runs a fraction of its denoising steps, the tokens it
has committed become anchors, and a small AR model fills the gaps by forced decoding.

Phases (default: all, in this order; each runnable alone with --phase and resumable per
prompt with --resume; every phase after A reads phase A's records from A.jsonl):
  A         Dream's full run per prompt: answer, commit step of every position, commit
            curves (tables phaseA_reference, commit_curve)
  B         gap fill by ar_small and ar_medium at each --fractions value and alone, under the
            paper's oracle end rule and the deployable committed-end rule (table2_pipeline)
  C         the pearl point: fewest DLM steps keeping 95% of the full run's F1 on GSM8K
            (pearl_point, pearl_curve)
  ablation  real vs random-token vs random-position anchors at 10% and 25% (table4_ablation)
  gap       F1 and token accuracy over the non-anchor positions only (table5_gap_only)
  size      ar_small vs ar_medium on the same anchors (table3_size)
  payload   bytes of the anchor payloads vs the answer's text (payload)
  timing    ms per DLM step and per AR token, pipeline vs full DLM run (table6_timing)
gap and size read phase B's fills and compute the ones B has not written yet. Results:
summary.json (provenance, tables, notes), one JSONL per phase, PNG plots; tables also print
as Markdown. The science lives in dlmkit/phases/ (one module per phase).

    python run_full_suite.py --subset 2          # smoke test on the tiny preset (CPU)
    python run_full_suite.py --preset paper      # the 310-prompt set with Dream-7B (GPU)
    python run_full_suite.py --phase B --resume  # add or finish one phase of an existing run
"""

import sys
from pathlib import Path

from tqdm.auto import tqdm

from dlmkit.anchors import steps_done_at
from dlmkit.cli import (build_parser, model_overrides, resolve_device, resolve_dtype, run_main,
                        seed_everything, selected_phases)
from dlmkit.errors import UserError
from dlmkit.experiments.inverse import ablation, fill, gap, payload, pearl, reference, size, timing
from dlmkit.experiments.inverse.context import Suite
from dlmkit.presets import resolve_models
from dlmkit.results import Run, default_out

PHASES = ["A", "B", "C", "ablation", "gap", "size", "payload", "timing"]
ROLES = ["dlm", "ar_small", "ar_medium"]
# The models each phase needs (gap and size read phase B's fills and compute missing ones).
PHASE_ROLES = {"A": ["dlm"], "B": ROLES, "C": ["dlm", "ar_small"], "ablation": ["dlm", "ar_small"], "gap": ROLES,
               "size": ROLES, "payload": ["dlm"], "timing": ["dlm", "ar_small"]}
PUBLISHED_DIR = Path(__file__).resolve().parent.parent / "shared" / "data"


def phase_a(run, suite):
    settings = suite.settings
    model, tokenizer = suite.dlm(), suite.dlm_tokenizer()
    items = suite.items()
    log = run.log("A")
    done = log.done_ids()
    for item in tqdm([i for i in items if i["id"] not in done], desc="phase A: Dream reference"):
        log.append(reference.reference_run(model, tokenizer, item, settings, suite.seed))
    wanted = {i["id"] for i in items}
    records = [r for r in log.records() if r["id"] in wanted]
    run.add_table("phaseA_reference", reference.stratum_table(records))
    answered = sum(1 for r in records if r["gen_len"])  # the curves average over non-empty answers
    run.add_table("commit_curve", [{**row, "n": answered} for row in reference.commit_curve(records, settings.steps)])
    reference.plot_commit_curves(records, settings.steps, run.dir / "commit_curves.png")
    if any(r["permanence_violations"] for r in records):
        run.note("PERMANENCE VIOLATED: a committed token changed during denoising (see A.jsonl)")


RUNNERS = {"A": phase_a, "B": fill.phase_b, "C": pearl.phase_c, "ablation": ablation.phase_ablation,
           "gap": gap.phase_gap, "size": size.phase_size, "payload": payload.phase_payload,
           "timing": timing.phase_timing}


def add_flags(parser) -> None:
    suite = parser.add_argument_group("inverse speculation")
    suite.add_argument("--fractions", type=float, nargs="+", default=list(reference.FRACTIONS), metavar="F",
                       help="step fractions in (0, 1] at which anchors are read (phases B, gap, size, payload, "
                            "timing; the ablation always uses 0.1 and 0.25)")
    suite.add_argument("--published-dir", type=Path, default=PUBLISHED_DIR, metavar="DIR",
                       help="folder holding the paper's published_timing.json, shown beside table6_timing "
                            "(optional; a missing file leaves those columns empty)")


def checked_fractions(fractions, steps: int) -> tuple[float, ...]:
    for fraction in fractions:
        try:
            steps_done_at(fraction, steps)
        except UserError as err:
            raise UserError(f"--fractions: {err}") from None
    return tuple(sorted(set(fractions)))


def main(argv=None) -> int:
    parser = build_parser("run_full_suite.py", __doc__, phases=PHASES, roles=ROLES)
    add_flags(parser)
    args = parser.parse_args(argv)
    phases = selected_phases(args)
    settings = reference.SETTINGS[args.preset]
    fractions = checked_fractions(args.fractions, settings.steps)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    seed_everything(args.seed)
    roles = [r for r in ROLES if any(r in PHASE_ROLES[p] for p in phases)]
    specs = resolve_models(args.preset, roles, model_overrides(args))
    suite = Suite(args.preset, args.subset, args.seed, device, dtype, specs, fractions, args.published_dir,
                  prog=parser.prog)
    # Fail before anything is written or loaded for an hour: vocabularies, then phase A's records.
    suite.check_vocabularies(roles)
    out = args.out or default_out(parser.prog, args.preset, args.subset)
    if "A" not in phases:
        if args.overwrite:
            raise UserError(f"--overwrite would discard phase A's records in {out} that phase {phases[0]} reads; "
                            "pass --resume instead")
        suite.phase_a_records(out, phases[0])
    run = Run(out, script=parser.prog, argv=sys.argv if argv is None else [parser.prog, *argv], preset=args.preset,
              models=specs, device=device, dtype=str(dtype).removeprefix("torch."), seed=args.seed,
              config={"subset": args.subset, "phases": phases, "fractions": list(fractions),
                      "dream": reference.settings_dict(settings)},
              resume=args.resume, overwrite=args.overwrite)
    for phase in phases:
        RUNNERS[phase](run, suite)
        run.phase_done(phase)
    print(f"results in {run.dir}/", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_main(main)
