"""Roles to models: the `paper` preset names hub ids, the `tiny` preset the shipped checkpoints.

A role is what a model does in an experiment ("dlm", "ar_small", "target", ...). Every
script asks for its roles by name; `--model-ROLE PATH_OR_ID` replaces one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dlmkit.errors import UserError

TINY_ROOT = Path(__file__).resolve().parent / "assets" / "tiny"
TINY_TOKENIZER = TINY_ROOT / "tokenizer"


@dataclass(frozen=True)
class ModelSpec:
    role: str
    source: str  # a hub id or a local directory
    arch: str  # dream | qwen2 | gpt2 | mdlm | qwen3_5
    note: str = ""

    @property
    def is_local(self) -> bool:
        return Path(self.source).is_dir()


# role: (architecture, what it does)
ROLES = {
    "dlm": ("dream", "diffusion LM whose partial denoising gives anchors"),
    "ar_small": ("qwen2", "small AR gap-filler"),
    "ar_medium": ("qwen2", "medium AR gap-filler"),
    "ar_large": ("qwen2", "large AR model probed layer by layer (bridge_viability)"),
    "ar_control": ("qwen2", "control gap-filler that knows what the DLM knows (anchors should add almost nothing)"),
    "mdlm": ("mdlm", "masked-diffusion LM (self-spec backbone)"),
    "mdlm_drafter": ("mdlm", "masked-diffusion LM that drafts for SpecDiff over a short window"),
    "target": ("gpt2", "AR target verified against in SpecDiff"),
    "drafter": ("gpt2", "small AR drafter for standard speculative decoding"),
    "judge": ("gpt2", "AR judge for generative perplexity"),
    "verifier": ("qwen3_5", "CLSD verifier whose layers seed the DiT"),
}

PAPER = {
    "dlm": "Dream-org/Dream-v0-Instruct-7B",
    "ar_small": "Qwen/Qwen2.5-0.5B-Instruct",
    "ar_medium": "Qwen/Qwen2.5-1.5B-Instruct",
    "ar_large": "Qwen/Qwen2.5-32B-Instruct",
    # Dream-7B was adapted from Qwen2.5-7B: the instruct model of the same base knows what Dream knows.
    "ar_control": "Qwen/Qwen2.5-7B-Instruct",
    "mdlm": "kuleshov-group/mdlm-owt",
    "mdlm_drafter": "kuleshov-group/mdlm-owt",
    "target": "gpt2-xl",
    "drafter": "gpt2",
    "judge": "gpt2-large",
    "verifier": "Qwen/Qwen3.5-9B",
}

# Shipped directories. The inverse-speculation roles (dlm, ar_*), SpecDiff's three models (target,
# drafter, mdlm_drafter) and the self-spec MDLM are trained on generation 2 of the tiny world
# (`TINY_WORLD`); the CLSD verifier on generation 1 (dlmkit/data/tinyworld.py, tinyworld2.py). The
# tiny judge is SpecDiff's target: one checkpoint in two roles (`SHARED`).
# SpecDiff's models are sized for the paper's cost asymmetry (gpt2-xl 48 layers vs mdlm-owt and gpt2
# 12): a deep target, two-layer drafters of about equal cost per call (dlmkit/train/recipes/causal_lm.py).
TINY = {
    "dlm": "dream",
    "ar_small": "ar_small",
    "ar_medium": "ar_medium",
    "ar_large": "ar_large",
    "ar_control": "ar_control",
    "mdlm": "mdlm",
    "mdlm_drafter": "specdiff_mdlm",
    "target": "specdiff_target",
    "drafter": "specdiff_drafter",
    "judge": "specdiff_target",
    "verifier": "verifier",
}
# role -> the role whose tiny checkpoint (and recipe) it shares
SHARED = {"judge": "target"}

PRESETS = ("tiny", "paper")
# The tiny-world generation each shipped role was trained on; the tiny prompt sets follow it.
WORLD2_ROLES = ("dlm", "ar_small", "ar_medium", "ar_large", "ar_control", "target", "drafter", "mdlm_drafter", "mdlm")
TINY_WORLD = {role: 2 if SHARED.get(role, role) in WORLD2_ROLES else 1 for role in TINY}
# The generation-2 revision (dlmkit/data/tinyworld2.py): the inverse-speculation roles learn revision 5
# (code answers are the function's body, its constant always named k; every kind of multiple-choice
# prompt has a token length of its own); SpecDiff's models and the self-spec MDLM learned revision 2.
INVERSE_ROLES = ("dlm", "ar_small", "ar_medium", "ar_large", "ar_control")
TINY_REVISION = {role: 5 if role in INVERSE_ROLES else 2 for role, generation in TINY_WORLD.items() if generation == 2}


def tiny_world_of(role: str, seed: int = 0):
    """The tiny world (generation and revision) a role's shipped checkpoint was trained on."""
    from dlmkit.data.tinyworld2 import tiny_world

    role = SHARED.get(role, role)
    return tiny_world(seed, TINY_WORLD[role], TINY_REVISION.get(role, 2))


def model_spec(preset: str, role: str, override: str | None = None) -> ModelSpec:
    """The model that fills `role` under `preset`, or `override` (a path or hub id) if given."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; pass --preset tiny or --preset paper")
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    arch, note = ROLES[role]
    if override:
        return ModelSpec(role, str(override), arch, note)
    if preset == "paper":
        return ModelSpec(role, PAPER[role], arch, note)
    return ModelSpec(role, str(TINY_ROOT / TINY[role]), arch, note)


def resolve_models(preset: str, roles: list[str], overrides: dict[str, str | None] | None = None
                   ) -> dict[str, ModelSpec]:
    """Specs for every role a script needs; a missing tiny checkpoint names its retrain command."""
    overrides = overrides or {}
    specs = {role: model_spec(preset, role, overrides.get(role)) for role in roles}
    for role, spec in specs.items():
        if preset == "tiny" and not overrides.get(role) and not spec.is_local:
            raise UserError(f"the tiny {role} checkpoint is not shipped yet at {spec.source}; "
                            f"build it with `python -m dlmkit.train.tiny {role}` or pass --model-{role.replace('_', '-')} PATH")
    return specs
