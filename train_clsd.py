#!/usr/bin/env python
"""CLSD, continuous latent speculative decoding: a rectified-flow DiT grafted from a strided
slice of the verifier drafts embedding blocks; the frozen verifier scores them and a
causal guillotine keeps the confident prefix of the best.

Phases: embed (verifier-embedding chunks), stage_a (rectified flow), stage_c (through
the frozen verifier), infer (draft, score, guillotine).
"""

from dlmkit.cli import build_parser, not_built, run_main

PHASES = ['embed', 'stage_a', 'stage_c', 'infer']
ROLES = ['verifier']


def main(argv=None) -> int:
    parser = build_parser("train_clsd.py", __doc__, phases=PHASES, roles=ROLES)
    parser.parse_args(argv)
    return not_built(parser.prog, "CLSD is not built yet (issue #8)")


if __name__ == "__main__":
    run_main(main)
