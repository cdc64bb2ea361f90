"""Dream loader: parity with the reference model, bidirectionality, the logit shift,
Dream-format save/load (single file and sharded) and the one-line errors."""

import json
import shutil

import pytest
import torch

from dlmkit.errors import UserError
from dlmkit.models.dream import (
    DreamModel,
    count_parameters,
    dream_config,
    load_dream,
    random_dream,
    save_dream,
)


@pytest.fixture
def tiny():
    return random_dream(dream_config("tiny", initializer_range=0.25), seed=0)


@pytest.fixture
def tiny_dir(tiny, tmp_path):
    return save_dream(tiny, tmp_path / "tiny")


def _ids(*tokens):
    return torch.tensor([list(tokens)])


# --- parity with the reference implementation (shared fixture) -------------------------


def test_fixture_forward_matches_reference(fixtures_dir):
    model = load_dream(fixtures_dir / "dream")
    case = json.loads((fixtures_dir / "dream" / "cases.json").read_text())["forward"]
    with torch.no_grad():
        logits = model(torch.tensor([case["input_ids"]]))[0]
    assert isinstance(model, DreamModel) and model.mask_token_id == 380
    assert logits.argmax(-1).tolist() == case["argmax"]
    for row, values in zip(case["shifted_logits_rows"], case["values"]):
        torch.testing.assert_close(logits[row, :8], torch.tensor(values), atol=1e-5, rtol=0)


def test_fixture_special_tokens(fixtures_dir):
    model = load_dream(fixtures_dir / "dream")
    meta = json.loads((fixtures_dir / "dream" / "cases.json").read_text())["meta"]
    assert (model.mask_token_id, model.pad_token_id, model.eos_token_id) == (
        meta["mask_token_id"], meta["pad_token_id"], meta["eos_token_id"])


# --- the model --------------------------------------------------------------------------


def test_attention_is_bidirectional(tiny):
    ids = _ids(5, 17, 42, 99, 7, 3)
    changed = ids.clone()
    changed[0, -1] = 200
    with torch.no_grad():
        a, b = tiny(ids), tiny(changed)
    # Shifted position 1 is the hidden state of position 0: causally it sees token 0 only.
    assert not torch.allclose(a[0, 1], b[0, 1])
    assert all(not m.is_causal for m in tiny.modules() if hasattr(m, "is_causal"))


def test_logits_are_shifted_one_place_right(tiny):
    ids = _ids(5, 17, 42, 99, 7, 3)
    with torch.no_grad():
        shifted = tiny(ids)
        raw = tiny.lm(ids, attention_mask={"full_attention": None, "sliding_attention": None}).logits
    torch.testing.assert_close(shifted[:, 0], raw[:, 0])
    torch.testing.assert_close(shifted[:, 1:], raw[:, :-1])


