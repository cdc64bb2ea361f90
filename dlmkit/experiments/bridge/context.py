"""What both bridge phases share: the settings, the prompts, and the two models (loaded once, on
first use).

The large AR model loads through transformers' own classes; with `quantization="4bit"` it is
quantized on load by bitsandbytes (NF4, the published run's setting), which needs CUDA and the
`bitsandbytes` package. "auto" picks 4-bit for the paper preset when both are there and says
in one line why it does not otherwise.
"""

from __future__ import annotations

import gc
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from dlmkit.errors import UserError
from dlmkit.experiments.bridge.settings import PAPER_TAPS
from dlmkit.models.ar import load_ar
from dlmkit.models.hub import is_local
from dlmkit.models.logit_lens import check_taps
from dlmkit.models.roles import DreamRole
from dlmkit.metrics.sandbox import check_available


def default_taps(preset: str, n_layers: int) -> list[int]:
    """Paper: the published taps (those within the model); tiny: every layer."""
    if preset == "paper":
        taps = [t for t in PAPER_TAPS if t <= n_layers]
        return taps if n_layers in taps else taps + [n_layers]
    return list(range(1, n_layers + 1))


def load_ar_large(source: str, device: str, dtype, quantization: str = "none"):
    """(model, tokenizer) of the probed AR model; 4-bit NF4 through bitsandbytes if asked."""
    if quantization != "4bit":
        return load_ar(source, device=device, dtype=dtype)
    from transformers import BitsAndBytesConfig  # bitsandbytes: optional, CUDA only

    if is_local(source) and not (Path(source) / "config.json").is_file():
        raise UserError(f"{source} has no config.json; pass an HF-format model directory or a hub id")
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(source, quantization_config=quant, dtype=dtype,
                                                 device_map={"": device}, use_safetensors=True).eval()
    return model, AutoTokenizer.from_pretrained(source)


class Context(DreamRole):
    """The inputs of one invocation; models load lazily and stay loaded."""

    def __init__(self, job, settings, specs: dict):
        self.job, self.settings, self.specs = job, settings, specs
        self.preset, self.seed, self.device, self.dtype = job.preset, job.seed, job.device, job.dtype
        self.items, self.quantization, self.prog = list(settings.items), settings.quantization, job.prog
        self._cache: dict = {}
        if any(item["task"] == "humaneval" for item in self.items):
            check_available()  # the HumanEval sandbox: one line naming bubblewrap before any model runs
        if "probe" not in job.phases and job.overwrite:
            raise UserError(f"--overwrite would discard the probe records in {job.out} that phase inject reads; "
                            "pass --resume instead")

    def ar(self):
        """(model, tokenizer) of ar_large."""
        if "ar" not in self._cache:
            self._cache["ar"] = load_ar_large(self.specs["ar_large"].source, self.device, self.dtype, self.quantization)
        return self._cache["ar"]

    def drop_ar(self) -> None:
        """Free the large model before Dream loads (the paper's 32B and Dream-7B share one GPU)."""
        if self._cache.pop("ar", None) is not None:
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def ar_tokenizer(self):
        if "ar" in self._cache:
            return self._cache["ar"][1]
        if "ar_tokenizer" not in self._cache:
            self._cache["ar_tokenizer"] = AutoTokenizer.from_pretrained(self.specs["ar_large"].source)
        return self._cache["ar_tokenizer"]

    def taps(self, n_layers: int) -> list[int]:
        return check_taps(self.settings.taps or default_taps(self.preset, n_layers), n_layers)
