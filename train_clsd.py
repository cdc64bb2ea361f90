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
to --ckpt-dir (default runs/train_clsd/checkpoints/PRESET, git-ignored), never to --out.

    python train_clsd.py --out results/train_clsd/tiny          # tiny preset, CPU, minutes
    python train_clsd.py --preset paper --device cuda           # Qwen3.5-9B + NuminaMath-CoT
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dlmkit.cli import (build_parser, model_overrides, positive_int, probability, resolve_device,
                       resolve_dtype, run_main, seed_everything, selected_phases)
from dlmkit.errors import UserError
from dlmkit.experiments.clsd.phases import Context, phase_embed, phase_infer, phase_stage_a, phase_stage_c
from dlmkit.presets import resolve_models
from dlmkit.results import Run, default_out

PHASES = ["embed", "stage_a", "stage_c", "infer"]
ROLES = ["verifier"]

# Published (model card): 128-token blocks, 32 candidates, 2 Euler steps, stage A 50K steps
# of batch 32 at AdamW 1e-4 cosine. Stage C's length and the prefix length are not given.
PRESET_DEFAULTS = {
    "tiny": dict(block_len=32, prefix_len=32, train_records=3000, val_records=200, stage_a_steps=600,
                 stage_c_steps=200, batch_size=16, stage_a_lr=1e-3, stage_c_lr=3e-4, candidates=8, prompts=12,
                 gen_length=40, val_batch=64),
    "paper": dict(block_len=128, prefix_len=128, train_records=400_000, val_records=100, stage_a_steps=50_000,
                  stage_c_steps=5_000, batch_size=32, stage_a_lr=1e-4, stage_c_lr=1e-5, candidates=32, prompts=64,
                  gen_length=512, val_batch=32),
}


def index_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer indices, got {text!r}") from None
    if not values or len(set(values)) != len(values) or min(values) < 0:
        raise argparse.ArgumentTypeError(f"layer indices must be distinct and >= 0, got {text!r}")
    return values


def make_parser():
    parser = build_parser("train_clsd.py", __doc__, phases=PHASES, roles=ROLES)
    own = parser.add_argument_group("CLSD (defaults depend on --preset: tiny / paper)")
    own.add_argument("--ckpt-dir", type=Path, default=None, metavar="DIR",
                     help="embedding shards and DiT checkpoints (default: runs/train_clsd/checkpoints/PRESET)")
    own.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                     help="a local NuminaMath-CoT copy (save_to_disk folder or parquet files) for --preset paper")
    own.add_argument("--source-indices", type=index_list, default=None, metavar="I,J,...",
                     help="verifier layers copied into the DiT (default: 0,3,6,9,12,15,18,21,24,26,28,31 for a "
                          "32-layer verifier, scaled proportionally for other depths)")
    own.add_argument("--block-len", type=positive_int, default=None, metavar="L",
                     help="tokens per drafted block (tiny 32, paper 128)")
    own.add_argument("--prefix-len", type=positive_int, default=None, metavar="P",
                     help="context tokens before each training chunk (tiny 32, paper 128)")
    own.add_argument("--embed-records", type=positive_int, default=None, metavar="N",
                     help="training transcripts to embed (tiny 3000, paper 400000)")
    own.add_argument("--stage-a-steps", type=positive_int, default=None, metavar="S",
                     help="stage A optimizer steps (tiny 600, paper 50000)")
    own.add_argument("--stage-c-steps", type=positive_int, default=None, metavar="S",
                     help="stage C optimizer steps (tiny 200, paper 5000)")
    own.add_argument("--batch-size", type=positive_int, default=None, metavar="B",
                     help="chunks per step (tiny 16, paper 32)")
    own.add_argument("--euler-steps", type=positive_int, default=2, metavar="K",
                     help="Euler steps of a draft (stage C and inference)")
    own.add_argument("--beta0", type=float, default=0.1, help="stage C MSE weight at the first step (annealed to 0)")
    own.add_argument("--candidates", type=positive_int, default=None, metavar="N",
                     help="candidate blocks drafted and scored per round (tiny 8, paper 32)")
    own.add_argument("--threshold", type=probability, default=0.5,
                     help="guillotine: keep drafted tokens while the verifier's probability of each is >= this; "
                          ">= 0.5 makes the output equal greedy decoding")
    own.add_argument("--gen-length", type=positive_int, default=None, metavar="T",
                     help="new tokens per prompt at inference (tiny 40, paper 512); stops early at end of turn")
    return parser


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    phases = selected_phases(args)
    defaults = PRESET_DEFAULTS[args.preset]
    cfg = dict(defaults)
    for key in ("block_len", "prefix_len", "stage_a_steps", "stage_c_steps", "batch_size", "candidates",
                "gen_length"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.embed_records is not None:
        cfg["train_records"] = args.embed_records
    if args.subset:
        cfg["prompts"] = args.subset
    if not 0.0 <= args.beta0:
        raise UserError(f"--beta0 must be >= 0, got {args.beta0}")
    cfg.update(euler_steps=args.euler_steps, beta0=args.beta0, threshold=args.threshold, seed=args.seed,
               source_indices=args.source_indices)
    out = args.out or default_out(parser.prog, args.preset, args.subset)
    ckpt = args.ckpt_dir or Path("runs") / "train_clsd" / "checkpoints" / \
        (f"{args.preset}-subset{args.subset}" if args.subset else args.preset)
    if Path(ckpt).resolve().is_relative_to(Path(out).resolve()) or "results" in Path(ckpt).resolve().parts:
        raise UserError(f"--ckpt-dir {ckpt} lies inside --out or results/; checkpoints must stay out of "
                        "committed results: pass a --ckpt-dir under runs/")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    specs = resolve_models(args.preset, ROLES, model_overrides(args))
    source = specs["verifier"].source
    cfg["identity"] = {"verifier": source if not Path(source).exists() else Path(source).name}
    seed_everything(args.seed)
    run = Run(out, script=parser.prog, argv=sys.argv[1:] if argv is None else list(argv), preset=args.preset,
              models=specs, device=device, dtype=str(dtype).removeprefix("torch."), seed=args.seed,
              config={**cfg, "ckpt_dir": str(ckpt), "phases": phases}, resume=args.resume, overwrite=args.overwrite)
    ctx = Context(args, cfg, specs, device, dtype, Path(ckpt))
    runners = {"embed": phase_embed, "stage_a": phase_stage_a, "stage_c": phase_stage_c, "infer": phase_infer}
    for phase in phases:
        runners[phase](run, ctx)
    run.save()
    return 0


if __name__ == "__main__":
    run_main(main)
