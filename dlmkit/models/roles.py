"""The `dlm` role's Dream and tokenizer, loaded on first use and kept: shared by the
experiment contexts (run_full_suite's Suite, bridge_viability's Bridge), which provide
`specs`, `device`, `dtype` and a `_cache` dict."""

from __future__ import annotations


class DreamRole:
    def dlm(self):
        if "dlm" not in self._cache:
            from dlmkit.models.dream import load_dream

            self._cache["dlm"] = load_dream(self.specs["dlm"].source, device=self.device, dtype=self.dtype)
        return self._cache["dlm"]

    def dlm_tokenizer(self):
        if "dlm_tokenizer" not in self._cache:
            from dlmkit.models.dream import load_dream_tokenizer

            self._cache["dlm_tokenizer"] = load_dream_tokenizer(self.specs["dlm"].source)
        return self._cache["dlm_tokenizer"]
