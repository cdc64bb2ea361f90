"""bridge_viability.py's settings, built once from the flags and frozen: Dream's generation settings,
the layer taps and thresholds, viability, what is injected, the step budgets, the prompts and how
ar_large is loaded."""

from __future__ import annotations

import importlib.util
from dataclasses import asdict, dataclass, field

from dlmkit.decoding.settings import DreamSettings
from dlmkit.errors import UserError
from dlmkit.experiments.bridge.prompts import bridge_prompts, default_prompt_set
from dlmkit.results import echo

THRESHOLDS = (0.90, 0.95, 0.99)
PAPER_TAPS = (4, 8, 16, 32, 48, 64)  # of Qwen2.5-32B's 64 layers
QUANTIZATIONS = ("auto", "none", "4bit")

# Dream as the published bridge script ran it: a 256-token canvas, 128 entropy-ordered steps,
# T = 0.2, top_p 0.95 (top_k 50 inherited from transformers' defaults, made explicit). The tiny
# preset keeps the suite's tiny canvas.
DREAM = {"paper": DreamSettings(max_new_tokens=256), "tiny": DreamSettings(max_new_tokens=128)}


def default_step_grid(steps: int) -> list[int]:
    """Dream step budgets: 1, 2, 4, ... up to 1/8 of the full count, and the full count.
    Short budgets are where a seeded canvas can save steps (and they cost little); the
    budgets between 1/8 and the full count are left out to keep the grid cheap."""
    grid, n = {steps}, 1
    while n <= max(1, steps // 8):
        grid.add(n)
        n *= 2
    return sorted(grid)


def resolve_quantization(choice: str, preset: str, device: str) -> tuple[str, str | None]:
    """(quantization to use, a one-line message to print or None)."""
    if choice not in QUANTIZATIONS:
        raise UserError(f"unknown --ar-quantization {choice!r}; pass one of {', '.join(QUANTIZATIONS)}")
    have_bnb = importlib.util.find_spec("bitsandbytes") is not None
    on_cuda = device.startswith("cuda")
    if choice == "4bit" and not (have_bnb and on_cuda):
        need = "a CUDA device (--device cuda)" if not on_cuda else "the bitsandbytes package (pip install bitsandbytes)"
        raise UserError(f"--ar-quantization 4bit needs {need}; pass --ar-quantization none to load unquantized")
    if choice == "auto":
        if preset != "paper":
            return "none", None
        if have_bnb and on_cuda:
            return "4bit", None
        why = "no CUDA device" if not on_cuda else "bitsandbytes is not installed (pip install bitsandbytes)"
        return "none", f"loading ar_large unquantized: {why}; the paper ran it in 4-bit NF4"
    return choice, None


@dataclass(frozen=True)
class Settings:
    dream: DreamSettings
    taps: tuple[int, ...] | None = None  # None: the preset's default for the model's depth
    thresholds: tuple[float, ...] = THRESHOLDS
    min_tokens: int = 10  # viability (paper): >= 10 qualifying tokens ...
    min_accuracy: float = 0.90  # ... at >= 0.90 accuracy against the final answer
    max_inject_configs: int = 3
    inject_kinds: tuple[str, ...] = ("all",)
    budgets: tuple[int, ...] | None = None  # --step-grid (None: default_step_grid)
    preset: str = "tiny"
    subset: int | None = None
    phases: tuple[str, ...] = ()
    prompt_set: str = "benchmark"
    items: tuple[dict, ...] = field(default=(), repr=False)
    quantization: str = "none"

    @classmethod
    def from_flags(cls, args, job) -> "Settings":
        quantization, message = resolve_quantization(args.ar_quantization, job.preset, job.device)
        if message:
            echo(f"{job.prog}: {message}")
        dream = DREAM[job.preset]
        budgets = tuple(args.step_grid) if args.step_grid else None
        if budgets and max(budgets) > dream.steps:
            raise UserError(f"--step-grid {max(budgets)} exceeds Dream's full {dream.steps} steps; pass budgets <= "
                            f"{dream.steps}")
        prompt_set = args.prompt_set or default_prompt_set(job.preset)
        return cls(dream=dream, taps=tuple(args.layer_taps) if args.layer_taps else None,
                   thresholds=tuple(sorted(set(args.thresholds))), min_tokens=args.viable_min_tokens,
                   min_accuracy=args.viable_min_accuracy, max_inject_configs=args.max_inject_configs,
                   inject_kinds=tuple(dict.fromkeys(args.inject_kinds)), budgets=budgets, preset=job.preset,
                   subset=job.subset, phases=job.phases, prompt_set=prompt_set,
                   items=tuple(bridge_prompts(job.preset, prompt_set, job.subset)), quantization=quantization)

    @property
    def step_grid(self) -> tuple[int, ...]:
        """Dream's step budgets, the full count always included."""
        return tuple(sorted(set(self.budgets or default_step_grid(self.dream.steps)) | {self.dream.steps}))

    @property
    def ar_max_new_tokens(self) -> int:
        return self.dream.max_new_tokens  # the AR answer must fit Dream's canvas

    def config(self, specs) -> dict:
        return {"subset": self.subset, "phases": list(self.phases), "prompt_set": self.prompt_set,
                "prompts": len(self.items), "ar_quantization": self.quantization, "dream": asdict(self.dream),
                "taps": self.taps, "thresholds": self.thresholds, "min_tokens": self.min_tokens,
                "min_accuracy": self.min_accuracy, "max_inject_configs": self.max_inject_configs,
                "inject_kinds": self.inject_kinds, "step_grid": self.step_grid}

    def identity(self, specs) -> dict:
        # The probe and inject records carry their taps, grid and conditions (the phases check them);
        # Dream's settings and the prompt set they were made with (the runner adds seed and models).
        return {"dream": asdict(self.dream), "prompt_set": self.prompt_set, "quantization": self.quantization}
