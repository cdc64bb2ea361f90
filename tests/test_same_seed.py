"""Same --seed, same tables: each script run twice on the shipped tiny checkpoints with tiny settings,
compared by benchmarks/compare_tables.py (which skips only the columns that are measured time)."""

import importlib
import importlib.util
import json

import pytest

from dlmkit.decoding.diffusion import DreamSettings
from dlmkit.results import REPO

SHORT_DREAM = DreamSettings(max_new_tokens=24, steps=8)
# script -> (argv, Settings overrides, the tables compared: None for all)
CASES = {
    "run_full_suite": (["--subset", "1", "--fractions", "0.25", "0.5"], {"dream": SHORT_DREAM}, None),
    "bridge_viability": (["--subset", "1", "--step-grid", "2", "--viable-min-tokens", "1"], {"dream": SHORT_DREAM},
                         None),
    "train_self_spec": (["--subset", "2", "--train-steps", "3", "--steps", "2", "--nfe", "2", "--length", "16",
                         "--calibration-samples", "2"], {}, None),
    "train_clsd": (["--subset", "1", "--embed-records", "8", "--stage-a-steps", "2", "--stage-c-steps", "2",
                    "--gen-length", "4", "--candidates", "2"], {}, None),
    # its timing and headline tables are wall-clock measurements; the counts are the seeded part
    "specdiff_bench": (["--subset", "1", "--max-new-tokens", "6", "--gammas", "2", "--steps", "1", "--sd-gammas", "2"],
                       {}, ["counts"]),
}


def _compare_tables():
    spec = importlib.util.spec_from_file_location("compare_tables", REPO / "benchmarks" / "compare_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tables(out, names):
    tables = json.loads((out / "summary.json").read_text())["tables"]
    return tables if names is None else {name: tables[name] for name in names}


@pytest.mark.parametrize("script", sorted(CASES))
def test_two_runs_with_the_same_seed_give_the_same_tables(script, tmp_path):
    argv, overrides, names = CASES[script]
    main = importlib.import_module(script).main
    sensitive = script in ("run_full_suite", "train_clsd")  # another seed changes their tables: the check can fail
    for out, seed in (("one", "3"), ("two", "3"), ("other", "4"))[:3 if sensitive else 2]:
        assert main([*argv, "--seed", seed, "--out", str(tmp_path / out)], **overrides) == 0
    compare = _compare_tables()
    one, two = _tables(tmp_path / "one", names), _tables(tmp_path / "two", names)
    assert one and compare.differences(one, two) == []
    if sensitive:
        assert compare.differences(one, _tables(tmp_path / "other", names))
