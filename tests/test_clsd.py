"""CLSD: the graft, the adaLN-Zero DiT, the flow, stage C's gradient path, the guillotine,
the Qwen3.5 loader and the decoding loop, on tiny random Qwen3.5 configs."""

import json

import pytest
import torch

from dlmkit.decoding.flow import euler_sample, rectified_flow_loss
from dlmkit.errors import UserError
from dlmkit.models.cache import cache_kwargs, output_cache
from dlmkit.models.clsd import PAPER_SOURCE_INDICES, graft, load_dit, nearest_tokens, save_dit, scale_source_indices
from dlmkit.models.qwen35 import expand_cache, load_verifier, qwen35_9b_config, text_config
from dlmkit.decoding.clsd import clsd_generate, greedy_generate, guillotine, oracle_rounds
from dlmkit.experiments.clsd.objectives import StageC, beta_at, stage_a_loss, stage_c_loss

VOCAB = 61
SIZE = dict(hidden_size=32, intermediate_size=48, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
            linear_num_key_heads=2, linear_num_value_heads=2, linear_key_head_dim=8, linear_value_head_dim=8,
            max_position_embeddings=256)


def random_verifier(layers=32, seed=0, tie=False):
    from transformers import Qwen3_5ForCausalLM

    torch.manual_seed(seed)
    model = Qwen3_5ForCausalLM(text_config(VOCAB, eos_token_id=0, num_hidden_layers=layers,
                                           tie_word_embeddings=tie, **SIZE)).eval()
    model.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def verifier32():
    return random_verifier(32)


@pytest.fixture(scope="module")
def verifier8():
    return random_verifier(8, seed=1)


