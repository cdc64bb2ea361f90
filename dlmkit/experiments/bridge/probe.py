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
from tqdm.auto import tqdm

from dlmkit.errors import UserError
from dlmkit.experiments.bridge.prompts import has_ground_truth
from dlmkit.experiments.bridge.token_kinds import CONTENT, STRUCTURAL, token_kind
from dlmkit.data.chat import chat_prompt_ids, default_end_token_ids
from dlmkit.models.logit_lens import num_layers, teacher_forced_lens
from dlmkit.metrics.scoring import by_stratum, is_correct, mean
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


# --------------------------------------------------------------------------- the phase


def records_of(log, items) -> list[dict]:
    by_id = {r["id"]: r for r in log.records()}
    return [by_id[i["id"]] for i in items if i["id"] in by_id]


def answers_table(records: list[dict]) -> list[dict]:
    """The large model's own answers per stratum: length, whether they ended, accuracy."""
    groups = {**by_stratum(records), "all": records}
    return [{"stratum": name, "n": len(rs), "answer_tokens": mean([len(r["answer_ids"]) - r["ended"] for r in rs]),
             "ended": mean([float(r["ended"]) for r in rs]),
             "accuracy": mean([float(r["correct"]) for r in rs if r["correct"] is not None])}
            for name, rs in groups.items()]


def phase_probe(run, context) -> None:
    model, tokenizer = context.ar()
    taps = context.taps(num_layers(model))
    settings = context.settings
    log = run.log("probe")
    stale = [r["id"] for r in records_of(log, context.items) if r["taps"] != taps]
    if stale:
        raise UserError(f"{len(stale)} probe records in {run.dir} were made with other layer taps than {taps}; "
                        "pass the same --layer-taps or --overwrite")
    done = log.done_ids()
    for item in tqdm([i for i in context.items if i["id"] not in done], desc="probe: ar_large logit lens"):
        log.append(probe_prompt(model, tokenizer, item, taps, settings.ar_max_new_tokens))
    records = records_of(log, context.items)
    run.add_table("ar_answers", answers_table(records))
    layer_rows = layers_table(records, taps, settings.thresholds, settings.min_tokens, settings.min_accuracy)
    depth_rows = depth_table(records, taps)
    run.add_table("probe_layers", layer_rows)
    run.add_table("probe_depth", depth_rows)
    configs = viable_configs(layer_rows, settings.max_inject_configs)
    run.add_table("viable_configs", configs)
    plot_depth(layer_rows, depth_rows, settings.thresholds, run.dir / "probe_accuracy_by_layer.png")
    run.note("probe, unlike the published script: the lens reads a teacher-forced pass over prompt + answer (the "
             "published one ran the prompt alone), applies the final norm before lm_head, and counts qualifying "
             "tokens per prompt on average for viability (the published one kept a layer if any single prompt passed)")
    n_layers = next((r["n_layers"] for r in records if r["n_layers"]), None)
    last = next((r for r in depth_rows if r["layer"] == n_layers), None)
    if last is not None and last["top1_agreement"] is not None and last["top1_agreement"] < 1:
        run.note(f"the lens at the last layer agrees with the greedy answer at {last['top1_agreement']:.4f} of "
                 "positions, not all (reduced precision can flip near-ties)")
    viable_layers = sorted({c["layer"] for c in configs})
    if not configs:
        run.note(f"no layer is viable (>= {settings.min_tokens} qualifying tokens at >= {settings.min_accuracy:g} "
                 "accuracy per prompt on average); phase inject runs cold Dream only")
    else:
        early = [r["layer"] for r in layer_rows if r["viable"] and r["layer"] != n_layers]
        run.note(f"viable layers (mean per prompt): {sorted(set(early)) or 'none below the last'}"
                 f"{'' if n_layers is None else f' of {n_layers}'}; injected: {viable_layers}")


__all__ = ["answers_table", "count", "depth_table", "greedy_answer", "is_viable", "layers_table", "phase_probe",
           "plot_depth", "probe_prompt", "qualifying", "records_of", "viable_configs"]
