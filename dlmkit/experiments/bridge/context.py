"""What both bridge phases share: settings, prompts, and the two models (loaded once, on first use).

The large AR model loads through transformers' own classes; with `quantization="4bit"` it is
quantized on load by bitsandbytes (NF4, the published run's setting), which needs CUDA and the
`bitsandbytes` package. "auto" picks 4-bit for the paper preset when both are there and says
in one line why it does not otherwise.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dlmkit.errors import UserError
from dlmkit.decoding.diffusion import DreamSettings
from dlmkit.models.roles import DreamRole

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


@dataclass(frozen=True)
class BridgeSettings:
    dream: DreamSettings
    taps: tuple[int, ...] | None = None  # None: the preset's default for the model's depth
    thresholds: tuple[float, ...] = THRESHOLDS
    min_tokens: int = 10  # viability (paper): >= 10 qualifying tokens ...
    min_accuracy: float = 0.90  # ... at >= 0.90 accuracy against the final answer
    max_inject_configs: int = 3
    inject_kinds: tuple[str, ...] = ("all",)
    step_grid: tuple[int, ...] = ()

    @property
    def ar_max_new_tokens(self) -> int:
        return self.dream.max_new_tokens  # the AR answer must fit Dream's canvas

    def to_dict(self) -> dict:
        out = asdict(self)
        out["dream"] = asdict(self.dream)
        return out


def default_taps(preset: str, n_layers: int) -> list[int]:
    """Paper: the published taps (those within the model); tiny: every layer."""
    if preset == "paper":
        taps = [t for t in PAPER_TAPS if t <= n_layers]
        return taps if n_layers in taps else taps + [n_layers]
    return list(range(1, n_layers + 1))


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


def load_ar_large(source: str, device: str, dtype, quantization: str = "none"):
    """(model, tokenizer) of the probed AR model; 4-bit NF4 through bitsandbytes if asked."""
    from transformers import AutoTokenizer

    from dlmkit.models.ar import load_ar

    if quantization != "4bit":
        return load_ar(source, device=device, dtype=dtype)
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    local = Path(source)
    if (source.startswith((".", "/")) or local.exists()) and not (local / "config.json").is_file():
        raise UserError(f"{source} has no config.json; pass an HF-format model directory or a hub id")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=quant, dtype=dtype,
                                                 device_map={"": device}, use_safetensors=True).eval()
    return model, AutoTokenizer.from_pretrained(source)


def config_layers(source: str) -> int | None:
    """num_hidden_layers from a local config.json without loading weights (None for hub ids)."""
    path = Path(source) / "config.json"
    if path.is_file():
        return int(json.loads(path.read_text())["num_hidden_layers"])
    return None


@dataclass
class Bridge(DreamRole):
    """The inputs of one invocation; models load lazily and stay loaded."""

    preset: str
    items: list[dict]
    seed: int
    device: str
    dtype: object
    specs: dict
    settings: BridgeSettings
    quantization: str = "none"
    prog: str = "bridge_viability.py"
    _cache: dict = field(default_factory=dict, repr=False)

    def ar(self):
        """(model, tokenizer) of ar_large."""
        if "ar" not in self._cache:
            self._cache["ar"] = load_ar_large(self.specs["ar_large"].source, self.device, self.dtype, self.quantization)
        return self._cache["ar"]

    def drop_ar(self) -> None:
        """Free the large model before Dream loads (the paper's 32B and Dream-7B share one GPU)."""
        if self._cache.pop("ar", None) is not None:
            import gc

            import torch

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def ar_tokenizer(self):
        if "ar" in self._cache:
            return self._cache["ar"][1]
        if "ar_tokenizer" not in self._cache:
            from transformers import AutoTokenizer

            self._cache["ar_tokenizer"] = AutoTokenizer.from_pretrained(self.specs["ar_large"].source)
        return self._cache["ar_tokenizer"]

    def taps(self, n_layers: int) -> list[int]:
        from dlmkit.models.logit_lens import check_taps

        return check_taps(self.settings.taps or default_taps(self.preset, n_layers), n_layers)


__all__ = ["Bridge", "BridgeSettings", "DREAM", "PAPER_TAPS", "QUANTIZATIONS", "THRESHOLDS", "config_layers",
           "default_step_grid", "default_taps", "load_ar_large", "resolve_quantization"]
