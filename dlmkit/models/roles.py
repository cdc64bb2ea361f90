"""The `dlm` role's Dream and tokenizer, loaded on first use and kept: a mixin of the contexts of
the experiments that run Dream (inverse, bridge), which provide `specs`, `device`, `dtype` and a
`_cache` dict."""

from __future__ import annotations

from dlmkit.models.dream import load_dream, load_dream_tokenizer


class DreamRole:
    def dlm(self):
        if "dlm" not in self._cache:
            self._cache["dlm"] = load_dream(self.specs["dlm"].source, device=self.device, dtype=self.dtype)
        return self._cache["dlm"]

    def dlm_tokenizer(self):
        if "dlm_tokenizer" not in self._cache:
            self._cache["dlm_tokenizer"] = load_dream_tokenizer(self.specs["dlm"].source)
        return self._cache["dlm_tokenizer"]
