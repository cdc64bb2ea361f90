"""One command per role rebuilds a shipped tiny checkpoint from the tiny world and a seed.

    python -m dlmkit.train.tiny ROLE [--seed S] [--steps N] [--out DIR] [--device cpu] [--world 1|2]

--world 2 trains a role on its generation-2 corpus (dlmkit/data/tinyworld2.py; roles dlm,
ar_small, ar_medium, ar_large, ar_control) into a staging directory (default
runs/tiny_world2/ROLE), never over the shipped generation-1 checkpoints.

Each recipe lives beside its model (`dlmkit/train/recipes/`); this file only dispatches.
"""

from __future__ import annotations

import argparse
import functools
import importlib
from pathlib import Path

from dlmkit.cli import OneLineParser, resolve_device, run_main
from dlmkit.errors import UserError
from dlmkit.presets import ROLES, TINY, TINY_ROOT

# role -> "module:function" of its recipe; a role not listed is not trainable yet.
RECIPES = {
    "tokenizer": "dlmkit.tokenizer:main",
    "dlm": "dlmkit.train.recipes.dream:train_tiny_dream",
    "mdlm": "dlmkit.train.recipes.mdlm:train_tiny_mdlm",
    **{role: "dlmkit.train.recipes.causal_lm:train_tiny_causal_lm"
       for role in ("ar_small", "ar_medium", "ar_large", "target", "drafter", "ar_control")},
    "verifier": "dlmkit.train.recipes.verifier:train_tiny_verifier",
}
# The judge is the target checkpoint (presets.TINY maps both to gpt2_target).
ALIASES = {"judge": "target"}


def main(argv=None) -> int:
    parser = OneLineParser(prog="python -m dlmkit.train.tiny", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=sorted(set(ROLES) | set(RECIPES)), help="which checkpoint to rebuild")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world sample and of training")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the shipped one)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--world", type=int, choices=(1, 2), default=1,
                        help="tiny-world generation: 1 (the shipped checkpoints) or 2 (the gazetteer; staging only)")
    parser.add_argument("--gate-probes", type=int, default=None,
                        help="world 2: held-out fact probes in the final gate (default all 350)")
    args = parser.parse_args(argv)
    if args.role == "tokenizer":
        if args.world != 1:
            raise UserError("generation 2 reuses the generation-1 tokenizer (every town name is three of its tokens)")
        from dlmkit.tokenizer import main as tokenizer_main

        tokenizer_main([] if args.out is None else ["--out", str(args.out)])
        return 0
    role = ALIASES.get(args.role, args.role)
    if role not in RECIPES:
        raise UserError(f"no tiny recipe for role {args.role!r}; choose from {', '.join(sorted(RECIPES))}")
    module, func = RECIPES[role].split(":")
    recipe = getattr(importlib.import_module(module), func)
    if func == "train_tiny_causal_lm":
        recipe = functools.partial(recipe, role)
    if args.world == 2:
        from dlmkit.train.recipes.world2 import staging_dir

        recipe(out=staging_dir(role, args.out), seed=args.seed, steps=args.steps,
               device=resolve_device(args.device), world=2, gate_probes=args.gate_probes)
        return 0
    if role not in TINY:
        raise UserError(f"{role} is trained in world 2 only; pass --world 2")
    out = args.out or TINY_ROOT / TINY[role]
    recipe(out=Path(out), seed=args.seed, steps=args.steps, device=resolve_device(args.device))
    return 0


if __name__ == "__main__":
    run_main(main)
