"""One command per role rebuilds a shipped tiny checkpoint from the tiny world and a seed.

    python -m dlmkit.train.tiny ROLE [--seed S] [--steps N] [--out DIR] [--device cpu]

The inverse-speculation roles (dlm, ar_small, ar_medium, ar_large, ar_control), SpecDiff's
(target, drafter, mdlm_drafter) and the self-spec MDLM are trained on generation 2 of the tiny
world (dlmkit/data/tinyworld2.py: each role its own corpus), the CLSD verifier on generation 1
(dlmkit/data/tinyworld.py): `presets.TINY_WORLD` says which. The tiny judge is SpecDiff's target
(`presets.SHARED`): `judge` rebuilds that checkpoint with the target's recipe.

Each recipe lives beside its model (`dlmkit/train/recipes/`); this file only dispatches.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
from pathlib import Path

from dlmkit.cli import OneLineParser, resolve_device, run_main
from dlmkit.errors import UserError
from dlmkit.presets import ROLES, SHARED, TINY, TINY_ROOT, TINY_WORLD
from dlmkit.train.recipes.distill import TARGETS

# role -> "module:function" of its recipe; a role not listed is not trainable yet.
RECIPES = {
    "tokenizer": "dlmkit.tokenizer:main",
    "dlm": "dlmkit.train.recipes.dream:train_tiny_dream",
    "mdlm": "dlmkit.train.recipes.mdlm:train_tiny_mdlm",
    "mdlm_drafter": "dlmkit.train.recipes.mdlm:train_tiny_mdlm_drafter",
    **{role: "dlmkit.train.recipes.causal_lm:train_tiny_causal_lm"
       for role in ("ar_small", "ar_medium", "ar_large", "target", "drafter", "ar_control")},
    "verifier": "dlmkit.train.recipes.verifier:train_tiny_verifier",
}


def main(argv=None) -> int:
    parser = OneLineParser(prog="python -m dlmkit.train.tiny", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=sorted(set(ROLES) | set(RECIPES)), help="which checkpoint to rebuild")
    parser.add_argument("--seed", type=int, default=0, help="seed of the world sample and of training")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: the shipped one)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--gate-probes", type=int, default=None,
                        help="generation-2 roles: held-out fact probes in the final gate (default all: 7 per held-out town)")
    parser.add_argument("--targets", choices=TARGETS, default=None,
                        help="SpecDiff's drafters (drafter, mdlm_drafter): learn the target's continuations "
                             "(target, the default) or the world's text (data, the control)")
    parser.add_argument("--init", type=Path, default=None,
                        help="dlm: start its second stage (revision 5) from this stage-1 checkpoint directory "
                             "instead of training stage 1 (revision 2, 6000 steps) first")
    args = parser.parse_args(argv)
    if args.role == "tokenizer":
        from dlmkit.tokenizer import main as tokenizer_main

        tokenizer_main([] if args.out is None else ["--out", str(args.out)])
        return 0
    role = SHARED.get(args.role, args.role)
    if role not in RECIPES:
        raise UserError(f"no tiny recipe for role {args.role!r}; choose from {', '.join(sorted(RECIPES))}")
    module, func = RECIPES[role].split(":")
    recipe = getattr(importlib.import_module(module), func)
    if func == "train_tiny_causal_lm":
        recipe = functools.partial(recipe, role)
    out = Path(args.out or TINY_ROOT / TINY[role])
    # the generation-2 recipes that end with the fact gate (the MDLM drafter's has none)
    gated = TINY_WORLD[role] == 2 and "gate_probes" in inspect.signature(recipe).parameters
    if args.gate_probes is not None and not gated:
        raise UserError(f"--gate-probes: the {role} recipe has no fact gate; leave the flag out")
    extra = {"gate_probes": args.gate_probes} if gated else {}
    if args.targets is not None:
        if role not in ("drafter", "mdlm_drafter"):
            raise UserError(f"--targets applies to SpecDiff's drafters (drafter, mdlm_drafter), not to {role}; "
                            "leave it out")
        extra["targets"] = args.targets
    if args.init is not None:
        if role != "dlm":
            raise UserError(f"--init applies to the tiny Dream (dlm) only, not to {role}; leave it out")
        if not (args.init / "config.json").exists():
            raise UserError(f"--init {args.init}: no Dream checkpoint there (config.json missing); pass a "
                            "directory written by `python -m dlmkit.train.tiny dlm`")
        extra["init"] = args.init
    recipe(out=out, seed=args.seed, steps=args.steps, device=resolve_device(args.device), **extra)
    return 0


if __name__ == "__main__":
    run_main(main)
