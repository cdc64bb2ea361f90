"""The self-speculative model: what trains, causality in sigma order, the double position
encoding, the output residual (target == draft at init), loading and saving."""

import json

import pytest
import torch

from dlmkit.errors import UserError
from dlmkit.models.mdlm import MDLM, MDLMConfig
from dlmkit.models.self_spec import (CausalLayer, SelfSpecConfig, SelfSpecMDLM, load_self_spec, random_order,
                                     save_self_spec, self_spec_loss)
from dlmkit.train.loop import TrainConfig, make_optimizer

VOCAB, LENGTH = 17, 12


def make_mdlm(seed=0, hidden=32, heads=2):
    torch.manual_seed(seed)
    mdlm = MDLM(MDLMConfig(vocab_size=VOCAB, model_length=LENGTH, hidden_dim=hidden, cond_dim=8, n_blocks=2,
                           n_heads=heads, dropout=0.1))
    with torch.no_grad():
        mdlm.backbone.output_layer.linear.weight.normal_(0, 0.5)
        for block in mdlm.backbone.blocks:
            block.adaLN_modulation.bias.normal_(0, 0.3)
    return mdlm


def make_model(seed=0, trained=True):
    model = SelfSpecMDLM(make_mdlm(seed), SelfSpecConfig.for_backbone(make_mdlm(seed), dropout=0.0)).eval()
    if trained:  # as after training: the causal layer's output reaches the head
        with torch.no_grad():
            model.causal.out_proj.weight.normal_(0, 0.3)
    return model


def canvas(seed=0, rows=2):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, VOCAB - 1, (rows, LENGTH), generator=gen)
    x[:, ::2] = VOCAB - 1  # half masked
    return x


def test_only_the_causal_layer_and_target_head_train_and_the_optimizer_sees_only_them():
    model = make_model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("causal.", "target_head.")) for n in trainable)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    optimizer = make_optimizer(model, TrainConfig())
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert in_optimizer == {id(p) for p in model.parameters() if p.requires_grad}
    model.train()
    assert model.causal.training and not model.backbone.training  # frozen draft: no dropout, ever


def test_untrained_target_equals_the_draft_exactly():
    model = make_model(trained=False)
    x = canvas()
    draft = model.draft(x)
    order, valid = random_order(x == model.mask_id, torch.Generator().manual_seed(0))
    target = model.target_logits(draft, order, torch.randint(0, VOCAB - 1, order.shape), valid)
    expected = draft.logits.gather(1, order[..., None].expand(-1, -1, VOCAB))
    assert torch.allclose(target, expected, atol=1e-5)
    loss = self_spec_loss(model, torch.randint(0, VOCAB - 1, (4, LENGTH)), generator=torch.Generator().manual_seed(1))
    assert float(loss.target_loss) == pytest.approx(float(loss.draft_loss), abs=1e-5)


def test_draft_pass_is_the_mdlm_forward():
    model = make_model()
    x = canvas()
    assert torch.allclose(model.draft(x).logits, model.backbone(x), atol=1e-5)


def test_slot_j_sees_only_earlier_slots_in_sigma_order():
    model = make_model()
    x = canvas(rows=1)
    draft = model.draft(x)
    order = (x[0] == model.mask_id).nonzero().reshape(1, -1)
    tokens = torch.randint(0, VOCAB - 1, order.shape, generator=torch.Generator().manual_seed(0))
    base = model.target_logits(draft, order, tokens)
    k = 2
    changed = tokens.clone()
    changed[0, k] = (changed[0, k] + 1) % (VOCAB - 1)
    after = model.target_logits(draft, order, changed)
    # slot j reads the token of slot j - 1: slots 0..k are blind to the token at slot k
    assert torch.equal(after[:, :k + 1], base[:, :k + 1])
    assert not torch.allclose(after[:, k + 1], base[:, k + 1])
    # a different tail of the order leaves the prefix's logits alone ...
    tail = torch.cat([order[:, :k + 1], order[:, k + 1:].flip(1)], dim=1)
    assert torch.allclose(model.target_logits(draft, tail, tokens)[:, :k + 1], base[:, :k + 1], atol=1e-6)
    # ... while the order of the earlier slots matters (a non-factorized, order-aware target)
    head = torch.cat([order[:, :k + 1].flip(1), order[:, k + 1:]], dim=1)
    head_tokens = torch.cat([tokens[:, :k + 1].flip(1), tokens[:, k + 1:]], dim=1)
    assert not torch.allclose(model.target_logits(draft, head, head_tokens)[:, k + 1], base[:, k + 1])


