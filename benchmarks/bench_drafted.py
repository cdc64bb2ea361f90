"""Wall time of drafted gap filling against today's forced decoder, in the same process.

Reads a run_full_suite.py run (default: the committed tiny run): per prompt Dream's anchors
and drafts at each stop (phase A keeps them at 10%, 15%, 25% and at the adaptive stop), and
fills every evaluation-set prompt with the gap-filler twice per repeat:

  forced   dlmkit.decoding.forced.forced_decode (KV cache, a gap token and its anchor run per
           forward: one pass per gap position)
  drafted  dlmkit.decoding.drafted.drafted_forced_decode with Dream's drafts (the same tokens,
           one pass per run of right drafts)

one prompt at a time (batch 1: the pipeline's latency), alternating the two decoders within
each repeat so load drifts hit both alike. Printed per stop: the median over repeats of the
summed time with its min..max, the ratio forced / drafted of the medians and its range over
the repeats, sequential passes against one per position, and whether every output is
identical. Times move with the machine's load; the ratio is measured in the same run.

    OMP_NUM_THREADS=1 python benchmarks/bench_drafted.py --repeats 5
    python benchmarks/bench_drafted.py --run /tmp/myrun --stops 0.1 adaptive --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from dlmkit.anchors import anchors_after  # noqa: E402
from dlmkit.cli import run_main, synchronize  # noqa: E402
from dlmkit.data.benchmarks import is_eval_item, prompt_set  # noqa: E402
from dlmkit.data.chat import chat_prompt_ids, default_end_token_ids, end_token_ids  # noqa: E402
from dlmkit.decoding.drafted import drafted_forced_decode  # noqa: E402
from dlmkit.decoding.forced import forced_decode  # noqa: E402
from dlmkit.errors import UserError  # noqa: E402
from dlmkit.decoding.early_stop import sent_drafts  # noqa: E402
from dlmkit.models.ar import load_ar  # noqa: E402
from dlmkit.models.dream import load_dream_tokenizer  # noqa: E402
from dlmkit.presets import TINY, TINY_ROOT  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=REPO / "results" / "run_full_suite" / "tiny",
                   help="a run_full_suite.py output folder holding A.jsonl (default: the committed tiny run)")
    p.add_argument("--model-ar", default=str(TINY_ROOT / TINY["ar_small"]),
                   help="the gap-filler (default: the tiny preset's ar_small)")
    p.add_argument("--model-dlm", default=str(TINY_ROOT / TINY["dlm"]), help="the DLM whose tokenizer wrote the run")
    p.add_argument("--stops", nargs="+", default=["0.1", "0.25", "adaptive"],
                   help="keys of phase A's draft_steps to replay (default 0.1 0.25 adaptive)")
    p.add_argument("--limit", type=int, help="only the first N evaluation-set prompts")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per stop (default 5)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="the canvas width (default 128, the tiny preset)")
    p.add_argument("--max-drafts", type=int, help="drafts checked per pass at most (default: no cap)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    args = p.parse_args(argv)
    if args.repeats < 1 or (args.limit is not None and args.limit < 1):
        p.error("--repeats and --limit must be >= 1")
    return args


def load_jobs(args, tokenizer, dlm_ends) -> dict[str, list[tuple]]:
    path = args.run / "A.jsonl"
    if not path.is_file():
        raise UserError(f"no {path}; pass --run with a run_full_suite.py output folder (phase A done)")
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            records[r["id"]] = r
    items = [i for i in prompt_set("tiny", None) if is_eval_item(i) and i["id"] in records]
    items = items[:args.limit] if args.limit else items
    if not items:
        raise UserError(f"{path} holds no evaluation-set prompt of the tiny preset")
    jobs = {}
    for stop in args.stops:
        rows = []
        for item in items:
            record = records[item["id"]]
            if "draft_steps" not in record or stop not in record["draft_steps"]:
                raise UserError(f"{path} has no drafts at {stop!r} for {item['id']}; rerun phase A with this dlmkit "
                                "(run_full_suite.py --phase A) or pick --stops from its draft_steps")
            steps = record["draft_steps"][stop]
            anchors = anchors_after(record["commit_step"], record["tokens"], steps).as_dict()
            drafts = sent_drafts(record["drafts"][str(steps)], dlm_ends)
            rows.append((chat_prompt_ids(tokenizer, item["prompt"]), anchors, drafts, steps))
        jobs[stop] = rows
    return jobs


def run_stop(model, device, rows, args, ends) -> dict:
    kwargs = dict(max_new_tokens=args.max_new_tokens, rule="committed_end", end_token_ids=ends, batch_size=1)
    outputs, passes, samples = {}, {}, {"forced": [], "drafted": []}

    def fill(name):
        out, n_passes = [], 0
        for prompt, anchors, drafts, _ in rows:
            if name == "forced":
                result = forced_decode(model, [prompt], [anchors], **kwargs)
            else:
                result = drafted_forced_decode(model, [prompt], [anchors], [drafts], max_drafts=args.max_drafts, **kwargs)
            row = result.rows[0]
            out.append((row.tokens, row.forced, row.stop_reason))
            n_passes += result.forward_passes
        return out, n_passes

    for name in ("forced", "drafted"):  # warm-up, and the outputs to compare
        outputs[name], passes[name] = fill(name)
    for _ in range(args.repeats):
        for name in ("forced", "drafted"):
            synchronize(device)
            start = time.perf_counter()
            fill(name)
            synchronize(device)
            samples[name].append(1e3 * (time.perf_counter() - start))
    positions = sum(len(tokens) for tokens, _, _ in outputs["forced"])
    ratios = [f / d for f, d in zip(samples["forced"], samples["drafted"])]
    return {
        "prompts": len(rows), "mean_dlm_steps": statistics.mean(r[3] for r in rows), "positions": positions,
        "forced_passes": passes["forced"], "drafted_passes": passes["drafted"],
        "passes_vs_one_per_position": positions / passes["drafted"] if passes["drafted"] else None,
        "forced_passes_vs_one_per_position": positions / passes["forced"] if passes["forced"] else None,
        "identical": sum(a == b for a, b in zip(outputs["forced"], outputs["drafted"])),
        "forced_ms": _spread(samples["forced"]), "drafted_ms": _spread(samples["drafted"]),
        "wall_ratio_median": statistics.median(samples["forced"]) / statistics.median(samples["drafted"]),
        "wall_ratio_min": min(ratios), "wall_ratio_max": max(ratios),
    }


def _spread(samples):
    return {"median": statistics.median(samples), "min": min(samples), "max": max(samples), "n": len(samples)}


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    model, tokenizer = load_ar(args.model_ar, device=device)
    dlm_ends = set(end_token_ids(load_dream_tokenizer(args.model_dlm)))
    ends = default_end_token_ids(model, tokenizer)
    jobs = load_jobs(args, tokenizer, dlm_ends)
    results = {}
    print(f"drafted vs forced gap fill, {Path(args.model_ar).name} on {device}, batch 1, {args.repeats} repeats, "
          f"torch threads {torch.get_num_threads()}, run {args.run}")
    print("| stop | prompts | mean DLM steps | positions / drafted passes | positions / forced passes | identical "
          "| forced ms (median, min..max) | drafted ms | forced / drafted (median; range) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for stop, rows in jobs.items():
        r = results[stop] = run_stop(model, device, rows, args, ends)
        f, d = r["forced_ms"], r["drafted_ms"]
        print(f"| {stop} | {r['prompts']} | {r['mean_dlm_steps']:.1f} | {r['passes_vs_one_per_position']:.2f}x | "
              f"{r['forced_passes_vs_one_per_position']:.2f}x | {r['identical']}/{r['prompts']} | "
              f"{f['median']:.0f} ({f['min']:.0f}..{f['max']:.0f}) | {d['median']:.0f} ({d['min']:.0f}..{d['max']:.0f}) | "
              f"{r['wall_ratio_median']:.2f}x ({r['wall_ratio_min']:.2f}..{r['wall_ratio_max']:.2f}) |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                        indent=1))
    return 0


if __name__ == "__main__":
    run_main(main)
