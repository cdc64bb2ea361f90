#!/usr/bin/env python
"""CLSD, continuous latent speculative decoding: a rectified-flow DiT grafted from a strided
slice of the verifier drafts embedding blocks; the frozen verifier scores them and a
causal guillotine keeps the confident prefix of the best.

Phases, in order:
  embed    math chain-of-thought (NuminaMath-CoT; the tiny world's math_cot for --preset
           tiny) tokenized with the verifier's tokenizer, cut into (prefix, chunk) windows;
           chunk embeddings from the frozen embedding matrix and C (the verifier's final
           hidden state after the prefix) written as safetensors shards in --ckpt-dir
  stage_a  graft the DiT from the verifier (--source-indices) and train it by rectified
           flow: regress v(x_t, t, C) onto target - noise
  stage_c  noise -> DiT (--euler-steps) -> frozen verifier -> CE against the true tokens
           + beta * MSE, beta annealed from --beta0 to 0; gradients reach the DiT only
  infer    draft --candidates blocks per round, score them in one batched verifier pass,
           keep the best candidate's confident prefix (--threshold), let the verifier add
           the next token; against plain greedy decoding with the verifier, for the DiT
           after stage A and after stage C

Writes summary.json (tables embed, stage_a, stage_c, infer, infer_timing), infer.jsonl
(one record per prompt and drafter; --resume skips finished ones) and the plots
stage_a_loss.png, stage_c_ce.png, infer_accepted.png. Checkpoints and embedding shards go
to --ckpt-dir (default OUT/checkpoints, git-ignored; a --ckpt-dir holding another run's
caches -- other seed, verifier weights or settings -- is refused).

    python train_clsd.py --out results/train_clsd/tiny          # tiny preset, CPU, minutes
    python train_clsd.py --preset paper --device cuda           # Qwen3.5-9B + NuminaMath-CoT
"""

from dlmkit.cli import run_main
from dlmkit.experiments import clsd
from dlmkit.runner import run_experiment


def main(argv=None, **settings) -> int:
    return run_experiment(clsd, "train_clsd.py", __doc__, argv, **settings)


if __name__ == "__main__":
    run_main(main)
