"""bridge_viability.py: logit lens, structural tokens, cross-vocabulary translation, Dream injection, the script."""

import json
import shutil

import pytest
import torch

import bridge_viability
from dlmkit.experiments.bridge import context, inject, probe, settings
from dlmkit.experiments.bridge.token_kinds import CONTENT, STRUCTURAL, kind_of_text
from dlmkit.experiments.bridge.translate import same_vocabulary, token_spans, translate_tokens
from dlmkit.data.tiny_corpus import load_tiny_tokenizer
from dlmkit.decoding.diffusion import diffusion_generate
from dlmkit.errors import UserError
from dlmkit.models.dream import dream_config, random_dream, save_dream
from dlmkit.models.logit_lens import LayerTaps, check_taps, lens_logits, teacher_forced_lens
from dlmkit.decoding.diffusion import DreamSettings
from dlmkit.presets import TINY_TOKENIZER


def _qwen2(vocab=64, layers=3, hidden=32, seed=0, tied=False):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # a non-trivial final norm, so skipping it would show
        model.model.norm.weight.uniform_(0.5, 2.0)
    return model


# --------------------------------------------------------------------------- logit lens


def test_lens_at_last_layer_is_the_models_own_logits():
    model = _qwen2()
    ids = torch.randint(0, 64, (1, 12))
    model(ids, output_hidden_states=True)  # transformers installs its own capture hooks on first use
    hooks_before = [len(layer._forward_hooks) for layer in model.model.layers]
    with LayerTaps(model, [1, 2, 3]) as taps:
        out = model(ids, output_hidden_states=True)
    assert torch.allclose(lens_logits(model, taps.hidden[3]), out.logits, atol=1e-5)
    # Skipping the final norm (the published script's lens) is not the model's prediction.
    assert not torch.allclose(model.lm_head(taps.hidden[3]), out.logits, atol=1e-2)
    # Intermediate taps are the pre-norm residual stream transformers reports.
    for layer in (1, 2):
        assert torch.equal(taps.hidden[layer], out.hidden_states[layer])
    assert [len(layer._forward_hooks) for layer in model.model.layers] == hooks_before  # ours are removed


def test_teacher_forced_lens_reads_the_answer_positions():
    model = _qwen2(seed=1)
    ids = torch.randint(0, 64, (1, 10))
    positions = [5, 6, 7, 8]
    readout = teacher_forced_lens(model, ids, positions, [3, 1])
    logits = model(ids).logits[0, positions]
    assert readout.taps == [1, 3] and readout.n_layers == 3
    assert readout.top_ids[3] == logits.argmax(-1).tolist()
    assert readout.top_probs[3] == pytest.approx(torch.softmax(logits, -1).max(-1).values.tolist(), abs=1e-6)
    assert readout.top_ids[1] != readout.top_ids[3] or readout.top_probs[1] != readout.top_probs[3]


def test_taps_outside_the_model_are_a_one_line_error():
    with pytest.raises(UserError, match=r"outside 1\.\.3"):
        check_taps([0, 2], 3)
    with pytest.raises(UserError, match="--layer-taps"):
        check_taps([4], 3)
    assert context.default_taps("paper", 64) == [4, 8, 16, 32, 48, 64]
    assert context.default_taps("paper", 6) == [4, 6]
    assert context.default_taps("tiny", 4) == [1, 2, 3, 4]
    assert settings.default_step_grid(128) == [1, 2, 4, 8, 16, 128]


# --------------------------------------------------------------------------- token kinds and counts


def test_structural_vs_content():
    for text in ["the", " The", ",", ".\n", "    ", "\n", " is", "```", " (", ""]:
        assert kind_of_text(text) == STRUCTURAL, text
    for text in [" Kiwi", "42", " def", " fruit", " C", "x"]:
        assert kind_of_text(text) == CONTENT, text


