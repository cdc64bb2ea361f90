import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlmkit.errors import UserError
from dlmkit.results import JsonlLog, Run, atomic_write_json, default_out, markdown_table


def _run(tmp_path, **kw):
    args = dict(script="x.py", argv=["x.py"], preset="tiny", models={}, device="cpu", dtype="float32", seed=1)
    args.update(kw)
    return Run(tmp_path / "run", **args)


def test_atomic_write_survives_a_crash_inside_the_write(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    atomic_write_json(path, {"v": 1})

    def boom(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        atomic_write_json(path, {"v": 2, "big": list(range(10000))})
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temp file left behind


def test_atomic_write_survives_sigkill_of_the_writer(tmp_path):
    path = tmp_path / "s.json"
    writer = (
        "import sys\nfrom dlmkit.results import atomic_write_json\n"
        "i = 0\nwhile True:\n"
        "    atomic_write_json(sys.argv[1], {'i': i, 'rows': [{'x': j} for j in range(20000)]})\n"
        "    i += 1\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", writer, str(path)])
    deadline = time.time() + 30
    while not path.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    data = json.loads(path.read_text())  # whole: never a truncated JSON
    assert len(data["rows"]) == 20000


def test_jsonl_ignores_and_repairs_a_torn_last_line(tmp_path):
    log = JsonlLog(tmp_path / "a.jsonl")
    log.append({"id": "p1", "f1": 0.5})
    with open(log.path, "a") as f:
        f.write('{"id": "p2", "f1": 0.')  # the process died mid-line
    assert log.done_ids() == {"p1"}
    log.repair()
    log.append({"id": "p3"})
    assert [r["id"] for r in log.records()] == ["p1", "p3"]


def test_resume_skips_done_items_and_loses_none(tmp_path):
    items = [f"item{i}" for i in range(6)]

    def phase(run, crash_after=None):
        log = run.log("phaseB")
        done = log.done_ids()
        processed = []
        for n, item in enumerate(x for x in items if x not in done):
            if crash_after is not None and n == crash_after:
                raise KeyboardInterrupt
            log.append({"id": item, "value": len(item)})
            processed.append(item)
        return processed

    with pytest.raises(KeyboardInterrupt):
        phase(_run(tmp_path), crash_after=4)
    processed = phase(_run(tmp_path, resume=True))
    assert processed == ["item4", "item5"]
    assert sorted(r["id"] for r in _run(tmp_path, resume=True).log("phaseB").records()) == items


def test_existing_run_is_never_overwritten_silently(tmp_path):
    run = _run(tmp_path)
    run.add_table("t", [{"a": 1}], echo=False)
    with pytest.raises(UserError, match="--resume .* --overwrite"):
        _run(tmp_path)
    assert _run(tmp_path, resume=True).summary["tables"] == {"t": [{"a": 1}]}
    kept = _run(tmp_path, resume=True, config={"phases": ["B"]})
    assert kept.summary["config"]["phases"] == ["B"]
    _run(tmp_path, overwrite=True, config={"dream": {"steps": 128}})
    merged = _run(tmp_path, resume=True, config={"phases": ["B"]})
    assert {k: v for k, v in merged.summary["config"].items() if k != "identity"} == \
        {"dream": {"steps": 128}, "phases": ["B"]}
    assert _run(tmp_path, overwrite=True).summary["tables"] == {}


def test_summary_has_provenance_tables_and_notes(tmp_path):
    run = _run(tmp_path, models={"dlm": "some/dir"})
    run.add_table("table2_pipeline", [{"method": "alone", "f1": 0.25}], echo=False)
    run.note("published 0.820 not reproduced")
    summary = json.loads((run.dir / "summary.json").read_text())
    prov = summary["provenance"]
    for key in ("git_sha", "argv", "preset", "models", "versions", "device", "seed", "wall_time_s"):
        assert key in prov
    assert prov["versions"]["torch"] and prov["models"] == {"dlm": "some/dir"}
    assert summary["tables"]["table2_pipeline"] == [{"method": "alone", "f1": 0.25}]
    assert summary["notes"] == ["published 0.820 not reproduced"]


def test_a_rerun_phase_replaces_its_own_notes(tmp_path):
    run = _run(tmp_path)
    run.note("before any phase")
    run.begin_phase("B")
    run.note("B: F1 0.655")
    run.note("shared finding")
    run.phase_done("B")
    run.begin_phase("C")
    run.note("shared finding")
    run.phase_done("C")
    again = _run(tmp_path, resume=True)
    again.begin_phase("B")
    again.note("B: F1 0.637")
    again.phase_done("B")
    notes = json.loads((again.dir / "summary.json").read_text())["notes"]
    assert notes == ["before any phase", "shared finding", "B: F1 0.637"]  # C still says the shared one


def test_nan_becomes_null_not_invalid_json(tmp_path):
    path = tmp_path / "n.json"
    atomic_write_json(path, {"x": float("nan"), "y": [float("inf"), 1.0]})
    assert json.loads(path.read_text()) == {"x": None, "y": [None, 1.0]}


def test_markdown_table():
    text = markdown_table([{"method": "a", "f1": 0.5}, {"method": "b", "f1": 0.25, "n": 3}])
    assert text.splitlines() == ["| method | f1 | n |", "|---|---|---|", "| a | 0.500 |  |", "| b | 0.250 | 3 |"]


def test_default_run_directory_never_touches_committed_results():
    assert default_out("run_full_suite.py", "tiny") == Path("runs/run_full_suite/tiny")
    assert default_out("run_full_suite.py", "tiny", 2) == Path("runs/run_full_suite/tiny-subset2")


def test_atomic_write_gives_ordinary_file_permissions(tmp_path):
    import os

    from dlmkit.results import atomic_write_json

    atomic_write_json(tmp_path / "s.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "s.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_resume_refuses_other_seed_weights_or_settings_but_allows_other_roles(tmp_path):
    weights = {}
    for name, content in (("a", b"A"), ("b", b"B"), ("j", b"J"), ("t", b"T"), ("a2", b"A")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(content)
        weights[name] = str(tmp_path / name)
    _run(tmp_path, identity={"length": 8}, models={"mdlm": weights["a"], "judge": weights["j"]})
    run = _run(tmp_path, identity={"length": 8}, models={"mdlm": weights["a"], "target": weights["t"]}, resume=True)
    stored = run.summary["config"]["identity"]
    assert sorted(stored["models"]) == ["judge", "mdlm", "target"] and stored["seed"] == 1  # the union of roles
    # the same weights under another path are the same model
    _run(tmp_path, identity={"length": 8}, models={"mdlm": weights["a2"]}, resume=True)
    with pytest.raises(UserError, match=r"length 8 -> 16"):
        _run(tmp_path, identity={"length": 16}, models={"mdlm": weights["a"]}, resume=True)
    with pytest.raises(UserError, match=r"--model-mdlm .*/b'"):
        _run(tmp_path, identity={"length": 8}, models={"mdlm": weights["b"]}, resume=True)
    with pytest.raises(UserError, match=r"--seed 1 -> 7"):
        _run(tmp_path, identity={"length": 8}, models={"mdlm": weights["a"]}, seed=7, resume=True)
    # a role an earlier call loaded (judge) is checked even when the call in between did not load it
    with pytest.raises(UserError, match=r"--model-judge"):
        _run(tmp_path, identity={"length": 8}, models={"judge": weights["t"]}, resume=True)
    (tmp_path / "a2" / "model.safetensors").write_bytes(b"changed")  # the path last recorded, other weights
    with pytest.raises(UserError, match=r"--model-mdlm weights"):
        _run(tmp_path, identity={"length": 8}, models={"mdlm": weights["a2"]}, resume=True)
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["config"]["identity"]["seed"] == 1


def test_resume_of_a_run_recorded_before_identity_checks_its_provenance(tmp_path):
    run = _run(tmp_path, seed=3)
    del run.summary["config"]["identity"]
    run.save()
    with pytest.raises(UserError, match=r"--seed 3 -> 7"):
        _run(tmp_path, seed=7, resume=True)
    _run(tmp_path, seed=3, resume=True)
    # an older identity that named some settings only (and models by path): those are compared
    run = _run(tmp_path, seed=3, overwrite=True)
    run.summary["config"]["identity"] = {"seed": 3, "length": 8, "models": {}}
    run.save()
    with pytest.raises(UserError, match=r"length 8 -> 16"):
        _run(tmp_path, seed=3, identity={"length": 16, "new_setting": 1}, resume=True)
    _run(tmp_path, seed=3, identity={"length": 8, "new_setting": 1}, resume=True)


def test_out_that_is_a_file_or_a_stub_of_a_failed_call(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file, not a directory"):
        Run(tmp_path / "file", script="x.py", argv=[], preset="tiny", models={}, device="cpu", dtype="float32",
            seed=1)
    _run(tmp_path)  # a call that wrote its summary and stopped before any result
    _run(tmp_path, seed=2)  # is replaced without --resume or --overwrite
    run = _run(tmp_path, seed=2, resume=True)
    run.note("a finding")
    with pytest.raises(UserError, match="already holds a run"):
        _run(tmp_path, seed=2)


# --------------------------------------------------------------------------- provenance


def test_argv_is_recorded_as_typed_with_the_script_relative_to_the_repo(tmp_path):
    from dlmkit.results import REPO

    typed = ["--subset", "2", "--out", "results/x"]
    for argv in (typed, ["specdiff_bench.py", *typed], [str(REPO / "specdiff_bench.py"), *typed]):
        prov = _run(tmp_path, script="specdiff_bench.py", argv=argv, overwrite=True).summary["provenance"]
        assert prov["argv"] == ["specdiff_bench.py", *typed] and prov["script"] == "specdiff_bench.py"
    assert prov["versions"]["dlmkit"]  # package metadata, else pyproject.toml's version


def test_resume_keeps_the_first_calls_provenance_and_appends_each_resume(tmp_path):
    first = _run(tmp_path, argv=["x.py", "--seed", "1"])
    first.summary["provenance"]["wall_time_s"] = None
    first.save()
    original = json.loads((first.dir / "summary.json").read_text())["provenance"]
    time.sleep(0.05)
    for n in (1, 2):
        resumed = _run(tmp_path, argv=["x.py", "--seed", "1", "--resume"], resume=True)
    prov = json.loads((resumed.dir / "summary.json").read_text())["provenance"]
    assert prov["argv"] == ["x.py", "--seed", "1"] and prov["started_utc"] == original["started_utc"]
    assert prov["wall_time_s"] == original["wall_time_s"]  # a resume does not overwrite the first call's time
    assert [r["argv"] for r in prov["resumes"]] == [["x.py", "--seed", "1", "--resume"]] * 2
    assert all(r["wall_time_s"] is not None and r["git_sha"] == prov["git_sha"] for r in prov["resumes"])
    assert prov["resumed"] is True


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True,
                   capture_output=True)


def test_clean_tree_ignores_the_runs_own_directory(tmp_path):
    from dlmkit.results import git_state

    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.py").write_text("x = 1\n")
    _git(repo, "add", "a.py")
    _git(repo, "commit", "-qm", "a")
    out = repo / "results" / "new_run"
    out.mkdir(parents=True)
    (out / "summary.json").write_text("{}")
    state = git_state(repo, exclude=out)
    assert state["git_sha"] and state["git_dirty"] is False
    assert git_state(repo)["git_dirty"] is True  # without the exclusion the run's own output counts
    (repo / "results" / "stray.txt").write_text("?")
    (repo / "a.py").write_text("x = 2\n")
    state = git_state(repo, exclude=out)
    assert state["git_dirty"] is True and sorted(state["git_changes"]) == ["a.py", "results/stray.txt"]


def test_weight_hashes_are_sha256_and_computed_once_per_file_version(tmp_path, monkeypatch):
    import hashlib

    from dlmkit import results

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights-1")
    (model / "config.json").write_text("{}")
    described = results.model_provenance(str(model))
    assert described["sha256"] == {"model.safetensors": hashlib.sha256(b"weights-1").hexdigest()}
    assert described["source"] == str(model) and described["revision"] is None  # outside the repo: absolute
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    results.model_provenance(str(model))
    assert calls == []  # cached by (path, size, mtime)
    (model / "model.safetensors").write_bytes(b"weights-22")
    assert results.model_provenance(str(model))["sha256"]["model.safetensors"] == real(b"weights-22").hexdigest()
    assert results.model_provenance("dlmkit/assets/tiny/specdiff_drafter")["source"] == "dlmkit/assets/tiny/specdiff_drafter"


def test_a_recorded_run_reruns_from_its_provenance_alone(tmp_path, load_script):
    from dlmkit.results import REPO, rerun_argv, rerun_cwd

    argv = ["--subset", "1", "--max-new-tokens", "6", "--gammas", "2", "--steps", "2", "--phase", "ar",
            "--phase", "specdiff", "--temperatures", "1", "--out", str(tmp_path / "a")]
    assert load_script("specdiff_bench.py").main(argv) == 0
    first = json.loads((tmp_path / "a" / "summary.json").read_text())
    prov = first["provenance"]
    assert prov["argv"] == ["specdiff_bench.py", *argv]
    assert prov["models"]["target"] == "dlmkit/assets/tiny/specdiff_target"  # relative to the repository
    assert set(prov["weights_sha256"]["mdlm_drafter"]) == {"model.safetensors"}
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert prov["git_sha"] == sha

    command = rerun_argv(first, out=tmp_path / "b")
    assert command[1:] == [str(REPO / "specdiff_bench.py"), *argv[:-2], "--out", str(tmp_path / "b")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, cwd=rerun_cwd(first), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    second = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert second["tables"]["counts"] == first["tables"]["counts"]  # the machine-independent tables
    keys = first["config"].keys() | second["config"].keys()
    assert {k: (first["config"].get(k), second["config"].get(k)) for k in keys
            if first["config"].get(k) != second["config"].get(k)} == {}
    timing_cells = lambda s: [(r["prompt_set"], r["temperature"], r["method"]) for r in s["timings"]["timing"]]  # noqa: E731
    assert timing_cells(second) == timing_cells(first)
    assert second["provenance"]["weights_sha256"] == prov["weights_sha256"]


def test_phase_times_and_the_closing_summary(tmp_path, capsys):
    run = _run(tmp_path)
    run.add_table("t", [{"a": 1}], echo=False)
    run.note("finding one")
    run.phase_done("A", wall_s=2.5, cpu_s=1.25)
    assert run.summary["provenance"]["phase_seconds"] == {"A": {"wall": 2.5, "cpu": 1.25}}
    assert "phase A done: 2.5 s wall, 1.2 s CPU" in capsys.readouterr().err
    text = run.closing_summary(["A"])
    assert "  - finding one" in text and "Tables (1, full rows in summary.json): t" in text
    assert "summary.json" in text.splitlines()[-1]
