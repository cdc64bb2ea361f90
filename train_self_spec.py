#!/usr/bin/env python
"""Self-speculative masked diffusion: a frozen MDLM drafts, one trained causal layer and
target head verify, inside masked-diffusion sampling.

Phases: train (the causal layer and target head), sample, eval (NLL and entropy
against NFE, baseline MDLM beside it).
"""

from dlmkit.cli import build_parser, not_built, run_main

PHASES = ['train', 'sample', 'eval']
ROLES = ['mdlm', 'judge']


def main(argv=None) -> int:
    parser = build_parser("train_self_spec.py", __doc__, phases=PHASES, roles=ROLES)
    parser.parse_args(argv)
    return not_built(parser.prog, "self-speculative MDLM is not built yet (issue #6: needs the MDLM core, issue #4)")


if __name__ == "__main__":
    run_main(main)
