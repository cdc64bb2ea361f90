import json
import shutil

import pytest
import torch

import run_full_suite
from dlmkit.models.dream import dream_config, random_dream, save_dream
from dlmkit.phases import reference
from dlmkit.presets import TINY_TOKENIZER


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory):
    """A random Dream in the tiny tokenizer's vocabulary, saved like the shipped one."""
    directory = tmp_path_factory.mktemp("dream")
    cfg = dream_config("tiny", vocab_size=1212, mask_token_id=1211, pad_token_id=0, bos_token_id=0, eos_token_id=0)
    save_dream(random_dream(cfg, dtype=torch.float32), directory)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TINY_TOKENIZER / name, directory / name)
    return directory


@pytest.fixture(autouse=True)
def short_runs(monkeypatch):
    monkeypatch.setitem(reference.SETTINGS, "tiny", reference.DreamSettings(max_new_tokens=24, steps=12))


def _run(dream_dir, out, *extra):
    return run_full_suite.main(["--model-dlm", str(dream_dir), "--subset", "1", "--out", str(out),
                                "--phase", "A", *extra])


def test_phase_a_writes_tables_records_and_plot(dream_dir, tmp_path):
    assert _run(dream_dir, tmp_path / "r") == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    table = {row["stratum"]: row for row in summary["tables"]["phaseA_reference"]}
    assert table["all"]["n"] == 8 and table["all"]["permanence_violations"] == 0
    records = [json.loads(line) for line in (tmp_path / "r" / "A.jsonl").read_text().splitlines()]
    for r in records:
        assert len(r["commit_step"]) == 24 and 0 <= r["gen_len"] <= 24
        assert all(0 <= c < 12 for c in r["commit_step"])  # every position committed by the last step
    assert summary["tables"]["commit_curve"][-1]["all"] == 1.0
    assert summary["provenance"]["models"]["dlm"] == str(dream_dir)
    assert (tmp_path / "r" / "commit_curves.png").stat().st_size > 1000


def test_same_seed_same_tables(dream_dir, tmp_path):
    _run(dream_dir, tmp_path / "a")
    _run(dream_dir, tmp_path / "b")
    tables = [json.loads((tmp_path / d / "summary.json").read_text())["tables"] for d in ("a", "b")]
    assert tables[0] == tables[1]


def test_resume_after_a_kill_loses_no_finished_prompt(dream_dir, tmp_path, monkeypatch):
    real = reference.reference_run
    calls = []

    def dies_on_the_fourth(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(args[2]["id"])
        return real(*args, **kwargs)

    monkeypatch.setattr(reference, "reference_run", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        _run(dream_dir, tmp_path / "r")
    before = (tmp_path / "r" / "A.jsonl").read_text().splitlines()
    assert len(before) == 3
    monkeypatch.setattr(reference, "reference_run", real)
    assert _run(dream_dir, tmp_path / "r", "--resume") == 0
    after = (tmp_path / "r" / "A.jsonl").read_text().splitlines()
    assert after[:3] == before and len(after) == 8
    _run(dream_dir, tmp_path / "fresh")
    fresh = (tmp_path / "fresh" / "A.jsonl").read_text().splitlines()
    strip = lambda lines: sorted(json.dumps({k: v for k, v in json.loads(x).items() if k != "dlm_seconds"}) for x in lines)
    assert strip(after) == strip(fresh)  # per-prompt seeds: resuming changes no sample


def test_unbuilt_phase_asked_for_says_so_and_exits_2(dream_dir, tmp_path, capsys):
    assert run_full_suite.main(["--model-dlm", str(dream_dir), "--phase", "B", "--out", str(tmp_path / "r")]) == 2
    assert "not built yet" in capsys.readouterr().err


def test_existing_run_needs_resume_or_overwrite(dream_dir, tmp_path):
    from dlmkit.errors import UserError

    _run(dream_dir, tmp_path / "r")
    with pytest.raises(UserError, match="--resume"):
        _run(dream_dir, tmp_path / "r")
