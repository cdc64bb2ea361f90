"""Language-model metrics of generated text: generative perplexity and unigram entropy.

Generative perplexity (MDLM, SEDD, and their successors): decode the samples to text,
retokenize with a judge causal LM's tokenizer (gpt2-large in MDLM), score them in
chunks of the judge's context (1024 tokens), and report exp(token-weighted mean NLL).
Each chunk is scored on its own, so its first token is context, not a target. As in
MDLM, an end-of-text token counts as a target only the first time it occurs in a text
(later ones are separators that an OWT-trained model emits freely). A judge rewards
repetition, so pair gen-PPL with unigram entropy: the entropy of each sample's own token
frequencies, averaged over samples (papers report it in nats; OWT text is about 5.6).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from dlmkit.errors import UserError


@dataclass
class GenPPL:
    gen_ppl: float  # exp(mean_nll)
    mean_nll: float  # nats per counted token, all texts pooled
    num_tokens: int  # counted target tokens
    nll_per_text: list[float]  # mean NLL of each text (nan when it has no target)
    tokens_per_text: list[int]


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def judge_nll(
    token_ids: Sequence[Sequence[int]],
    judge,
    *,
    chunk_size: int = 1024,
    batch_size: int = 8,
    eos_token_id: int | None = None,
    pad_token_id: int = 0,
) -> GenPPL:
    """Score token-id lists (already in the judge's vocabulary) under a causal LM."""
    if chunk_size < 2:
        raise UserError(f"chunk_size must be >= 2 (one context token and one target), got {chunk_size}")
    if batch_size < 1:
        raise UserError(f"batch_size must be >= 1, got {batch_size}")
    device = _model_device(judge)

    # A chunk is (text index, ids, which of its targets count).
    chunks: list[tuple[int, list[int], list[bool]]] = []
    for text_index, ids in enumerate(token_ids):
        ids = list(ids)
        counted = [True] * len(ids)
        if eos_token_id is not None:
            eos_positions = [i for i, tok in enumerate(ids) if tok == eos_token_id]
            for i in eos_positions[1:]:
                counted[i] = False
        for start in range(0, len(ids), chunk_size):
            piece = ids[start : start + chunk_size]
            if len(piece) >= 2:
                chunks.append((text_index, piece, counted[start + 1 : start + len(piece)]))

    nll_sum = [0.0] * len(token_ids)
    count = [0] * len(token_ids)
    chunks.sort(key=lambda chunk: len(chunk[1]))  # similar lengths share a batch: less padding
    was_training = judge.training
    judge.eval()
    for begin in range(0, len(chunks), batch_size):
        group = chunks[begin : begin + batch_size]
        width = max(len(ids) for _, ids, _ in group)
        input_ids = torch.full((len(group), width), pad_token_id, dtype=torch.long)
        attention = torch.zeros((len(group), width), dtype=torch.long)
        counted = torch.zeros((len(group), width - 1), dtype=torch.bool)
        for row, (_, ids, keep) in enumerate(group):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            attention[row, : len(ids)] = 1
            counted[row, : len(keep)] = torch.tensor(keep, dtype=torch.bool)
        input_ids, attention, counted = input_ids.to(device), attention.to(device), counted.to(device)
        logits = judge(input_ids=input_ids, attention_mask=attention).logits
        nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:], reduction="none")
        nll = torch.where(counted, nll, torch.zeros_like(nll))
        for row, (text_index, _, _) in enumerate(group):
            nll_sum[text_index] += float(nll[row].sum(dtype=torch.float64))
            count[text_index] += int(counted[row].sum())
    judge.train(was_training)

    total = sum(count)
    mean_nll = sum(nll_sum) / total if total else float("nan")
    return GenPPL(
        gen_ppl=math.exp(mean_nll) if total else float("nan"),
        mean_nll=mean_nll,
        num_tokens=total,
        nll_per_text=[s / c if c else float("nan") for s, c in zip(nll_sum, count)],
        tokens_per_text=count,
    )


def generative_perplexity(
    texts: Sequence[str],
    judge,
    judge_tokenizer,
    *,
    chunk_size: int = 1024,
    max_length: int | None = None,
    batch_size: int = 8,
) -> GenPPL:
    """Gen-PPL of decoded samples (e.g. `tokenizer.batch_decode(samples)`) under `judge`.

    max_length truncates each retokenized text first; MDLM passes its model length
    (1024), which drops the few judge tokens past it. None keeps every token.
    """
    if isinstance(texts, str):
        raise UserError("generative_perplexity takes a list of texts, not one string; wrap it in a list")
    if max_length is not None and max_length < 2:
        raise UserError(f"max_length must be >= 2 or None, got {max_length}")
    token_ids = [judge_tokenizer(text)["input_ids"] for text in texts]  # defaults, as MDLM calls it
    if max_length is not None:
        token_ids = [ids[:max_length] for ids in token_ids]
    pad = judge_tokenizer.pad_token_id
    pad = judge_tokenizer.eos_token_id if pad is None else pad
    return judge_nll(
        token_ids,
        judge,
        chunk_size=chunk_size,
        batch_size=batch_size,
        eos_token_id=judge_tokenizer.eos_token_id,
        pad_token_id=0 if pad is None else pad,
    )


def unigram_entropy(samples: Iterable[Iterable[int]] | torch.Tensor, ignore_ids: Iterable[int] = ()) -> list[float]:
    """Entropy (nats) of each sample's token frequencies; papers report the mean over samples."""
    if isinstance(samples, torch.Tensor):
        samples = samples.tolist()
    ignore = set(ignore_ids)
    entropies = []
    for sample in samples:
        counts = Counter(tok for tok in sample if tok not in ignore)
        total = sum(counts.values())
        entropies.append(-sum(c / total * math.log(c / total) for c in counts.values()) if total else 0.0)
    return entropies
