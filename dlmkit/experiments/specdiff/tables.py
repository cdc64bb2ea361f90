"""SpecDiff's tables (counts, timing, headline), notes and plot, over every record in the run."""

from __future__ import annotations

import statistics

from dlmkit.experiments.specdiff.methods import Method
from dlmkit.plots import pyplot, save_figure

PAPER_SPEEDUP_OVER_AR = 7.2
PAPER_SPEEDUP_OVER_SD = 1.75


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


def _repeats(record: dict, key: str) -> list[float]:
    value = record[key]
    return list(value) if isinstance(value, list) else [value]  # runs before repeats logged one float


def _per_repeat(records: list[dict], key: str) -> list[float]:
    """A cell's total of `key` over its prompts, one total per timing repeat."""
    lists = [_repeats(r, key) for r in records]
    return [sum(values[i] for values in lists) for i in range(min(map(len, lists)))]


def _spread(values: list[float], name: str) -> dict:
    """median, min and max over repeats under `name`, `name`_min, `name`_max."""
    if not values:
        return {name: None, f"{name}_min": None, f"{name}_max": None}
    return {name: statistics.median(values), f"{name}_min": min(values), f"{name}_max": max(values)}


def _ratios(numerators: list[float], denominators: list[float]) -> list[float]:
    return [n / d for n, d in zip(numerators, denominators) if d]


def timing_row(chosen: list[dict], ar: list[dict | None]) -> dict:
    """This machine's numbers of one cell, by wall clock and by process CPU time: the median over
    timing repeats with min and max (each repeat times every prompt of the cell once); the
    speedups over AR are per repeat (AR and the method timed in the same repeat, under the same
    load), on the prompts both ran. `_wall` / `_cpu` (per-repeat totals) are for tables(), which
    drops them."""
    paired = [(r, a) for r, a in zip(chosen, ar) if a is not None]
    wall, cpu = _per_repeat(chosen, "seconds"), _per_repeat(chosen, "cpu_seconds")
    row = {"repeats": len(wall), **_spread(wall, "seconds")}
    row["tokens_per_s"] = _ratio(_sum(chosen, "new_tokens"), row["seconds"])
    mine, theirs = [r for r, _ in paired], [a for _, a in paired]
    row.update(_spread(_ratios(_per_repeat(theirs, "seconds"), _per_repeat(mine, "seconds")) if paired else [],
                       "speedup_vs_ar"))
    row["cpu_seconds"] = statistics.median(cpu)
    row.update(_spread(_ratios(_per_repeat(theirs, "cpu_seconds"), _per_repeat(mine, "cpu_seconds"))
                       if paired else [], "speedup_vs_ar_cpu"))
    return {**row, "_wall": wall, "_cpu": cpu}


def headline_row(temperature: float, counts: list[dict], timing: list[dict]) -> dict | None:
    """The fastest SpecDiff cell (median wall clock) against AR and the fastest AR-drafter cell,
    with the spread over repeats and the target calls that same cell saves; beside it the
    SpecDiff cell that saves the most target calls and the AR-drafter cell that does."""
    spec = [r for r in timing if r["family"] == "specdiff"]
    if not spec:
        return None
    saved = {r["method"]: r.get("target_calls_saved") or 0 for r in counts}
    sd = [r for r in timing if r["family"] == "sd"]
    best_sd = min(sd, key=lambda r: r["seconds"]) if sd else None
    best = min(spec, key=lambda r: r["seconds"])
    best_calls = max(spec, key=lambda r: saved[r["method"]])
    spread = ("speedup_vs_ar", "speedup_vs_best_sd", "speedup_vs_ar_cpu", "speedup_vs_best_sd_cpu")
    return {
        "temperature": temperature, "repeats": best["repeats"], "best_specdiff_wallclock": best["method"],
        **{f"{k}{end}": best[f"{k}{end}"] for k in spread for end in ("", "_min", "_max")},
        "best_specdiff_wallclock_target_calls_saved": saved[best["method"]],
        "best_sd": best_sd["method"] if best_sd else None,
        "best_sd_speedup_vs_ar": best_sd["speedup_vs_ar"] if best_sd else None,
        "best_specdiff_target_calls": best_calls["method"], "target_calls_saved": saved[best_calls["method"]],
        "best_sd_target_calls_saved": max(saved[r["method"]] for r in sd) if sd else None,
        "paper_speedup_vs_ar": PAPER_SPEEDUP_OVER_AR, "paper_speedup_vs_sd": PAPER_SPEEDUP_OVER_SD,
    }


