#!/usr/bin/env python
"""Compare the tables of two runs: same tables, same rows, same values, except for columns that are
measured wall-clock (or CPU) time, which differ between any two runs. Those are named below, per
table, and printed on every call; nothing else is skipped.

    python benchmarks/compare_tables.py A/summary.json B/summary.json

Exit status 0 when the tables agree, 1 when they differ (each difference printed as
table / row / column: A vs B), 2 on bad input. Numbers must agree exactly (--rel-tol to relax).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# table -> columns holding measured time, or what a measured time picked ("*": every column).
MEASURED = {
    # run_full_suite.py
    "table6_timing": ("ms", "ms_min", "ms_max", "speedup_vs_full_dlm", "speedup_min", "speedup_max"),
    # specdiff_bench.py
    "timing": ("seconds", "tokens_per_s", "speedup_vs_ar", "cpu_seconds", "speedup_vs_ar_cpu", "speedup_vs_best_sd",
               "speedup_vs_best_sd_cpu"),
    # the fastest cells by wall clock, and their speedups
    "headline": ("best_specdiff_wallclock", "speedup_vs_ar", "speedup_vs_best_sd", "speedup_vs_ar_cpu",
                 "speedup_vs_best_sd_cpu", "best_sd", "best_sd_speedup_vs_ar"),
    # train_clsd.py
    "infer_timing": ("ms_per_token", "draft_ms_per_block", "score_ms_per_block", "latency_ms_per_block"),
}

# table -> (which rows carry a measured time, their measured columns): run_full_suite's claims
# include one speedup read from table6_timing.
MEASURED_ROWS = {
    "table_checks": (lambda row: str(row.get("source", "")).startswith("table6_timing"), ("measured", "met")),
}


def load_tables(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())["tables"]
    except (OSError, ValueError, KeyError) as err:
        raise SystemExit(f"compare_tables.py: error: cannot read the tables of {path} ({type(err).__name__}: {err})")


def same(a, b, rel_tol: float) -> bool:
    if isinstance(a, float) and isinstance(b, (int, float)) or isinstance(b, float) and isinstance(a, (int, float)):
        return a == b or math.isclose(a, b, rel_tol=rel_tol, abs_tol=0.0)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, rel_tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], rel_tol) for k in a)
    return a == b


def differences(a: dict, b: dict, rel_tol: float = 0.0) -> list[str]:
    out = []
    for name in sorted(a.keys() | b.keys()):
        if name not in a or name not in b:
            out.append(f"{name}: table only in {'B' if name not in a else 'A'}")
            continue
        rows_a, rows_b = a[name], b[name]
        if len(rows_a) != len(rows_b):
            out.append(f"{name}: {len(rows_a)} rows vs {len(rows_b)}")
        for i, (row_a, row_b) in enumerate(zip(rows_a, rows_b)):
            ignored = MEASURED.get(name, ())
            timed_row, timed_columns = MEASURED_ROWS.get(name, (None, ()))
            if timed_row is not None and timed_row(row_a):
                ignored = (*ignored, *timed_columns)
            if list(row_a) != list(row_b):
                out.append(f"{name} / row {i}: columns {list(row_a)} vs {list(row_b)}")
            for column in row_a.keys() & row_b.keys():
                if "*" in ignored or column in ignored:
                    continue
                if not same(row_a[column], row_b[column], rel_tol):
                    out.append(f"{name} / row {i} / {column}: {row_a[column]!r} vs {row_b[column]!r}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="compare_tables.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, metavar="A/summary.json")
    parser.add_argument("b", type=Path, metavar="B/summary.json")
    parser.add_argument("--rel-tol", type=float, default=0.0, help="relative tolerance for numbers (default: exact)")
    args = parser.parse_args(argv)
    a, b = load_tables(args.a), load_tables(args.b)
    present = sorted(name for name in MEASURED if name in a or name in b)
    for name in present:
        print(f"ignored (measured time): {name}: {', '.join(MEASURED[name])}")
    for name, (_, columns) in MEASURED_ROWS.items():
        if name in a or name in b:
            print(f"ignored (measured time): {name}: {', '.join(columns)} of the rows read from a timing table")
    found = differences(a, b, args.rel_tol)
    for line in found:
        print(f"DIFFERS {line}")
    compared = sum(len(rows) for rows in a.values())
    print(f"{'DIFFERENT' if found else 'identical'}: {len(a)} tables, {compared} rows "
          f"({len(found)} differences) between {args.a} and {args.b}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
