"""Phase 2 (inject): seed Dream's canvas with a layer's confident tokens and denoise the rest.

For each configuration phase 1 found viable (layer L, threshold tau) and each prompt: the
positions where the lens at L is >= tau sure, with the lens's own tokens there (its
predictions, not the final answer's tokens), are written into Dream's canvas at their
generation positions BEFORE the first denoising step (a tokens_hook called with step None;
the published hook wrote at step 0's end and indexed from the prompt's start, overwriting
the prompt). Dream never re-masks a committed token, so they stay fixed; the hook checks at
every step that they do (`injected_changed`, always 0) and that no committed token changes
(`permanence_violations`). Positions beyond the canvas are dropped. When the two models'
vocabularies differ, the tokens go through text first (dlmkit.experiments.bridge.translate).

Every condition (cold Dream, and each injected configuration) runs at every step budget of
the grid, with the same seed per (prompt, budget) across conditions, so the comparisons are
paired. Scores: word F1 against the large model's answer (the bridge's target), word F1
against cold Dream's full-steps answer, and ground-truth accuracy where the items have it.

Steps saved for equal F1: the smallest budget n at which an injected condition's mean F1
(vs the AR answer) reaches cold Dream's mean F1 at the full step count; saved = full - n.
Cold Dream's own smallest such budget is reported beside it (fewer steps can already tie;
`steps_saved_vs_cold_min` counts from there), and so is the median of the same rule applied
per prompt.

Tables: inject_f1 (condition x budget), inject_steps_saved, inject_by_difficulty (full budget),
inject_vs_cold (paired tests at the full budget); plot inject_f1_by_steps.png.
"""

from __future__ import annotations

import statistics

import torch
from tqdm.auto import tqdm

from dlmkit.data.chat import chat_prompt_ids, end_token_ids, response_length
from dlmkit.experiments.bridge.probe import layers_table, qualifying, records_of, viable_configs
from dlmkit.experiments.bridge.prompts import has_ground_truth
from dlmkit.experiments.bridge.translate import same_vocabulary, translate_tokens
from dlmkit.decoding.diffusion import PermanenceCheck, diffusion_generate
from dlmkit.errors import UserError
from dlmkit.metrics.text import word_f1
from dlmkit.metrics.scoring import is_correct, mean, mean_ci
from dlmkit.seeds import item_seed
from dlmkit.stats import compare_paired
from dlmkit.plots import pyplot, save_figure

COLD = "cold"


class Injection:
    """A diffusion_generate tokens_hook: writes `tokens` ({generation position: id}) into the
    canvas before step 0, then counts any later change to them or to any committed token."""

    def __init__(self, prompt_length: int, tokens: dict[int, int], mask_id: int):
        self.prompt_length, self.mask_id = prompt_length, mask_id
        self.positions = torch.tensor([prompt_length + p for p in tokens], dtype=torch.long)
        self.tokens = torch.tensor(list(tokens.values()), dtype=torch.long)
        self.injected_changed = 0
        self.permanence = PermanenceCheck(mask_id)

    def __call__(self, step, x, logits):
        positions, tokens = self.positions.to(x.device), self.tokens.to(x.device)
        if step is None and len(positions):
            width = x.shape[1] - self.prompt_length
            if int(positions.max()) >= x.shape[1] or bool((x[:, positions] != self.mask_id).any()):
                raise UserError(f"injected positions must be masked generation positions 0..{width - 1}; "
                                "clip them to the canvas (max_new_tokens) first")
            x = x.clone()
            x[:, positions] = tokens
        elif len(positions):
            self.injected_changed += int((x[:, positions] != tokens).sum())
        self.permanence(step, x, logits)
        return x if step is None else None

    @property
    def permanence_violations(self) -> int:
        return self.permanence.violations


def injected_tokens(record: dict, tap: int, threshold: float, kind: str, ar_tokenizer, dlm_tokenizer,
                    identity: bool, canvas: int, mask_id: int) -> dict[int, int]:
    """{Dream generation position: Dream token id} for one prompt and configuration."""
    chosen = qualifying(record, tap, threshold, kind)
    if not chosen:
        return {}
    lens_ids = record["lens"][str(tap)]["ids"]
    # The layer's predictions at the chosen positions, the final answer elsewhere: the frame in
    # which the chosen tokens' text and positions are read.
    sequence = list(record["answer_ids"])
    for p in chosen:
        sequence[p] = lens_ids[p]
    translation = translate_tokens(sequence, chosen, ar_tokenizer, dlm_tokenizer, identity=identity)
    return {p: t for p, t in translation.tokens.items() if p < canvas and t != mask_id}


