"""The two phases of bridge_viability.py as run-directory steps: per-prompt JSONL, resume, tables, plots."""

from __future__ import annotations

from tqdm.auto import tqdm

from dlmkit.experiments.bridge import inject, probe
from dlmkit.experiments.bridge.translate import same_vocabulary
from dlmkit.errors import UserError
from dlmkit.models.logit_lens import num_layers
from dlmkit.metrics.scoring import mean


def _records(log, items) -> list[dict]:
    by_id = {r["id"]: r for r in log.records()}
    return [by_id[i["id"]] for i in items if i["id"] in by_id]


def answers_table(records: list[dict]) -> list[dict]:
    """The large model's own answers per stratum: length, whether they ended, accuracy."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(f"{r['task']}/{r['difficulty']}", []).append(r)
    groups["all"] = records
    return [{"stratum": name, "n": len(rs), "answer_tokens": mean([len(r["answer_ids"]) - r["ended"] for r in rs]),
             "ended": mean([float(r["ended"]) for r in rs]),
             "accuracy": mean([float(r["correct"]) for r in rs if r["correct"] is not None])}
            for name, rs in groups.items()]


def phase_probe(run, bridge) -> None:
    model, tokenizer = bridge.ar()
    taps = bridge.taps(num_layers(model))
    settings = bridge.settings
    log = run.log("probe")
    stale = [r["id"] for r in _records(log, bridge.items) if r["taps"] != taps]
    if stale:
        raise UserError(f"{len(stale)} probe records in {run.dir} were made with other layer taps than {taps}; "
                        "pass the same --layer-taps or --overwrite")
    done = log.done_ids()
    for item in tqdm([i for i in bridge.items if i["id"] not in done], desc="probe: ar_large logit lens"):
        log.append(probe.probe_prompt(model, tokenizer, item, taps, settings.ar_max_new_tokens))
    records = _records(log, bridge.items)
    run.add_table("ar_answers", answers_table(records))
    layer_rows = probe.layers_table(records, taps, settings.thresholds, settings.min_tokens, settings.min_accuracy)
    depth_rows = probe.depth_table(records, taps)
    run.add_table("probe_layers", layer_rows)
    run.add_table("probe_depth", depth_rows)
    configs = probe.viable_configs(layer_rows, settings.max_inject_configs)
    run.add_table("viable_configs", configs)
    probe.plot_depth(layer_rows, depth_rows, settings.thresholds, run.dir / "probe_accuracy_by_layer.png")
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


def phase_inject(run, bridge) -> None:
    settings = bridge.settings
    probe_records = {r["id"]: r for r in run.log("probe").records()}
    missing = [i["id"] for i in bridge.items if i["id"] not in probe_records]
    if missing:
        raise UserError(f"phase inject reads phase probe's records but {len(missing)} of {len(bridge.items)} prompts "
                        f"have none in {run.dir / 'probe.jsonl'}; run it first: "
                        f"{bridge.prog} --phase probe --out {run.dir} --resume")
    records = [probe_records[i["id"]] for i in bridge.items]
    taps = records[0]["taps"]
    layer_rows = probe.layers_table(records, taps, settings.thresholds, settings.min_tokens, settings.min_accuracy)
    configs = probe.viable_configs(layer_rows, settings.max_inject_configs)
    grid = list(settings.step_grid)
    names = [inject.COLD] + [inject.condition_name(c, k) for c in configs for k in settings.inject_kinds]
    identity = same_vocabulary(bridge.ar_tokenizer(), bridge.dlm_tokenizer())
    bridge.drop_ar()
    log = run.log("inject")
    stale = [r["id"] for r in _records(log, bridge.items)
             if r["grid"] != grid or [c["name"] for c in r["conditions"]] != names]
    if stale:
        raise UserError(f"{len(stale)} inject records in {run.dir} have another step grid or other conditions than "
                        f"{grid} / {names}; pass the same settings or rerun with --overwrite")
    done = log.done_ids()
    for item in tqdm([i for i in bridge.items if i["id"] not in done], desc="inject: Dream from layer tokens"):
        log.append(inject.inject_prompt(bridge, item, probe_records[item["id"]], configs, grid, identity))
    results = _records(log, bridge.items)
    rows = inject.f1_table(results, grid, bridge.seed)
    run.add_table("inject_f1", rows)
    saved = inject.steps_saved_table(results, grid)
    run.add_table("inject_steps_saved", saved)
    cold = next(r for r in saved if r["condition"] == inject.COLD)
    if cold["steps_to_match"] is not None and cold["steps_to_match"] < grid[-1]:
        run.note(f"cold Dream alone reaches its {grid[-1]}-step F1 vs the AR answer at {cold['steps_to_match']} steps, "
                 "so steps saved by injection are counted against that too (steps_saved_vs_cold_min)")
    run.add_table("inject_by_difficulty", inject.difficulty_table(results, grid[-1]))
    run.add_table("inject_vs_cold", inject.paired_table(results, grid[-1]))
    inject.plot_f1_by_steps(rows, run.dir / "inject_f1_by_steps.png")
    if any(r["injected_changed"] or r["permanence_violations"] for r in rows):
        run.note("PERMANENCE VIOLATED: an injected or committed token changed during denoising (see inject.jsonl)")
    run.note("word F1 vs the AR answer counts the injected words too: injected tokens are the AR model's own "
             "(layer) predictions, so part of the gain over cold Dream is the seed itself")


__all__ = ["answers_table", "phase_inject", "phase_probe"]
