#!/usr/bin/env python
"""Inverse speculation: a large DLM runs a fraction of its denoising steps, the tokens it
has committed become anchors, and a small AR model fills the gaps by forced decoding.

Phases: A (full Dream reference, commit curves), B (gap fill at several fractions),
C (minimum step count), ablation (random-token / random-position anchors), gap
(gap-only analysis), size (gap-filler size), payload (anchor payload bytes), timing.
"""

from dlmkit.cli import build_parser, not_built, run_main

PHASES = ['A', 'B', 'C', 'ablation', 'gap', 'size', 'payload', 'timing']
ROLES = ['dlm', 'ar_small', 'ar_medium']


def main(argv=None) -> int:
    parser = build_parser("run_full_suite.py", __doc__, phases=PHASES, roles=ROLES)
    parser.parse_args(argv)
    return not_built(parser.prog, "the inverse speculation suite is not built yet (issue #9: needs native Dream, issue #3)")


if __name__ == "__main__":
    run_main(main)
