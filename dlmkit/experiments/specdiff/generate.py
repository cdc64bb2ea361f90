"""SpecDiff's run: every (temperature, prompt, method) of the selected phases, interleaved, timed
and counted, one JSONL record per generation."""

from __future__ import annotations

from tqdm.auto import tqdm

from dlmkit.experiments.specdiff.methods import Method
from dlmkit.seeds import item_seed


def record_id(prompt: dict, temperature: float, method: Method) -> str:
    return f"{prompt['set']}/{prompt['index']}/t{temperature:g}/{method.name}"


def run_generations(run, bench, prompts: list[dict], methods: list[Method], cfg) -> None:
    """Every (temperature, prompt, method) not already logged, prompts outermost within a
    temperature so that every method sees the same machine load."""
    logs = {family: run.log(family) for family in {m.family for m in methods}}
    done = set().union(*(log.done_ids() for log in logs.values()))
    todo = [(t, p, m) for t in cfg.temperatures for p in prompts for m in methods
            if record_id(p, t, m) not in done]
    if not todo:
        return
    # Untimed warm-up of every code path (allocators, kernels, lazy imports).
    for method in {m.family: m for m in methods}.values():
        for temperature in cfg.temperatures:
            bench.generate(method, prompts[0]["ids"], min(8, cfg.max_new_tokens), temperature, 0)
    for temperature, prompt, method in tqdm(todo, desc="generations", unit="gen"):
        rid = record_id(prompt, temperature, method)
        seed = item_seed(cfg.seed, rid)
        out, seconds, cpu_seconds = bench.generate(method, prompt["ids"], cfg.max_new_tokens, temperature, seed)
        logs[method.family].append({
            "id": rid, "prompt_set": prompt["set"], "prompt_index": prompt["index"], "temperature": temperature,
            "method": method.name, "family": method.family, "gamma": method.gamma, "steps": method.steps,
            "prompt_tokens": len(prompt["ids"]), "new_tokens": len(out.tokens), "target_calls": out.target_calls,
            "drafter_nfe": out.drafter_nfe, "rounds": out.rounds if method.family != "hf" else None,
            "drafted": out.drafted if method.family != "hf" else None,
            "accepted": sum(out.accepted) if method.family != "hf" else None,
            "accepted_per_round": out.accepted, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "tokens": out.tokens,
        })