def dream_answer(model, tokenizer, prompt_ids: list[int], settings, steps: int, seed: int,
                 injected: dict[int, int]) -> dict:
    """Dream's answer with `steps` steps from a canvas seeded with `injected`."""
    input_ids = torch.tensor([prompt_ids], device=model.device)
    generator = torch.Generator(device=model.device).manual_seed(seed)
    hook = Injection(len(prompt_ids), injected, model.mask_token_id)
    out = diffusion_generate(model, input_ids, max_new_tokens=settings.max_new_tokens, steps=steps, alg=settings.alg,
                             temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
                             eps=settings.eps, tokens_hook=hook, generator=generator)
    tokens = out.generated[0].tolist()
    length = response_length(tokens, end_token_ids(tokenizer))
    return {"gen_len": length, "text": tokenizer.decode(tokens[:length], skip_special_tokens=True),
            "injected_changed": hook.injected_changed, "permanence_violations": hook.permanence_violations}


def condition_name(config: dict | None, kind: str = "all") -> str:
    if config is None:
        return COLD
    return f"L{config['layer']}@{config['threshold']:g}" + ("" if kind == "all" else f"/{kind}")


def inject_prompt(context, item: dict, record: dict, configs: list[dict], grid: list[int], identity: bool) -> dict:
    """Phase 2's record of one prompt: every condition at every step budget."""
    model, tokenizer, settings = context.dlm(), context.dlm_tokenizer(), context.settings
    prompt_ids = chat_prompt_ids(tokenizer, item["prompt"])
    canvas = settings.dream.max_new_tokens
    conditions = [(None, "all", {})]
    for config in configs:
        for kind in settings.inject_kinds:
            tokens = injected_tokens(record, config["layer"], config["threshold"], kind, context.ar_tokenizer(),
                                     tokenizer, identity, canvas, model.mask_token_id)
            conditions.append((config, kind, tokens))
    out = {"id": item["id"], "task": item["task"], "difficulty": item["difficulty"], "grid": grid,
           "ar_answer": record["answer_text"], "ar_positions": len(record["answer_ids"]), "identity": identity,
           "conditions": []}
    for config, kind, tokens in conditions:
        runs = []
        for steps in grid:
            answer = dream_answer(model, tokenizer, prompt_ids, settings.dream, steps,
                                  item_seed(context.seed, f"{item['id']}/steps={steps}"), tokens)
            answer["steps"] = steps
            answer["f1_vs_ar"] = word_f1(answer["text"], record["answer_text"])
            answer["correct"] = is_correct(item, answer["text"]) if has_ground_truth(item) else None
            runs.append(answer)
        out["conditions"].append({"name": condition_name(config, kind), "layer": config and config["layer"],
                                  "threshold": config and config["threshold"], "kind": kind,
                                  "injected": {"positions": sorted(tokens), "tokens": [tokens[p] for p in sorted(tokens)]},
                                  "runs": runs})
    cold_full = out["conditions"][0]["runs"][-1]["text"]
    for condition in out["conditions"]:
        for run in condition["runs"]:
            run["f1_vs_cold"] = word_f1(run["text"], cold_full)
    return out


# --------------------------------------------------------------------------- tables


def _runs(records: list[dict], name: str, steps: int) -> list[tuple[dict, dict, dict]]:
    """(record, condition, run) for one condition and budget, over the prompts that have it."""
    found = []
    for r in records:
        condition = next((c for c in r["conditions"] if c["name"] == name), None)
        if condition is not None:
            found.append((r, condition, next(x for x in condition["runs"] if x["steps"] == steps)))
    return found


def condition_names(records: list[dict]) -> list[str]:
    names: list[str] = []
    for r in records:
        names += [c["name"] for c in r["conditions"] if c["name"] not in names]
    return names


