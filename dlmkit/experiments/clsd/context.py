"""What the phases of train_clsd.py share: the settings, and the verifier and its tokenizer (loaded
once, on first use)."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer

from dlmkit.errors import UserError
from dlmkit.experiments.clsd.objectives import flow_batch
from dlmkit.models.qwen35 import load_verifier
from dlmkit.results import atomic_write_json, model_provenance, to_json
from dlmkit.seeds import validation_seed

CACHE_KEY = "cache_key.json"


class Context:
    def __init__(self, job, settings, specs: dict):
        self.job, self.settings, self.specs = job, settings, specs
        self.preset, self.device, self.dtype = job.preset, job.device, job.dtype
        self.verifier_label = settings.verifier_label(specs)
        self._verifier = self._tokenizer = None
        self._check_source_indices()
        self.cache_key = {"seed": settings.seed,
                          "verifier": model_provenance(specs["verifier"].source)["sha256"] or self.verifier_label,
                          "settings": json.loads(to_json(settings.identity(specs)))}
        if not (job.overwrite and settings.ckpt_dir.resolve().is_relative_to(job.out.resolve())):
            self._check_cache_key()  # (--overwrite removes a cache under OUT with the run)

    def _check_source_indices(self) -> None:
        """--source-indices against the verifier's depth, from its config (before the embed phase's hours)."""
        indices = self.settings.source_indices
        directory = Path(self.specs["verifier"].source)
        if not indices or not (directory / "config.json").exists():
            return
        raw = json.loads((directory / "config.json").read_text())
        layers = (raw.get("text_config") or raw).get("num_hidden_layers")
        bad = [i for i in indices if layers is not None and i >= layers]
        if bad:
            raise UserError(f"--source-indices {','.join(map(str, bad))} lie outside the verifier's {layers} layers; "
                            f"pass indices in 0..{layers - 1}")

    def _check_cache_key(self) -> None:
        """A --ckpt-dir holds one run's caches: shards and checkpoints made with another seed, verifier or
        settings are never reused (nor overwritten) by this one."""
        path = self.settings.ckpt_dir / CACHE_KEY
        if not path.exists():
            return
        try:
            held = json.loads(path.read_text())
        except (OSError, ValueError):
            held = None
        if held != self.cache_key:
            differ = sorted(k for k in self.cache_key if (held or {}).get(k) != self.cache_key[k])
            raise UserError(f"--ckpt-dir {self.settings.ckpt_dir} holds caches of another run (other "
                            f"{', '.join(differ) or 'key'}); pass another --ckpt-dir, or leave it out to use OUT/checkpoints")

    def claim_ckpt_dir(self) -> Path:
        """The checkpoint directory, marked with what its caches are made of (each phase that writes there calls it)."""
        path = self.settings.ckpt_dir / CACHE_KEY
        if not path.exists():
            atomic_write_json(path, self.cache_key)
        return self.settings.ckpt_dir

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
