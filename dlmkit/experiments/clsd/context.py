"""What the phases of train_clsd.py share: the settings, and the verifier and its tokenizer (loaded
once, on first use)."""

from __future__ import annotations

from transformers import AutoTokenizer

from dlmkit.errors import UserError
from dlmkit.experiments.clsd.objectives import flow_batch
from dlmkit.models.qwen35 import load_verifier
from dlmkit.seeds import validation_seed


class Context:
    def __init__(self, job, settings, specs: dict):
        self.job, self.settings, self.specs = job, settings, specs
        self.preset, self.device, self.dtype = job.preset, job.device, job.dtype
        self.verifier_label = settings.verifier_label(specs)
        self._verifier = self._tokenizer = None

    @property
    def verifier(self):
        if self._verifier is None:
            self._verifier = load_verifier(self.specs["verifier"].source, device=self.device, dtype=self.dtype)
        return self._verifier

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(self.specs["verifier"].source)
            if len(self._tokenizer) > self.verifier.config.vocab_size:
                raise UserError(f"the verifier's tokenizer has {len(self._tokenizer)} ids but its vocab_size is "
                                f"{self.verifier.config.vocab_size}; pass a matching checkpoint")
        return self._tokenizer

    def val_batch(self, shards, scale: float) -> dict:
        """The fixed held-out batch both training stages evaluate on."""
        return flow_batch(shards, 0, min(self.settings.val_batch, len(shards)), validation_seed(self.settings.seed),
                          self.device, scale)
