#!/usr/bin/env python
"""Self-speculative masked diffusion: a frozen MDLM drafts, one trained causal layer and
target head verify, inside masked-diffusion sampling (Campbell et al. 2025, 2510.03929).

Phases, in order:
  baseline  the MDLM alone: N unconditional samples with `ddpm` and `ddpm_cache` at each
            step count of a grid, scored by a causal judge (NLL, gen-PPL; MDLM's
            protocol: decode, retokenize, exp of the mean NLL) and by unigram entropy,
            beside two references scored the same way: uniformly random tokens (far
            worse) and held-out real text (the floor). NFE is the number of network
            calls actually made per sample batch.
  train     the causal layer and the target head on top of the frozen MDLM (the MDLM's
            own training data), AdamW + warmup + cosine, checkpoints under
            OUT/checkpoints (or --ckpt-dir) with resume; validation compares the draft's
            and the target's cross-entropy on held-out masked tokens.
  sample    self-speculative sampling at each NFE budget (dtau calibrated to it), and the
            same cosine windows with the draft alone as a control; scored as in baseline.
  eval      the table of NLL and entropy against NFE (MDLM beside self-speculation), the
            MDLM NFE that each self-speculative NLL is worth, and a plot.

Writes summary.json (tables `mdlm_baseline`, `references`, `self_spec_train`,
`self_spec_dtau`, `self_spec_vs_mdlm`), one JSONL record per sample (`--resume` skips
finished ones), self_spec_train_log.jsonl, and two plots.

    python train_self_spec.py                      # tiny preset, CPU, about half an hour
    python train_self_spec.py --out results/train_self_spec/tiny --resume --phase train --phase sample --phase eval
    python train_self_spec.py --preset paper --device cuda   # accelerate launch for several GPUs
"""

from dlmkit.cli import run_main
from dlmkit.experiments import self_spec
from dlmkit.runner import run_experiment


def main(argv=None, **settings) -> int:
    return run_experiment(self_spec, "train_self_spec.py", __doc__, argv, **settings)


if __name__ == "__main__":
    run_main(main)
