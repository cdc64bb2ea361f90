#!/usr/bin/env python
"""Inverse speculation: a large DLM runs a fraction of its denoising steps, the tokens it
has committed become anchors, and a small AR model fills the gaps by forced decoding.

Phases (default: all, in this order; each runnable alone with --phase and resumable per
prompt with --resume; every phase after A reads phase A's records from A.jsonl):
  A         Dream's full run per prompt: answer, commit step of every position, commit
            curves (tables phaseA_reference, commit_curve)
  B         gap fill by ar_small, ar_medium and ar_control at each --fractions value and alone,
            under the paper's oracle end rule and the deployable committed-end rule
            (table2_pipeline); ar_small at adaptive DLM stops vs fixed fractions (adaptive_stop)
  C         the pearl point: fewest DLM steps keeping 95% of the full run's F1 on GSM8K
            (pearl_point, pearl_curve)
  ablation  real vs random-token vs random-position anchors at 10% and 25% (table4_ablation)
  gap       F1 and token accuracy over the non-anchor positions only (table5_gap_only)
  size      ar_small vs ar_medium on the same anchors (table3_size)
  payload   bytes of the anchor payloads vs the answer's text (payload)
  drafted   the partial DLM's argmax as free drafts for the gaps, verified by the AR: same
            tokens as forced decoding, fewer sequential passes (drafted_gap_fill)
  timing    ms per DLM step and per AR token, pipeline vs full DLM run, forced and drafted
            fill, fixed fraction and adaptive stop (table6_timing)
  checks    every claim as a row: measured, target, met (table_checks)
gap and size read phase B's fills and compute the ones B has not written yet. Results:
summary.json (provenance, tables, notes), one JSONL per phase, PNG plots; tables also print
as Markdown. The science lives in dlmkit/experiments/inverse/ (one module per phase).

    python run_full_suite.py --subset 2          # smoke test on the tiny preset (CPU)
    python run_full_suite.py --preset paper      # the 310-prompt set with Dream-7B (GPU)
    python run_full_suite.py --phase B --resume  # add or finish one phase of an existing run
"""

from dlmkit.cli import run_main
from dlmkit.experiments import inverse
from dlmkit.runner import run_experiment


def main(argv=None, **settings) -> int:
    """settings: fields of inverse.Settings to replace (tests shorten Dream's run this way)."""
    return run_experiment(inverse, "run_full_suite.py", __doc__, argv, **settings)


if __name__ == "__main__":
    run_main(main)
