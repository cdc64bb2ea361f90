"""What the phases of train_self_spec.py share: the settings, and the MDLM, its tokenizer and the
judge, loaded on first use (checked against each other and the length) and kept."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerFast

from dlmkit.data.owt import load_owt_tokenizer
from dlmkit.data.tiny_corpus import load_tiny_tokenizer
from dlmkit.errors import UserError
from dlmkit.models.ar import load_ar
from dlmkit.models.mdlm import load_mdlm


class Context:
    def __init__(self, job, settings, specs: dict):
        self.job, self.settings, self.specs = job, settings, specs
        self.preset, self.device, self.dtype = job.preset, job.device, job.dtype
        self._models = None
        trained = settings.trained
        if "sample" in job.phases and "train" not in job.phases and not (trained / "model.safetensors").exists():
            raise UserError(f"no trained self-spec parts at {trained}; run --phase train first or pass --self-spec DIR")

    def models(self):
        """(mdlm, tokenizer, judge, judge_tokenizer), loaded once."""
        if self._models is None:
            self._models = load_models(self.preset, self.settings.length, self.specs, self.device, self.dtype)
        return self._models


def load_mdlm_tokenizer(source: str, preset: str):
    """The MDLM's tokenizer: files beside the weights (tiny), else GPT-2's (mdlm-owt ships none)."""
    directory = Path(source)
    if directory.is_dir() and (directory / "tokenizer.json").exists():
        # Not AutoTokenizer: it would read the MDLM's config.json and warn about model_type "mdlm".
        return PreTrainedTokenizerFast.from_pretrained(directory)
    return load_tiny_tokenizer() if preset == "tiny" else load_owt_tokenizer()


def check_vocab(mdlm, tokenizer, source: str) -> None:
    """MDLM's vocabulary is the tokenizer's plus the mask, or the tokenizer's with its mask last."""
    vocab = mdlm.config.vocab_size
    if len(tokenizer) not in (vocab, vocab - 1):
        raise UserError(f"the MDLM at {source} has vocab_size {vocab} but its tokenizer has {len(tokenizer)} "
                        "entries (expected vocab_size or vocab_size - 1); pass the tokenizer it was trained with")
    if len(tokenizer) == vocab and tokenizer.mask_token_id != mdlm.mask_id:
        raise UserError(f"the tokenizer's mask id {tokenizer.mask_token_id} is not the MDLM's mask id "
                        f"{mdlm.mask_id} (vocab_size - 1); pass the tokenizer it was trained with")


def load_models(preset: str, length: int, specs: dict, device: str, dtype):
    """The MDLM, its tokenizer and the judge, checked against each other and the length."""
    mdlm = load_mdlm(specs["mdlm"].source, device=device, dtype=dtype)
    if length > mdlm.config.model_length:
        raise UserError(f"--length {length} exceeds the MDLM's model_length {mdlm.config.model_length}; "
                        "lower --length")
    tokenizer = load_mdlm_tokenizer(specs["mdlm"].source, preset)
    check_vocab(mdlm, tokenizer, specs["mdlm"].source)
    judge, judge_tokenizer = load_ar(specs["judge"].source, device=device, dtype=dtype)
    return mdlm, tokenizer, judge, judge_tokenizer
