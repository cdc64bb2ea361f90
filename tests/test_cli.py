import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dlmkit.cli import build_parser, resolve_device, resolve_dtype, selected_phases
from dlmkit.errors import UserError
from dlmkit.presets import PAPER, ROLES, model_spec, resolve_models

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = ["run_full_suite.py", "bridge_viability.py", "train_self_spec.py", "train_clsd.py", "specdiff_bench.py"]


def _script(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_works_and_lists_the_shared_flags(script):
    proc = _script(script, "--help")
    assert proc.returncode == 0, proc.stderr
    for flag in ("--preset", "--subset", "--phase", "--out", "--device", "--dtype", "--seed", "--resume"):
        assert flag in proc.stdout


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("bad", [["--no-such-flag"], ["--subset", "0"], ["--phase", "nope"], ["--preset", "huge"]])
def test_bad_flags_give_one_line(script, bad):
    proc = _script(script, *bad)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "--help" in lines[0]


def test_phases_run_in_declared_order():
    parser = build_parser("x.py", "", phases=["A", "B", "C"], roles=[])
    assert selected_phases(parser.parse_args([])) == ["A", "B", "C"]
    assert selected_phases(parser.parse_args(["--phase", "C", "--phase", "A"])) == ["A", "C"]


def test_cuda_without_gpu_names_the_fix():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(UserError, match="pass --device cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"
    with pytest.raises(UserError, match="unknown --device"):
        resolve_device("tpu")


def test_dtype_defaults():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("float16", "cpu") == torch.float16


def test_presets_roles_and_overrides():
    assert model_spec("paper", "dlm").source == "Dream-org/Dream-v0-Instruct-7B"
    assert set(PAPER) == set(ROLES)
    assert model_spec("tiny", "ar_small").source.endswith("assets/tiny/ar_small")
    assert model_spec("tiny", "dlm", override="/some/dir").source == "/some/dir"
    with pytest.raises(UserError, match="unknown role"):
        model_spec("tiny", "dragon")
    with pytest.raises(UserError, match="--preset tiny or --preset paper"):
        model_spec("huge", "dlm")


def test_missing_tiny_checkpoint_names_its_build_command(tmp_path, monkeypatch):
    import dlmkit.presets as presets

    monkeypatch.setattr(presets, "TINY_ROOT", tmp_path)
    with pytest.raises(UserError, match=r"python -m dlmkit.train.tiny ar_medium.*--model-ar-medium"):
        resolve_models("tiny", ["ar_medium"])


def test_model_override_flags_exist_per_role():
    parser = build_parser("x.py", "", phases=["A"], roles=["dlm", "ar_small"])
    args = parser.parse_args(["--model-ar-small", "/x"])
    assert args.model_ar_small == "/x" and args.model_dlm is None


def test_list_and_probability_flag_types():
    import argparse

    from dlmkit.cli import count_list, probability

    assert count_list("16,4,8,4") == [4, 8, 16]
    for bad in ("0,4", "a,b", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            count_list(bad)
    assert probability("0.9") == 0.9
    for bad in ("1.5", "-0.1", "high"):
        with pytest.raises(argparse.ArgumentTypeError):
            probability(bad)


def test_threads_default_to_the_idle_cores_on_cpu_and_follow_the_flag(monkeypatch):
    from dlmkit import cli
    from dlmkit.cli import idle_cores, set_threads

    assert idle_cores(2, 0.2) == 2 and idle_cores(2, 1.0) == 1 and idle_cores(2, 3.5) == 1
    assert idle_cores(16, 4.2) == 12 and idle_cores(1, 0.0) == 1
    monkeypatch.setattr(cli, "idle_cores", lambda: 1)  # a busy machine

    before = torch.get_num_threads()
    try:
        import os

        saved = os.environ.pop("OMP_NUM_THREADS", None)
        try:
            assert set_threads(None, "cpu") == 1
        finally:
            if saved is not None:
                os.environ["OMP_NUM_THREADS"] = saved
        assert set_threads(2, "cpu") == 2
        parser = build_parser("x.py", "", phases=["A"], roles=[])
        assert parser.parse_args(["--threads", "3"]).threads == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_imports_neither_torch_nor_transformers(script):
    code = (f"import runpy, sys; sys.argv = [{script!r}, '--help']\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stderr, proc.stderr
    assert "--subset N" in proc.stdout
