"""specdiff_bench.py and dlmkit/experiments/specdiff/: the shipped tiny models decode
losslessly, the script's JSON is seeded, paper-format checkpoints load and verify, and
bad input ends in one line naming the fix."""

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from dlmkit.errors import UserError
from dlmkit.models.mdlm import MDLM, MDLMConfig, save_mdlm
from dlmkit.experiments import specdiff
from dlmkit.experiments.specdiff import tables
from dlmkit.experiments.specdiff.methods import Method
from dlmkit.experiments.specdiff.prompts import load_prompts
from dlmkit.presets import TINY_TOKENIZER, ModelSpec, resolve_models
from dlmkit.runner import Job, make_parser

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("specdiff_bench", REPO / "specdiff_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_context(specs, phases, *flags):
    """specdiff.Context as the script builds it, from the settings its flags make."""
    args = make_parser(specdiff, "specdiff_bench.py", "").parse_args(list(flags))
    job = Job(prog="specdiff_bench.py", preset="tiny", subset=None, seed=42, phases=tuple(phases), out=Path("unused"),
              device="cpu", dtype=torch.float32, resume=False, overwrite=False)
    return specdiff.Context(job, specdiff.Settings.from_flags(args, job), specs)


@pytest.fixture(scope="module")
def tiny_bench():
    specs = resolve_models("tiny", ["target", "drafter", "mdlm_drafter"])
    return make_context(specs, ["ar", "sd", "specdiff", "hf"])


def test_shipped_tiny_models_decode_greedily_exactly_as_the_target(tiny_bench):
    prompts = load_prompts("tiny", tiny_bench.tokenizer, ["documents", "chat"], 1, 12)
    methods = [Method("sd", gamma=4), Method("specdiff", gamma=8, steps=2),
               Method("specdiff", gamma=4, steps=1), Method("hf", gamma=4)]
    for prompt in prompts:
        reference, *_ = tiny_bench.generate(Method("ar"), prompt["ids"], 40, 0.0, seed=0)
        assert reference.target_calls == 40
        for method in methods:
            out, seconds, cpu_seconds = tiny_bench.generate(method, prompt["ids"], 40, 0.0, seed=0)
            assert out.tokens == reference.tokens, method.name
            assert seconds > 0 and cpu_seconds > 0
            if method.family != "hf":
                assert out.target_calls == out.rounds < 40  # the trained drafters do save target calls
            else:
                assert 40 / (method.gamma + 1) <= out.target_calls < 40  # counted, at most gamma + 1 tokens a call


def test_tiny_prompts_are_held_out_and_start_with_endoftext(tiny_bench):
    prompts = load_prompts("tiny", tiny_bench.tokenizer, ["documents", "chat"], 2, 12)
    assert [(p["set"], p["index"]) for p in prompts] == [("documents", 0), ("documents", 1), ("chat", 0), ("chat", 1)]
    assert all(p["ids"][0] == tiny_bench.tokenizer.eos_token_id for p in prompts)
    assert len(prompts[0]["ids"]) == 13
    with pytest.raises(UserError, match="choose from documents, chat"):
        load_prompts("tiny", tiny_bench.tokenizer, ["owt"], 2, 12)


def run_script(out: Path, *extra):
    argv = ["--subset", "1", "--max-new-tokens", "10", "--gammas", "4", "--steps", "1,2", "--sd-gammas", "3",
            "--timing-repeats", "2", "--out", str(out), *extra]
    assert load_script().main(argv) == 0
    return json.loads((out / "summary.json").read_text())


def test_script_writes_seeded_tables_jsonl_plot_and_resumes(tmp_path):
    first, second = run_script(tmp_path / "a"), run_script(tmp_path / "b")
    assert first["tables"] == second["tables"]  # same seed, same tables: measured times live apart, in "timings"
    assert set(first["tables"]) == {"counts"} and set(first["timings"]) == {"timing", "headline", "per_call_ms"}
    # each model's cost per call, measured in the run: the target's step and its scoring of every
    # gamma's drafts (gamma 4 and sd gamma 3), the AR drafter's step, the MDLM drafter's call
    costs = {(r["model"], r["call"]): r for r in first["timings"]["per_call_ms"]}
    assert set(costs) == {("target", "cached step"), ("target", "scores 4 drafts (5 new tokens)"),
                          ("target", "scores 3 drafts (4 new tokens)"), ("AR drafter", "cached step"),
                          ("MDLM drafter", "one call on its 64-token canvas")}
    assert all(0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"] and r["n"] == 20 for r in costs.values())
    assert any(note.startswith("per call on ") and "the target's cached step costs" in note for note in first["notes"])
    tokens = lambda run: {r["id"]: r["tokens"] for f in ("ar", "sd", "specdiff", "hf")  # noqa: E731
                          for r in map(json.loads, (tmp_path / run / f"{f}.jsonl").read_text().splitlines())}
    assert tokens("a") == tokens("b") and len(tokens("a")) == 2 * 2 * (1 + 1 + 2 + 1)
    assert (tmp_path / "a" / "speedup_vs_gamma.png").exists()
    counts = {(r["temperature"], r["method"]): r for r in first["tables"]["counts"] if r["prompt_set"] == "all"}
    assert counts[(0.0, "sd/g3")]["greedy_equal_to_ar"] == "2/2"
    assert counts[(0.0, "specdiff/g4/T2")]["greedy_equal_to_ar"] == "2/2"
    assert counts[(1.0, "ar")]["target_calls"] == 20 and counts[(1.0, "ar")]["target_calls_saved"] == 1.0
    assert {r["temperature"] for r in first["timings"]["headline"]} == {0.0, 1.0}
    assert any("7.2x" in note for note in first["notes"])
    # Every generation was timed twice, with the same tokens; cells report the median and range.
    records = [json.loads(line) for line in (tmp_path / "a" / "sd.jsonl").read_text().splitlines()]
    assert all(len(r["seconds"]) == 2 and len(r["cpu_seconds"]) == 2 for r in records)
    for row in first["timings"]["timing"]:
        assert row["repeats"] == 2 and row["seconds_min"] <= row["seconds"] <= row["seconds_max"]
        if row["method"] != "ar":
            assert row["speedup_vs_ar_min"] <= row["speedup_vs_ar"] <= row["speedup_vs_ar_max"]
    # --resume finds nothing left to do and keeps the records.
    before = (tmp_path / "a" / "specdiff.jsonl").read_text()
    resumed = run_script(tmp_path / "a", "--resume")
    assert (tmp_path / "a" / "specdiff.jsonl").read_text() == before
    assert resumed["tables"]["counts"] == first["tables"]["counts"]
    with pytest.raises(UserError, match="other inputs .*--seed 42 -> 7"):
        run_script(tmp_path / "a", "--resume", "--seed", "7")


def test_timing_cells_are_per_repeat_medians_and_verdicts_follow_the_spread():
    # Two prompts, three repeats; AR is twice as slow as the method in repeats 1 and 3, equal in 2.
    def record(method, index, seconds):
        return {"prompt_set": "s", "prompt_index": index, "temperature": 0.0, "method": method, "new_tokens": 4,
                "seconds": seconds, "cpu_seconds": [x / 2 for x in seconds]}

    ar = [record("ar", 0, [2.0, 1.0, 2.0]), record("ar", 1, [2.0, 1.0, 2.0])]
    fast = [record("sd/g2", 0, [1.0, 1.0, 1.0]), record("sd/g2", 1, [1.0, 1.0, 1.0])]
    row = tables.timing_row(fast, ar)
    assert row["repeats"] == 3 and row["seconds"] == 2.0 and row["_wall"] == [2.0, 2.0, 2.0]
    assert (row["speedup_vs_ar"], row["speedup_vs_ar_min"], row["speedup_vs_ar_max"]) == (2.0, 1.0, 2.0)
    assert row["tokens_per_s"] == 4.0 and row["cpu_seconds"] == 1.0
    assert "not distinguishable" in tables.verdict(row, "speedup_vs_ar", "AR")
    assert "faster than AR in every repeat" in tables.verdict({**row, "speedup_vs_ar_min": 1.1}, "speedup_vs_ar", "AR")
    assert "slower" in tables.verdict({**row, "speedup_vs_ar_max": 0.9}, "speedup_vs_ar", "AR")
    # A record written before repeats existed (one float) still reads as one repeat.
    old = [{**r, "seconds": r["seconds"][0], "cpu_seconds": r["cpu_seconds"][0]} for r in fast]
    assert tables.timing_row(old, ar)["repeats"] == 1


def test_script_rejects_a_prompt_set_of_the_other_preset(tmp_path):
    with pytest.raises(UserError, match="owt.*choose from documents,chat"):
        load_script().main(["--prompt-sets", "owt", "--out", str(tmp_path / "x")])


def test_paper_format_checkpoints_load_and_the_mdlm_mask_is_sliced_off(tmp_path):
    # gpt2-xl / gpt2 / mdlm-owt in miniature: GPT-2 vocab V, MDLM vocab V + 1 (mask last).
    vocab = 16
    for name, seed in (("target", 0), ("drafter", 1)):
        torch.manual_seed(seed)
        config = GPT2Config(vocab_size=vocab, n_embd=16, n_layer=1, n_head=2, n_positions=128, initializer_range=0.5)
        GPT2LMHeadModel(config).save_pretrained(tmp_path / name)
        for f in TINY_TOKENIZER.iterdir():  # load_ar reads a tokenizer beside the weights
            shutil.copy(f, tmp_path / name / f.name)
    save_mdlm(MDLM(MDLMConfig(vocab_size=vocab + 1, model_length=32, hidden_dim=16, cond_dim=8, n_blocks=1,
                              n_heads=2, dropout=0.0)), tmp_path / "mdlm_drafter")
    specs = {role: ModelSpec(role, str(tmp_path / role), "gpt2") for role in ("target", "drafter", "mdlm_drafter")}
    bench = make_context(specs, ["ar", "sd", "specdiff"], "--sampler", "ddpm")
    assert bench.mdlm.config.vocab_size == vocab + 1
    prefix = [0, 3, 5]
    reference, *_ = bench.generate(Method("ar"), prefix, 12, 0.0, seed=0)
    for temperature in (0.0, 1.0):
        out, *_ = bench.generate(Method("specdiff", gamma=5, steps=2), prefix, 12, temperature, seed=1)
        assert len(out.tokens) == 12 and max(out.tokens) < vocab
        if temperature == 0:
            assert out.tokens == reference.tokens
    # An MDLM whose vocabulary fits neither V nor V + 1 is refused by name.
    save_mdlm(MDLM(MDLMConfig(vocab_size=vocab + 3, model_length=32, hidden_dim=16, cond_dim=8, n_blocks=1,
                              n_heads=2)), tmp_path / "bad")
    specs["mdlm_drafter"] = ModelSpec("mdlm_drafter", str(tmp_path / "bad"), "mdlm")
    with pytest.raises(UserError, match="--model-mdlm-drafter"):
        make_context(specs, ["specdiff"], "--sampler", "ddpm")


def test_missing_cnn_dailymail_offline_is_one_line_naming_the_fix(monkeypatch):
    datasets = pytest.importorskip("datasets")
    from dlmkit.data import cnn_dm

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'abisee/cnn_dailymail' on the Hub\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match="--preset tiny") as err:
        cnn_dm.load_articles(3)
    assert "\n" not in str(err.value) and "3.0.0" in str(err.value)


def test_cost_benchmark_runs_on_cpu_and_its_cost_model_is_leviathans(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_specdiff", REPO / "benchmarks" / "bench_specdiff.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.expected_tokens(0.0, 4) == 1.0 and bench.expected_tokens(1.0, 4) == 5.0
    assert abs(bench.expected_tokens(0.5, 2) - 1.75) < 1e-12
    out = tmp_path / "costs.json"
    assert bench.main(["--config", "tiny", "--device", "cpu", "--gammas", "2", "--steps", "1", "--acceptance", "0.8",
                       "--repeats", "1", "--warmup", "0", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    costs = result["costs"]
    assert costs["target_step_ms"] > 0 and costs["mdlm_call_ms"] > 0 and costs["drafter_token_ms"] > 0
    (row,) = result["implied"]
    expected = costs["target_step_ms"] / ((costs["mdlm_call_ms"] + costs["target_verify_ms"]["2"])
                                          / bench.expected_tokens(0.8, 2))
    assert abs(row["specdiff_speedup_vs_ar"] - expected) < 1e-9


def test_drafts_benchmark_counts_what_a_greedy_round_keeps(tiny_bench):
    spec = importlib.util.spec_from_file_location("specdiff_drafts", REPO / "benchmarks" / "specdiff_drafts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    prompts = load_prompts("tiny", tiny_bench.tokenizer, ["documents"], 1, 12)
    # the target drafting for itself keeps every drafted token; the shipped drafters keep fewer
    out = module.drafts(tiny_bench.target_model, tiny_bench.target_model, tiny_bench.mdlm, prompts, gamma=4,
                        max_new=16)
    summary = out["summary"]
    assert summary["AR drafter"]["mean_kept"] == 4 and summary["AR drafter"]["first_token_wrong"] == 0
    assert summary["AR drafter"]["last_token_eos"] == summary["AR drafter"]["target_last_token_eos"]
    assert summary["MDLM drafter, T=1"]["drafts"] == len(out["examples"]) == 4  # cuts 13, 17, 21, 25
    assert sum(summary["MDLM drafter, T=4"]["kept_histogram"].values()) == 4
    ce = module.next_token_ce(tiny_bench.target_model, tiny_bench.target_model, tiny_bench.mdlm,
                              tiny_bench.tokenizer, n_blocks=8)
    assert ce["AR drafter (teacher forced)"] == ce["target (teacher forced)"] and len(ce["target (teacher forced)"]) == 8
