"""train_self_spec.py --phase baseline end to end on a tiny random MDLM and a tiny random GPT-2 judge."""

import json

import pytest
import torch

LENGTH = 16


@pytest.fixture(scope="module")
def models(tmp_path_factory, write_mdlm_and_judge):
    return write_mdlm_and_judge(tmp_path_factory.mktemp("models"), model_length=32)


def argv(models, out, *extra):
    return ["--preset", "tiny", "--model-mdlm", str(models / "mdlm"), "--model-judge", str(models / "judge"),
            "--steps", "2,4", "--length", str(LENGTH), "--out", str(out), "--device", "cpu", *extra]


def counting_sampler(monkeypatch):
    from dlmkit.experiments.self_spec import baseline as mdlm_baseline

    calls = []
    real = mdlm_baseline.sample

    def counted(model, canvas, steps, **kwargs):
        calls.append((kwargs["sampler"], steps, canvas.shape[0]))
        return real(model, canvas, steps, **kwargs)

    monkeypatch.setattr(mdlm_baseline, "sample", counted)
    return calls


def test_baseline_writes_tables_and_resume_skips_finished_samples(models, tmp_path, monkeypatch,
                                                                    load_script):
    script = load_script("train_self_spec.py")
    calls = counting_sampler(monkeypatch)
    out = tmp_path / "run"
    assert script.main(argv(models, out, "--subset", "2", "--phase", "baseline")) == 0
    assert len(calls) == 2 * 2 * 2  # 2 samplers x 2 step counts x 2 samples (batch 1)

    summary = json.loads((out / "summary.json").read_text())
    table = summary["tables"]["mdlm_baseline"]
    assert [(r["sampler"], r["steps"]) for r in table] == [("ddpm", 2), ("ddpm_cache", 2), ("ddpm", 4), ("ddpm_cache", 4)]
    for row in table:
        assert set(row) == {"sampler", "steps", "nfe", "judge_nll", "gen_ppl", "entropy"}
        assert row["judge_nll"] > 0 and row["gen_ppl"] == pytest.approx(torch.tensor(row["judge_nll"]).exp().item())
        assert 1 <= row["nfe"] <= row["steps"] + 1
    by = {(r["sampler"], r["steps"]): r for r in table}
    for steps in (2, 4):  # same noise: same tokens, the cache never calls more
        assert by["ddpm_cache", steps]["nfe"] <= by["ddpm", steps]["nfe"]
        assert by["ddpm_cache", steps]["judge_nll"] == pytest.approx(by["ddpm", steps]["judge_nll"])
    refs = {r["reference"]: r for r in summary["tables"]["references"]}
    assert set(refs) == {"uniform random tokens", "held-out real text"} and all(r["samples"] == 2 for r in refs.values())
    assert summary["phases_done"] == ["baseline"] and any("ddpm_cache" in n for n in summary["notes"])
    assert (out / "baseline_nll_vs_steps.png").stat().st_size > 1000
    first = (out / "baseline_samples.jsonl").read_text().splitlines()
    assert len(first) == 8 and all(len(json.loads(line)["tokens"]) == LENGTH for line in first)

    # --resume with one more sample: only the new sample is drawn, earlier records stay as they were.
    calls.clear()
    assert script.main(argv(models, out, "--subset", "3", "--phase", "baseline", "--resume")) == 0
    assert sorted(calls) == sorted((s, n, 1) for s in ("ddpm", "ddpm_cache") for n in (2, 4))
    second = (out / "baseline_samples.jsonl").read_text().splitlines()
    assert second[:8] == first and len(second) == 12
    summary = json.loads((out / "summary.json").read_text())
    assert all(r["samples"] == 3 for r in summary["tables"]["references"])

    calls.clear()
    assert script.main(argv(models, out, "--subset", "3", "--resume", "--phase", "baseline")) == 0
    assert calls == []


def test_sampling_without_trained_parts_and_bad_resume_are_one_line_errors(models, tmp_path, load_script):
    from dlmkit.errors import UserError

    script = load_script("train_self_spec.py")
    with pytest.raises(UserError, match="--phase train first"):
        script.main(argv(models, tmp_path / "a", "--phase", "sample"))
    assert not (tmp_path / "a").exists()

    out = tmp_path / "b"
    assert script.main(argv(models, out, "--subset", "1", "--steps", "1", "--phase", "baseline")) == 0
    with pytest.raises(UserError, match="--overwrite"):
        script.main(argv(models, out, "--subset", "1", "--steps", "1", "--seed", "7", "--resume"))
    with pytest.raises(UserError, match="exceeds the MDLM's model_length"):
        script.main(argv(models, tmp_path / "c", "--length", "64"))
