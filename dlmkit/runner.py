"""The one skeleton every script runs: parse the flags, resolve device / dtype / seed, check the
experiment's inputs, open the run directory, run the selected phases in order, record each as
done, save. A script is its docstring (the --help text) and one call:

    run_main(lambda argv: run_experiment(inverse, "run_full_suite.py", __doc__, argv))

An experiment package (dlmkit/experiments/<name>/) exposes the same small contract:

    PHASES       {name: phase(run, context)}, in the order they run
    ROLES        the model roles it uses; PHASE_ROLES: {phase: the roles it needs}
    add_flags    its own flags (argparse group); SUBSET (optional): what --subset N counts, for --help
    Settings     a frozen settings object: Settings.from_flags(args, job) (one-line errors for bad values),
                 .config(specs) (summary.json's config, the phases included) and .identity(specs) (the settings a
                 resumed run must share; Run adds the seed and every role's weights and refuses a resume that differs)
    Context      Context(job, settings, specs): what the phases share (models loaded once, on first use);
                 its constructor checks what must hold before anything is written

and, where the phases do not run one after the other, run_phases(run, context, phases).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from dlmkit.cli import (build_parser, model_overrides, resolve_device, resolve_dtype, seed_everything,
                        selected_phases, set_threads)
from dlmkit.models.hub import check_weights
from dlmkit.presets import resolve_models
from dlmkit.results import Run, default_out


@dataclass(frozen=True)
class Job:
    """The shared flags of one invocation, resolved."""

    prog: str
    preset: str
    subset: int | None
    seed: int
    phases: tuple[str, ...]
    out: Path
    device: str
    dtype: object
    resume: bool
    overwrite: bool


def make_parser(experiment, prog: str, doc: str):
    parser = build_parser(prog, doc, phases=list(experiment.PHASES), roles=list(experiment.ROLES),
                          **({"subset_help": experiment.SUBSET} if hasattr(experiment, "SUBSET") else {}))
    experiment.add_flags(parser)
    return parser


def run_phases(run: Run, context, phases, table) -> None:
    """The default phase loop: each phase in order, then recorded as done with its wall and CPU time."""
    for phase in phases:
        wall, cpu = time.perf_counter(), time.process_time()
        run.begin_phase(phase)
        table[phase](run, context)
        run.phase_done(phase, wall_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu)


def run_experiment(experiment, prog: str, doc: str, argv: list[str] | None = None, **overrides) -> int:
    """overrides: Settings fields to replace after the flags are read (tests pass short settings this way)."""
    parser = make_parser(experiment, prog, doc)
    args = parser.parse_args(argv)
    phases = tuple(selected_phases(args))
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    set_threads(args.threads, device)
    job = Job(prog=parser.prog, preset=args.preset, subset=args.subset, seed=args.seed, phases=phases,
              out=Path(args.out or default_out(parser.prog, args.preset, args.subset)), device=device, dtype=dtype,
              resume=args.resume, overwrite=args.overwrite)
    settings = replace(experiment.Settings.from_flags(args, job), **overrides)
    seed_everything(args.seed)
    roles = list(dict.fromkeys(role for phase in phases for role in experiment.PHASE_ROLES[phase]))
    specs = resolve_models(args.preset, roles, model_overrides(args))
    for role, spec in specs.items():
        check_weights(spec.source, role)  # a truncated file is one line now, not a traceback mid-run
    context = experiment.Context(job, settings, specs)
    run = Run(job.out, script=job.prog, argv=sys.argv[1:] if argv is None else list(argv), preset=job.preset,
              models=specs, device=device, dtype=str(dtype).removeprefix("torch."), seed=job.seed,
              config=settings.config(specs), identity=settings.identity(specs),
              resume=job.resume, overwrite=job.overwrite)
    if hasattr(experiment, "run_phases"):
        experiment.run_phases(run, context, phases)
    else:
        run_phases(run, context, phases, experiment.PHASES)
    run.save()
    print(run.closing_summary(phases), flush=True)
    return 0