def test_padding_slots_do_not_reach_valid_ones():
    model = make_model()
    x = canvas(rows=1)
    draft = model.draft(x)
    order = (x[0] == model.mask_id).nonzero().reshape(1, -1)
    tokens = torch.randint(0, VOCAB - 1, order.shape)
    short = model.target_logits(draft, order[:, :3], tokens[:, :3])
    padded = model.target_logits(draft, order, tokens, valid=torch.arange(order.shape[1])[None] < 3)
    assert torch.allclose(padded[:, :3], short, atol=1e-6)


def test_double_rotary_is_relative_and_reads_both_positions():
    torch.manual_seed(0)
    layer = CausalLayer(SelfSpecConfig(hidden_dim=32, n_heads=2, vocab_size=VOCAB, dropout=0.0,
                                       output_residual=False)).eval()
    x = torch.randn(1, 4, 32)
    current, following = torch.tensor([[3, 7, 1, 9]]), torch.tensor([[7, 1, 9, 4]])
    attend = torch.ones(4, 4).tril().bool()[None]
    base = layer(x, current, following, attend)
    assert torch.allclose(layer(x, current + 5, following + 5, attend), base, atol=1e-5)  # rotary: relative
    moved_next = following.clone()
    moved_next[0, 1] = 10
    moved_current = current.clone()
    moved_current[0, 1] = 10
    assert not torch.allclose(layer(x, current, moved_next, attend)[:, 1:], base[:, 1:], atol=1e-4)
    assert not torch.allclose(layer(x, moved_current, following, attend)[:, 1:], base[:, 1:], atol=1e-4)


def test_random_order_is_a_uniform_permutation_of_the_masked_positions():
    masked = torch.tensor([[True, False, True, True, False], [False, False, True, False, False]])
    order, valid = random_order(masked, torch.Generator().manual_seed(0))
    assert order.shape == (2, 3) and valid.tolist() == [[True, True, True], [True, False, False]]
    assert sorted(order[0].tolist()) == [0, 2, 3] and order[1, 0] == 2
    gen = torch.Generator().manual_seed(1)
    firsts = torch.stack([random_order(masked[:1], gen)[0][0, 0] for _ in range(600)])
    share = torch.bincount(firsts, minlength=5)[[0, 2, 3]].double() / 600
    assert torch.allclose(share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.06)


def test_save_and_load_round_trip_and_errors(tmp_path):
    model = make_model()
    save_self_spec(model, tmp_path / "parts")
    files = sorted(p.name for p in (tmp_path / "parts").iterdir())
    assert files == ["config.json", "model.safetensors"]
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "parts" / "model.safetensors"))
    assert not any(k.startswith("backbone.") or k.endswith("_start") for k in saved)  # the MDLM's own weights
    assert "target_head.linear_weight_delta" in saved and "causal.attn_qkv.weight" in saved
    loaded = load_self_spec(tmp_path / "parts", make_mdlm(0))
    x = canvas()
    order = (x[0] == model.mask_id).nonzero().reshape(1, -1).expand(2, -1)
    tokens = torch.randint(0, VOCAB - 1, order.shape)
    assert torch.equal(loaded.target_logits(loaded.draft(x), order, tokens),
                       model.target_logits(model.draft(x), order, tokens))

    with pytest.raises(UserError, match="--phase train"):
        load_self_spec(tmp_path / "nothing", make_mdlm(0))
    with pytest.raises(UserError, match="do not fit the MDLM"):
        load_self_spec(tmp_path / "parts", make_mdlm(0, hidden=48, heads=3))
    config = json.loads((tmp_path / "parts" / "config.json").read_text())
    (tmp_path / "parts" / "config.json").write_text(json.dumps({**config, "model_type": "mdlm"}))
    with pytest.raises(UserError, match="model_type"):
        load_self_spec(tmp_path / "parts", make_mdlm(0))


def test_paper_shape_config_and_bad_head_size():
    config = SelfSpecConfig.for_backbone(MDLM(MDLMConfig(vocab_size=50, model_length=8, hidden_dim=768,
                                                         cond_dim=8, n_blocks=1, n_heads=12)))
    assert (config.hidden_dim, config.n_heads, config.dropout) == (768, 12, 0.1)  # head 64: two rotary halves of 32
    with pytest.raises(UserError, match="multiple of 4"):
        SelfSpecConfig(hidden_dim=24, n_heads=4)