def _record(answer, lens_ids, lens_probs, kinds):
    return {"answer_ids": answer, "n_layers": 2, "lens": {"1": {"ids": lens_ids, "probs": lens_probs, "kinds": kinds}}}


def test_counts_accuracy_and_viability_rule():
    # 12 positions; the lens is >= 0.9 sure at 11 of them and right at 10.
    answer = list(range(100, 112))
    lens_ids = answer[:10] + [7, answer[11]]
    probs = [0.95] * 11 + [0.5]
    record = _record(answer, lens_ids, probs, "s" * 6 + "c" * 6)
    assert probe.count(record, 1, 0.9) == (11, 10)
    assert probe.count(record, 1, 0.9, STRUCTURAL) == (6, 6)
    assert probe.count(record, 1, 0.9, CONTENT) == (5, 4)
    assert probe.count(record, 1, 0.99) == (0, 0)
    rows = probe.layers_table([record], [1], (0.9,), min_tokens=10, min_accuracy=0.9)
    assert rows[0]["qualifying"] == 11 and rows[0]["accuracy"] == pytest.approx(10 / 11) and rows[0]["viable"]
    rows = probe.layers_table([record], [1], (0.9,), min_tokens=12, min_accuracy=0.9)
    assert not rows[0]["viable"]  # 11 < 12 tokens
    rows = probe.layers_table([record], [1], (0.9,), min_tokens=10, min_accuracy=0.95)
    assert not rows[0]["viable"]  # accuracy 0.909 < 0.95


# --------------------------------------------------------------------------- translation


