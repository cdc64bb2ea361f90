"""SpecDiff (specdiff_bench.py): an MDLM drafts gamma tokens in T denoising steps and an AR target
verifies them with lossless speculative sampling; AR decoding and AR-drafter speculative decoding
are the baselines, transformers' assisted generation an external reference.

The phases are method families (methods.py). They do not run one after the other: every
(temperature, prompt, method) of the selected families runs interleaved (generate.py), so load
drift on a shared machine reaches all methods alike; then tables.py reads every record in the run.
context.py holds the models and prompts, settings.py the flags' settings.
"""

from __future__ import annotations

from dlmkit.cli import count_list, nonnegative_list, positive_int
from dlmkit.decoding.settings import SAMPLERS
from dlmkit.experiments import lazy_context
from dlmkit.experiments.specdiff.methods import methods_for
from dlmkit.experiments.specdiff.settings import FAMILIES, Settings, name_list
from dlmkit.results import markdown_table

PHASES = {family: None for family in FAMILIES}  # run together by run_phases, below
ROLES = ["mdlm_drafter", "target", "drafter"]
SUBSET = "N prompts per prompt set"
PHASE_ROLES = {"ar": ["target"], "sd": ["target", "drafter"], "specdiff": ["target", "mdlm_drafter"],
               "hf": ["target", "drafter"]}


def add_flags(parser) -> None:
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
    own.add_argument("--temperatures", type=nonnegative_list, default=None, metavar="T1,T2",
                     help="sampling temperatures; 0 = greedy (default: 0,1)")
    own.add_argument("--timing-repeats", type=positive_int, default=3, metavar="R",
                     help="time every generation R times (same seed, same tokens; repeats outside methods, so all "
                          "methods of a repeat share the machine's load) and report the median and range (default 3)")
    own.add_argument("--sampler", choices=SAMPLERS, default="ddpm_cache",
                     help="MDLM sampler of the drafter; ddpm_cache skips calls whose input did not change")


def run_phases(run, context, phases) -> None:
    """Every selected family's generations, interleaved; then the tables over every method in the
    run directory (a resumed run may add cells), the notes and the plot."""
    from dlmkit.experiments.specdiff import tables  # torch: after the flags are read
    from dlmkit.experiments.specdiff.generate import run_generations

    cfg, prompts = context.settings, context.prompts
    run_generations(run, context, prompts, methods_for(phases, cfg), cfg)
    for phase in phases:
        run.phase_done(phase)
    wanted = {(p["set"], p["index"]) for p in prompts}
    records = [r for family in FAMILIES for r in run.log(family).records()
               if (r["prompt_set"], r["prompt_index"]) in wanted and r["temperature"] in cfg.temperatures]
    present = {r["method"] for r in records}
    all_methods = [m for m in methods_for(FAMILIES, cfg) if m.name in present]
    result = tables.tables(records, all_methods, cfg)
    for name, section in (("counts", "tables"), ("timing", "timings")):
        run.add_table(name, result[name], echo=False, section=section)
        # tables on stdout, like every script's (progress and logs go to stderr)
        print(f"\n### {name} (all prompt sets)\n\n"
              f"{markdown_table([r for r in result[name] if r['prompt_set'] == 'all'])}\n", flush=True)
    run.add_table("headline", result["headline"], section="timings")
    costs = context.call_costs(cfg.gammas, cfg.sd_gammas)
    run.add_table("per_call_ms", costs, section="timings")
    run.summary["notes"] = []
    for note in tables.notes(result, cfg.preset, run.summary["provenance"]["device_name"], context.parameters(),
                             costs):
        run.note(note)  # printed in the run's closing summary
    if result["headline"]:
        tables.plot(run.dir / "speedup_vs_gamma.png", result, cfg,
                    f"SpecDiff ({cfg.preset}, {cfg.max_new_tokens} new tokens, {len(prompts)} prompts)")


__getattr__ = lazy_context(__name__)


__all__ = ["Context", "PHASES", "PHASE_ROLES", "ROLES", "Settings", "add_flags", "run_phases"]