def test_left_padding_leaves_real_positions_unchanged(tiny):
    ids = _ids(5, 17, 42, 99, 7, 3)
    padded = torch.cat([torch.full((1, 3), tiny.pad_token_id), ids], dim=1)
    mask = (torch.arange(padded.shape[1]) >= 3).long()[None]
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    with torch.no_grad():
        plain = tiny(ids)
        with_pad = tiny(padded, attention_mask=mask, position_ids=positions)
        ignored_mask = tiny(padded, position_ids=positions)
    torch.testing.assert_close(with_pad[:, 4:], plain[:, 1:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ignored_mask[:, 4:], plain[:, 1:], atol=1e-3)  # the mask does matter


def test_parameter_count_of_the_7b_geometry():
    # Qwen2.5-7B / Dream-7B: 7,615,616,512 parameters.
    assert count_parameters(dream_config("dream-7b")) == 7_615_616_512


def test_parameter_count_matches_module(tiny):
    assert tiny.num_parameters() == count_parameters(tiny.config)


# --- save / load ------------------------------------------------------------------------


def test_saved_checkpoint_is_dream_format(tiny_dir):
    raw = json.loads((tiny_dir / "config.json").read_text())
    assert raw["model_type"] == "Dream" and raw["architectures"] == ["DreamModel"]
    assert (raw["mask_token_id"], raw["hidden_size"], raw["rope_theta"]) == (380, 64, 1e6)
    from safetensors import safe_open

    with safe_open(tiny_dir / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert {"model.embed_tokens.weight", "lm_head.weight", "model.layers.1.self_attn.q_proj.bias"} <= keys


def test_roundtrip_gives_identical_logits(tiny, tiny_dir):
    loaded = load_dream(tiny_dir)
    ids = _ids(1, 2, 3, 380, 380, 9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), tiny(ids), atol=0, rtol=0)
    assert loaded.config.num_hidden_layers == 2 and loaded.mask_token_id == 380


def test_sharded_checkpoint_loads(tiny, tmp_path):
    directory = save_dream(tiny, tmp_path / "sharded", max_shard_bytes=60_000)
    shards = sorted(p.name for p in directory.glob("model-*.safetensors"))
    assert len(shards) > 1 and not (directory / "model.safetensors").exists()
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    loaded = load_dream(directory)
    ids = _ids(4, 8, 15, 16, 23, 42)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), tiny(ids), atol=0, rtol=0)


def test_tied_embeddings_roundtrip(tmp_path):
    model = random_dream(dream_config("tiny", tie_word_embeddings=True), seed=1)
    loaded = load_dream(save_dream(model, tmp_path / "tied"))
    assert loaded.lm.lm_head.weight.data_ptr() == loaded.lm.model.embed_tokens.weight.data_ptr()
    ids = _ids(4, 8, 15)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids), model(ids), atol=0, rtol=0)


def test_dtype_override(tiny_dir):
    assert load_dream(tiny_dir, dtype="bfloat16").dtype == torch.bfloat16
    assert load_dream(tiny_dir).dtype == torch.float32


# --- one-line errors ---------------------------------------------------------------------


def _one_line_error(call, *fragments):
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


def test_missing_checkpoint_dir(tmp_path):
    _one_line_error(lambda: load_dream(tmp_path / "nowhere"), "does not exist")


def test_checkpoint_without_safetensors(tiny_dir):
    (tiny_dir / "model.safetensors").unlink()
    _one_line_error(lambda: load_dream(tiny_dir), "safetensors")


def test_not_a_dream_config(tiny_dir):
    raw = json.loads((tiny_dir / "config.json").read_text())
    (tiny_dir / "config.json").write_text(json.dumps({**raw, "model_type": "qwen2"}))
    _one_line_error(lambda: load_dream(tiny_dir), "'qwen2'", "Dream")


def test_no_mask_token(tiny_dir):
    raw = json.loads((tiny_dir / "config.json").read_text())
    del raw["mask_token_id"]
    (tiny_dir / "config.json").write_text(json.dumps(raw))
    (tiny_dir / "generation_config.json").unlink()
    _one_line_error(lambda: load_dream(tiny_dir), "mask_token_id")


def test_mask_token_from_generation_config(tiny_dir):
    raw = json.loads((tiny_dir / "config.json").read_text())
    del raw["mask_token_id"]
    (tiny_dir / "config.json").write_text(json.dumps(raw))
    assert load_dream(tiny_dir).mask_token_id == 380


def test_missing_weight(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    directory = save_dream(tiny, tmp_path / "broken")
    weights = load_file(directory / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, directory / "model.safetensors")
    _one_line_error(lambda: load_dream(directory), "model.layers.1.mlp.up_proj.weight")


def test_weights_of_another_size(tiny_dir, tmp_path):
    other = save_dream(random_dream(dream_config("tiny", hidden_size=32)), tmp_path / "other")
    shutil.copy(other / "model.safetensors", tiny_dir / "model.safetensors")
    _one_line_error(lambda: load_dream(tiny_dir), "shapes")


def test_unknown_size():
    _one_line_error(lambda: dream_config("huge"), "tiny")
