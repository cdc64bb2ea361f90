#!/usr/bin/env python
"""Does the partial Dream know the content before it commits it? From a run's A.jsonl alone.

For every prompt of the evaluation set (hard, medium and mixed strata) and every cutoff step
at which phase A kept Dream's drafts (its argmax and probability at each still-masked
position), split the answer's positions (Dream's final answer, `<|im_end|>` excluded) into
content (values, numbers, letters: `tinyworld2.content_flags`) and template, and report per
task:

  committed    share of the kind's positions already committed at the cutoff
  draft right share of the still-open positions whose draft equals Dream's final token
  draft p      mean draft probability at the still-open positions
  right & sure share of the open positions drafted right with p >= 0.9

Entropy order commits the surest positions first. Content that is drafted right and sure
while still open is knowledge the anchors could have carried, had the schedule reached it;
content drafted wrong or unsure is knowledge Dream does not have yet at that step.

    python benchmarks/commit_order.py [--run results/run_full_suite/tiny]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EVAL_DIFFICULTIES = ("hard", "medium", "mixed")


def rows_of(records: list[dict], decode) -> list[dict]:
    from dlmkit.data.tinyworld2 import content_flags

    acc: dict[tuple, dict] = {}
    for record in records:
        if record["difficulty"] not in EVAL_DIFFICULTIES:
            continue
        n = record["gen_len"]
        tokens, steps = record["tokens"][:n], record["commit_step"][:n]
        flags = content_flags(record["task"], [decode([t]) for t in tokens])
        for cutoff, drafts in record.get("drafts", {}).items():
            cut = int(cutoff)
            draft = dict(zip(drafts["positions"], zip(drafts["tokens"], drafts["conf"])))
            for p in range(n):
                key = (record["task"], cut, "content" if flags[p] else "template")
                a = acc.setdefault(key, {"positions": 0, "committed": 0, "open": 0, "right": 0, "p": 0.0, "sure": 0})
                a["positions"] += 1
                if steps[p] < cut:  # committed within the first `cut` steps (anchors_after's rule)
                    a["committed"] += 1
                    continue
                a["open"] += 1
                token, conf = draft.get(p, (None, 0.0))
                a["right"] += token == tokens[p]
                a["p"] += conf
                a["sure"] += token == tokens[p] and conf >= 0.9
    out = []
    for (task, cut, kind), a in sorted(acc.items()):
        opened = max(a["open"], 1)
        out.append({"task": task, "cutoff_step": cut, "kind": kind, "positions": a["positions"],
                    "committed": a["committed"] / a["positions"], "draft_right": a["right"] / opened,
                    "draft_p": a["p"] / opened, "right_and_sure": a["sure"] / opened})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("results/run_full_suite/tiny"))
    args = parser.parse_args(argv)
    from dlmkit.data.tiny_corpus import load_tiny_tokenizer
    from dlmkit.results import markdown_table

    path = args.run / "A.jsonl"
    if not path.exists():
        raise SystemExit(f"no {path}; pass --run DIR of a run_full_suite.py run with phase A done")
    tokenizer = load_tiny_tokenizer()
    records = [json.loads(line) for line in path.open()]
    print(markdown_table(rows_of(records, tokenizer.decode)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
