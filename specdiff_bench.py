#!/usr/bin/env python
"""SpecDiff: an MDLM drafts gamma tokens in T denoising steps and an AR target verifies them
with lossless speculative sampling; AR decoding and AR-drafter speculative decoding are
the baselines.

Phases: ar (plain AR decoding), sd (AR-drafter speculative decoding), specdiff (the
gamma x T grid), hf (transformers' assisted generation, as an external reference).
"""

from dlmkit.cli import build_parser, not_built, run_main

PHASES = ['ar', 'sd', 'specdiff', 'hf']
ROLES = ['mdlm', 'target', 'drafter']


def main(argv=None) -> int:
    parser = build_parser("specdiff_bench.py", __doc__, phases=PHASES, roles=ROLES)
    parser.parse_args(argv)
    return not_built(parser.prog, "SpecDiff is not built yet (issue #5: needs the MDLM core, issue #4)")


if __name__ == "__main__":
    run_main(main)
