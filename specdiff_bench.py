#!/usr/bin/env python
"""SpecDiff: an MDLM drafts gamma tokens in T denoising steps and an AR target verifies them
with lossless speculative sampling; AR decoding and AR-drafter speculative decoding are
the baselines.

Phases (method families), all run on the same prompts in one run:
  ar        plain AR decoding with the target (KV cache, one forward per token)
  sd        standard speculative decoding with the small AR drafter, for each --sd-gammas
  specdiff  SpecDiff over the grid --gammas x --steps (T denoising steps per draft)
  hf        transformers' assisted generation (generate(assistant_model=drafter), batch 1,
            constant --sd-gammas assistant tokens), timed as an external reference

Each method runs at every --temperatures (0 is greedy: drafts are argmaxes and the output
must equal the target's greedy decoding; above 0, lossless speculative sampling).

Prompts: tiny preset, held-out tiny-world documents (first --prompt-tokens tokens) and
chat prompts; paper preset, OpenWebText validation documents and CNN/DailyMail test
articles (first --prompt-tokens GPT-2 tokens; needs `datasets` and the hub).

Writes summary.json with tables `counts` (acceptance rate, accepted drafts per round,
tokens per target call, target calls saved over AR; the same for the same --seed on any
machine), `timing` (tokens/s, speedup over AR and over the fastest AR-drafter cell, by
wall clock and by process CPU time: this machine, this run) and `headline` (the best SpecDiff cell against both baselines),
one JSONL record per generation (<phase>.jsonl; --resume skips finished ones) and
speedup_vs_gamma.png.

    OMP_NUM_THREADS=1 python specdiff_bench.py                 # tiny preset, CPU, a few minutes
    python specdiff_bench.py --preset paper --device cuda      # mdlm-owt drafts for gpt2-xl
"""

from dlmkit.cli import run_main
from dlmkit.experiments import specdiff
from dlmkit.runner import run_experiment


def main(argv=None, **settings) -> int:
    return run_experiment(specdiff, "specdiff_bench.py", __doc__, argv, **settings)


if __name__ == "__main__":
    run_main(main)
