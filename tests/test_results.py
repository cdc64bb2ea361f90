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
    assert kept.summary["config"] == {"phases": ["B"]}
    _run(tmp_path, overwrite=True, config={"dream": {"steps": 128}})
    merged = _run(tmp_path, resume=True, config={"phases": ["B"]})
    assert merged.summary["config"] == {"dream": {"steps": 128}, "phases": ["B"]}
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


def test_resume_refuses_other_identity_but_allows_other_roles(tmp_path):
    first = {"seed": 0, "length": 8, "models": {"mdlm": "a", "judge": "j"}}
    _run(tmp_path, identity=first)
    run = _run(tmp_path, identity={"seed": 0, "length": 8, "models": {"mdlm": "a", "target": "t"}}, resume=True)
    assert run.summary["config"]["identity"]["models"] == {"mdlm": "a", "target": "t"}
    with pytest.raises(UserError, match=r"other settings \(length 8 -> 16\)"):
        _run(tmp_path, identity={**first, "length": 16}, resume=True)
    with pytest.raises(UserError, match=r"models.mdlm 'a' -> 'b'"):
        _run(tmp_path, identity={**first, "models": {"mdlm": "b"}}, resume=True)
