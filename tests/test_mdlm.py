"""MDLM network, checkpoint format, SUBS, schedule and loss."""

import json
import math

import pytest
import torch
from safetensors.torch import save_file

from dlmkit.errors import UserError
from dlmkit.models.mdlm import MDLM, MDLMConfig, load_mdlm, save_mdlm
from dlmkit.models.mdlm_diffusion import (
    LogLinearSchedule,
    mask_tokens,
    mdlm_loss,
    sample_t,
    subs_log_probs,
)

TINY = dict(vocab_size=11, model_length=16, hidden_dim=32, cond_dim=8, n_blocks=2, n_heads=4, dropout=0.1,
            time_conditioning=False)


def owt_layout(cfg: dict) -> dict:
    """Key -> shape of mdlm-owt's checkpoint, written out from its published layout."""
    v, h, c, heads = cfg["vocab_size"], cfg["hidden_dim"], cfg["cond_dim"], cfg["n_heads"]
    shapes = {
        "backbone.vocab_embed.embedding": (v, h),
        "backbone.sigma_map.mlp.0.weight": (c, 256),
        "backbone.sigma_map.mlp.0.bias": (c,),
        "backbone.sigma_map.mlp.2.weight": (c, c),
        "backbone.sigma_map.mlp.2.bias": (c,),
        "backbone.rotary_emb.inv_freq": (h // heads // 2,),
        "backbone.output_layer.norm_final.weight": (h,),
        "backbone.output_layer.linear.weight": (v, h),
        "backbone.output_layer.linear.bias": (v,),
        "backbone.output_layer.adaLN_modulation.weight": (2 * h, c),
        "backbone.output_layer.adaLN_modulation.bias": (2 * h,),
    }
    for n in range(cfg["n_blocks"]):
        p = f"backbone.blocks.{n}."
        shapes.update({
            p + "norm1.weight": (h,), p + "attn_qkv.weight": (3 * h, h), p + "attn_out.weight": (h, h),
            p + "norm2.weight": (h,), p + "mlp.0.weight": (4 * h, h), p + "mlp.0.bias": (4 * h,),
            p + "mlp.2.weight": (h, 4 * h), p + "mlp.2.bias": (h,),
            p + "adaLN_modulation.weight": (6 * h, c), p + "adaLN_modulation.bias": (6 * h,),
        })
    return shapes


def write_owt_style_checkpoint(directory, cfg, seed=0, fmt="safetensors"):
    """A random checkpoint as the hub repo ships it: HF bookkeeping keys in config.json."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in owt_layout(cfg).items():
        if key.endswith("inv_freq"):
            d = 2 * shape[0]
            state[key] = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
        else:
            state[key] = torch.randn(shape, generator=gen) * 0.2
    config = {"_name_or_path": "kuleshov-group/mdlm-owt", "architectures": ["MDLM"],
              "auto_map": {"AutoConfig": "configuration_mdlm.MDLMConfig",
                           "AutoModelForMaskedLM": "modeling_mdlm.MDLM"},
              "model_type": "mdlm", "return_dict": False, "torch_dtype": "float32",
              "transformers_version": "4.38.2", **cfg}
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    if fmt == "safetensors":
        save_file(state, str(directory / "model.safetensors"))
    else:
        torch.save(state, directory / "pytorch_model.bin")
    return state


def randomized(model, seed=0, std=0.3):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std + (1.0 if name.endswith("norm1.weight") else 0.0))
    return model.eval()


# ----------------------------------------------------------------------------- network and format


def test_parameter_names_and_shapes_equal_mdlm_owt_layout():
    model = MDLM(MDLMConfig(**TINY))
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == owt_layout(TINY)


def test_default_config_is_mdlm_owt():
    cfg = MDLMConfig()
    assert (cfg.vocab_size, cfg.model_length, cfg.hidden_dim, cfg.cond_dim, cfg.n_blocks, cfg.n_heads) == (
        50258, 1024, 768, 128, 12, 12)
    assert cfg.mask_id == 50257 and cfg.time_conditioning is False


def test_zero_init_layers_start_at_zero():
    model = MDLM(MDLMConfig(**TINY))
    for name in ("blocks.0.adaLN_modulation", "output_layer.adaLN_modulation", "output_layer.linear"):
        layer = model.backbone.get_submodule(name)
        assert torch.all(layer.weight == 0) and torch.all(layer.bias == 0)
    logits = model(torch.zeros(1, 5, dtype=torch.long))
    assert torch.all(logits == 0)  # an untrained MDLM predicts uniformly


def test_random_owt_style_checkpoint_loads_and_runs(tmp_path):
    state = write_owt_style_checkpoint(tmp_path / "ckpt", TINY)
    model = load_mdlm(tmp_path / "ckpt")
    assert not model.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    ids = torch.randint(0, TINY["vocab_size"], (2, 7))
    with torch.no_grad():
        logits = model(ids, torch.tensor([0.3, 0.9]))
    assert logits.shape == (2, 7, TINY["vocab_size"]) and torch.isfinite(logits).all()


def test_pickled_bin_weights_are_refused(tmp_path):
    write_owt_style_checkpoint(tmp_path / "ckpt", TINY, fmt="bin")
    with pytest.raises(UserError, match="safetensors only"):
        load_mdlm(tmp_path / "ckpt")


def test_save_load_round_trip_and_dtype(tmp_path):
    model = randomized(MDLM(MDLMConfig(**TINY)))
    save_mdlm(model, tmp_path / "mine")
    config = json.loads((tmp_path / "mine" / "config.json").read_text())
    assert {k: config[k] for k in TINY} == TINY and config["model_type"] == "mdlm"
    again = load_mdlm(tmp_path / "mine")
    ids = torch.randint(0, 10, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(ids), again(ids))
    half = load_mdlm(tmp_path / "mine", dtype=torch.bfloat16)
    assert half.backbone.vocab_embed.embedding.dtype == torch.bfloat16
    assert half.backbone.rotary_emb.inv_freq.dtype == torch.float32  # bf16 would blur positions
    with torch.no_grad():
        assert half(ids).dtype == torch.bfloat16


def test_checkpoint_errors_are_one_line_user_errors(tmp_path):
    cases = []
    with pytest.raises(UserError) as err:
        load_mdlm(tmp_path / "nowhere")
    cases.append(err)
    write_owt_style_checkpoint(tmp_path / "a", TINY)
    raw = json.loads((tmp_path / "a" / "config.json").read_text())
    del raw["cond_dim"]
    (tmp_path / "a" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match="cond_dim") as err:
        load_mdlm(tmp_path / "a")
    cases.append(err)
    write_owt_style_checkpoint(tmp_path / "b", {**TINY, "hidden_dim": 64})
    raw = json.loads((tmp_path / "b" / "config.json").read_text())
    raw["hidden_dim"] = 32  # the config does not belong to the weights
    (tmp_path / "b" / "config.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match="shape") as err:
        load_mdlm(tmp_path / "b")
    cases.append(err)
    write_owt_style_checkpoint(tmp_path / "c", TINY)
    (tmp_path / "c" / "model.safetensors").unlink()
    with pytest.raises(UserError, match="model.safetensors") as err:
        load_mdlm(tmp_path / "c")
    cases.append(err)
    with pytest.raises(UserError, match="heads") as err:
        MDLMConfig(**{**TINY, "n_heads": 3})
    cases.append(err)
    assert all("\n" not in str(e.value) for e in cases)


def test_missing_key_is_reported(tmp_path):
    state = write_owt_style_checkpoint(tmp_path / "d", TINY)
    del state["backbone.blocks.1.norm2.weight"]
    save_file(state, str(tmp_path / "d" / "model.safetensors"))
    with pytest.raises(UserError, match="norm2"):
        load_mdlm(tmp_path / "d")


# ----------------------------------------------------------------------------- parity with the reference


def _fixture_cases(fixtures_dir):
    cases = json.loads((fixtures_dir / "mdlm" / "cases.json").read_text())
    return torch.tensor(cases["input_ids"]), {c["sigma"]: c for c in cases["cases"]}


def _assert_matches(logits, case):
    values = torch.stack([logits[b, r, :10] for b, r in case["rows"]])
    torch.testing.assert_close(values, torch.tensor(case["values"]), atol=1e-4, rtol=0)
    assert torch.equal(logits.argmax(-1), torch.tensor(case["argmax"]))
    torch.testing.assert_close(logits.logsumexp(-1), torch.tensor(case["logsumexp"]), atol=1e-4, rtol=0)


@pytest.mark.parametrize("sigma", [0.0, 0.7])
def test_backbone_matches_reference_fixture(fixtures_dir, sigma):
    model = load_mdlm(fixtures_dir / "mdlm")
    ids, cases = _fixture_cases(fixtures_dir)
    with torch.no_grad():
        logits = model.backbone(ids, torch.full((ids.shape[0],), sigma))
    _assert_matches(logits, cases[sigma])


def test_time_conditioning_false_zeroes_sigma_like_the_reference(fixtures_dir):
    model = load_mdlm(fixtures_dir / "mdlm")
    assert model.config.time_conditioning is False
    ids, cases = _fixture_cases(fixtures_dir)
    with torch.no_grad():
        _assert_matches(model(ids, 0.7), cases[0.0])
        model.config.time_conditioning = True
        _assert_matches(model(ids, torch.tensor([0.7, 0.7])), cases[0.7])


# ----------------------------------------------------------------------------- SUBS, schedule, loss


def test_subs_never_predicts_mask_and_carries_unmasked_tokens():
    mask_id = 6
    logits = torch.randn(2, 5, 7) * 3
    logits[..., mask_id] = 50.0  # the network prefers the mask: SUBS must still exclude it
    xt = torch.tensor([[1, mask_id, 3, mask_id, 0], [mask_id, mask_id, 2, 5, mask_id]])
    probs = subs_log_probs(logits, xt, mask_id).exp()
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 5))
    assert torch.all(probs[..., mask_id] == 0)
    unmasked = xt != mask_id
    assert torch.equal(probs[unmasked], torch.nn.functional.one_hot(xt[unmasked], 7).float())
    expected = logits[..., :mask_id].softmax(-1)
    torch.testing.assert_close(probs[~unmasked][:, :mask_id], expected[~unmasked])


def test_loglinear_schedule():
    schedule = LogLinearSchedule()
    t = torch.tensor([1e-3, 0.1, 0.5, 0.999], dtype=torch.float64)
    torch.testing.assert_close(schedule.move_chance(t), 1 - torch.exp(-schedule.sigma(t)))
    torch.testing.assert_close(schedule.move_chance(t), 0.999 * t)
    torch.testing.assert_close(schedule.loss_weight(t), 1 / t)  # dsigma / expm1(sigma)
    eps = 1e-6  # dsigma is the derivative of sigma
    torch.testing.assert_close((schedule.sigma(t + eps) - schedule.sigma(t - eps)) / (2 * eps), schedule.dsigma(t),
                               rtol=1e-5, atol=0)


def test_antithetic_times_cover_every_stratum():
    n = 8
    t = sample_t(n, generator=torch.Generator().manual_seed(3))
    u = (t - 1e-3) / (1 - 1e-3)
    assert torch.all((u >= torch.arange(n) / n) & (u < (torch.arange(n) + 1) / n))
    plain = sample_t(4096, antithetic=False, generator=torch.Generator().manual_seed(0))
    assert plain.min() >= 1e-3 and plain.max() < 1


def test_mask_tokens_rate_and_identity():
    x0 = torch.randint(0, 9, (4, 4000))
    move = torch.tensor([0.0, 0.25, 0.5, 1.0])
    xt = mask_tokens(x0, move, mask_id=9, generator=torch.Generator().manual_seed(0))
    rate = (xt == 9).float().mean(1)
    torch.testing.assert_close(rate, move, atol=0.03, rtol=0)
    assert torch.equal(xt[xt != 9], x0[xt != 9])


def test_loss_equals_hand_computation():
    model = randomized(MDLM(MDLMConfig(**TINY)), seed=1)
    mask_id = model.mask_id
    x0 = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, 0, 1, 2]])
    xt = torch.tensor([[1, mask_id, 3, mask_id, mask_id, 6], [mask_id, 8, 9, 0, 1, mask_id]])
    t = torch.tensor([0.6, 0.25])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    out = mdlm_loss(model, x0, xt=xt, t=t, attention_mask=attention)

    with torch.no_grad():
        logits = model(xt).double()
    total, counted = 0.0, 0
    for b in range(2):
        for i in range(6):
            if not attention[b, i]:
                continue
            counted += 1
            if xt[b, i] == mask_id:
                row = logits[b, i, :mask_id]  # SUBS: the mask (last id) gets no mass
                total += (row.logsumexp(0) - row[x0[b, i]]).item() / t[b].item()
    assert out.loss.item() == pytest.approx(total / counted, rel=1e-5)
    assert torch.all(out.nlls[xt != mask_id] == 0) and out.nlls[1, 5] == 0


def test_untrained_model_loss_is_log_vocab_over_t_per_masked_token():
    model = MDLM(MDLMConfig(**TINY))  # zero-init output: uniform over the 10 real tokens
    x0 = torch.randint(0, 10, (3, 12), generator=torch.Generator().manual_seed(0))
    out = mdlm_loss(model, x0, generator=torch.Generator().manual_seed(1))
    masked = (out.xt == model.mask_id).double()
    expected = (masked * math.log(10) / out.t.double()[:, None]).sum() / x0.numel()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert masked.sum() > 0


def test_loss_is_seeded_and_trains():
    torch.manual_seed(0)
    model = MDLM(MDLMConfig(**{**TINY, "dropout": 0.0}))
    x0 = torch.tensor([[1, 2, 3, 4] * 4] * 8)
    a = mdlm_loss(model, x0, generator=torch.Generator().manual_seed(5)).loss
    b = mdlm_loss(model, x0, generator=torch.Generator().manual_seed(5)).loss
    assert a.item() == b.item()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        loss = mdlm_loss(model, x0, generator=gen).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = mdlm_loss(model, x0, t=torch.full((8,), 0.5), generator=torch.Generator().manual_seed(1)).loss
        start = mdlm_loss(MDLM(model.config), x0, t=torch.full((8,), 0.5), generator=torch.Generator().manual_seed(1))
    assert final.item() < 0.75 * start.loss.item()


def test_loss_rejects_mask_in_data():
    model = MDLM(MDLMConfig(**TINY))
    with pytest.raises(UserError, match="mask id"):
        mdlm_loss(model, torch.tensor([[1, 2, model.mask_id]]))


def test_tail_masked_gives_a_clean_prefix_and_a_masked_tail_of_each_rows_length():
    from dlmkit.train.recipes.mdlm import tail_masked

    x0 = torch.arange(4 * 12).reshape(4, 12)
    for seed in range(5):
        cut, xt = tail_masked(x0, 3, mask_id=99, generator=torch.Generator().manual_seed(seed))
        length = cut.shape[1]
        assert 4 <= length <= 12 and torch.equal(cut, x0[:, :length])
        for row, clean in zip(xt, cut):
            masked = (row == 99).nonzero().flatten().tolist()
            assert 1 <= len(masked) <= 3 and masked == list(range(length - len(masked), length))
            assert torch.equal(row[:length - len(masked)], clean[:length - len(masked)])
    with pytest.raises(UserError, match="no prefix"):
        tail_masked(x0[:, :3], 3, mask_id=99, generator=torch.Generator())