@pytest.fixture(scope="module")
def other_tokenizer():
    """A byte-level BPE with other merges and ids than the tiny tokenizer, built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = ["the answer is", "a fruit", "so the answer is C.", "kiwi kiwi kiwi", "fruits and answers"] * 20
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                        special_tokens=["<|endoftext|>"], show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")


TEXT = "Kiwi is a fruit. So the answer is C."


def test_translation_round_trip_between_different_tokenizers(other_tokenizer):
    tiny = load_tiny_tokenizer()
    assert not same_vocabulary(tiny, other_tokenizer) and same_vocabulary(tiny, load_tiny_tokenizer())
    ar_ids = tiny.encode(TEXT, add_special_tokens=False)
    other_ids = other_tokenizer.encode(TEXT, add_special_tokens=False)
    assert ar_ids != other_ids  # the test means something only if the tokenizations differ
    there = translate_tokens(ar_ids, range(len(ar_ids)), tiny, other_tokenizer)
    assert not there.identity and there.target_length == len(other_ids)
    assert there.tokens == dict(enumerate(other_ids))
    back = translate_tokens(other_ids, range(len(other_ids)), other_tokenizer, tiny)
    assert [back.tokens[p] for p in range(len(ar_ids))] == ar_ids


def test_translation_keeps_only_tokens_inside_chosen_text(other_tokenizer):
    tiny = load_tiny_tokenizer()
    ar_ids = tiny.encode(TEXT, add_special_tokens=False)
    text, ar_spans = token_spans(tiny, ar_ids)
    chosen = [p for p, (s, e) in enumerate(ar_spans) if e <= len("Kiwi is a fruit.")]  # the first sentence
    mapped = translate_tokens(ar_ids, chosen, tiny, other_tokenizer)
    _, other_spans = token_spans(other_tokenizer, other_tokenizer.encode(TEXT, add_special_tokens=False))
    assert mapped.tokens  # something survives
    for q, token in mapped.tokens.items():
        s, e = other_spans[q]
        assert e <= len("Kiwi is a fruit.") and other_tokenizer.decode([token]) == TEXT[s:e]
    # A target token straddling a chosen and an unchosen source token is dropped.
    straddle = translate_tokens(ar_ids, chosen[:-1], tiny, other_tokenizer)
    assert set(straddle.tokens) <= set(mapped.tokens)
    # Same vocabulary: positions and ids carry over unchanged.
    assert translate_tokens(ar_ids, [0, 2], tiny, load_tiny_tokenizer()).tokens == {0: ar_ids[0], 2: ar_ids[2]}


def test_token_spans_fuse_a_split_multibyte_character(other_tokenizer):
    tiny = load_tiny_tokenizer()
    ids = tiny.encode("café ok", add_special_tokens=False)
    text, spans = token_spans(tiny, ids)
    # "é" is two byte tokens in the tiny (ASCII-trained) vocabulary; both get its one-character span.
    assert text == "café ok" and spans == [(0, 1), (1, 2), (2, 3), (3, 4), (3, 4), (4, 6), (6, 7)]
    # A fused group counts as chosen only when all of it is: half of "é" carries nothing over.
    assert translate_tokens(ids, [3], tiny, other_tokenizer).tokens == {}
    both = translate_tokens(ids, [3, 4], tiny, other_tokenizer).tokens
    assert other_tokenizer.decode(list(both.values())) == "é"


# --------------------------------------------------------------------------- injection


@pytest.fixture(scope="module")
def tiny_dream():
    tok = load_tiny_tokenizer()
    cfg = dream_config("tiny", vocab_size=len(tok), mask_token_id=tok.mask_token_id, pad_token_id=tok.eos_token_id,
                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    return random_dream(cfg, dtype=torch.float32), tok


def test_injected_tokens_land_on_generation_positions_and_stay_fixed(tiny_dream):
    model, tok = tiny_dream
    prompt = tok.encode("What is a kiwi?", add_special_tokens=False)
    P, width = len(prompt), 16
    tokens = {0: 300, 3: 301, 15: 302}
    hook = inject.Injection(P, tokens, model.mask_token_id)
    out = diffusion_generate(model, torch.tensor([prompt]), max_new_tokens=width, steps=8, alg="entropy",
                             temperature=0.2, top_p=0.95, tokens_hook=hook, return_history=True,
                             generator=torch.Generator().manual_seed(0))
    for canvas in out.history:  # after every step
        assert canvas[0, :P].tolist() == prompt  # the prompt is never written
        assert [canvas[0, P + p].item() for p in tokens] == list(tokens.values())
    assert [out.commit_step[0, p].item() for p in tokens] == [-1, -1, -1]  # in place before step 0
    assert (out.commit_step[0, [1, 2, 4]] >= 0).all()  # the rest was denoised
    assert hook.injected_changed == 0 and hook.permanence_violations == 0
    with pytest.raises(UserError, match="generation positions"):
        diffusion_generate(model, torch.tensor([prompt]), max_new_tokens=width, steps=2,
                           tokens_hook=inject.Injection(P, {width: 300}, model.mask_token_id))


def test_injected_tokens_are_the_layers_predictions_clipped_to_the_canvas():
    tiny = load_tiny_tokenizer()
    answer = tiny.encode(TEXT, add_special_tokens=False)
    lens_ids = list(answer)
    lens_ids[1] = answer[2]  # a confident wrong prediction is injected as predicted
    probs = [0.99, 0.97, 0.5] + [0.99] * (len(answer) - 3)
    record = _record(answer, lens_ids, probs, "c" * len(answer))
    tokens = inject.injected_tokens(record, 1, 0.95, "all", tiny, tiny, True, canvas=6, mask_id=tiny.mask_token_id)
    assert tokens == {0: answer[0], 1: answer[2], 3: answer[3], 4: answer[4], 5: answer[5]}


# --------------------------------------------------------------------------- the script


def test_quantization_choice():
    assert settings.resolve_quantization("auto", "tiny", "cpu") == ("none", None)
    quant, message = settings.resolve_quantization("auto", "paper", "cpu")
    assert quant == "none" and "no CUDA" in message
    with pytest.raises(UserError, match="4bit needs a CUDA device"):
        settings.resolve_quantization("4bit", "paper", "cpu")


def test_paper_format_checkpoint_loads_back(tmp_path):
    model = _qwen2(vocab=len(load_tiny_tokenizer()), layers=2, tied=False)
    model.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TINY_TOKENIZER / name, tmp_path / name)
    loaded, tok = context.load_ar_large(str(tmp_path), "cpu", torch.float32)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert tok.mask_token_id is not None


def _cli(argv):
    with pytest.raises(SystemExit) as exit_info:
        from dlmkit.cli import run_main

        run_main(bridge_viability.main, argv)
    return exit_info.value.code


def test_bad_input_is_one_line(capsys, tmp_path):
    assert _cli(["--prompt-set", "published", "--model-ar-large", "dlmkit/assets/tiny/ar_medium",
                 "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--prompt-set benchmark" in err
    assert _cli(["--ar-quantization", "4bit", "--device", "cpu", "--out", str(tmp_path / "b")]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
    assert _cli(["--phase", "inject", "--model-ar-large", "dlmkit/assets/tiny/ar_medium", "--out", str(tmp_path / "c")]) == 2
    assert "run it first" in capsys.readouterr().err


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory, tiny_dream):
    root = tmp_path_factory.mktemp("bridge")
    model, tok = tiny_dream
    save_dream(model, root / "dream")
    _qwen2(vocab=len(tok), layers=3, hidden=32, seed=3, tied=True).save_pretrained(root / "ar")
    for directory in (root / "dream", root / "ar"):
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            shutil.copy(TINY_TOKENIZER / name, directory / name)
    return root


def test_script_end_to_end_resume_and_same_seed_same_tables(model_dirs, tmp_path):
    short = DreamSettings(max_new_tokens=12, steps=4)
    argv = ["--model-ar-large", str(model_dirs / "ar"), "--model-dlm", str(model_dirs / "dream"), "--subset", "1",
            "--viable-min-tokens", "1", "--viable-min-accuracy", "0.01", "--thresholds", "0.0001", "0.5", "--step-grid", "2"]
    assert bridge_viability.main(argv + ["--out", str(tmp_path / "one")], dream=short) == 0
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    tables = summary["tables"]
    assert [r["layer"] for r in tables["probe_depth"]] == [1, 2, 3]
    assert tables["probe_depth"][-1]["top1_agreement"] == 1.0  # the last layer is the model itself
    assert tables["viable_configs"] and {r["steps"] for r in tables["inject_f1"]} == {2, 4}
    assert all(r["injected_changed"] == 0 and r["permanence_violations"] == 0 for r in tables["inject_f1"])
    records = [json.loads(line) for line in (tmp_path / "one" / "inject.jsonl").read_text().splitlines()]
    assert len(records) == 8 and all(p < 12 for r in records for c in r["conditions"] for p in c["injected"]["positions"])
    assert (tmp_path / "one" / "probe_accuracy_by_layer.png").exists()
    assert (tmp_path / "one" / "inject_f1_by_steps.png").exists()
    # Resume with nothing left to do rewrites the same tables; a fresh run with the same seed too.
    assert bridge_viability.main(argv + ["--out", str(tmp_path / "one"), "--resume"], dream=short) == 0
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["tables"] == tables
    assert bridge_viability.main(argv + ["--out", str(tmp_path / "two")], dream=short) == 0
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["tables"] == tables
    # Another seed, or Dream run another way, would mix two runs' records: refused, the run kept.
    with pytest.raises(UserError, match=r"--seed 42 -> 7"):
        bridge_viability.main(argv + ["--out", str(tmp_path / "one"), "--resume", "--seed", "7"], dream=short)
    with pytest.raises(UserError, match=r"dream .*'steps': 4.* -> .*'steps': 6"):
        bridge_viability.main(argv + ["--out", str(tmp_path / "one"), "--resume"],
                              dream=DreamSettings(max_new_tokens=12, steps=6))
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["tables"] == tables
