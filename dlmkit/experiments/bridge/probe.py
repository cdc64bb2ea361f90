"""Phase 1 (probe): how early does a large AR model know its own answer?

Per prompt:
  1. the AR model's greedy answer (chat template, up to Dream's canvas width, stopping at
     its end token). The end token is kept as the answer's last position: it is where Dream's
     answer must end too, a structural token a layer may know early; the answer's text
     (scored by F1) leaves it out;
  2. ONE teacher-forced forward over prompt + answer with hooks at the layer taps (the
     published script ran the prompt alone, so its "answer positions" read the prompt);
  3. at each tap the logit lens (final norm, then lm_head; dlmkit.models.logit_lens) at
     every answer position p: its top token and that token's probability, read from the
     hidden state at p - 1 (which predicts p).

Per layer L and threshold tau, over the answer positions whose lens probability is >= tau
("qualifying tokens"): how many there are, and their accuracy = share whose lens token
equals the final answer's token. The split into structural and content tokens
(dlmkit.experiments.bridge.token_kinds) classifies the lens's token, the one a deployment would inject,
not the answer's. At the last layer the lens is the model itself, so every position agrees
(a check the tables make visible).

Viability (paper): a (layer, threshold) is viable with >= min_tokens qualifying tokens at
>= min_accuracy accuracy. The tokens are per answer (one generation is what gets seeded). The
published code applied the rule to each prompt alone and kept a configuration if ANY prompt
passed, so one lucky prompt made a layer viable. Our verdict (`viable`): on average at least
min_tokens qualifying tokens per prompt, at a pooled accuracy >= min_accuracy. Beside it: the
share of prompts that pass the rule alone (`viable_prompts`) and the published verdict
(`viable_any_prompt`).

Tables: probe_layers (per tap and threshold), probe_depth (per tap: top-1 agreement and mean
confidence over all answer positions), viable_configs; plot probe_accuracy_by_layer.png.
"""

from __future__ import annotations

import time

import torch

from dlmkit.experiments.bridge.prompts import has_ground_truth
from dlmkit.experiments.bridge.token_kinds import CONTENT, STRUCTURAL, token_kind
from dlmkit.data.chat import chat_prompt_ids, default_end_token_ids
from dlmkit.models.logit_lens import num_layers, teacher_forced_lens
from dlmkit.metrics.scoring import is_correct, mean
from dlmkit.plots import pyplot, save_figure

KIND_CODE = {STRUCTURAL: "s", CONTENT: "c"}


@torch.no_grad()
def greedy_answer(model, prompt_ids: list[int], max_new_tokens: int, end_ids: list[int]) -> tuple[list[int], bool]:
    """(answer ids up to and including the first end token, whether one came) by transformers' generate."""
    device = model.get_input_embeddings().weight.device
    input_ids = torch.tensor([prompt_ids], device=device)
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                         do_sample=False, eos_token_id=end_ids, pad_token_id=end_ids[0],
                         temperature=None, top_p=None, top_k=None)
    new = out[0, len(prompt_ids):].tolist()
    for k, token in enumerate(new):
        if token in end_ids:
            return new[:k + 1], True
    return new, False


def probe_prompt(model, tokenizer, item: dict, taps: list[int], max_new_tokens: int) -> dict:
    """Phase 1's JSON-ready record of one prompt."""
    end_ids = default_end_token_ids(model, tokenizer)
    prompt = chat_prompt_ids(tokenizer, item["prompt"])
    start = time.perf_counter()
    answer, ended = greedy_answer(model, prompt, max_new_tokens, end_ids)
    generate_s = time.perf_counter() - start
    text = tokenizer.decode(answer, skip_special_tokens=True)
    record = {"id": item["id"], "task": item["task"], "difficulty": item["difficulty"],
              "prompt_tokens": len(prompt), "answer_ids": answer, "answer_text": text, "ended": ended,
              "correct": is_correct(item, text) if has_ground_truth(item) else None,
              "taps": taps, "n_layers": num_layers(model), "lens": {}}
    if not answer:
        record.update(generate_s=round(generate_s, 4), lens_s=0.0)
        return record
    device = model.get_input_embeddings().weight.device
    full = torch.tensor([prompt + answer], device=device)
    positions = [len(prompt) - 1 + k for k in range(len(answer))]
    start = time.perf_counter()
    readout = teacher_forced_lens(model, full, positions, taps)
    lens_s = time.perf_counter() - start
    kinds_cache: dict[int, str] = {}

    def kind(token: int) -> str:
        if token not in kinds_cache:
            kinds_cache[token] = KIND_CODE[token_kind(token, tokenizer)]
        return kinds_cache[token]

    for tap in readout.taps:
        ids = readout.top_ids[tap]
        record["lens"][str(tap)] = {"ids": ids, "probs": readout.top_probs[tap],
                                    "kinds": "".join(kind(t) for t in ids)}
    record.update(generate_s=round(generate_s, 4), lens_s=round(lens_s, 4))
    return record


# --------------------------------------------------------------------------- per-prompt counts


def qualifying(record: dict, tap: int, threshold: float, kind: str = "all") -> list[int]:
    """Answer positions where the lens at `tap` is at least `threshold` sure (of one kind or all)."""
    lens = record["lens"].get(str(tap))
    if not lens:
        return []
    code = {"all": None, STRUCTURAL: "s", CONTENT: "c"}[kind]
    return [p for p, (prob, k) in enumerate(zip(lens["probs"], lens["kinds"]))
            if prob >= threshold and (code is None or k == code)]