def tables(records: list[dict], methods: list[Method], cfg) -> dict[str, list[dict]]:
    """counts (machine-independent), timing (this machine) and headline, per temperature, over all
    prompt sets ("all") and over each."""
    counts, timing, headline = [], [], []
    for scope in ["all"] + list(dict.fromkeys(r["prompt_set"] for r in records)):
        for temperature in cfg.temperatures:
            counts_t, timing_t = [], []
            for method, chosen, ar in _cells(records, methods, temperature, scope):
                cell = {"prompt_set": scope, "temperature": temperature, "method": method.name,
                        "family": method.family, "gamma": method.gamma, "steps": method.steps}
                counts_t.append({**cell, **count_row(method, chosen, ar)})
                timing_t.append({**cell, **timing_row(chosen, ar)})
            sd = [r for r in timing_t if r["family"] == "sd"]
            fastest_sd = min(sd, key=lambda r: r["seconds"]) if sd else None
            for row in timing_t:
                for clock, suffix in (("_wall", ""), ("_cpu", "_cpu")):
                    ratios = _ratios(fastest_sd[clock], row[clock]) if fastest_sd else []
                    row.update(_spread(ratios, f"speedup_vs_best_sd{suffix}"))
            counts += counts_t
            timing += [{k: v for k, v in row.items() if not k.startswith("_")} for row in timing_t]
            best = headline_row(temperature, counts_t, timing_t) if scope == "all" else None
            if best:
                headline.append(best)
    return {"counts": counts, "timing": timing, "headline": headline}


