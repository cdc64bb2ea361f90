#!/usr/bin/env python
"""Bridge viability: logit-lens a large AR model's intermediate layers over its own answer
and test whether confident early-layer tokens can seed Dream's canvas.

Phases: probe (layer taps, thresholds, structural vs content tokens), inject (Dream
denoising from the viable tokens, against cold Dream and the AR answer).
"""

from dlmkit.cli import build_parser, not_built, run_main

PHASES = ['probe', 'inject']
ROLES = ['ar_large', 'dlm']


def main(argv=None) -> int:
    parser = build_parser("bridge_viability.py", __doc__, phases=PHASES, roles=ROLES)
    parser.parse_args(argv)
    return not_built(parser.prog, "the bridge probe is not built yet (issue #7: needs native Dream, issue #3)")


if __name__ == "__main__":
    run_main(main)
