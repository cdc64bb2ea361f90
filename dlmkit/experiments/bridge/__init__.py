"""The bridge experiment (bridge_viability.py): logit-lens a large AR model's layers over its own
answer (probe.py, phase probe) and seed Dream's canvas with the confident tokens (inject.py, phase
inject); translate.py carries tokens across vocabularies, token_kinds.py tells structure from
content, prompts.py holds the prompt sets, context.py the models, settings.py the flags' settings.
"""

from __future__ import annotations

from dlmkit.cli import positive_int, probability
from dlmkit.experiments import lazy_context, lazy_phase
from dlmkit.experiments.bridge.prompts import PROMPT_SETS
from dlmkit.experiments.bridge.settings import QUANTIZATIONS, THRESHOLDS, Settings
from dlmkit.experiments.bridge.token_kinds import KINDS

_HERE = __name__
# phases and Context import torch when first used: --help stays light
PHASES = {name: lazy_phase(f"{_HERE}.{name}", f"phase_{name}") for name in ("probe", "inject")}
ROLES = ["ar_large", "dlm"]
SUBSET = "N prompts per stratum (per difficulty for --prompt-set published)"
PHASE_ROLES = {"probe": ["ar_large"], "inject": ["ar_large", "dlm"]}  # inject reads ar_large's tokenizer only


def add_flags(parser) -> None:
    own = parser.add_argument_group("bridge")
    own.add_argument("--layer-taps", type=positive_int, nargs="+", default=None, metavar="L",
                     help="layers to read, 1-based (L = after L decoder blocks; the last = the model's own "
                          "output). Default: paper 4 8 16 32 48 64 of Qwen2.5-32B's 64; tiny every layer")
    own.add_argument("--thresholds", type=probability, nargs="+", default=list(THRESHOLDS), metavar="P",
                     help="lens confidence thresholds; a token qualifies when its top probability is >= P")
    own.add_argument("--viable-min-tokens", type=positive_int, default=10, metavar="N",
                     help="viability: at least N qualifying tokens per prompt on average (the paper's 10) ...")
    own.add_argument("--viable-min-accuracy", type=probability, default=0.90, metavar="A",
                     help="... at accuracy >= A against the final answer (the paper's 0.90)")
    own.add_argument("--max-inject-configs", type=positive_int, default=3, metavar="K",
                     help="viable layers injected (each at its lowest viable threshold): the earliest K - 1 "
                          "and the deepest")
    own.add_argument("--inject-kinds", nargs="+", choices=("all",) + KINDS, default=["all"], metavar="KIND",
                     help="which qualifying tokens to inject: all, structural, content (each a condition)")
    own.add_argument("--step-grid", type=positive_int, nargs="+", default=None, metavar="N",
                     help="Dream step budgets for cold and injected runs (default: powers of two up to 1/8 of "
                          "the full 128 steps, and 128: 1 2 4 8 16 128; the full count is always added)")
    own.add_argument("--prompt-set", choices=PROMPT_SETS, default=None,
                     help="published: the published script's 20 open questions (paper default); benchmark: the "
                          "suite's prompts with ground truth (tiny default: 2 tiny-world prompts per stratum "
                          "unless --subset)")
    own.add_argument("--ar-quantization", choices=QUANTIZATIONS, default="auto",
                     help="load ar_large in 4-bit NF4 through bitsandbytes (CUDA only); auto: 4-bit for the "
                          "paper preset when CUDA and bitsandbytes are there")


__getattr__ = lazy_context(__name__)


__all__ = ["Context", "PHASES", "PHASE_ROLES", "ROLES", "Settings", "add_flags"]