def _x(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _spread_text(row: dict, key: str) -> str:
    """'1.03x (0.98-1.07 over 3 repeats)': the median and the range over timing repeats."""
    if row.get(key) is None:
        return "n/a"
    if row.get("repeats", 1) < 2:
        return f"{_x(row[key])} (one timing, no spread)"
    return f"{_x(row[key])} ({row[key + '_min']:.2f}-{row[key + '_max']:.2f} over {row['repeats']} repeats)"


def verdict(row: dict, key: str, than: str) -> str:
    """'faster than X' only when every repeat says so, 'slower' likewise, else 'within the spread'."""
    low, high = row.get(key + "_min"), row.get(key + "_max")
    if low is None or row.get("repeats", 1) < 2:
        return f"one timing only: no verdict against {than}"
    if low > 1:
        return f"faster than {than} in every repeat"
    if high < 1:
        return f"slower than {than} in every repeat"
    return f"not distinguishable from {than} (the repeats straddle 1x)"


def notes(result: dict, preset: str, device_name: str, parameters: dict | None = None,
          costs: list[dict] | None = None) -> list[str]:
    """Plain sentences on what held and what did not, against the paper's numbers; every verdict is
    derived from the numbers it sits beside."""
    out = []
    greedy = [r for r in result["counts"] if r["prompt_set"] == "all" and "greedy_equal_to_ar" in r and r["family"] != "ar"]
    if greedy:
        equal = sum(int(r["greedy_equal_to_ar"].split("/")[0]) for r in greedy)
        total = sum(int(r["greedy_equal_to_ar"].split("/")[1]) for r in greedy)
        out.append(f"losslessness: at temperature 0, {equal} of {total} speculative generations (SpecDiff, AR-drafter "
                   "SD and HF assisted) equal the target's own greedy decoding token for token")
    for row in result["headline"]:
        out.append(
            f"temperature {row['temperature']:g}, timing on {device_name}: the fastest SpecDiff cell "
            f"{row['best_specdiff_wallclock']} (median wall clock) runs at {_spread_text(row, 'speedup_vs_ar')} AR's "
            f"speed, {verdict(row, 'speedup_vs_ar', 'AR')}, and {_spread_text(row, 'speedup_vs_best_sd')} the fastest "
            f"AR-drafter cell's ({row['best_sd']}), {verdict(row, 'speedup_vs_best_sd', 'the AR drafter')}; by "
            f"process CPU time {_spread_text(row, 'speedup_vs_ar_cpu')} and {_spread_text(row, 'speedup_vs_best_sd_cpu')}"
            f". The same cell saves {_x(row['best_specdiff_wallclock_target_calls_saved'])} of AR's target calls. The "
            f"paper reports up to {PAPER_SPEEDUP_OVER_AR}x and {PAPER_SPEEDUP_OVER_SD}x with gpt2-xl on a GPU: "
            + ("reproduced on this machine" if (row["speedup_vs_ar_min"] or 0) >= PAPER_SPEEDUP_OVER_AR
               and (row["speedup_vs_best_sd_min"] or 0) >= PAPER_SPEEDUP_OVER_SD else "not reproduced on this machine"))
        out.append(
            f"temperature {row['temperature']:g}, target calls (hardware-independent, same for the same seed): the "
            f"SpecDiff cell that saves the most, {row['best_specdiff_target_calls']}, saves "
            f"{_x(row['target_calls_saved'])} of AR's calls, the best AR-drafter cell "
            f"{_x(row['best_sd_target_calls_saved'])}")
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
    if costs:
        out.append(_per_call_note(costs, device_name))
    for row in result["headline"]:
        out.extend(_cost_note(result, row, parameters or {}, preset))
    return out


def _per_call_note(costs: list[dict], device_name: str) -> str:
    """The cost asymmetry the speedups rest on: the target's cached step against each drafter's call."""
    step = {r["model"]: r["median_ms"] for r in costs if r["call"] == "cached step" or r["model"] == "MDLM drafter"}
    text = (f"per call on {device_name} (median ms, table per_call_ms): "
            + ", ".join(f"{r['model']} {r['call']} {r['median_ms']:.2f}" for r in costs))
    ratios = [f"{step['target'] / step[m]:.1f}x the {m}'s" for m in ("AR drafter", "MDLM drafter") if m in step]
    if "target" in step and ratios:
        text += "; the target's cached step costs " + " and ".join(ratios)
    return text


def _cost_note(result: dict, row: dict, parameters: dict, preset: str) -> list[str]:
    """Where the target calls saved did not turn into time: one AR step against one SpecDiff round
    of the cell that saves the most calls, in CPU ms per target call, from this run's numbers."""
    temperature, best = row["temperature"], row["best_specdiff_target_calls"]
    pick = {r["method"]: r for r in result["timing"] if r["prompt_set"] == "all" and r["temperature"] == temperature}
    calls = {r["method"]: r for r in result["counts"] if r["prompt_set"] == "all" and r["temperature"] == temperature}
    if "ar" not in pick or best not in pick or not calls[best]["target_calls"] or row["speedup_vs_ar"] is None:
        return []
    ar_ms = 1000 * pick["ar"]["cpu_seconds"] / calls["ar"]["target_calls"]
    round_ms = 1000 * pick[best]["cpu_seconds"] / calls[best]["target_calls"]
    nfe = calls[best]["drafter_nfe"] / calls[best]["target_calls"]
    kept = pick[best]["speedup_vs_ar_cpu"] / row["target_calls_saved"] if row["target_calls_saved"] else None
    text = (f"{preset} preset, temperature {temperature:g}: one AR step (a cached target forward) costs {ar_ms:.1f} "
            f"CPU ms here, one round of {best} {round_ms:.1f} CPU ms ({nfe:.1f} MDLM calls + one target forward over "
            f"the drafts), {round_ms / ar_ms:.1f} AR steps' worth")
    if kept is not None:
        text += (f"; its CPU-time speedup over AR ({_x(pick[best]['speedup_vs_ar_cpu'])}) keeps {kept:.0%} of the "
                 f"{_x(row['target_calls_saved'])} target calls it saves")
    if "MDLM drafter" in parameters and "target" in parameters:
        ratio = parameters["MDLM drafter"] / parameters["target"]
        text += (f". The MDLM has {ratio:.2f}x the target's parameters and, being bidirectional, recomputes its "
                 "whole canvas at every call while the target's step reads a KV cache")
    return [text]


def plot(path, result: dict, cfg, title: str) -> None:
    plt = pyplot()

    temps = cfg.temperatures
    panels = (("timing", "speedup_vs_ar", "wall-clock speedup over AR"),
              ("timing", "speedup_vs_ar_cpu", "CPU-time speedup over AR"),
              ("counts", "target_calls_saved", "target calls saved (AR / method)"))
    fig, axes = plt.subplots(len(panels), len(temps), figsize=(5 * len(temps), 3.4 * len(panels)), squeeze=False)
    for col, temperature in enumerate(temps):
        for row, (table, key, label) in enumerate(panels):
            ax = axes[row][col]
            rows = [r for r in result[table] if r["prompt_set"] == "all" and r["temperature"] == temperature]
            for steps in cfg.steps:
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
