"""train_self_spec.py phases train, sample and eval end to end on a tiny random MDLM and judge
(the baseline phase first, into the same run directory, as the committed run was made)."""

import json

import pytest
import torch

from dlmkit.errors import UserError

LENGTH = 12


@pytest.fixture(scope="module")
def models(tmp_path_factory, write_mdlm_and_judge):
    return write_mdlm_and_judge(tmp_path_factory.mktemp("models"), model_length=16)


@pytest.fixture
def small_data(monkeypatch):
    """The tiny corpus takes seconds to build: train on a few random blocks instead."""
    from dlmkit.experiments.self_spec import train as phases

    gen = torch.Generator().manual_seed(0)
    blocks = torch.randint(0, 1000, (40, LENGTH), generator=gen)
    monkeypatch.setattr(phases, "train_blocks", lambda preset, tokenizer, seed: (blocks, blocks[:8]))


def argv(models, out, *extra):
    return ["--preset", "tiny", "--model-mdlm", str(models / "mdlm"), "--model-judge", str(models / "judge"),
            "--steps", "2,4", "--nfe", "2,4", "--length", str(LENGTH), "--out", str(out), "--device", "cpu",
            "--subset", "3", "--train-steps", "12", "--train-batch-size", "4", "--calibration-samples", "2",
            "--spec-batch-size", "2", *extra]


