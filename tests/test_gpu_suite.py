"""benchmarks/gpu_suite.py --smoke: the GPU suite's own code at tiny sizes on a CPU, into a temp
dir; the JSON has the documented keys and every figure a value or an error."""

import json
import math

import pytest

TOP = {"suite", "schema", "smoke", "started_utc", "wall_s", "status", "device", "dtype", "versions", "git", "argv",
       "paper", "groups", "figures"}
FIGURE = {"group", "value", "unit", "spread", "paper", "paper_note", "ratio_to_paper", "error", "details"}


@pytest.fixture(scope="module")
def smoke(load_script, tmp_path_factory):
    suite = load_script("benchmarks/gpu_suite.py")
    out = tmp_path_factory.mktemp("gpu") / "suite.json"
    assert suite.main(["--smoke", "--device", "cpu", "--out", str(out)]) == 0
    return suite, json.loads(out.read_text())


def test_smoke_writes_every_figure_with_a_value_or_an_error(smoke):
    suite, record = smoke
    assert TOP <= set(record)
    assert record["suite"] == "gpu_suite" and record["schema"] == suite.SCHEMA and record["smoke"] is True
    assert record["status"] == "done" and record["device"]["type"] == "cpu"
    assert {"torch", "transformers", "python", "cuda"} <= set(record["versions"])
    assert list(record["groups"]) == list(suite.GROUPS)
    expected = [name for group in suite.GROUPS for name in suite.FIGURES[group]]
    assert list(record["figures"]) == expected
    for name, fig in record["figures"].items():
        assert FIGURE <= set(fig), name
        has_value = isinstance(fig["value"], (int, float)) and math.isfinite(fig["value"])
        assert has_value or fig["error"], f"{name}: neither a value nor an error"
    # At tiny sizes nothing should fail: an error here is a bug in the suite, not a budget.
    errors = {name: fig["error"] for name, fig in record["figures"].items() if fig["error"]}
    assert not errors, errors
    for name in ("dream_step_ms", "ar_ms_per_token", "pipeline_ms", "dream_128_steps_ms", "clsd_block_ms",
                 "specdiff_speedup_vs_ar", "specdiff_speedup_vs_sd"):
        fig = record["figures"][name]
        assert fig["paper"] and fig["ratio_to_paper"] == pytest.approx(fig["value"] / fig["paper"]), name
    for name in ("dream_forward_ms", "ar_ms_per_token", "clsd_block_ms", "self_spec_step_ms"):
        spread = record["figures"][name]["spread"]
        assert spread["min"] <= spread["median"] <= spread["max"] and spread["n"] >= 1, name


def test_a_failing_group_is_recorded_and_the_suite_goes_on(load_script, tmp_path, monkeypatch):
    suite = load_script("benchmarks/gpu_suite.py")

    def broken(ctx):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setitem(suite.GROUPS, "dream", broken)
    out = tmp_path / "suite.json"
    suite.main(["--smoke", "--device", "cpu", "--only", "dream,specdiff", "--out", str(out)])
    record = json.loads(out.read_text())
    assert record["groups"]["dream"]["error"] == "RuntimeError: CUDA out of memory (simulated)"
    assert all(record["figures"][f]["error"] and record["figures"][f]["value"] is None
               for f in suite.FIGURES["dream"])
    assert record["groups"]["specdiff"]["error"] is None
    assert record["figures"]["specdiff_target_step_ms"]["value"] > 0


def test_a_group_over_its_hard_limit_is_stopped(load_script, tmp_path, monkeypatch):
    import time

    suite = load_script("benchmarks/gpu_suite.py")

    def slow(ctx):
        while True:
            time.sleep(0.01)

    monkeypatch.setitem(suite.GROUPS, "peaks", slow)
    monkeypatch.setitem(suite.BUDGETS, "peaks", 0.2)
    out = tmp_path / "suite.json"
    suite.main(["--smoke", "--device", "cpu", "--only", "peaks", "--out", str(out)])
    record = json.loads(out.read_text())
    assert record["groups"]["peaks"]["error"].startswith("BudgetExceeded")
    assert record["groups"]["peaks"]["seconds"] < 5
