"""SpecDiff's benchmark: every decoding method on the same prompts, in the same run.

Methods (one per phase of specdiff_bench.py):

  ar                 the target alone, one cached forward per token (the baseline)
  sd/gG              standard speculative decoding: the AR drafter drafts G tokens
  specdiff/gG/TT     SpecDiff: the MDLM drafts G tokens in T denoising steps
  hf/gG              transformers' assisted generation (`generate(assistant_model=drafter)`,
                     G assistant tokens, constant schedule): an external reference

Every method runs on every prompt at every temperature; prompts are the outer loop, so
load drift on a shared machine reaches all methods alike. Each generation is timed alone
(batch 1, after an untimed warm-up of every path) and counted: target calls (forward
passes, the prefill included), drafter network calls, drafts proposed and accepted.
Generations have a fixed length (no stop at EOS), as throughput benchmarks use.

Two kinds of numbers come out:
- counts (same seed, same numbers on any machine): acceptance rate, accepted drafts per
  round, tokens per target call, and "target calls saved" = AR's target calls / the
  method's. That ratio is the speedup when a target call costs the same whatever its
  width and the drafter costs nothing, the regime SpecDiff's paper (gpt2-xl on a GPU)
  aims at.
- times: tokens per second, speedup over AR and over the fastest AR-drafter cell, on this
  machine, in this run, by wall clock and by the process's CPU time (on a CPU shared with
  other jobs the CPU time is the steadier of the two; on a GPU only wall clock means much).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from dlmkit.cli import synchronize
from dlmkit.decoding.assisted import assisted_generate
from dlmkit.decoding.drafters import ARDrafter, MDLMDrafter
from dlmkit.decoding.spec_loop import CachedLM, Generation, ar_generate, speculative_generate
from dlmkit.errors import UserError
from dlmkit.phases.reference import item_seed
from dlmkit.results import save_figure

FAMILIES = ("ar", "sd", "specdiff", "hf")
PROMPT_SETS = {"tiny": ("documents", "chat"), "paper": ("owt", "cnn_dm")}
PRESET_DEFAULTS = {
    "tiny": dict(prompt_sets=PROMPT_SETS["tiny"], prompts=6, prompt_tokens=12, max_new_tokens=64,
                 gammas=(4, 8, 16), steps=(1, 2, 4), sd_gammas=(2, 4, 8), temperatures=(0.0, 1.0)),
    "paper": dict(prompt_sets=PROMPT_SETS["paper"], prompts=50, prompt_tokens=128, max_new_tokens=256,
                  gammas=(5, 10, 15, 20), steps=(1, 2, 4, 8), sd_gammas=(3, 5, 8), temperatures=(0.0, 1.0)),
}
PAPER_SPEEDUP_OVER_AR = 7.2
PAPER_SPEEDUP_OVER_SD = 1.75


@dataclass(frozen=True)
class Method:
    family: str  # ar | sd | specdiff | hf
    gamma: int | None = None
    steps: int | None = None

    @property
    def name(self) -> str:
        if self.family == "ar":
            return "ar"
        if self.family == "specdiff":
            return f"specdiff/g{self.gamma}/T{self.steps}"
        return f"{self.family}/g{self.gamma}"


def methods_for(families: list[str], cfg: dict) -> list[Method]:
    out = []
    for family in families:
        if family == "ar":
            out.append(Method("ar"))
        elif family in ("sd", "hf"):
            out += [Method(family, gamma=g) for g in cfg["sd_gammas"]]
        elif family == "specdiff":
            out += [Method("specdiff", gamma=g, steps=t) for g in cfg["gammas"] for t in cfg["steps"]]
    return out


# --------------------------------------------------------------------------- prompts


def tiny_prompts(tokenizer, sets, n: int, prompt_tokens: int) -> list[dict]:
    """Held-out (test-split) tiny-world text: the first tokens of documents, and chat prompts
    (one user turn and the generation prompt). Each starts with <|endoftext|>, the document
    start every tiny model was trained with."""
    from dlmkit.data.tinyworld import TinyWorld
    from dlmkit.tokenizer import render_chat

    world, bos = TinyWorld(0), tokenizer.eos_token_id
    prompts = []
    if "documents" in sets:
        for i, text in enumerate(world.documents(n, "test")):
            prompts.append({"set": "documents", "index": i, "ids": [bos] + tokenizer(text)["input_ids"][:prompt_tokens]})
    if "chat" in sets:
        for i, item in enumerate(world.chat_examples(n, "test")):
            text = render_chat(item["messages"][:1], add_generation_prompt=True)
            prompts.append({"set": "chat", "index": i, "ids": [bos] + tokenizer(text)["input_ids"]})
    return prompts


def paper_prompts(tokenizer, sets, n: int, prompt_tokens: int) -> list[dict]:
    """The first prompt_tokens GPT-2 tokens of OpenWebText validation documents (MDLM's split)
    and of CNN/DailyMail test articles, after <|endoftext|>."""
    bos = tokenizer.eos_token_id
    prompts = []
    if "owt" in sets:
        from dlmkit.data.owt import load_owt_documents

        documents = load_owt_documents("validation")
        for row in documents:
            ids = tokenizer(row["text"])["input_ids"]
            if len(ids) >= prompt_tokens:
                prompts.append({"set": "owt", "index": len([p for p in prompts if p["set"] == "owt"]),
                                "ids": [bos] + ids[:prompt_tokens]})
            if sum(p["set"] == "owt" for p in prompts) == n:
                break
    if "cnn_dm" in sets:
        from dlmkit.data.cnn_dm import load_articles

        for i, row in enumerate(load_articles(n)):
            prompts.append({"set": "cnn_dm", "index": i, "ids": [bos] + tokenizer(row["article"])["input_ids"][:prompt_tokens]})
    return prompts


def load_prompts(preset: str, tokenizer, sets, n: int, prompt_tokens: int) -> list[dict]:
    unknown = [s for s in sets if s not in PROMPT_SETS[preset]]
    if unknown:
        raise UserError(f"prompt set(s) {', '.join(unknown)} do not exist on the {preset} preset; "
                        f"choose from {', '.join(PROMPT_SETS[preset])}")
    load = tiny_prompts if preset == "tiny" else paper_prompts
    return load(tokenizer, sets, n, prompt_tokens)


# --------------------------------------------------------------------------- models and methods


def check_vocabularies(target, drafter=None, mdlm=None) -> None:
    """The drafters must speak the target's ids: the AR drafter the same vocabulary, the MDLM
    the same plus at most its mask as one extra last id (mdlm-owt 50258 vs gpt2-xl 50257)."""
    vocab = target.config.vocab_size
    if drafter is not None and drafter.config.vocab_size != vocab:
        raise UserError(f"the AR drafter's vocab_size {drafter.config.vocab_size} differs from the target's "
                        f"{vocab}; pass a --model-drafter with the target's tokenizer")
    if mdlm is not None and mdlm.config.vocab_size not in (vocab, vocab + 1):
        raise UserError(f"the MDLM's vocab_size {mdlm.config.vocab_size} fits neither the target's {vocab} nor "
                        f"{vocab} + its mask; pass a --model-mdlm trained with the target's tokenizer")


class Bench:
    """The loaded models and one `generate` per method."""

    def __init__(self, specs: dict, families: list[str], device: str, dtype, sampler: str):
        from dlmkit.models.ar import load_ar
        from dlmkit.models.mdlm import load_mdlm

        def load_causal(role: str, **kwargs):  # load_ar turns an unreachable hub id into a one-line error
            return load_ar(specs[role].source, device=device, dtype=dtype, **kwargs)

        self.device = device
        self.target_model, self.tokenizer = load_causal("target")
        self.target = CachedLM(self.target_model)
        needs_drafter = bool({"sd", "hf"} & set(families))
        self.drafter_model = load_causal("drafter", with_tokenizer=False)[0] if needs_drafter else None
        self.ar_drafter = ARDrafter(self.drafter_model) if needs_drafter else None
        self.mdlm = load_mdlm(specs["mdlm"].source, device=device, dtype=dtype) if "specdiff" in families else None
        check_vocabularies(self.target_model, self.drafter_model, self.mdlm)
        self.sampler = sampler

    def parameters(self) -> dict[str, int]:
        models = {"target": self.target_model, "AR drafter": self.drafter_model, "MDLM": self.mdlm}
        return {role: sum(p.numel() for p in m.parameters()) for role, m in models.items() if m is not None}

    def generate(self, method: Method, prefix: list[int], max_new_tokens: int, temperature: float,
                 seed: int) -> tuple[Generation, float, float]:
        """(generation, wall seconds, CPU seconds of this process) of one method on one prompt. On a
        shared CPU the process time is the steadier measure: it does not count time other processes
        held the cores."""
        generator = torch.Generator().manual_seed(seed)
        synchronize(self.device)
        start, start_cpu = time.perf_counter(), time.process_time()
        if method.family == "ar":
            out = ar_generate(self.target, prefix, max_new_tokens, temperature, generator)
        elif method.family == "sd":
            out = speculative_generate(self.target, self.ar_drafter, prefix, max_new_tokens, method.gamma,
                                       temperature, generator)
        elif method.family == "specdiff":
            drafter = MDLMDrafter(self.mdlm, method.steps, sampler=self.sampler)
            out = speculative_generate(self.target, drafter, prefix, max_new_tokens, method.gamma, temperature,
                                       generator)
        elif method.family == "hf":
            out = self._assisted(prefix, max_new_tokens, method.gamma, temperature, seed)
        else:
            raise ValueError(method.family)
        synchronize(self.device)
        return out, time.perf_counter() - start, time.process_time() - start_cpu

    def _assisted(self, prefix: list[int], max_new_tokens: int, gamma: int, temperature: float,
                  seed: int) -> Generation:
        """transformers' assisted generation, batch 1, fixed length (EOS off, as in our loops), exactly
        gamma drafts per round (dlmkit/decoding/assisted.py); drafter_nfe counts assistant forwards."""
        out = assisted_generate(self.target_model, self.drafter_model, prefix, max_new_tokens, gamma, temperature,
                                seed, pad_token_id=self.tokenizer.eos_token_id)
        return Generation(tokens=out.tokens, target_calls=out.target_calls, drafter_nfe=out.assistant_calls)


# --------------------------------------------------------------------------- the run


def record_id(prompt: dict, temperature: float, method: Method) -> str:
    return f"{prompt['set']}/{prompt['index']}/t{temperature:g}/{method.name}"


def run_generations(run, bench: Bench, prompts: list[dict], methods: list[Method], cfg: dict) -> None:
    """Every (temperature, prompt, method) not already logged, prompts outermost within a
    temperature so that every method sees the same machine load."""
    logs = {family: run.log(family) for family in {m.family for m in methods}}
    done = set().union(*(log.done_ids() for log in logs.values()))
    todo = [(t, p, m) for t in cfg["temperatures"] for p in prompts for m in methods
            if record_id(p, t, m) not in done]
    if not todo:
        return
    # Untimed warm-up of every code path (allocators, kernels, lazy imports).
    for method in {m.family: m for m in methods}.values():
        for temperature in cfg["temperatures"]:
            bench.generate(method, prompts[0]["ids"], min(8, cfg["max_new_tokens"]), temperature, 0)
    for temperature, prompt, method in tqdm(todo, desc="generations", unit="gen"):
        rid = record_id(prompt, temperature, method)
        seed = item_seed(cfg["seed"], rid)
        out, seconds, cpu_seconds = bench.generate(method, prompt["ids"], cfg["max_new_tokens"], temperature, seed)
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


# --------------------------------------------------------------------------- tables


def _ratio(a, b):
    return a / b if a is not None and b else None


def _sum(records, key):
    values = [r[key] for r in records]
    return None if any(v is None for v in values) else sum(values)


def _cells(records: list[dict], methods: list[Method], temperature: float, scope: str):
    """(method, its records, AR's records on the same prompts) at one temperature, over one prompt
    set or all ("all")."""
    by_key = {(r["prompt_set"], r["prompt_index"], r["method"]): r for r in records
              if r["temperature"] == temperature and scope in ("all", r["prompt_set"])}
    prompts = sorted({(s, i) for s, i, _ in by_key})
    for method in methods:
        chosen = [by_key[p + (method.name,)] for p in prompts if p + (method.name,) in by_key]
        if chosen:
            ar = [by_key.get((r["prompt_set"], r["prompt_index"], "ar")) for r in chosen]
            yield method, chosen, ar


def count_row(method: Method, chosen: list[dict], ar: list[dict | None]) -> dict:
    """Machine-independent numbers of one cell; ratios to AR over the prompts both ran."""
    paired = [(r, a) for r, a in zip(chosen, ar) if a is not None]
    tokens, calls = _sum(chosen, "new_tokens"), _sum(chosen, "target_calls")
    row = {"prompts": len(chosen), "new_tokens": tokens}
    # transformers reports no acceptances; its target calls are counted (decoding/assisted.py)
    drafts = method.family not in ("ar", "hf")
    row.update({
        "acceptance_rate": _ratio(_sum(chosen, "accepted"), _sum(chosen, "drafted")) if drafts else None,
        "accepted_per_round": _ratio(_sum(chosen, "accepted"), _sum(chosen, "rounds")) if drafts else None,
        "tokens_per_target_call": _ratio(tokens, calls), "target_calls": calls,
        "drafter_nfe": _sum(chosen, "drafter_nfe"),
        "target_calls_saved": _ratio(_sum([a for _, a in paired], "target_calls"),
                                     _sum([r for r, _ in paired], "target_calls")),
    })
    if chosen[0]["temperature"] == 0 and paired:
        row["greedy_equal_to_ar"] = f"{sum(r['tokens'] == a['tokens'] for r, a in paired)}/{len(paired)}"
    return row


def timing_row(chosen: list[dict], ar: list[dict | None]) -> dict:
    """This machine's numbers of one cell, by wall clock and by process CPU time; the speedups
    over AR on the prompts both ran."""
    paired = [(r, a) for r, a in zip(chosen, ar) if a is not None]
    seconds, cpu = sum(r["seconds"] for r in chosen), sum(r["cpu_seconds"] for r in chosen)
    return {"seconds": seconds, "tokens_per_s": _ratio(_sum(chosen, "new_tokens"), seconds),
            "speedup_vs_ar": _ratio(sum(a["seconds"] for _, a in paired), sum(r["seconds"] for r, _ in paired)),
            "cpu_seconds": cpu,
            "speedup_vs_ar_cpu": _ratio(sum(a["cpu_seconds"] for _, a in paired),
                                        sum(r["cpu_seconds"] for r, _ in paired))}


def headline_row(temperature: float, counts: list[dict], timing: list[dict]) -> dict | None:
    """The fastest SpecDiff cell against AR and the fastest AR-drafter cell, and the SpecDiff cell
    that saves the most target calls against the AR-drafter cell that does."""
    spec = [r for r in timing if r["family"] == "specdiff"]
    if not spec:
        return None
    saved = {r["method"]: r.get("target_calls_saved") or 0 for r in counts}
    sd = [r for r in timing if r["family"] == "sd"]
    best_sd = min(sd, key=lambda r: r["seconds"]) if sd else None
    best = min(spec, key=lambda r: r["seconds"])
    best_calls = max(spec, key=lambda r: saved[r["method"]])
    return {
        "temperature": temperature, "best_specdiff_wallclock": best["method"],
        "speedup_vs_ar": best["speedup_vs_ar"], "speedup_vs_best_sd": best["speedup_vs_best_sd"],
        "speedup_vs_ar_cpu": best["speedup_vs_ar_cpu"], "speedup_vs_best_sd_cpu": best["speedup_vs_best_sd_cpu"],
        "best_sd": best_sd["method"] if best_sd else None,
        "best_sd_speedup_vs_ar": best_sd["speedup_vs_ar"] if best_sd else None,
        "best_specdiff_target_calls": best_calls["method"], "target_calls_saved": saved[best_calls["method"]],
        "best_sd_target_calls_saved": max(saved[r["method"]] for r in sd) if sd else None,
        "paper_speedup_vs_ar": PAPER_SPEEDUP_OVER_AR, "paper_speedup_vs_sd": PAPER_SPEEDUP_OVER_SD,
    }


def tables(records: list[dict], methods: list[Method], cfg: dict) -> dict[str, list[dict]]:
    """counts (machine-independent), timing (this machine) and headline, per temperature, over all
    prompt sets ("all") and over each."""
    counts, timing, headline = [], [], []
    for scope in ["all"] + list(dict.fromkeys(r["prompt_set"] for r in records)):
        for temperature in cfg["temperatures"]:
            counts_t, timing_t = [], []
            for method, chosen, ar in _cells(records, methods, temperature, scope):
                cell = {"prompt_set": scope, "temperature": temperature, "method": method.name,
                        "family": method.family, "gamma": method.gamma, "steps": method.steps}
                counts_t.append({**cell, **count_row(method, chosen, ar)})
                timing_t.append({**cell, **timing_row(chosen, ar)})
            sd = [r for r in timing_t if r["family"] == "sd"]
            fastest_sd = min(sd, key=lambda r: r["seconds"]) if sd else None
            for row in timing_t:
                row["speedup_vs_best_sd"] = _ratio(fastest_sd and fastest_sd["seconds"], row["seconds"])
                row["speedup_vs_best_sd_cpu"] = _ratio(fastest_sd and fastest_sd["cpu_seconds"], row["cpu_seconds"])
            counts += counts_t
            timing += timing_t
            best = headline_row(temperature, counts_t, timing_t) if scope == "all" else None
            if best:
                headline.append(best)
    return {"counts": counts, "timing": timing, "headline": headline}


def _x(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def notes(result: dict, preset: str, device_name: str, parameters: dict | None = None) -> list[str]:
    """Plain sentences on what held and what did not, against the paper's numbers."""
    out = []
    greedy = [r for r in result["counts"] if r["prompt_set"] == "all" and "greedy_equal_to_ar" in r and r["family"] != "ar"]
    if greedy:
        equal = sum(int(r["greedy_equal_to_ar"].split("/")[0]) for r in greedy)
        total = sum(int(r["greedy_equal_to_ar"].split("/")[1]) for r in greedy)
        out.append(f"losslessness: at temperature 0, {equal} of {total} speculative generations (SpecDiff, AR-drafter "
                   "SD and HF assisted) equal the target's own greedy decoding token for token")
    for row in result["headline"]:
        out.append(
            f"temperature {row['temperature']:g}: fastest SpecDiff cell {row['best_specdiff_wallclock']} runs "
            f"{_x(row['speedup_vs_ar'])} AR's wall-clock speed and {_x(row['speedup_vs_best_sd'])} the fastest "
            f"AR-drafter cell's ({row['best_sd']}, itself {_x(row['best_sd_speedup_vs_ar'])} AR) on {device_name} "
            f"(by process CPU time: {_x(row['speedup_vs_ar_cpu'])} and {_x(row['speedup_vs_best_sd_cpu'])}); "
            f"the paper reports up to {PAPER_SPEEDUP_OVER_AR}x and {PAPER_SPEEDUP_OVER_SD}x with gpt2-xl on a GPU. "
            f"Counting target calls instead (hardware-independent), SpecDiff's best cell {row['best_specdiff_target_calls']} "
            f"saves {_x(row['target_calls_saved'])} of AR's calls vs {_x(row['best_sd_target_calls_saved'])} for the best "
            "AR-drafter cell")
    spec = [r for r in result["counts"] if r["prompt_set"] == "all" and r["family"] == "specdiff"]
    for temperature in sorted({r["temperature"] for r in spec}):
        cells = [r for r in spec if r["temperature"] == temperature]
        per_gamma = "; ".join(
            f"gamma {g}: " + ", ".join(f"T={r['steps']} {r['tokens_per_target_call']:.2f}"
                                       for r in cells if r["gamma"] == g)
            for g in sorted({r["gamma"] for r in cells}))
        out.append(f"temperature {temperature:g}, SpecDiff tokens per target call by denoising steps: {per_gamma}")
    if parameters:
        out.append("parameters: " + ", ".join(f"{role} {n / 1e6:.2f} M" for role, n in parameters.items())
                   + " (the paper: gpt2-xl 1558 M verified against mdlm-owt 169 M or gpt2 124 M)")
    if preset == "tiny":
        for row in result["headline"]:
            pick = {r["method"]: r for r in result["timing"]
                    if r["prompt_set"] == "all" and r["temperature"] == row["temperature"]}
            calls = {r["method"]: r for r in result["counts"]
                     if r["prompt_set"] == "all" and r["temperature"] == row["temperature"]}
            best = row["best_specdiff_target_calls"]
            if "ar" not in pick or best not in pick:
                continue
            ar_ms = 1000 * pick["ar"]["cpu_seconds"] / calls["ar"]["target_calls"]
            round_ms = 1000 * pick[best]["cpu_seconds"] / calls[best]["target_calls"]
            nfe = calls[best]["drafter_nfe"] / calls[best]["target_calls"]
            out.append(
                f"tiny preset, temperature {row['temperature']:g}: one AR step (a cached target forward) costs "
                f"{ar_ms:.1f} CPU ms here, one round of {best} {round_ms:.1f} CPU ms ({nfe:.1f} MDLM calls + one target "
                "forward over the drafts). The tiny MDLM is no smaller than the tiny target and, being "
                "bidirectional, recomputes its whole canvas (context + drafts, up to 128 positions) at every call "
                "while the target's step reads a KV cache; so on this CPU drafting eats the savings and the "
                "wall-clock speedup stays far below the target calls saved. The paper's regime (a drafter 9x "
                "smaller than gpt2-xl, on a GPU, where batch-1 forwards are bound by weight reads and kernel "
                "launches more than by the number of positions) is not reproduced here; benchmarks/bench_specdiff.py measures the real-size per-call "
                "costs where a GPU is available")
    return out


def plot(path, result: dict, cfg: dict, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temps = cfg["temperatures"]
    panels = (("timing", "speedup_vs_ar", "wall-clock speedup over AR"),
              ("timing", "speedup_vs_ar_cpu", "CPU-time speedup over AR"),
              ("counts", "target_calls_saved", "target calls saved (AR / method)"))
    fig, axes = plt.subplots(len(panels), len(temps), figsize=(5 * len(temps), 3.4 * len(panels)), squeeze=False)
    for col, temperature in enumerate(temps):
        for row, (table, key, label) in enumerate(panels):
            ax = axes[row][col]
            rows = [r for r in result[table] if r["prompt_set"] == "all" and r["temperature"] == temperature]
            for steps in cfg["steps"]:
                cell = [r for r in rows if r["family"] == "specdiff" and r["steps"] == steps and r.get(key) is not None]
                ax.plot([r["gamma"] for r in cell], [r[key] for r in cell], marker="o", label=f"SpecDiff T={steps}")
            sd = [r for r in rows if r["family"] == "sd" and r.get(key) is not None]
            if sd:
                ax.plot([r["gamma"] for r in sd], [r[key] for r in sd], "k--", marker="s", label="AR drafter (SD)")
            ax.axhline(1.0, color="gray", linestyle=":", label="AR")
            ax.set_xlabel("gamma (drafts per round)")
            ax.set_ylabel(label)
            ax.set_title(f"temperature {temperature:g}")
            ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
