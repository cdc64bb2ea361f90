"""Does self-speculation fix the joint structure of generation 2's town names? Every town is
HEAD + MID + TAIL (three tokens; `dlmkit/data/tinyworld2.py`), so a sample can write a name whose
parts come from different towns. This counts, in a train_self_spec.py run's samples, the
HEAD+MID+TAIL words that are one of the gazetteer's 64 towns, per method and budget, beside the
same share in the MDLM's training corpus and in MDLM ddpm's samples (the run's baseline).

    python benchmarks/self_spec_names.py [--run results/train_self_spec/tiny] [--json OUT]

Seconds; reads only the run's JSONL (decoded with the tiny tokenizer).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def name_pattern():
    from dlmkit.data.tinyworld2 import HEADS, MIDS, TAILS

    return re.compile(r"\b(?:%s)(?:%s)(?:%s)\b" % ("|".join(HEADS), "|".join(MIDS), "|".join(TAILS)))


def town_share(texts, towns: set[str]) -> dict:
    """HEAD+MID+TAIL words in `texts`, and the share of them that are towns, with one counterexample."""
    pattern = name_pattern()
    count = Counter()
    example = None
    for text in texts:
        for match in pattern.finditer(text):
            count["names"] += 1
            if match.group(0) in towns:
                count["towns"] += 1
            elif example is None:
                example = text[max(0, match.start() - 50):match.end() + 20]
    return {"names": count["names"], "town_share": count["towns"] / max(1, count["names"]), "example": example}


def main(argv=None) -> int:
    from dlmkit.cli import OneLineParser
    from dlmkit.data.tiny_corpus import load_tiny_tokenizer
    from dlmkit.data.tinyworld2 import TinyWorld2, role_corpus
    from dlmkit.errors import UserError
    from dlmkit.results import atomic_write_json, markdown_table

    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=Path("results/train_self_spec/tiny"), help="a train_self_spec.py run")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    files = {"baseline": args.run / "baseline_samples.jsonl", "sample": args.run / "self_spec_samples.jsonl"}
    for phase, path in files.items():
        if not path.exists():
            raise UserError(f"{path} is missing; run train_self_spec.py --phase {phase} into {args.run} first")
    tokenizer = load_tiny_tokenizer()
    world = TinyWorld2(0)
    towns = set(world.gazetteer.towns)
    rows = [{"text": "the MDLM's training corpus (tinyworld2.role_corpus, 'mdlm')", "budget": None,
             **town_share(role_corpus(world, "mdlm"), towns)}]
    groups: dict[tuple[str, int], list[str]] = {}
    for line in files["baseline"].read_text().splitlines():
        record = json.loads(line)
        if record.get("sampler") == "ddpm":
            groups.setdefault((f"MDLM ddpm, {record['steps']} steps", record["steps"]), []).append(record["tokens"])
    for line in files["sample"].read_text().splitlines():
        record = json.loads(line)
        groups.setdefault((record["method"], record["target_nfe"]), []).append(record["tokens"])
    for (label, budget), samples in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        rows.append({"text": label, "budget": budget, **town_share(tokenizer.batch_decode(samples), towns)})
    print(markdown_table([{k: v for k, v in row.items() if k != "example"} for row in rows], ".3f"))
    print()
    for row in rows[1:4]:
        print(f"{row['text']} (budget {row['budget']}): {row['example']!r}")
    if args.json:
        atomic_write_json(args.json, {"run": str(args.run), "rows": rows})
    return 0


if __name__ == "__main__":
    from dlmkit.cli import run_main

    run_main(main)
