"""What every phase of run_full_suite.py shares: the prompts, the models (loaded once, on
first use), phase A's records and the vocabulary check between the DLM and its gap-fillers.

Anchors are DLM token ids handed to the AR unchanged, so the two must share a vocabulary:
the same token string at every id both tokenizers know, and an AR embedding table large
enough for every id the DLM can commit (its mask excluded). Dream-7B (152064 rows) and
Qwen2.5-0.5B (151936 rows) pass: their tokenizers agree and Dream's extra ids are its own
special tokens, which it never commits as answer text.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoConfig, AutoTokenizer

from dlmkit.data.benchmarks import prompt_set
from dlmkit.data.chat import default_end_token_ids, end_token_ids
from dlmkit.metrics.sandbox import check_available
from dlmkit.errors import UserError
from dlmkit.models.ar import load_ar
from dlmkit.models.dream import read_dream_config
from dlmkit.models.hub import checkpoint_dir, is_local
from dlmkit.models.roles import DreamRole
from dlmkit.results import JsonlLog

AR_ROLES = ("ar_small", "ar_medium", "ar_control")


# Phases that score answers against the ground truth (HumanEval-like ones by running them).
SCORING_PHASES = {"A", "B", "C", "ablation"}

class Context(DreamRole):
    """What the phases share: the settings, the prompts, the models and tokenizers (loaded on
    first use, then kept). Made before the run directory is touched, so it checks first what
    would otherwise fail an hour in: the vocabularies, then phase A's records."""

    def __init__(self, job, settings, specs: dict):
        self.job, self.settings, self.specs = job, settings, specs
        self.preset, self.subset, self.seed, self.device, self.dtype = (job.preset, job.subset, job.seed, job.device,
                                                                        job.dtype)
        self.dream, self.fractions, self.published_dir = settings.dream, settings.fractions, settings.published_dir
        self._cache: dict = {}
        self.check_vocabularies(list(specs))
        if set(job.phases) & SCORING_PHASES:  # every stratum subset holds HumanEval-like prompts
            check_available()  # the HumanEval sandbox: one line naming bubblewrap now, not after phase A
        if job.phases and "A" not in job.phases:
            if job.overwrite:
                raise UserError(f"--overwrite would discard phase A's records in {job.out} that phase "
                                f"{job.phases[0]} reads; pass --resume instead")
            self.phase_a_records(job.out, job.phases[0])

    def items(self) -> list[dict]:
        if "items" not in self._cache:
            self._cache["items"] = prompt_set(self.preset, self.subset)
        return self._cache["items"]

    # ---------------------------------------------------------------- models

    def dlm_config(self):
        """The DLM's DreamConfig (vocabulary size, mask id) without loading its weights."""
        if "dlm_config" not in self._cache:
            self._cache["dlm_config"] = read_dream_config(checkpoint_dir(self.specs["dlm"].source, "Dream checkpoint"))
        return self._cache["dlm_config"]

    def ar(self, role: str):
        """(model, tokenizer) of a gap-filler role."""
        if role not in self._cache:
            self._cache[role] = load_ar(self.specs[role].source, device=self.device, dtype=self.dtype)
        return self._cache[role]

    def ar_end_ids(self, role: str) -> list[int]:
        model, tokenizer = self.ar(role)
        return default_end_token_ids(model, tokenizer)

    def dlm_end_ids(self) -> frozenset[int]:
        """The DLM's end-of-answer ids (a committed one ends the answer; a drafted one ends the drafts)."""
        if "dlm_end_ids" not in self._cache:
            self._cache["dlm_end_ids"] = frozenset(end_token_ids(self.dlm_tokenizer()))
        return self._cache["dlm_end_ids"]

    def decode(self, ids) -> str:
        """Answer text of DLM-vocabulary ids (special tokens dropped), as phase A decodes."""
        return self.dlm_tokenizer().decode([int(i) for i in ids], skip_special_tokens=True)

    # ---------------------------------------------------------------- checks

    def check_vocabularies(self, roles) -> None:
        """A one-line UserError when a gap-filler cannot read the DLM's anchor ids."""
        roles = [r for r in roles if r in AR_ROLES and r in self.specs]
        if not roles:
            return
        dlm_config = self.dlm_config()
        dlm_tok = self.dlm_tokenizer()
        for role in roles:
            check_shared_vocabulary(dlm_tok, dlm_config.vocab_size, dlm_config.mask_token_id,
                                    _ar_tokenizer(self.specs[role].source), _ar_vocab_size(self.specs[role].source),
                                    role)

    def phase_a_records(self, out_dir: Path, phase: str) -> dict[str, dict]:
        """Phase A's record of every selected prompt, by id; a one-line error when any is missing."""
        path = Path(out_dir) / "A.jsonl"
        records = {r["id"]: r for r in JsonlLog(path).records()}
        wanted = [i["id"] for i in self.items()]
        missing = [i for i in wanted if i not in records]
        width = self.dream.max_new_tokens
        stale = [i for i in wanted if i in records and len(records[i]["commit_step"]) != width]
        if missing or stale:
            what = (f"{len(missing)} of {len(wanted)} prompts have no phase A record in {path}" if missing else
                    f"{len(stale)} phase A records in {path} have another canvas width than {width}")
            raise UserError(f"phase {phase} reads phase A's records but {what}; run phase A first: "
                            f"{self.job.prog} --phase A --out {out_dir} --resume")
        return {i: records[i] for i in wanted}


def _ar_tokenizer(source: str):
    try:
        return AutoTokenizer.from_pretrained(source)
    except OSError as err:
        raise UserError(f"cannot load the tokenizer of {source} ({type(err).__name__}); "
                        "pass an HF-format model directory with its tokenizer files") from None


def _ar_vocab_size(source: str) -> int:
    config = Path(source) / "config.json"
    if config.is_file():
        return int(json.loads(config.read_text())["vocab_size"])
    if is_local(source):
        raise UserError(f"{source} has no config.json; pass an HF-format model directory or a hub id")
    return int(AutoConfig.from_pretrained(source).vocab_size)


def check_shared_vocabulary(dlm_tokenizer, dlm_vocab_size: int, mask_id: int | None, ar_tokenizer,
                            ar_vocab_size: int, role: str) -> None:
    """Raise a UserError unless the AR (`role`) reads DLM token ids as the same tokens.

    Two conditions: every id both tokenizers know is the same token string in both, and the
    AR's embedding table has a row for every id the DLM's tokenizer can produce (mask excluded).
    """
    dlm_vocab = {i: t for t, i in dlm_tokenizer.get_vocab().items()}
    ar_vocab = {i: t for t, i in ar_tokenizer.get_vocab().items()}
    differing = sorted(i for i in dlm_vocab.keys() & ar_vocab.keys() if dlm_vocab[i] != ar_vocab[i])
    highest = max((i for i in dlm_vocab if i != mask_id), default=-1)
    if not differing and highest < ar_vocab_size:
        return
    detail = ""
    if dlm_vocab_size == ar_vocab_size and differing:
        i = differing[0]
        detail = f"; token {i} is {dlm_vocab[i]!r} for dlm but {ar_vocab[i]!r} for {role}"
    raise UserError(f"dlm and {role} have different vocabularies ({dlm_vocab_size} vs {ar_vocab_size} tokens{detail}); "
                    "pass gap-fillers that share the DLM's tokenizer")
