"""Self-speculative masked diffusion (train_self_spec.py): a frozen MDLM drafts, one trained causal
layer and target head verify, inside masked-diffusion sampling (Campbell et al. 2025, 2510.03929).

One module per phase: baseline.py, train.py, sample.py, evaluate.py (phase eval); context.py holds
the models they share, scoring.py the judge's numbers, settings.py the flags' settings.
"""

from __future__ import annotations

from pathlib import Path

from dlmkit.cli import count_list, positive_float, positive_int
from dlmkit.experiments import lazy_context, lazy_phase
from dlmkit.experiments.self_spec.settings import Settings

_HERE = __name__
# phases and Context import torch when first used: --help stays light
PHASES = {name: lazy_phase(f"{_HERE}.{module}", f"phase_{name}") for name, module in (
    ("baseline", "baseline"), ("train", "train"), ("sample", "sample"), ("eval", "evaluate"))}
ROLES = ["mdlm", "judge"]
SUBSET = "N samples per sampler and step count (baseline, sample, eval), and 20 training steps unless --train-steps"
PHASE_ROLES = {phase: ROLES for phase in PHASES}  # recorded for every phase: the resume identity names both


def add_flags(parser) -> None:
    own = parser.add_argument_group("baseline phase")
    own.add_argument("--steps", type=count_list, default=None, metavar="S1,S2,...",
                     help="denoising step counts (default: tiny 8,16,32,64,128; paper 28,32,64,128,256,512)")
    own.add_argument("--length", type=positive_int, default=None, metavar="L",
                     help="tokens per sample (default: tiny 128, paper 1024; at most the MDLM's model_length)")
    own.add_argument("--batch-size", type=positive_int, default=None, metavar="B",
                     help="samples drawn together (default: tiny 1, paper 16); ddpm_cache skips a call only "
                          "when no sample of the batch changed, so NFE depends on it")
    train_flags = parser.add_argument_group("train phase")
    train_flags.add_argument("--train-steps", type=positive_int, default=None, metavar="N",
                             help="optimizer steps (default: tiny 6000, paper 50000)")
    train_flags.add_argument("--train-batch-size", type=positive_int, default=None, metavar="B",
                             help="blocks per step (default: tiny 16, paper 256)")
    train_flags.add_argument("--lr", type=positive_float, default=None,
                             help="peak learning rate after linear warmup, then cosine to 0 "
                                  "(default: tiny 1e-3, paper 1.5e-4)")
    train_flags.add_argument("--ckpt-dir", type=Path, default=None, metavar="DIR",
                             help="training checkpoints and the trained parts (final/) (default: OUT/checkpoints; "
                                  "keep it out of git)")
    spec = parser.add_argument_group("sample and eval phases")
    spec.add_argument("--self-spec", type=Path, default=None, metavar="DIR",
                      help="trained causal layer + target head to sample with (default: CKPT_DIR/final, "
                           "what --phase train wrote)")
    spec.add_argument("--nfe", type=count_list, default=None, metavar="N1,N2,...",
                      help="NFE budgets; dtau is calibrated to each (default: tiny 8,16,32,64,128, matching the "
                           "baseline steps; paper 28,64,128,256,512)")
    spec.add_argument("--spec-batch-size", type=positive_int, default=None, metavar="B",
                      help="self-speculative samples drawn together (default 16; a sample's tokens and NFE do not "
                           "depend on it: every row has its own generator)")
    spec.add_argument("--calibration-samples", type=positive_int, default=None, metavar="N",
                      help="rows (never evaluated) on which dtau is calibrated to each budget "
                           "(default: tiny 8, paper 16; under --subset N at most max(2, N))")


__getattr__ = lazy_context(__name__)


__all__ = ["Context", "PHASES", "PHASE_ROLES", "ROLES", "Settings", "add_flags"]
