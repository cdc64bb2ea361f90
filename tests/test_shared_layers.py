"""The small shared layers: named seeds keep their values, the hub-or-directory rule, the runner's contract."""

from __future__ import annotations

import hashlib

import pytest

from dlmkit import seeds
from dlmkit.errors import UserError
from dlmkit.experiments import bridge, clsd, inverse, self_spec, specdiff
from dlmkit.models.hub import checkpoint_dir, is_local, looks_like_hub_id


def test_derived_seeds_keep_the_values_the_committed_tables_were_made_with():
    assert seeds.item_seed(42, "gsm8k/easy/0") == \
        int.from_bytes(hashlib.sha256(b"42/gsm8k/easy/0").digest()[:8], "big") % 2**63
    assert seeds.indexed_seed(42, 7) == 42 * 1_000_003 + 7
    assert seeds.budget_row_seed(42, 16, 3) == 42 * 1_000_003 + 7_919 * 16 + 3
    assert seeds.flow_batch_seed(42, 5, 1) == 42 * 1_000_003 + 5 * 7 + 1
    assert seeds.reference_text_seed(42) == 42 * 1_000_003 + 999_983
    assert (seeds.validation_seed(42), seeds.stage_c_seed(42), seeds.calibration_seed(42)) == (43, 44, 42 + 500_009)


@pytest.mark.parametrize("source, hub", [("gpt2-xl", True), ("Qwen/Qwen2.5-0.5B-Instruct", True), ("./ckpt", False),
                                         ("/abs/ckpt", False), ("~/ckpt", False), ("a/b/c", False), ("a//", False)])
def test_hub_id_or_directory(source, hub):
    assert looks_like_hub_id(source) is hub


def test_a_missing_path_is_a_one_line_error_and_a_directory_is_used_as_is(tmp_path):
    assert checkpoint_dir(tmp_path) == tmp_path and is_local(tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        checkpoint_dir(tmp_path / "nowhere" / "deeper")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        checkpoint_dir(tmp_path / "file")


@pytest.mark.parametrize("experiment", [inverse, bridge, self_spec, specdiff, clsd])
def test_every_experiment_exposes_the_same_contract(experiment):
    assert list(experiment.PHASES) and set(experiment.PHASE_ROLES) == set(experiment.PHASES)
    assert {r for roles in experiment.PHASE_ROLES.values() for r in roles} <= set(experiment.ROLES)
    assert callable(experiment.add_flags) and hasattr(experiment.Settings, "from_flags")
    assert experiment.Settings.__dataclass_params__.frozen
    assert callable(experiment.Context)


def test_compare_tables_names_the_differing_cell_and_skips_only_named_timing_columns(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_tables.py"
    spec = importlib.util.spec_from_file_location("compare_tables", path)
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    a = {"tables": {"counts": [{"method": "ar", "calls": 4}], "timing": [{"method": "ar", "seconds": 1.0}]}}
    b = json.loads(json.dumps(a))
    b["timing"] = None
    b["tables"]["timing"][0]["seconds"] = 2.0  # measured: ignored, and said so
    for name, tables in (("a", a), ("b", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(tables))
    files = [str(tmp_path / "a" / "summary.json"), str(tmp_path / "b" / "summary.json")]
    assert compare.main(files) == 0
    assert "ignored (measured time): timing: seconds" in capsys.readouterr().out
    b["tables"]["counts"][0]["calls"] = 5
    (tmp_path / "b" / "summary.json").write_text(json.dumps(b))
    assert compare.main(files) == 1
    assert "DIFFERS counts / row 0 / calls: 4 vs 5" in capsys.readouterr().out