def test_all_phases_write_their_tables_and_resume_skips_finished_work(models, small_data, tmp_path, monkeypatch,
                                                                      load_script):
    script = load_script("train_self_spec.py")
    out = tmp_path / "run"
    assert script.main(argv(models, out, "--phase", "baseline")) == 0
    assert script.main(argv(models, out, "--resume", "--phase", "train", "--phase", "sample", "--phase", "eval")) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["phases_done"] == ["baseline", "train", "sample", "eval"]
    assert {"mdlm_baseline", "references", "self_spec_train", "self_spec_dtau", "self_spec_vs_mdlm"} <= set(
        summary["tables"])
    train_rows = summary["tables"]["self_spec_train"]
    assert train_rows[-1]["step"] == 12 and train_rows[-1]["val_target_loss"] > 0
    assert (out / "checkpoints" / "final" / "model.safetensors").exists()
    assert len((out / "self_spec_train_log.jsonl").read_text().splitlines()) >= 1

    records = [json.loads(line) for line in (out / "self_spec_samples.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 3  # budgets x methods x samples
    for r in records:
        assert len(r["tokens"]) == LENGTH and sum(r["revealed_per_step"]) == LENGTH
        assert r["nfe"] == len(r["revealed_per_step"]) >= 1
        assert r["causal_passes"] == (r["nfe"] if r["method"] == "self_spec" else 0)
        if r["method"] == "draft_only":
            assert r["accepted"] == r["drafted"] == LENGTH and r["nfe"] == r["target_nfe"]
    table = summary["tables"]["self_spec_vs_mdlm"]
    assert [row["nfe_budget"] for row in table] == [2, 4]
    for row in table:
        assert row["mdlm_nll"] is not None and row["spec_nll"] > 0 and 0 <= row["spec_acceptance"] <= 1
        assert row["spec_causal_passes"] == row["spec_nfe"]
        gain, se = row["verification_gain_nll"], row["verification_gain_se"]
        assert gain == pytest.approx(row["draft_only_nll"] - row["spec_nll"])
        assert se == pytest.approx((row["spec_nll_se"] ** 2 + row["draft_only_nll_se"] ** 2) ** 0.5)
        assert row["verification_gain_over_2se"] == (gain > 2 * se)
    assert sum("NFE ratio" in n for n in summary["notes"]) == 2  # against MDLM and against the draft alone
    assert sum("verification's gain" in n for n in summary["notes"]) == 1
    assert (out / "self_spec_nll_vs_nfe.png").stat().st_size > 1000
    assert (out / "baseline_nll_vs_steps.png").exists()  # the baseline's files are kept

    # Resume: nothing is sampled or calibrated again; the records stay as they were.
    import dlmkit.decoding.self_spec_sampler as sampler

    calls = []
    real = sampler.self_spec_sample
    monkeypatch.setattr(sampler, "self_spec_sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    before = (out / "self_spec_samples.jsonl").read_text()
    assert script.main(argv(models, out, "--resume", "--phase", "sample", "--phase", "eval")) == 0
    assert calls == [] and (out / "self_spec_samples.jsonl").read_text() == before


def test_same_seed_same_samples_and_errors(models, small_data, tmp_path, load_script):
    script = load_script("train_self_spec.py")
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        assert script.main(argv(models, out, "--phase", "train", "--phase", "sample", "--subset", "2",
                                "--nfe", "3")) == 0
    a, b = [[json.loads(line)["tokens"] for line in (o / "self_spec_samples.jsonl").read_text().splitlines()]
            for o in outs]
    assert a == b
    with pytest.raises(UserError, match="no mdlm_baseline table"):
        script.main(argv(models, outs[0], "--resume", "--phase", "eval", "--subset", "2", "--nfe", "3"))
    # the trained layer the samples came from was trained at another rate: resuming would mix two runs
    with pytest.raises(UserError, match=r"train .*'lr'"):
        script.main(argv(models, outs[0], "--resume", "--phase", "sample", "--subset", "2", "--nfe", "3", "--lr", "0.5"))
    with pytest.raises(UserError, match="--phase train first"):
        script.main(argv(models, tmp_path / "c", "--phase", "sample", "--self-spec", str(tmp_path / "none")))


def test_a_smoke_run_calibrates_on_as_few_rows_as_it_samples():
    from dlmkit.experiments.self_spec.settings import SAMPLE_DEFAULTS, calibration_rows

    tiny = SAMPLE_DEFAULTS["tiny"]
    assert tiny["calibration_samples"] == 8
    assert [calibration_rows(tiny, n) for n in (None, 1, 5, 20)] == [8, 2, 5, 8]


def test_the_town_name_count_tells_towns_from_mixed_parts(load_script, tmp_path):
    names = load_script("benchmarks/self_spec_names.py")
    from dlmkit.data.tinyworld2 import TinyWorld2

    towns = TinyWorld2(0).gazetteer.towns
    mixed = next(h + m + t for h in "FGHLMPST" for m in ("ar", "an", "en") for t in ("ber", "ly", "de", "ist", "ing")
                 if h + m + t not in towns)
    out = names.town_share([f"In {towns[0]} and {mixed}.", f"The {towns[1]}s and {towns[0]}"], set(towns))
    assert out["names"] == 3 and out["town_share"] == 2 / 3  # "{towns[1]}s" is not a name: a word boundary
    assert mixed in out["example"]
    from dlmkit.errors import UserError

    with pytest.raises(UserError, match="--phase baseline"):
        names.main(["--run", str(tmp_path)])


def test_the_does_not_pay_note_uses_the_standard_error_of_the_difference():
    from dlmkit.experiments.self_spec.evaluate import eval_notes, verification_gain

    def row(budget, spec, draft, se):
        s, d = {"judge_nll": spec, "nll_se": se}, {"judge_nll": draft, "nll_se": se}
        return {"nfe_budget": budget, "spec_nll": spec, "spec_nll_se": se, "draft_only_nll": draft,
                "draft_only_nll_se": se, "spec_entropy": 5.0, "draft_only_entropy": 5.0, "spec_nfe": budget,
                "spec_causal_passes": budget, "spec_acceptance": 0.5, "draft_only_nfe": budget, "mdlm_nll": None,
                "mdlm_nfe": None, "nfe_ratio": None, "nfe_ratio_vs_draft_only": None, **verification_gain(s, d)}

    # a gain of 0.25 with each cell's s.e. 0.1: beyond 2 s.e. of one cell (0.2), within 2 s.e. of the
    # difference (0.283): not a gain, so verification "does not pay" at either budget
    notes = eval_notes([row(8, 4.0, 4.25, 0.1), row(16, 3.6, 3.6, 0.1)])
    assert any("more than 2 s.e. at 0 of 2 budgets" in n for n in notes)
    assert any("does not pay" in n and "budgets [8, 16]" in n for n in notes)
    # a gain of 0.3 is beyond both: the note is not written
    assert not any("does not pay" in n for n in eval_notes([row(8, 4.0, 4.3, 0.1), row(16, 3.6, 3.6, 0.1)]))


def test_the_control_matches_what_self_spec_spends_where_the_budget_is_out_of_reach():
    from dlmkit.experiments.self_spec.sample import control_steps

    assert control_steps(16, {"reachable": True, "calibration_nfe": 15.75}) == 16
    assert control_steps(8, {"reachable": False, "calibration_nfe": 13.5}) == 14  # never fewer calls than self-spec
    assert control_steps(8, {"reachable": False, "calibration_nfe": 7.0}) == 8


def test_a_jsonl_log_drops_stale_records_atomically(tmp_path):
    from dlmkit.results import JsonlLog

    log = JsonlLog(tmp_path / "x.jsonl")
    for i, dtau in enumerate([0.1, 0.2, 0.1]):
        log.append({"id": f"draft_only/8/{i}", "dtau": dtau})
    assert log.drop(lambda r: r["dtau"] != 0.1) == 1
    assert log.done_ids() == {"draft_only/8/0", "draft_only/8/2"}
    assert log.drop(lambda r: False) == 0


def test_subset_trains_a_smoke_sized_causal_layer_unless_train_steps_is_given():
    import argparse

    from dlmkit.experiments.self_spec.settings import SMOKE_TRAIN_STEPS, TRAIN_DEFAULTS, Settings

    def settings(subset, train_steps):
        args = argparse.Namespace(subset=subset, train_steps=train_steps, train_batch_size=None, lr=None, length=None,
                                  steps=None, batch_size=None, nfe=None, spec_batch_size=None,
                                  calibration_samples=None, ckpt_dir=None, self_spec=None)
        job = argparse.Namespace(preset="tiny", phases=("train",), seed=0, out="runs/x")
        return Settings.from_flags(args, job)

    assert settings(None, None).train.steps == TRAIN_DEFAULTS["tiny"].steps
    assert settings(1, None).train.steps == SMOKE_TRAIN_STEPS
    assert settings(1, 300).train.steps == 300
