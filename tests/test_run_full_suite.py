import json
import shutil

import pytest
import torch

import run_full_suite
from dlmkit.experiments import inverse
from dlmkit.cli import run_main
from dlmkit.decoding.diffusion import DreamSettings
from dlmkit.errors import UserError
from dlmkit.data.tiny_corpus import load_tiny_tokenizer
from dlmkit.models.dream import dream_config, random_dream, save_dream
from dlmkit.experiments.inverse import fill, reference
from dlmkit.presets import TINY_TOKENIZER

SHORT = DreamSettings(max_new_tokens=24, steps=12)


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory):
    """A random Dream in the tiny tokenizer's vocabulary, saved like the shipped one."""
    directory = tmp_path_factory.mktemp("dream")
    tok = load_tiny_tokenizer()
    cfg = dream_config("tiny", vocab_size=len(tok), mask_token_id=tok.mask_token_id, pad_token_id=tok.eos_token_id,
                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    save_dream(random_dream(cfg, dtype=torch.float32), directory)
    _copy_tokenizer(directory)
    return directory


def _copy_tokenizer(directory):
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TINY_TOKENIZER / name, directory / name)


def _random_qwen2(directory, hidden: int, vocab_size: int | None = None, seed: int = 0):
    """A random Qwen2 gap-filler with the tiny tokenizer (default: one embedding row per token)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = load_tiny_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab_size or len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(directory)
    _copy_tokenizer(directory)
    return directory


@pytest.fixture(scope="module")
def ar_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("ar")
    return {"ar_small": _random_qwen2(root / "small", 32, seed=1),
            "ar_medium": _random_qwen2(root / "medium", 48, seed=2),
            "ar_control": _random_qwen2(root / "control", 32, seed=4),
            "ar_600": _random_qwen2(root / "v600", 32, vocab_size=600, seed=3)}


def _suite(dream_dir, ar_dirs, out, *extra, small=None):
    return run_full_suite.main(["--model-dlm", str(dream_dir), "--model-ar-small", str(small or ar_dirs["ar_small"]),
                                "--model-ar-medium", str(ar_dirs["ar_medium"]),
                                "--model-ar-control", str(ar_dirs["ar_control"]), "--subset", "1", "--out", str(out),
                                *extra], dream=SHORT)


@pytest.fixture(scope="module")
def full_run(dream_dir, ar_dirs, tmp_path_factory):
    """Every phase in order on one prompt per stratum (8 prompts, 5 in the evaluation set)."""
    out = tmp_path_factory.mktemp("full") / "run"
    assert _suite(dream_dir, ar_dirs, out) == 0
    return out


def _jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _run(dream_dir, out, *extra):
    return run_full_suite.main(["--model-dlm", str(dream_dir), "--subset", "1", "--out", str(out),
                                "--phase", "A", *extra], dream=SHORT)


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


def test_phase_a_same_seed_same_tables(dream_dir, tmp_path):
    _run(dream_dir, tmp_path / "a")
    _run(dream_dir, tmp_path / "b")
    tables = [json.loads((tmp_path / d / "summary.json").read_text())["tables"] for d in ("a", "b")]
    assert tables[0] == tables[1]


def test_phase_a_resume_after_a_kill_loses_no_finished_prompt(dream_dir, tmp_path, monkeypatch):
    real = reference.reference_runs
    calls = []

    def dies_in_the_second_batch(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append([item["id"] for item in args[2]])
        return real(*args, **kwargs)

    monkeypatch.setattr(reference, "BATCH", 3)
    monkeypatch.setattr(reference, "reference_runs", dies_in_the_second_batch)
    with pytest.raises(KeyboardInterrupt):
        _run(dream_dir, tmp_path / "r")
    before = (tmp_path / "r" / "A.jsonl").read_text().splitlines()
    assert len(before) == 3
    monkeypatch.setattr(reference, "reference_runs", real)
    assert _run(dream_dir, tmp_path / "r", "--resume") == 0
    after = (tmp_path / "r" / "A.jsonl").read_text().splitlines()
    assert after[:3] == before and len(after) == 8
    monkeypatch.setattr(reference, "BATCH", 1)  # one prompt at a time: other batches, other padding
    _run(dream_dir, tmp_path / "fresh")
    fresh = (tmp_path / "fresh" / "A.jsonl").read_text().splitlines()
    strip = lambda lines: sorted(json.dumps({k: v for k, v in json.loads(x).items() if k != "dlm_seconds"}) for x in lines)
    # per-prompt generators: neither resuming nor batching changes a sample
    assert strip(after) == strip(fresh)


def test_tables_and_findings_on_stdout_progress_and_times_on_stderr(dream_dir, tmp_path, capsys):
    assert _run(dream_dir, tmp_path / "r") == 0
    out, err = capsys.readouterr()
    assert "### phaseA_reference" in out and "## run_full_suite.py: done (A)" in out
    assert "A.jsonl" in out.splitlines()[-1] and "commit_curves.png" in out.splitlines()[-1]
    assert "phase A: Dream reference" in err and "phase A done:" in err and "###" not in err
    times = json.loads((tmp_path / "r" / "summary.json").read_text())["provenance"]["phase_seconds"]["A"]
    assert times["wall"] > 0 and times["cpu"] > 0


def test_existing_run_needs_resume_or_overwrite(dream_dir, tmp_path):
    from dlmkit.errors import UserError

    _run(dream_dir, tmp_path / "r")
    with pytest.raises(UserError, match="--resume"):
        _run(dream_dir, tmp_path / "r")


TABLES = ["phaseA_reference", "commit_curve", "table2_pipeline", "table2_by_task", "table_anchor_content", "table_gain_sources",
          "adaptive_stop",
          "adaptive_stop_by_task", "pearl_point", "pearl_curve", "table4_ablation", "table5_gap_only", "table3_size",
          "payload", "drafted_gap_fill", "drafted_gap_fill_by_task", "table6_timing", "table_checks"]


def test_every_phase_runs_and_writes_its_table(full_run):
    summary = json.loads((full_run / "summary.json").read_text())
    assert summary["phases_done"] == list(inverse.PHASES)
    assert list(summary["tables"]) == TABLES
    for name, rows in summary["tables"].items():
        assert rows and (name == "table_checks" or all("n" in row for row in rows)), name
    carry = {(r["task"], r["fraction"]): r for r in summary["tables"]["table_anchor_content"]}
    assert {task for task, _ in carry} == {"all", "mmlu", "arc", "gsm8k", "humaneval"}
    for row in carry.values():
        for key in ("content_share", "equal_to_ar_small_alone", "equal_to_ar_control_alone"):
            assert row[key] is None or 0 <= row[key] <= 1
    gains = summary["tables"]["table_gain_sources"]
    assert {(r["model"], r["fraction"]) for r in gains} == {(m, f) for m in ("ar_small", "ar_medium", "ar_control")
                                                            for f in (0.1, 0.15, 0.25)}
    for row in gains:  # the tiny world's items carry their reference answers: every gained content word is judged
        assert row["gained_right_words"] + row["gained_wrong_words"] == pytest.approx(row["gained_content_words"])
    checks = summary["tables"]["table_checks"]
    assert len(checks) == 23 and all(set(r) >= {"claim", "measured", "threshold", "met", "source"} for r in checks)
    assert all(r["met"] is None or isinstance(r["met"], bool) for r in checks)
    for phase in ("A", "B", "C", "ablation", "gap", "size", "payload", "drafted", "timing"):
        assert (full_run / f"{phase}.jsonl").stat().st_size > 0, phase
    for plot in ("commit_curves.png", "gapfill_f1_accuracy.png", "pearl_curve.png", "adaptive_stop.png"):
        assert (full_run / plot).stat().st_size > 1000, plot
    table2 = summary["tables"]["table2_pipeline"]
    assert [r["n"] for r in table2] == [5] * len(table2)  # the evaluation strata, one prompt each
    oracle_10 = next(r for r in table2 if r["method"] == "ar_small + anchors" and r["fraction"] == 0.1
                     and r["end_rule"] == "oracle")
    assert oracle_10["published_f1"] == 0.820 and 0 <= oracle_10["f1_low"] <= oracle_10["f1"] <= oracle_10["f1_high"]
    assert len(summary["tables"]["pearl_point"]) == 8  # 3 GSM8K strata + all, two methods


def test_phase_b_records_hold_both_end_rules_and_respect_the_anchors(full_run):
    a_records = {r["id"]: r for r in _jsonl(full_run / "A.jsonl")}
    for record in _jsonl(full_run / "B.jsonl"):
        a = a_records[record["id"]]
        assert len(record["fills"]) == 3 * (1 + 3 * 2)  # three gap-fillers: alone + 3 fractions x 2 end rules
        for fill in record["fills"]:
            assert len(fill["tokens"]) == len(fill["forced"]) == fill["gen_tokens"] <= SHORT.max_new_tokens
            for position, (token, forced) in enumerate(zip(fill["tokens"], fill["forced"])):
                if forced:  # an anchor: the token Dream committed there within the fraction's steps
                    assert a["tokens"][position] == token
                    assert a["commit_step"][position] < int(SHORT.steps * fill["fraction"])
            if fill["rule"] == "alone":
                assert not any(fill["forced"]) and fill["coverage"] == 0
            if fill["rule"] == "oracle":
                assert fill["gen_tokens"] <= a["gen_len"]
            assert {"f1", "rouge_l", "correct", "stop_reason", "forward_passes", "coverage"} <= set(fill)


def test_every_phase_same_seed_same_tables(dream_dir, ar_dirs, full_run, tmp_path):
    phases = [arg for p in inverse.PHASES if p != "timing" for arg in ("--phase", p)]
    assert _suite(dream_dir, ar_dirs, tmp_path / "again", *phases) == 0
    first = json.loads((full_run / "summary.json").read_text())["tables"]
    again = json.loads((tmp_path / "again" / "summary.json").read_text())["tables"]
    first.pop("table6_timing")  # wall-clock times: the one table a seed cannot fix
    for tables in (first, again):  # and the claim read from it
        tables["table_checks"] = [r for r in tables["table_checks"] if not r["claim"].startswith("pipeline, adaptive")]
    assert again == first


def test_phase_b_resume_after_a_kill_loses_no_finished_prompt(dream_dir, ar_dirs, full_run, tmp_path, monkeypatch):
    out = tmp_path / "r"
    assert _suite(dream_dir, ar_dirs, out, "--phase", "A") == 0
    real, calls = fill.fill_prompt, []

    def dies_on_the_fourth(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(args[1]["id"])
        return real(*args, **kwargs)

    monkeypatch.setattr(fill, "fill_prompt", dies_on_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        _suite(dream_dir, ar_dirs, out, "--phase", "B", "--resume")
    before = (out / "B.jsonl").read_text().splitlines()
    assert len(before) == 3
    monkeypatch.setattr(fill, "fill_prompt", real)
    assert _suite(dream_dir, ar_dirs, out, "--phase", "B", "--resume") == 0
    after = (out / "B.jsonl").read_text().splitlines()
    assert after[:3] == before and len(after) == 8
    # Per-prompt batches: a resumed run gives exactly the records of an uninterrupted one.
    assert sorted(after) == sorted((full_run / "B.jsonl").read_text().splitlines())
    tables = json.loads((out / "summary.json").read_text())["tables"]
    assert tables["table2_pipeline"] == json.loads((full_run / "summary.json").read_text())["tables"]["table2_pipeline"]


def test_resume_refuses_another_seed_or_gap_filler_and_keeps_the_run(dream_dir, ar_dirs, full_run, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(full_run, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match=r"other inputs \(--seed 42 -> 7\)"):
        _suite(dream_dir, ar_dirs, out, "--phase", "B", "--resume", "--seed", "7")
    # phase A alone loads no gap-filler, yet the run's C / ablation / timing were made with ar_small
    with pytest.raises(UserError, match=r"--model-ar-small "):
        _suite(dream_dir, ar_dirs, out, "--phase", "B", "--resume", small=ar_dirs["ar_medium"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing touched
    # the same inputs with other phases and output-only flags resume
    assert _suite(dream_dir, ar_dirs, out, "--phase", "payload", "--resume", "--published-dir", str(tmp_path)) == 0


def test_a_later_phase_without_phase_a_says_run_phase_a_first(dream_dir, ar_dirs, tmp_path):
    with pytest.raises(UserError, match=r"run phase A first: run_full_suite.py --phase A --out .* --resume"):
        _suite(dream_dir, ar_dirs, tmp_path / "r", "--phase", "gap")
    assert not (tmp_path / "r").exists()  # nothing written


def test_vocabulary_mismatch_is_one_line_naming_the_roles(dream_dir, ar_dirs, tmp_path, capsys):
    argv = ["--model-dlm", str(dream_dir), "--model-ar-small", str(ar_dirs["ar_600"]),
            "--model-ar-medium", str(ar_dirs["ar_medium"]), "--model-ar-control", str(ar_dirs["ar_control"]),
            "--subset", "1", "--out", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda a: run_full_suite.main(a, dream=SHORT), argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert (f"error: dlm and ar_small have different vocabularies ({len(load_tiny_tokenizer())} vs 600 tokens); "
            "pass gap-fillers that share the DLM's tokenizer") in err
    assert not (tmp_path / "r").exists()  # caught before phase A spent any time


@pytest.mark.parametrize("bad", ["0", "1.5", "-0.1", "nan", "inf"])
def test_fraction_outside_zero_one_is_refused(dream_dir, ar_dirs, tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda a: _suite(dream_dir, ar_dirs, tmp_path / "r", "--fractions", "0.1", bad))
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1 and not (tmp_path / "r").exists()


def test_fraction_with_no_dream_step_is_refused(dream_dir, ar_dirs, tmp_path):
    with pytest.raises(UserError, match=r"--fractions 0.001 is 0 of Dream's 128 steps .* >= 0.007812"):
        _suite(dream_dir, ar_dirs, tmp_path / "r", "--fractions", "0.001")
    assert not (tmp_path / "r").exists()


def test_ablation_controls_keep_their_invariants(full_run):
    a_records = {r["id"]: r for r in _jsonl(full_run / "A.jsonl")}
    special = _special_ids()  # end of text, mask, chat markers
    for record in _jsonl(full_run / "ablation.jsonl"):
        a = a_records[record["id"]]
        gen_len = a["gen_len"]
        for fraction, controls in record["controls"].items():
            done = int(SHORT.steps * float(fraction))
            real = [p for p, c in enumerate(a["commit_step"]) if c < done]
            answer = [p for p in real if p < gen_len]
            tail = [p for p in real if p >= gen_len]
            tokens = controls["random_token"]
            assert tokens["positions"] == answer + tail  # same positions
            assert all(t not in special for t in tokens["tokens"][:len(answer)])
            assert tokens["tokens"][len(answer):] == [a["tokens"][p] for p in tail]  # end signal kept
            moved = controls["random_position"]
            assert moved["tokens"] == [a["tokens"][p] for p in real]  # same tokens, same order
            inside = moved["positions"][:len(answer)]
            assert inside == sorted(set(inside)) and all(0 <= p < gen_len for p in inside)
            assert moved["positions"][len(answer):] == tail
        for fill in record["fills"]:  # what the AR was forced to emit is the control's token
            if fill["anchors"] in ("random_token", "random_position"):
                control = record["controls"][str(fill["fraction"])][fill["anchors"]]
                at = dict(zip(control["positions"], control["tokens"]))
                for position, (token, forced) in enumerate(zip(fill["tokens"], fill["forced"])):
                    assert bool(forced) == (position in at) and (not forced or at[position] == token)


def _special_ids():
    tokenizer = load_tiny_tokenizer()
    return set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder) | {tokenizer.mask_token_id}


def test_drafts_adaptive_stops_and_drafted_fills(full_run):
    from dlmkit.experiments.inverse.stop import grid_names

    a_records = {r["id"]: r for r in _jsonl(full_run / "A.jsonl")}
    for a in a_records.values():
        assert all(len(v) == SHORT.steps for v in a["signals"].values()) and set(a["draft_steps"]) >= {"0.1", "0.15", "0.25", "adaptive"}
        assert a["draft_steps"]["0.25"] == int(SHORT.steps * 0.25)
        for steps in a["draft_steps"].values():
            drafts = a["drafts"][str(steps)]
            still_open = {p for p, c in enumerate(a["commit_step"]) if c >= steps}
            assert set(drafts["positions"]) <= still_open  # a draft only where Dream had not committed
            assert len(drafts["tokens"]) == len(drafts["conf"]) == len(drafts["positions"])
    rows = [row for record in _jsonl(full_run / "drafted.jsonl") for row in record["rows"]]
    assert rows and all(row["tokens_equal"] for row in rows)
    assert all(row["drafted_passes"] <= row["forced_passes"] for row in rows)
    assert all(row["drafts_accepted"] <= row["drafts_fed"] <= row["drafts_sent"] for row in rows)
    for record in _jsonl(full_run / "B.jsonl"):
        a = a_records[record["id"]]
        assert [f["stop_rule"] for f in record["adaptive"]] == grid_names()
        for f in record["adaptive"]:
            if f["kind"] == "fixed":
                assert f["dlm_steps"] == max(int(SHORT.steps * f["threshold"]), 1)
            assert f["n_anchors"] == sum(1 for c in a["commit_step"][:a["gen_len"]] if c < f["dlm_steps"])
    summary = json.loads((full_run / "summary.json").read_text())
    table = summary["tables"]["drafted_gap_fill"]
    assert {(r["model"], r["stop"], r["fraction"]) for r in table} >= {("ar_small", "fixed", 0.1),
                                                                       ("ar_control", "fixed", 0.25)}
    assert all(r["tokens_equal_forced"] == 1.0 for r in table)
    timing = summary["tables"]["table6_timing"]
    assert any((r["method"] or "").startswith("adaptive") and r["method"].endswith("drafted fill")
               and r["speedup_vs_full_dlm"] for r in timing)


def test_timing_repeats_add_to_the_records_a_resumed_run_has(dream_dir, ar_dirs, full_run, tmp_path):
    out = tmp_path / "repeats"
    shutil.copytree(full_run, out)
    first = _jsonl(out / "timing.jsonl")
    assert {r.get("repeat", 0) for r in first} == {0}  # --subset: one repeat by default
    assert _suite(dream_dir, ar_dirs, out, "--phase", "timing", "--resume", "--timing-repeats", "2") == 0
    records = _jsonl(out / "timing.jsonl")
    assert records[:len(first)] == first  # nothing measured is lost or remeasured
    assert sorted(r["repeat"] for r in records[len(first):]) == [1] * len(first)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["timing"]["repeats"] == 2
    for row in summary["tables"]["table6_timing"]:
        assert row["repeats"] == 2 and row["ms_min"] <= row["ms"] <= row["ms_max"]


def test_gap_fill_flag_drafted_gives_the_same_fills_in_no_more_passes(dream_dir, ar_dirs, full_run, tmp_path):
    out = tmp_path / "drafted"
    shutil.copytree(full_run, out)
    (out / "B.jsonl").unlink()
    assert _suite(dream_dir, ar_dirs, out, "--phase", "B", "--resume", "--gap-fill", "drafted") == 0
    forced = {r["id"]: r for r in _jsonl(full_run / "B.jsonl")}
    fewer = 0
    for record in _jsonl(out / "B.jsonl"):
        assert record["gap_fill"] == "drafted"
        for a, b in zip(forced[record["id"]]["fills"], record["fills"]):
            assert (a["tokens"], a["forced"], a["stop_reason"]) == (b["tokens"], b["forced"], b["stop_reason"])
            assert b["forward_passes"] <= a["forward_passes"]
            fewer += b["forward_passes"] < a["forward_passes"]
    assert fewer > 0  # the drafts did save passes somewhere
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["gap_fill"]["decoder"] == "drafted"