def randomize_conditioning(dit, seed=0):
    """Move the DiT off its identity initialisation (non-zero gates and positions)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in dit.blocks:
            lin = block.adaLN_modulation[1]
            lin.weight.copy_(torch.randn(lin.weight.shape, generator=gen) * 0.2)
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=gen) * 0.2)
        dit.pos_embed.copy_(torch.randn(dit.pos_embed.shape, generator=gen))
    return dit


# --------------------------------------------------------------------------- graft


def test_graft_copies_exactly_the_chosen_layers(verifier32):
    dit = graft(verifier32, PAPER_SOURCE_INDICES, block_len=16)
    types = verifier32.config.layer_types
    assert len(dit.blocks) == 12 and len(dit.layer_types) == 12
    assert dit.layer_types == [types[i] for i in PAPER_SOURCE_INDICES]
    assert dit.layer_types.count("full_attention") == 3 and dit.layer_types.count("linear_attention") == 9
    for block, index in zip(dit.blocks, PAPER_SOURCE_INDICES):
        source = verifier32.model.layers[index].state_dict()
        copied = block.layer.state_dict()
        assert source.keys() == copied.keys()
        for key in source:
            assert torch.equal(source[key], copied[key]), (index, key)
    # A copy, not a view: training the DiT leaves the verifier alone.
    with torch.no_grad():
        dit.blocks[0].layer.mlp.up_proj.weight.add_(1.0)
    assert not torch.equal(dit.blocks[0].layer.mlp.up_proj.weight, verifier32.model.layers[0].mlp.up_proj.weight)


def test_source_indices_scale_to_shallower_verifiers():
    assert scale_source_indices(32) == PAPER_SOURCE_INDICES
    scaled = scale_source_indices(16)
    assert scaled == [0, 1, 3, 4, 6, 7, 9, 10, 12, 13, 14, 15]
    full = [i for i in scaled if (i + 1) % 4 == 0]
    assert len(full) == 3  # the paper's 9 DeltaNet + 3 attention split survives
    with pytest.raises(UserError, match="too shallow"):
        scale_source_indices(8)
    with pytest.raises(UserError, match="outside"):
        graft(random_verifier(8), [0, 9])


def test_dit_is_identity_at_init(verifier8):
    dit = graft(verifier8, [0, 2, 3, 5, 7], block_len=12)
    x = torch.randn(3, 12, 32)
    out = dit(x, torch.rand(3), torch.randn(3, 32))
    assert torch.equal(out, x)


def test_dit_is_causal(verifier8):
    dit = randomize_conditioning(graft(verifier8, [0, 2, 3, 5, 7], block_len=12))
    x = torch.randn(2, 12, 32)
    t, cond = torch.tensor([0.3, 0.7]), torch.randn(2, 32)
    out = dit(x, t, cond)
    assert not torch.allclose(out, x)  # no longer the identity
    changed = x.clone()
    changed[:, 7] += torch.randn(2, 32)
    out2 = dit(changed, t, cond)
    torch.testing.assert_close(out2[:, :7], out[:, :7], rtol=0, atol=1e-6)
    assert (out2[:, 7:] - out[:, 7:]).abs().amax(dim=-1).min() > 1e-4  # later positions all see it


def test_dit_save_load_roundtrip(verifier8, tmp_path):
    dit = randomize_conditioning(graft(verifier8, [0, 3, 7], block_len=8))
    save_dit(dit, tmp_path / "dit")
    back = load_dit(tmp_path / "dit")
    x, t, c = torch.randn(2, 8, 32), torch.rand(2), torch.randn(2, 32)
    torch.testing.assert_close(back(x, t, c), dit(x, t, c))
    assert back.config.source_indices == [0, 3, 7] and back.layer_types == dit.layer_types


# --------------------------------------------------------------------------- flow


def test_stage_a_loss_matches_hand_computation(verifier8):
    dit = graft(verifier8, [0, 3], block_len=2)  # identity at init: v(x_t) = x_t
    target = torch.tensor([[[1.0] * 32, [2.0] * 32]])
    noise = torch.tensor([[[0.5] * 32, [-1.0] * 32]])
    batch = {"target": target, "noise": noise, "t": torch.tensor([0.25]), "cond": torch.zeros(1, 32)}
    loss, _ = stage_a_loss(dit, batch)
    # x_t = 0.75 n + 0.25 y; velocity target y - n; error x_t - (y - n) = 1.75 n - 0.75 y
    errors = [1.75 * 0.5 - 0.75 * 1.0, 1.75 * -1.0 - 0.75 * 2.0]  # -0.625, -3.25
    expected = sum(e * e for e in errors) / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-6)


def test_euler_with_the_exact_velocity_reaches_the_target():
    gen = torch.Generator().manual_seed(0)
    target, noise = torch.randn(4, 6, 8, generator=gen), torch.randn(4, 6, 8, generator=gen)

    def exact(x, t):  # the rectified-flow velocity of a single data point
        return (target - x) / (1 - t).reshape(-1, 1, 1)

    for steps in (1, 2, 7):
        torch.testing.assert_close(euler_sample(exact, noise, steps), target, rtol=1e-5, atol=1e-5)
    # and the straight-line regression target is what that field gives on the path
    t = torch.full((4,), 0.4)
    assert float(rectified_flow_loss(exact, target, noise, t)) < 1e-10


def test_nearest_tokens_reads_exact_embeddings(verifier8):
    table = verifier8.get_input_embeddings().weight
    ids = torch.randint(0, VOCAB, (3, 5))
    assert torch.equal(nearest_tokens(table[ids] + 1e-4, table), ids)


# --------------------------------------------------------------------------- stage C


def test_stage_c_grads_reach_the_dit_through_the_frozen_verifier(verifier8):
    from dlmkit.train.loop import TrainConfig, make_optimizer

    dit = graft(verifier8, [0, 3, 7], block_len=6)
    model = StageC(dit, verifier8)
    before = {k: v.clone() for k, v in verifier8.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, 6), generator=gen)
    batch = {"prefix_ids": torch.randint(0, VOCAB, (2, 4), generator=gen), "chunk_ids": ids,
             "target": torch.randn(2, 6, 32, generator=gen), "noise": torch.randn(2, 6, 32, generator=gen),
             "cond": torch.randn(2, 32, generator=gen), "beta": 0.0}  # CE only: the verifier is the sole path
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2))
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in dit.parameters()}
    loss, metrics = stage_c_loss(model, batch, euler_steps=2)
    loss.backward()
    assert all(p.grad is None for p in verifier8.parameters())
    gates = [b.adaLN_modulation[1].weight.grad for b in dit.blocks]
    assert all(g is not None and g.abs().sum() > 0 for g in gates)
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in verifier8.state_dict().items())
    assert any(b.adaLN_modulation[1].weight.abs().sum() > 0 for b in dit.blocks)
    assert float(metrics["beta"]) == 0.0


def test_beta_anneals_from_beta0_to_zero():
    assert beta_at(0, 100, 0.1) == pytest.approx(0.1)
    assert beta_at(99, 100, 0.1) == 0.0
    assert beta_at(50, 101, 0.1) == pytest.approx(0.05)


# --------------------------------------------------------------------------- inference


def test_guillotine_cuts_at_the_first_low_confidence_position():
    assert guillotine(torch.tensor([0.9, 0.8, 0.3, 0.9]), 0.5) == 2
    assert guillotine(torch.tensor([0.2, 0.9, 0.9]), 0.5) == 0
    assert guillotine(torch.tensor([0.6, 0.7, 0.5]), 0.5) == 3  # equal to the threshold is kept
    assert guillotine(torch.tensor([0.9, 0.9]), 0.95) == 0


def test_expanded_cache_scores_like_a_fresh_pass(verifier8):
    prompt = torch.randint(0, VOCAB, (1, 9))
    candidates = torch.randint(0, VOCAB, (3, 5))
    cache = output_cache(verifier8(input_ids=prompt, use_cache=True))
    cached = verifier8(input_ids=candidates, **cache_kwargs(expand_cache(cache, 3)), use_cache=True).logits
    fresh = verifier8(input_ids=torch.cat([prompt.expand(3, -1), candidates], 1)).logits[:, 9:]
    torch.testing.assert_close(cached, fresh, rtol=1e-4, atol=1e-4)
    # the original cache is untouched (still batch 1, still 9 tokens)
    assert cache.get_seq_length() == 9


def _fresh_probs(verifier, ids):
    with torch.no_grad():
        return verifier(input_ids=torch.tensor([ids])).logits[0, -1].float().softmax(-1)


@pytest.mark.parametrize("threshold", [0.5, 0.05, 0.0])
def test_clsd_tokens_are_what_the_verifier_says_without_a_cache(verifier8, threshold):
    # Every round's first token must be the verifier's argmax on the text so far and every kept
    # draft must have the verifier's probability >= threshold there, both recomputed from scratch:
    # this checks the replayed tokens, the advance call and the row kept whole (threshold 0).
    dit = randomize_conditioning(graft(verifier8, [0, 3, 7], block_len=4))
    prompt = torch.randint(1, VOCAB, (7,), generator=torch.Generator().manual_seed(5)).tolist()
    out = clsd_generate(verifier8, dit, prompt, 15, set(), candidates=3, euler_steps=2, threshold=threshold,
                        generator=torch.Generator().manual_seed(0))
    assert len(out.tokens) == 15
    at = 0
    for rd in out.rounds + [None]:
        if at == len(out.tokens):
            break
        text = prompt + out.tokens[:at]
        assert out.tokens[at] == int(_fresh_probs(verifier8, text).argmax())  # the verifier's own token
        for j in range(1, 1 + (rd["accepted"] if rd else 0)):
            assert float(_fresh_probs(verifier8, text + out.tokens[at:at + j])[out.tokens[at + j]]) >= threshold
        at += rd["emitted"] if rd else 1
    assert at == len(out.tokens)
    replayed = [rd["replayed"] for rd in out.rounds]
    if threshold == 0.0:  # every row kept whole: the scored row's state is the cache, nothing replayed
        assert [rd["accepted"] for rd in out.rounds] == [3, 3, 3, 2] and replayed == [0, 0, 0, 0]  # 4 + 4 + 4 + 3
        assert out.verifier_calls == 1 + 4  # the prompt's pass, then one pass per round
    else:
        assert max(replayed) > 0  # tokens rode along with the candidates
    assert out.verifier_calls <= 1 + len(out.rounds) + sum(rd["emitted"] for rd in out.rounds) // 4


def test_the_oracle_bound_keeps_runs_of_confident_greedy_tokens(verifier8):
    assert oracle_rounds([0.9, 0.8, 0.3, 0.9, 0.95, 0.2], 0.5, 4) == [1, 2, 0]  # a low token opens a round
    assert oracle_rounds([1.0] * 10, 0.5, 4) == [3, 3, 1]  # at most block_len - 1 drafts after the verifier's
    prompt = torch.randint(1, VOCAB, (5,), generator=torch.Generator().manual_seed(2)).tolist()
    ar = greedy_generate(verifier8, prompt, 6, stop_ids=set())
    assert len(ar.confidence) == 6
    for i, token in enumerate(ar.tokens):
        probs = _fresh_probs(verifier8, prompt + ar.tokens[:i])
        assert token == int(probs.argmax()) and ar.confidence[i] == pytest.approx(float(probs[token]), abs=1e-5)


def test_clsd_output_equals_greedy_at_threshold_one_half(verifier8):
    dit = randomize_conditioning(graft(verifier8, [0, 3, 7], block_len=4))
    prompt = torch.randint(1, VOCAB, (7,)).tolist()
    ar = greedy_generate(verifier8, prompt, 15, stop_ids=set())
    assert len(ar.tokens) == 15 and ar.verifier_calls == 15
    out = clsd_generate(verifier8, dit, prompt, 15, set(), candidates=3, euler_steps=2, threshold=0.5,
                        generator=torch.Generator().manual_seed(0))
    assert out.tokens == ar.tokens
    # one verifier pass per round (the prompt's first), plus an advance per 4 replayed tokens: with
    # nothing accepted (a random DiT) that is 1 + 1/4 calls per token, where the card's loop spent 2
    assert out.verifier_calls <= 1 + len(out.rounds) + len(out.tokens) // 4 < 2 * len(out.tokens)
    stop = ar.tokens[5]
    ar_stop = greedy_generate(verifier8, prompt, 15, stop_ids={stop})
    out = clsd_generate(verifier8, dit, prompt, 15, {stop}, candidates=3, euler_steps=2, threshold=0.5,
                        generator=torch.Generator().manual_seed(0))
    assert out.tokens == ar_stop.tokens and out.tokens[-1] == stop


# --------------------------------------------------------------------------- loading


def test_load_verifier_maps_hub_keys(tmp_path):
    from safetensors.torch import save_file

    model = random_verifier(4, seed=3)
    state = {("model.language_model." + k[len("model."):] if k.startswith("model.") else k): v.contiguous()
             for k, v in model.state_dict().items()}
    state["model.visual.patch_embed.weight"] = torch.zeros(2, 2)
    state["mtp.fc.weight"] = torch.zeros(2, 2)
    half = len(state) // 2
    names = sorted(state)
    save_file({k: state[k] for k in names[:half]}, str(tmp_path / "model-00001-of-00002.safetensors"))
    save_file({k: state[k] for k in names[half:]}, str(tmp_path / "model-00002-of-00002.safetensors"))
    index = {"weight_map": {k: f"model-0000{1 if i < half else 2}-of-00002.safetensors" for i, k in enumerate(names)}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    text = model.config.to_dict()
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_5", "text_config": text,
                                                      "vision_config": {}}))
    loaded = load_verifier(tmp_path)
    ids = torch.randint(0, VOCAB, (2, 10))
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_load_verifier_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_verifier(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(UserError, match="not Qwen3.5"):
        load_verifier(tmp_path)


def test_9b_config_builds_on_meta():
    from transformers import Qwen3_5ForCausalLM

    config = qwen35_9b_config()
    assert (config.hidden_size, config.num_hidden_layers, config.vocab_size) == (4096, 32, 248320)
    assert [i for i, t in enumerate(config.layer_types) if t == "full_attention"] == list(range(3, 32, 4))
    with torch.device("meta"):
        model = Qwen3_5ForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    assert 8e9 < params < 1e10


# --------------------------------------------------------------------------- data and script


def test_numina_offline_error_names_the_fixes(monkeypatch):
    import datasets

    from dlmkit.data.numina import load_numina

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'AI-MO/NuminaMath-CoT' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError) as err:
        load_numina("train", n=3)
    message = str(err.value)
    assert "\n" not in message
    assert "HF_DATASETS_OFFLINE" in message and "--data-dir" in message and "pre-download" in message


def test_numina_reads_a_local_parquet_copy(tmp_path):
    import datasets

    from dlmkit.data.numina import load_numina

    rows = {"source": ["x"] * 3, "problem": ["1+1?", "2+2?", "3+3?"], "solution": ["2", "4", "6"],
            "messages": [[{"role": "user", "content": p}, {"role": "assistant", "content": s}]
                         for p, s in (("1+1?", "2"), ("2+2?", "4"), ("3+3?", "6"))]}
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    data = load_numina("train", n=2, data_dir=tmp_path)
    assert len(data) == 2 and data[1]["problem"] == "2+2?"
    with pytest.raises(UserError, match="not a directory"):
        load_numina("train", data_dir=tmp_path / "nowhere")


def test_windows_cut_the_stream_in_blocks():
    from dlmkit.experiments.clsd.data import windows

    prefix, chunk = windows(list(range(20)), prefix_len=3, block_len=4)
    assert prefix.tolist()[0] == [0, 1, 2] and chunk.tolist()[0] == [3, 4, 5, 6]
    assert chunk.tolist()[-1] == [15, 16, 17, 18] and prefix.tolist()[-1] == [12, 13, 14]
    with pytest.raises(UserError, match="no window"):
        windows(list(range(5)), prefix_len=3, block_len=4)


def test_verifier_chunks_are_each_prefix_greedy_continuation(verifier8):
    from dlmkit.experiments.clsd.data import verifier_chunks

    prefixes = torch.randint(1, VOCAB, (5, 6), generator=torch.Generator().manual_seed(3))
    chunks = verifier_chunks(verifier8, prefixes, block_len=7, batch_size=2)  # batches of 2, 2 and 1
    assert chunks.shape == (5, 7)
    for prefix, chunk in zip(prefixes.tolist(), chunks.tolist()):
        assert chunk == greedy_generate(verifier8, prefix, 7, stop_ids=set()).tokens


def test_embed_with_verifier_targets_stores_the_verifier_greedy_chunks(tmp_path):
    import train_clsd
    from safetensors.torch import load_file

    from dlmkit.presets import TINY, TINY_ROOT

    out = tmp_path / "v"
    assert train_clsd.main([*SMALL, "--out", str(out), "--targets", "verifier"]) == 0
    rows = {r["split"]: r for r in json.loads((out / "summary.json").read_text())["tables"]["embed"]}
    assert rows["train"]["targets"] == "verifier" and 0 <= rows["train"]["targets_equal_data"] < 1
    shard = load_file(str(out / "checkpoints" / "embed" / "train-00000.safetensors"))
    verifier = load_verifier(TINY_ROOT / TINY["verifier"])
    for prefix, chunk in zip(shard["prefix_ids"][:2].tolist(), shard["chunk_ids"][:2].tolist()):
        assert chunk == greedy_generate(verifier, prefix, len(chunk), stop_ids=set()).tokens
    # the shards are keyed by their targets: a data-target run does not reuse them
    with pytest.raises(UserError, match="holds caches of another run"):
        train_clsd.main([*SMALL, "--out", str(tmp_path / "d"), "--ckpt-dir", str(out / "checkpoints"),
                         "--targets", "data"])


def test_script_refuses_checkpoints_under_results(tmp_path):
    import train_clsd

    with pytest.raises(UserError, match="--ckpt-dir .* inside results/"):
        train_clsd.main(["--out", str(tmp_path / "out"), "--ckpt-dir", str(tmp_path / "results" / "ckpt"),
                         "--phase", "embed"])


SMALL = ["--subset", "1", "--embed-records", "8", "--phase", "embed"]


def test_caches_belong_to_a_run_and_are_keyed_by_what_made_them(tmp_path):
    import train_clsd

    assert train_clsd.main([*SMALL, "--out", str(tmp_path / "one")]) == 0
    assert json.loads((tmp_path / "one" / "checkpoints" / "cache_key.json").read_text())["seed"] == 42
    # a new run with its own --out never sees another run's caches
    assert train_clsd.main([*SMALL, "--out", str(tmp_path / "two"), "--seed", "7"]) == 0
    assert json.loads((tmp_path / "two" / "checkpoints" / "cache_key.json").read_text())["seed"] == 7
    # a --ckpt-dir shared on purpose is refused to a run made otherwise, before anything is written
    shared = tmp_path / "one" / "checkpoints"
    before = {p: p.read_bytes() for p in shared.rglob("*") if p.is_file()}
    for other in (["--seed", "7"], ["--block-len", "16"]):
        with pytest.raises(UserError, match="holds caches of another run"):
            train_clsd.main([*SMALL, "--out", str(tmp_path / "three"), "--ckpt-dir", str(shared), *other])
        assert not (tmp_path / "three").exists()
    # and resuming the run itself with another seed is refused
    with pytest.raises(UserError, match="other seed|--seed 42 -> 7"):
        train_clsd.main([*SMALL, "--out", str(tmp_path / "one"), "--resume", "--seed", "7"])
    assert {p: p.read_bytes() for p in shared.rglob("*") if p.is_file()} == before


def test_source_indices_are_checked_against_the_verifier_before_any_phase(tmp_path):
    import train_clsd

    with pytest.raises(UserError, match=r"--source-indices 99 lie outside the verifier's \d+ layers"):
        train_clsd.main([*SMALL, "--out", str(tmp_path / "x"), "--source-indices", "0,99"])
    assert not (tmp_path / "x").exists()


def test_first_rejection_rows_count_where_each_block_was_cut():
    from dlmkit.experiments.clsd.infer import first_rejection_rows

    # drafted tokens kept per block; position 0 is the verifier's token, so 3 kept of 4 is a whole block
    rows = first_rejection_rows({"stage_a": [0, 0, 2, 3, 0], "stage_c": [1, 3]}, block_len=4)
    assert [(r["drafter"], r["first_rejection"], r["blocks"]) for r in rows] == [
        ("DiT after stage_a", 1, 3), ("DiT after stage_a", 3, 1), ("DiT after stage_a", "none (block kept whole)", 1),
        ("DiT after stage_c", 2, 1), ("DiT after stage_c", "none (block kept whole)", 1)]
    assert rows[0]["share"] == 0.6 and sum(r["share"] for r in rows[:3]) == 1.0


def test_subset_trains_smoke_sized_unless_a_flag_says_otherwise(tmp_path):
    import train_clsd

    assert train_clsd.main(["--subset", "1", "--stage-a-steps", "7", "--phase", "embed", "--out", str(tmp_path / "s")]) == 0
    config = json.loads((tmp_path / "s" / "summary.json").read_text())["config"]
    assert (config["train_records"], config["stage_a_steps"], config["stage_c_steps"]) == (40, 7, 5)
    assert (config["gen_length"], config["candidates"], config["prompts"]) == (8, 2, 1)
