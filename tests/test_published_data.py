"""The paper's published data ships with the package, unchanged, and the defaults read it."""

import hashlib
from pathlib import Path

import pytest
import tomllib

from dlmkit.data.published import ANCHORS_FILE, PUBLISHED_DIR, TIMING_FILE, load_anchors
from dlmkit.experiments.inverse.settings import PUBLISHED_DIR as INVERSE_DEFAULT
from dlmkit.experiments.inverse.timing import load_published

REPO = Path(__file__).resolve().parents[1]


def test_files_are_the_published_bytes():
    # sha256 of the files as copied from the paper's repository (stated in the README beside them)
    assert hashlib.sha256(ANCHORS_FILE.read_bytes()).hexdigest() == \
        "bdc6240822218dfd3df855a7342ba3136abdc6d03b7d840fd039bc3f18058aad"
    assert hashlib.sha256(TIMING_FILE.read_bytes()).hexdigest() == \
        "bab89a10b8710923c6701cac594613dae664cc5b0e284f0c4948e93725ed31f8"
    readme = (PUBLISHED_DIR / "README.md").read_text()
    assert "MIT" in readme and "unchanged" in readme


def test_records_and_defaults():
    records = load_anchors()
    # The evaluation strata of the 310-prompt set, less HumanEval's first 10.
    assert [r["index"] for r in records] == [*range(50, 100), *range(150, 200), *range(220, 300)]
    assert {(r["benchmark"], r["difficulty"]) for r in records} == {
        ("mmlu", "hard"), ("arc", "hard"), ("gsm8k", "medium"), ("gsm8k", "hard"), ("humaneval", "mixed")}
    assert set(records[0]["anchors"]) == {"0.05", "0.1", "0.15", "0.2", "0.25", "0.3", "0.4", "0.5"}
    assert INVERSE_DEFAULT == PUBLISHED_DIR  # run_full_suite's --published-dir default
    derived = load_published(INVERSE_DEFAULT)
    assert derived["dlm_per_step_ms"] == pytest.approx(42.0, abs=0.05)
    assert derived["estimated_speedup"] == pytest.approx(2.27, abs=0.005)


def test_the_package_ships_the_files():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["package-data"]["dlmkit.data.published"] == ["*.json", "*.md"]