def count(record: dict, tap: int, threshold: float, kind: str = "all") -> tuple[int, int]:
    """(qualifying tokens, how many of them equal the final answer's token)."""
    positions = qualifying(record, tap, threshold, kind)
    lens, answer = record["lens"].get(str(tap)), record["answer_ids"]
    return len(positions), sum(1 for p in positions if lens["ids"][p] == answer[p])


def is_viable(n: int, correct: int, min_tokens: int, min_accuracy: float) -> bool:
    return n >= min_tokens and n > 0 and correct / n >= min_accuracy


# --------------------------------------------------------------------------- tables


def layers_table(records: list[dict], taps: list[int], thresholds, min_tokens: int, min_accuracy: float) -> list[dict]:
    """One row per (tap, threshold): counts and accuracies pooled over prompts, and viability."""
    n_layers = next((r["n_layers"] for r in records if r["n_layers"]), None)
    answer_tokens = sum(len(r["answer_ids"]) for r in records)
    rows = []
    for tap in taps:
        for threshold in thresholds:
            row = {"layer": tap, "depth": tap / n_layers if n_layers else None, "threshold": threshold,
                   "prompts": len(records), "answer_positions": answer_tokens}
            for kind in ("all", STRUCTURAL, CONTENT):
                counts = [count(r, tap, threshold, kind) for r in records]
                n, correct = sum(c[0] for c in counts), sum(c[1] for c in counts)
                prefix = "" if kind == "all" else f"{kind}_"
                row[f"{prefix}qualifying"] = n
                row[f"{prefix}accuracy"] = correct / n if n else None
                if kind == "all":
                    per_prompt = [is_viable(*c, min_tokens, min_accuracy) for c in counts]
                    row["qualifying_per_prompt"] = n / len(records) if records else None
                    row["coverage"] = n / answer_tokens if answer_tokens else None
                    row["viable_prompts"] = mean([float(v) for v in per_prompt])
                    row["viable_any_prompt"] = any(per_prompt)
                    row["viable"] = bool(records) and n / len(records) >= min_tokens and \
                        correct / n >= min_accuracy
            rows.append(row)
    return rows


def depth_table(records: list[dict], taps: list[int]) -> list[dict]:
    """Per tap over all answer positions: top-1 agreement with the answer and mean confidence."""
    n_layers = next((r["n_layers"] for r in records if r["n_layers"]), None)
    rows = []
    for tap in taps:
        hits = {"all": [], STRUCTURAL: [], CONTENT: []}
        confidence = []
        for r in records:
            lens = r["lens"].get(str(tap))
            if not lens:
                continue
            for p, (token, prob, k) in enumerate(zip(lens["ids"], lens["probs"], lens["kinds"])):
                hit = float(token == r["answer_ids"][p])
                hits["all"].append(hit)
                hits[STRUCTURAL if k == "s" else CONTENT].append(hit)
                confidence.append(prob)
        rows.append({"layer": tap, "depth": tap / n_layers if n_layers else None, "positions": len(hits["all"]),
                     "top1_agreement": mean(hits["all"]), "structural_top1": mean(hits[STRUCTURAL]),
                     "content_top1": mean(hits[CONTENT]), "mean_confidence": mean(confidence)})
    return rows


def viable_configs(layer_rows: list[dict], limit: int) -> list[dict]:
    """The configurations phase 2 injects: for each viable layer its lowest viable threshold
    (the most tokens that still pass), earliest layers first; with more viable layers than
    `limit`, the earliest limit - 1 and the deepest (the model's own answer, an upper bound)."""
    best: dict[int, dict] = {}
    for row in layer_rows:
        if row["viable"] and (row["layer"] not in best or row["threshold"] < best[row["layer"]]["threshold"]):
            best[row["layer"]] = row
    chosen = [best[layer] for layer in sorted(best)]
    if len(chosen) > limit:
        chosen = chosen[:max(limit - 1, 0)] + chosen[-1:] if limit > 1 else chosen[:limit]
    return [{"layer": r["layer"], "threshold": r["threshold"], "depth": r["depth"], "qualifying": r["qualifying"],
             "accuracy": r["accuracy"]} for r in chosen]


def plot_depth(layer_rows: list[dict], depth_rows: list[dict], thresholds, path) -> None:
    """Accuracy of qualifying tokens (and top-1 agreement) against layer depth; coverage below."""
    plt = pyplot()

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 6.5), sharex=True)
    for threshold in thresholds:
        rows = [r for r in layer_rows if r["threshold"] == threshold]
        xs = [r["depth"] for r in rows]
        top.plot(xs, [r["accuracy"] if r["accuracy"] is not None else float("nan") for r in rows], "o-",
                 label=f"qualifying, p >= {threshold:g}")
        bottom.plot(xs, [r["coverage"] for r in rows], "o-", label=f"p >= {threshold:g}")
    top.plot([r["depth"] for r in depth_rows], [r["top1_agreement"] for r in depth_rows], "k--",
             label="all positions (top-1)")
    top.set_ylabel("accuracy vs final answer")
    top.set_ylim(-0.02, 1.02)
    top.legend(fontsize=8)
    top.set_title("Logit lens of ar_large over its own answer")
    bottom.set_ylabel("share of answer tokens qualifying")
    bottom.set_xlabel("layer depth (tap / layers)")
    bottom.set_ylim(-0.02, 1.02)
    bottom.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


__all__ = ["count", "depth_table", "greedy_answer", "is_viable", "layers_table", "plot_depth", "probe_prompt",
           "qualifying", "viable_configs"]
