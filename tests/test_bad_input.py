"""Every bad input ends with one line on stderr that names the fix and exit status 2, before the run
directory holds anything, and a run's finished items survive a full disk."""

import errno
import importlib
import json
import os
import shutil

import pytest

from dlmkit.cli import run_main
from dlmkit.results import REPO

TINY = REPO / "dlmkit" / "assets" / "tiny"
# script -> (role, its shipped checkpoint, a first phase that loads it)
SCRIPT_ROLES = {"run_full_suite": ("dlm", "dream", "A"), "bridge_viability": ("ar_large", "ar_large", "probe"),
                "train_self_spec": ("mdlm", "mdlm", "baseline"), "train_clsd": ("verifier", "verifier", "embed"),
                "specdiff_bench": ("target", "specdiff_target", "ar")}


def _exit(script, argv, capsys):
    module = importlib.import_module(script)
    with pytest.raises(SystemExit) as info:
        run_main(module.main, argv)
    err = capsys.readouterr().err
    return info.value.code, err


def _one_line(code, err):
    assert code == 2, err
    lines = [line for line in err.split("\n") if "\r" not in line and line.strip()]  # progress bars aside
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err


@pytest.mark.parametrize("script", sorted(SCRIPT_ROLES))
def test_truncated_weights_are_one_line_and_write_nothing(script, tmp_path, capsys):
    role, shipped, phase = SCRIPT_ROLES[script]
    broken = tmp_path / shipped
    shutil.copytree(TINY / shipped, broken)
    weights = sorted(broken.rglob("*.safetensors"))[0]
    os.truncate(weights, weights.stat().st_size // 2)
    out = tmp_path / "out"
    code, err = _exit(script, ["--phase", phase, "--subset", "1", f"--model-{role.replace('_', '-')}", str(broken),
                               "--out", str(out)], capsys)
    _one_line(code, err)
    assert "truncated" in err and f"--model-{role.replace('_', '-')}" in err
    assert not out.exists()


@pytest.mark.parametrize("script,bad", [
    ("run_full_suite", ["--fractions", "0.001"]),
    ("specdiff_bench", ["--temperatures", "nan"]),
    ("specdiff_bench", ["--temperatures", "0,inf"]),
    ("train_self_spec", ["--length", "0"]),
    ("train_self_spec", ["--batch-size", "0"]),
    ("train_self_spec", ["--lr", "inf"]),
    ("train_self_spec", ["--lr", "0"]),
    ("train_clsd", ["--beta0", "nan"]),
    ("train_clsd", ["--source-indices", "99"]),
])
def test_bad_values_are_one_line_before_anything_runs(script, bad, tmp_path, capsys):
    code, err = _exit(script, [*bad, "--out", str(tmp_path / "out")], capsys)
    _one_line(code, err)
    assert not (tmp_path / "out").exists()


def test_out_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "out").write_text("notes")
    code, err = _exit("train_clsd", ["--phase", "embed", "--out", str(tmp_path / "out")], capsys)
    _one_line(code, err)
    assert "is a file" in err and (tmp_path / "out").read_text() == "notes"


def _deny(monkeypatch, denied):
    """mkdir under `denied` fails as on a read-only directory (a chmod does not stop root)."""
    if os.geteuid() != 0:
        denied.mkdir()
        denied.chmod(0o500)
        return
    real = os.mkdir

    def mkdir(path, *args, **kwargs):
        if str(path).startswith(str(denied)):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)


@pytest.mark.parametrize("flag", ["--out", "--ckpt-dir"])
def test_read_only_out_or_ckpt_dir_is_one_line(flag, tmp_path, capsys, monkeypatch):
    denied = tmp_path / "ro"
    _deny(monkeypatch, denied)
    argv = ["--phase", "embed", "--subset", "1", "--embed-records", "8", "--out", str(tmp_path / "out")]
    code, err = _exit("train_clsd", [*argv, flag, str(denied / "x")], capsys)
    _one_line(code, err)
    assert "permission denied" in err and "--resume" in err


def test_a_full_disk_is_one_line_and_keeps_finished_items(tmp_path, capsys, monkeypatch):
    from dlmkit.results import JsonlLog

    real, written = JsonlLog.append, []

    def fills_the_disk(self, record):
        if written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        written.append(record)
        return real(self, record)

    monkeypatch.setattr(JsonlLog, "append", fills_the_disk)
    out = tmp_path / "out"
    argv = ["--phase", "baseline", "--subset", "2", "--steps", "2", "--length", "8", "--out", str(out)]
    code, err = _exit("train_self_spec", argv, capsys)
    _one_line(code, err)
    assert "the disk is full" in err and "--resume" in err
    (log,) = out.glob("*.jsonl")
    kept = log.read_text().splitlines()
    assert len(kept) == 1 and json.loads(kept[0]) == json.loads(json.dumps(written[0]))
    monkeypatch.setattr(JsonlLog, "append", real)
    code, err = _exit("train_self_spec", [*argv, "--resume"], capsys)
    assert code == 0, err
    assert log.read_text().splitlines()[0] == kept[0]


def test_a_failed_model_load_leaves_nothing_that_blocks_the_corrected_rerun(tmp_path, capsys):
    broken = tmp_path / "specdiff_target"
    shutil.copytree(TINY / "specdiff_target", broken)
    (broken / "config.json").write_text("{}")  # loads past the weight check, fails in the loader
    out = tmp_path / "out"
    argv = ["--phase", "ar", "--subset", "1", "--max-new-tokens", "4", "--out", str(out)]
    code, err = _exit("specdiff_bench", [*argv, "--model-target", str(broken)], capsys)
    assert code == 2, err
    code, err = _exit("specdiff_bench", argv, capsys)  # no --overwrite needed
    assert code == 0, err


@pytest.mark.parametrize("script", ["run_full_suite", "bridge_viability"])
def test_missing_bubblewrap_is_one_line_before_any_model_runs(script, tmp_path, capsys, monkeypatch):
    from dlmkit.metrics import sandbox

    monkeypatch.setattr(sandbox, "_checked", None)
    monkeypatch.setenv("PATH", "/nonexistent")
    out = tmp_path / "out"
    code, err = _exit(script, ["--subset", "1", "--out", str(out)], capsys)
    _one_line(code, err)
    assert "apt-get install bubblewrap" in err and "--unsafe-exec" in err
    assert not (out / "summary.json").exists()