def f1_table(records: list[dict], grid: list[int], seed: int = 0) -> list[dict]:
    rows = []
    for name in condition_names(records):
        for steps in grid:
            found = _runs(records, name, steps)
            condition = found[0][1]
            rows.append({"condition": name, "layer": condition["layer"], "threshold": condition["threshold"],
                         "kind": condition["kind"], "steps": steps, "n": len(found),
                         "injected": mean([len(c["injected"]["positions"]) for _, c, _ in found]),
                         "injected_share": mean([len(c["injected"]["positions"]) / r["ar_positions"]
                                                 for r, c, _ in found if r["ar_positions"]]),
                         **mean_ci([x["f1_vs_ar"] for _, _, x in found], "f1_vs_ar", seed),
                         "f1_vs_cold": mean([x["f1_vs_cold"] for _, _, x in found]),
                         "accuracy": mean([float(x["correct"]) for _, _, x in found if x["correct"] is not None]),
                         "gen_len": mean([x["gen_len"] for _, _, x in found]),
                         "injected_changed": sum(x["injected_changed"] for _, _, x in found),
                         "permanence_violations": sum(x["permanence_violations"] for _, _, x in found)})
    return rows


def _first_reaching(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((steps for steps, f1 in curve if f1 is not None and f1 >= target - 1e-12), None)


def steps_saved_table(records: list[dict], grid: list[int]) -> list[dict]:
    """Per condition: the smallest budget whose mean F1 (vs the AR answer) reaches cold
    Dream's at the full budget, and the per-prompt median of the same rule."""
    full = grid[-1]
    target = mean([x["f1_vs_ar"] for _, _, x in _runs(records, COLD, full)])
    rows = []
    cold_reach = None
    for name in condition_names(records):
        curve = [(n, mean([x["f1_vs_ar"] for _, _, x in _runs(records, name, n)])) for n in grid]
        reach = _first_reaching(curve, target) if target is not None else None
        if name == COLD:
            cold_reach = reach
        per_prompt = []
        for r in records:
            cold = next(c for c in r["conditions"] if c["name"] == COLD)["runs"][-1]["f1_vs_ar"]
            condition = next((c for c in r["conditions"] if c["name"] == name), None)
            if condition is not None:
                n = _first_reaching([(x["steps"], x["f1_vs_ar"]) for x in condition["runs"]], cold)
                per_prompt.append(full - n if n is not None else None)
        reached = [s for s in per_prompt if s is not None]
        rows.append({"condition": name, "full_steps": full, "cold_full_f1_vs_ar": target,
                     "steps_to_match": reach, "f1_at_match": dict(curve).get(reach),
                     "steps_saved": full - reach if reach is not None else None,
                     "steps_saved_share": (full - reach) / full if reach is not None else None,
                     "steps_saved_vs_cold_min": cold_reach - reach if None not in (reach, cold_reach) else None,
                     "prompts_matching": len(reached), "prompts": len(per_prompt),
                     "median_steps_saved_per_prompt": statistics.median(reached) if reached else None})
    return rows


def difficulty_table(records: list[dict], full: int) -> list[dict]:
    rows = []
    difficulties = sorted({r["difficulty"] for r in records}) + ["all"]
    for difficulty in difficulties:
        group = [r for r in records if difficulty in ("all", r["difficulty"])]
        for name in condition_names(group):
            found = _runs(group, name, full)
            rows.append({"difficulty": difficulty, "condition": name, "n": len(found),
                         "injected": mean([len(c["injected"]["positions"]) for _, c, _ in found]),
                         "f1_vs_ar": mean([x["f1_vs_ar"] for _, _, x in found]),
                         "f1_vs_cold": mean([x["f1_vs_cold"] for _, _, x in found]),
                         "accuracy": mean([float(x["correct"]) for _, _, x in found if x["correct"] is not None])})
    return rows


def paired_table(records: list[dict], full: int) -> list[dict]:
    """Each injected condition against cold Dream at the full budget (F1 vs the AR answer)."""
    rows = []
    cold = {r["id"]: x["f1_vs_ar"] for r, _, x in _runs(records, COLD, full)}
    for name in condition_names(records)[1:]:
        pairs = [(x["f1_vs_ar"], cold[r["id"]]) for r, _, x in _runs(records, name, full)]
        if len(pairs) < 2:
            continue
        result = compare_paired([a for a, _ in pairs], [b for _, b in pairs])
        rows.append({"condition": name, "steps": full, "n": len(pairs), "f1_injected": result["mean_x"],
                     "f1_cold": result["mean_y"], "median_diff": result["wilcoxon"]["median_diff"],
                     "wilcoxon_p": result["wilcoxon"]["p_value"], "cohens_d": result["cohens_d"]})
    return rows


def plot_f1_by_steps(rows: list[dict], path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in dict.fromkeys(r["condition"] for r in rows):
        rs = [r for r in rows if r["condition"] == name]
        ax.plot([r["steps"] for r in rs], [r["f1_vs_ar"] for r in rs], "o-" if name != COLD else "ks--", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({r["steps"] for r in rows}), [str(s) for s in sorted({r["steps"] for r in rows})])
    ax.minorticks_off()
    ax.set_xlabel("Dream denoising steps")
    ax.set_ylabel("word F1 vs ar_large's answer")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Dream seeded with ar_large's confident layer tokens")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


# --------------------------------------------------------------------------- the phase


def phase_inject(run, context) -> None:
    settings = context.settings
    probe_records = {r["id"]: r for r in run.log("probe").records()}
    missing = [i["id"] for i in context.items if i["id"] not in probe_records]
    if missing:
        raise UserError(f"phase inject reads phase probe's records but {len(missing)} of {len(context.items)} prompts "
                        f"have none in {run.dir / 'probe.jsonl'}; run it first: "
                        f"{context.prog} --phase probe --out {run.dir} --resume")
    records = [probe_records[i["id"]] for i in context.items]
    taps = records[0]["taps"]
    layer_rows = layers_table(records, taps, settings.thresholds, settings.min_tokens, settings.min_accuracy)
    configs = viable_configs(layer_rows, settings.max_inject_configs)
    grid = list(settings.step_grid)
    names = [COLD] + [condition_name(c, k) for c in configs for k in settings.inject_kinds]
    identity = same_vocabulary(context.ar_tokenizer(), context.dlm_tokenizer())
    context.drop_ar()
    log = run.log("inject")
    stale = [r["id"] for r in records_of(log, context.items)
             if r["grid"] != grid or [c["name"] for c in r["conditions"]] != names]
    if stale:
        raise UserError(f"{len(stale)} inject records in {run.dir} have another step grid or other conditions than "
                        f"{grid} / {names}; pass the same settings or rerun with --overwrite")
    done = log.done_ids()
    for item in tqdm([i for i in context.items if i["id"] not in done], desc="inject: Dream from layer tokens"):
        log.append(inject_prompt(context, item, probe_records[item["id"]], configs, grid, identity))
    results = records_of(log, context.items)
    rows = f1_table(results, grid, context.seed)
    run.add_table("inject_f1", rows)
    saved = steps_saved_table(results, grid)
    run.add_table("inject_steps_saved", saved)
    cold = next(r for r in saved if r["condition"] == COLD)
    if cold["steps_to_match"] is not None and cold["steps_to_match"] < grid[-1]:
        run.note(f"cold Dream alone reaches its {grid[-1]}-step F1 vs the AR answer at {cold['steps_to_match']} steps, "
                 "so steps saved by injection are counted against that too (steps_saved_vs_cold_min)")
    run.add_table("inject_by_difficulty", difficulty_table(results, grid[-1]))
    run.add_table("inject_vs_cold", paired_table(results, grid[-1]))
    plot_f1_by_steps(rows, run.dir / "inject_f1_by_steps.png")
    if any(r["injected_changed"] or r["permanence_violations"] for r in rows):
        run.note("PERMANENCE VIOLATED: an injected or committed token changed during denoising (see inject.jsonl)")
    run.note("word F1 vs the AR answer counts the injected words too: injected tokens are the AR model's own "
             "(layer) predictions, so part of the gain over cold Dream is the seed itself")


__all__ = ["COLD", "Injection", "condition_name", "difficulty_table", "dream_answer", "f1_table", "inject_prompt",
           "injected_tokens", "paired_table", "phase_inject", "plot_f1_by_steps", "steps_saved_table"]
