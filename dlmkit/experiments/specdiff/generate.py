"""SpecDiff's run: every (temperature, prompt, method) of the selected phases, interleaved, timed
and counted, one JSONL record per generation."""

from __future__ import annotations

from tqdm.auto import tqdm

from dlmkit.experiments.specdiff.methods import Method
from dlmkit.seeds import item_seed


def record_id(prompt: dict, temperature: float, method: Method) -> str:
    return f"{prompt['set']}/{prompt['index']}/t{temperature:g}/{method.name}"


def run_generations(run, bench, prompts: list[dict], methods: list[Method], cfg) -> None:
    """Every (temperature, prompt, method) not already logged. Per temperature and prompt, the
    methods run `cfg.timing_repeats` times, repeats outside methods, so every method sees the same
    machine load within a repeat; the record of a generation keeps the wall and CPU seconds of
    each repeat (lists) and is written when its prompt's repeats are done. Every repeat runs with
    the same seed and must give the same tokens (checked)."""
    logs = {family: run.log(family) for family in {m.family for m in methods}}
    done = set().union(*(log.done_ids() for log in logs.values()))
    todo = {}
    for t in cfg.temperatures:
        for p in prompts:
            pending = [m for m in methods if record_id(p, t, m) not in done]
            if pending:
                todo[(t, p["set"], p["index"])] = (t, p, pending)
    if not todo:
        return
    # Untimed warm-up of every code path (allocators, kernels, lazy imports).
    for method in {m.family: m for m in methods}.values():
        for temperature in cfg.temperatures:
            bench.generate(method, prompts[0]["ids"], min(8, cfg.max_new_tokens), temperature, 0)
    progress = tqdm(total=sum(len(m) for _, _, m in todo.values()) * cfg.timing_repeats, desc="generations",
                    unit="gen")
    for temperature, prompt, pending in todo.values():
        outs, seconds, cpu_seconds = {}, {m: [] for m in pending}, {m: [] for m in pending}
        for _ in range(cfg.timing_repeats):
            for method in pending:
                seed = item_seed(cfg.seed, record_id(prompt, temperature, method))
                out, wall, cpu = bench.generate(method, prompt["ids"], cfg.max_new_tokens, temperature, seed)
                if method in outs and out.tokens != outs[method].tokens:
                    raise RuntimeError(f"{record_id(prompt, temperature, method)}: a repeat with the same seed gave "
                                       "other tokens; timing repeats need a deterministic generation")
                outs[method] = out
                seconds[method].append(wall)
                cpu_seconds[method].append(cpu)
                progress.update()
        for method in pending:
            out = outs[method]
            logs[method.family].append({
                "id": record_id(prompt, temperature, method), "prompt_set": prompt["set"],
                "prompt_index": prompt["index"], "temperature": temperature, "method": method.name,
                "family": method.family, "gamma": method.gamma, "steps": method.steps,
                "prompt_tokens": len(prompt["ids"]), "new_tokens": len(out.tokens), "target_calls": out.target_calls,
                "drafter_nfe": out.drafter_nfe, "rounds": out.rounds if method.family != "hf" else None,
                "drafted": out.drafted if method.family != "hf" else None,
                "accepted": sum(out.accepted) if method.family != "hf" else None,
                "accepted_per_round": out.accepted, "seconds": seconds[method], "cpu_seconds": cpu_seconds[method],
                "tokens": out.tokens,
            })
    progress.close()
