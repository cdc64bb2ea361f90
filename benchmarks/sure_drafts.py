#!/usr/bin/env python
"""What would the gap-filler write if Dream's sure drafts travelled as anchors? From a run's A.jsonl.

At a cutoff the partial Dream has committed its anchors (entropy order: mostly template) and
has a distribution at every still-open position; phase A keeps its argmax and probability
there (the drafts). `benchmarks/commit_order.py` shows that many open values are drafted right
and sure. This replays, for every evaluation-set prompt (hard, medium and mixed strata) and
each cutoff phase A kept drafts for, the gap-filler's forced decoding (committed_end rule, as
phase B) with

  anchors             the committed tokens only (phase B's fill; the check column compares)
  anchors + sure p    the same plus every draft with probability >= p before the committed
                      end (end tokens left out), forced like anchors

and reports word F1 against Dream's final answer, ground-truth accuracy, the extra anchors per
prompt, the share of them equal to Dream's final token there, and the share that are content
(values, numbers, letters). This is not the paper's pipeline (its anchors are the committed
tokens only) and the extra anchors cost payload; it measures how much of Dream's knowledge the
cutoff already holds but entropy order has not committed.

    python benchmarks/sure_drafts.py [--run results/run_full_suite/tiny] [--models ar_small ar_control]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    from dlmkit.presets import TINY, TINY_ROOT

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=REPO / "results" / "run_full_suite" / "tiny",
                   help="a run_full_suite.py output folder holding A.jsonl and B.jsonl (default: the committed tiny run)")
    p.add_argument("--models", nargs="+", default=["ar_small", "ar_control"], help="tiny gap-filler roles")
    p.add_argument("--stops", nargs="+", default=["0.1", "0.25"], help="keys of phase A's draft_steps")
    p.add_argument("--min-conf", nargs="+", type=float, default=[0.9, 0.5], help="draft probabilities to force")
    p.add_argument("--limit", type=int, help="only the first N evaluation-set prompts")
    p.add_argument("--model-dlm", default=str(TINY_ROOT / TINY["dlm"]), help="the DLM whose tokenizer wrote the run")
    p.add_argument("--json", type=Path, help="also write the rows here")
    return p.parse_args(argv)


def _records(path: Path) -> dict[str, dict]:
    from dlmkit.errors import UserError
    from dlmkit.results import JsonlLog

    if not path.is_file():
        raise UserError(f"no {path}; pass --run with a run_full_suite.py output folder (phases A and B done)")
    return {r["id"]: r for r in JsonlLog(path).records()}


def main(argv=None) -> int:
    import torch

    from dlmkit.anchors import anchors_after
    from dlmkit.data.benchmarks import is_eval_item, prompt_set
    from dlmkit.data.chat import chat_prompt_ids, default_end_token_ids, end_token_ids
    from dlmkit.data.tinyworld2 import content_flags
    from dlmkit.decoding.early_stop import drafts_before
    from dlmkit.decoding.forced import forced_decode
    from dlmkit.errors import UserError
    from dlmkit.experiments.inverse.fill import ALONE, pick
    from dlmkit.metrics.scoring import score_answer
    from dlmkit.models.ar import load_ar
    from dlmkit.models.dream import load_dream_tokenizer
    from dlmkit.presets import TINY, TINY_ROOT

    args = parse_args(argv)
    torch.set_num_threads(1)
    a_records, b_records = _records(args.run / "A.jsonl"), _records(args.run / "B.jsonl")
    items = [i for i in prompt_set("tiny", None) if is_eval_item(i) and i["id"] in a_records]
    items = items[:args.limit] if args.limit else items
    if not items:
        raise UserError(f"{args.run} holds no evaluation-set prompt of the tiny preset")
    dlm_tokenizer = load_dream_tokenizer(args.model_dlm)
    dlm_ends = set(end_token_ids(dlm_tokenizer))

    def decode(ids):
        return dlm_tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    rows = []
    for role in args.models:
        model, tokenizer = load_ar(str(TINY_ROOT / TINY[role]), device="cpu")
        ends = default_end_token_ids(model, tokenizer)
        for stop in args.stops:
            acc = {None: [], **{c: [] for c in args.min_conf}}
            for item in items:
                a = a_records[item["id"]]
                if stop not in a.get("draft_steps", {}):
                    raise UserError(f"{args.run}/A.jsonl has no drafts at {stop!r}; pick --stops from its draft_steps")
                steps = a["draft_steps"][stop]
                n = a["gen_len"]
                anchors = anchors_after(a["commit_step"], a["tokens"], steps).as_dict()
                flags = content_flags(item["task"], [decode([t]) for t in a["tokens"][:n]])
                prompt = chat_prompt_ids(tokenizer, item["prompt"])
                jobs = [(None, anchors)]
                for c in args.min_conf:
                    sure = {p: t for p, t in drafts_before(a["drafts"][str(steps)], min_conf=c).items()
                            if t not in dlm_ends and p not in anchors}
                    jobs.append((c, {**anchors, **sure}))
                result = forced_decode(model, [prompt] * len(jobs), [j[1] for j in jobs], rule="committed_end",
                                       max_new_tokens=len(a["tokens"]), gen_lens=[n] * len(jobs), end_token_ids=ends)
                for (c, forced), out in zip(jobs, result.rows):
                    extra = [p for p in forced if p not in anchors]
                    acc[c].append({**score_answer(item, decode(out.tokens), a["text"]), "extra": len(extra),
                                   "extra_right": sum(p < n and forced[p] == a["tokens"][p] for p in extra),
                                   "extra_content": sum(p < n and flags[p] for p in extra)})
                    if c is None:
                        try:  # phase B's fill at this fraction (it has none at the adaptive stop)
                            phase_b = pick(b_records[item["id"]], role, float(stop), "committed_end")
                        except (KeyError, ValueError):
                            phase_b = None
                        acc[c][-1]["equal_phase_b"] = None if phase_b is None else phase_b["tokens"] == out.tokens
            alone = [pick(b_records[i["id"]], role, None, ALONE)["f1"] for i in items]
            for c, fills in acc.items():
                extra = sum(f["extra"] for f in fills)
                rows.append({
                    "model": role, "stop": stop, "forced": "anchors" if c is None else f"anchors + sure p >= {c:g}",
                    "prompts": len(fills), "f1": statistics.mean(f["f1"] for f in fills),
                    "f1_alone": statistics.mean(alone), "accuracy": statistics.mean(f["correct"] for f in fills),
                    "extra_anchors": extra / len(fills),
                    "extra_right": sum(f["extra_right"] for f in fills) / extra if extra else None,
                    "extra_content": sum(f["extra_content"] for f in fills) / extra if extra else None,
                    # phase B's fill at this cutoff (none at the adaptive stop), token for token
                    **({"equal_phase_b": sum(f["equal_phase_b"] for f in fills)}
                       if c is None and all(f["equal_phase_b"] is not None for f in fills) else {}),
                })
    print(f"sure drafts forced as anchors, {args.run}, committed_end rule, {len(items)} prompts")
    print("| gap-filler | stop | forced | F1 vs Dream (alone) | GT accuracy | extra anchors / prompt | "
          "equal to Dream's final | content | equal to phase B |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        share = lambda x: "" if x is None else f"{x:.2f}"  # noqa: E731
        print(f"| {r['model']} | {r['stop']} | {r['forced']} | {r['f1']:.3f} ({r['f1_alone']:.3f}) | "
              f"{r['accuracy']:.3f} | {r['extra_anchors']:.1f} | {share(r['extra_right'])} | "
              f"{share(r['extra_content'])} | {r.get('equal_phase_b', '')} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    from dlmkit.cli import run_main

    sys.exit(run_main(main))
