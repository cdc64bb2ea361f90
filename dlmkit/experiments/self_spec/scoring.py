"""How self-speculation's and the MDLM's samples are scored: judge NLL (MDLM's gen-PPL protocol:
decode, retokenize, exp of the mean NLL) and unigram entropy per sample, pooled per row."""

from __future__ import annotations

import math

from dlmkit.metrics.lm import generative_perplexity, unigram_entropy

JUDGE_CONTEXT = 1024  # MDLM scores gen-PPL in chunks of gpt2-large's context
SPEC_NOTE = "self-spec: "  # the prefix of the notes phases train and eval write (and replace on a rerun)


def score_samples(rows: list[list[int]], tokenizer, judge, judge_tokenizer, length: int) -> list[dict]:
    """Per sample: judge NLL (sum and count, MDLM's gen-PPL protocol) and unigram entropy."""
    texts = tokenizer.batch_decode(rows)  # special tokens kept, as MDLM decodes
    context = getattr(judge.config, "n_positions", None) or getattr(judge.config, "max_position_embeddings", None)
    chunk = min(JUDGE_CONTEXT, context or JUDGE_CONTEXT)
    scored = generative_perplexity(texts, judge, judge_tokenizer, chunk_size=chunk, max_length=length)
    entropies = unigram_entropy(rows)
    return [{"text": text, "tokens": row, "judge_nll": nll if count else None, "judge_tokens": count,
             "entropy": entropy}
            for text, row, nll, count, entropy in zip(texts, rows, scored.nll_per_text, scored.tokens_per_text,
                                                      entropies)]


def pooled(records: list[dict]) -> dict:
    """Token-weighted judge NLL over samples (as gen-PPL pools them), its exp, mean entropy."""
    counted = [r for r in records if r["judge_tokens"]]
    tokens = sum(r["judge_tokens"] for r in counted)
    nll = sum(r["judge_nll"] * r["judge_tokens"] for r in counted) / tokens if tokens else float("nan")
    return {"judge_nll": nll, "gen_ppl": math.exp(nll) if tokens else float("nan"),
            "entropy": sum(r["entropy"] for r in records) / len(records) if records else float("nan")}


def standard_error(values: list[float]) -> float:
    """Standard error of a mean of per-sample values (nan below two samples)."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return float("nan")
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def equivalent_nfe(curve: list[tuple[float, float]], nll: float) -> float | None:
    """The NFE at which a baseline curve [(nfe, nll), ...] (NLL falling) reaches `nll`, linear in
    log NFE between grid points; None outside the curve's range."""
    curve = sorted(curve)
    for (n0, y0), (n1, y1) in zip(curve, curve[1:]):
        if min(y0, y1) <= nll <= max(y0, y1):
            if y0 == y1:
                return n0
            frac = (y0 - nll) / (y0 - y1)
            return math.exp(math.log(n0) + frac * (math.log(n1) - math.log(n0)))
    return None
