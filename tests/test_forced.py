import pytest
import torch

from dlmkit.anchors import Anchors
from dlmkit.data.chat import default_end_token_ids
from dlmkit.decoding.forced import (
    forced_decode,
    forced_decode_naive,
    plan_end,
)
from dlmkit.errors import UserError

VOCAB, EOS = 96, 1


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    # A large init scale makes the random logits decisive, so fp32 rounding between the
    # cached and the uncached paths cannot flip an argmax.
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.3, eos_token_id=EOS, tie_word_embeddings=False)
    return Qwen2ForCausalLM(config).eval().float()


def prompts_of(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(2, VOCAB, (n,), generator=g).tolist() for n in lengths]


PATTERNS = {
    "mixed": {0: 5, 1: 6, 4: 7, 5: 8, 6: 9, 10: 11, 15: 40},  # at 0, adjacent runs, single anchors
    "none": {},
    "all": {p: 2 + p for p in range(16)},
    "late_runs": {3: 4, 7: 5, 8: 9, 9: 10, 13: 20},
    "beyond_limit": {2: 3, 40: 3},
}


def same_tokens(a, b):
    return [(r.tokens, r.forced, r.stop_reason) for r in a.rows] == [(r.tokens, r.forced, r.stop_reason) for r in b.rows]


@pytest.mark.parametrize("name", list(PATTERNS))
def test_forced_equals_naive_per_pattern(model, name):
    prompts, anchors = prompts_of([7]), [PATTERNS[name]]
    naive = forced_decode_naive(model, prompts, anchors, max_new_tokens=16, rule="fixed")
    ours = forced_decode(model, prompts, anchors, max_new_tokens=16, rule="fixed")
    stepwise = forced_decode(model, prompts, anchors, max_new_tokens=16, rule="fixed", chunked=False)
    assert same_tokens(naive, ours) and same_tokens(naive, stepwise)
    row = ours.rows[0]
    assert len(row.tokens) == 16
    expected = {p: t for p, t in PATTERNS[name].items() if p < 16}
    assert {p: t for p, t in enumerate(row.tokens) if row.forced[p]} == expected
    assert [f for f in row.forced] == [p in expected for p in range(16)]
    gaps = 16 - len(expected)
    # one pass per gap position at most (the prefill answers the first gap), vs one per position
    assert ours.forward_passes == row.forward_passes == gaps
    assert stepwise.forward_passes == 16 and naive.forward_passes == 16


def test_batch_with_different_prompt_lengths_equals_naive(model):
    patterns = [PATTERNS["mixed"], PATTERNS["none"], PATTERNS["all"], PATTERNS["late_runs"], {0: 3, 1: 4}]
    prompts = prompts_of([5, 12, 3, 9, 1])
    limits = [16, 12, 16, 14, 6]
    naive = forced_decode_naive(model, prompts, patterns, max_new_tokens=limits, rule="fixed")
    batched = forced_decode(model, prompts, patterns, max_new_tokens=limits, rule="fixed")
    one_by_one = forced_decode(model, prompts, patterns, max_new_tokens=limits, rule="fixed", batch_size=1)
    stepwise = forced_decode(model, prompts, patterns, max_new_tokens=limits, rule="fixed", chunked=False)
    assert same_tokens(naive, batched) and same_tokens(naive, one_by_one) and same_tokens(naive, stepwise)
    gaps = [r.gap_tokens for r in naive.rows]
    assert [r.forward_passes for r in batched.rows] == gaps
    assert one_by_one.forward_passes == sum(gaps) <= sum(g + 1 for g in gaps)
    assert batched.forward_passes == max(gaps)  # rows advance one gap per batched pass
    assert naive.forward_passes == sum(limits)
    assert stepwise.forward_passes == max(limits)
    assert batched.tokens_processed < naive.tokens_processed
    # all prompts + emitted tokens but the last one of each row that ends in a gap go through once
    assert one_by_one.tokens_processed <= sum(len(p) + n for p, n in zip(prompts, limits))


def test_rows_accept_anchors_objects(model):
    prompts = prompts_of([4])
    a = Anchors((0, 2, 3), (9, 8, 7), 10)
    by_object = forced_decode(model, prompts, [a], max_new_tokens=10, rule="fixed")
    by_dict = forced_decode(model, prompts, [a.as_dict()], max_new_tokens=10, rule="fixed")
    assert same_tokens(by_object, by_dict)


def test_committed_end_anchor_stops_the_row(model):
    prompts = prompts_of([6, 6])
    anchors = [{0: 5, 4: EOS, 5: EOS, 8: 7}, {0: 5}]
    kwargs = dict(max_new_tokens=12, rule="committed_end", end_token_ids=[EOS])
    naive = forced_decode_naive(model, prompts, anchors, **kwargs)
    ours = forced_decode(model, prompts, anchors, **kwargs)
    assert same_tokens(naive, ours)
    first = ours.rows[0]
    assert first.stop_reason == "end_anchor" and len(first.tokens) == 4
    assert EOS not in first.tokens  # the AR's end token is masked before the committed end


def test_ar_end_token_stops_after_the_last_anchor(model):
    prompts, anchors = prompts_of([8]), [{0: 5, 1: 6}]
    free = forced_decode(model, prompts, anchors, max_new_tokens=30, rule="fixed").rows[0].tokens
    stop = free[10]  # declare the AR's greedy token at gap 10 an end token
    kwargs = dict(max_new_tokens=30, rule="committed_end", end_token_ids=[stop])
    naive = forced_decode_naive(model, prompts, anchors, **kwargs)
    ours = forced_decode(model, prompts, anchors, **kwargs)
    assert same_tokens(naive, ours)
    row = ours.rows[0]
    assert row.stop_reason == "ar_end"
    n = len(row.tokens)
    assert 2 <= n <= 10 and row.tokens == free[:n] and free[n] == stop


def test_end_token_is_masked_before_the_last_anchor(model):
    prompts, anchors = prompts_of([8]), [{0: 5, 1: 6, 14: 9}]
    free = forced_decode(model, prompts, anchors, max_new_tokens=15, rule="fixed").rows[0].tokens
    stop = free[3]  # greedy at gap 3, before the last anchor: must not end the output there
    kwargs = dict(max_new_tokens=15, rule="committed_end", end_token_ids=[stop])
    naive = forced_decode_naive(model, prompts, anchors, **kwargs)
    ours = forced_decode(model, prompts, anchors, **kwargs)
    assert same_tokens(naive, ours)
    row = ours.rows[0]
    assert len(row.tokens) == 15 and row.tokens[14] == 9 and row.tokens[3] != stop


def test_oracle_rule(model):
    prompts = prompts_of([5, 5])
    high = {p: 10 + p for p in range(6)} | {8: 3}  # 7 anchors / gen_len 12 > 40%: stop after anchor 8
    low = {0: 4, 2: 5}  # 2 / 12: decode to gen_len
    kwargs = dict(max_new_tokens=20, rule="oracle", gen_lens=[12, 12], end_token_ids=[EOS])
    naive = forced_decode_naive(model, prompts, [high, low], **kwargs)
    ours = forced_decode(model, prompts, [high, low], **kwargs)
    assert same_tokens(naive, ours)
    assert (len(ours.rows[0].tokens), ours.rows[0].stop_reason) == (9, "last_anchor")
    assert ours.rows[1].stop_reason in ("gen_len", "ar_end") and len(ours.rows[1].tokens) <= 12
    with pytest.raises(UserError, match="gen_len"):
        forced_decode(model, prompts, [high, low], max_new_tokens=20, rule="oracle")


def test_plan_end():
    p = plan_end({0: 1, 1: 2, 2: 3, 3: 4, 4: 5}, rule="oracle", max_new_tokens=50, gen_len=10)
    assert (p.limit, p.limit_reason, p.no_end_before) == (5, "last_anchor", 5)
    p = plan_end({0: 1, 1: 2, 2: 3, 3: 4}, rule="oracle", max_new_tokens=50, gen_len=10)  # exactly 40%: not above
    assert (p.limit, p.limit_reason, p.no_end_before) == (10, "gen_len", 4)
    p = plan_end({0: 5, 3: 0, 7: 0, 9: 2}, rule="committed_end", max_new_tokens=50, end_token_ids=[0])
    assert (p.limit, p.limit_reason, p.anchors) == (3, "end_anchor", {0: 5})
    p = plan_end({0: 5, 9: 2}, rule="committed_end", max_new_tokens=50, end_token_ids=[0])
    assert (p.limit, p.limit_reason, p.no_end_before, p.stop_on_ar_end) == (50, "max_len", 10, True)
    p = plan_end({0: 5, 60: 2}, rule="fixed", max_new_tokens=50)
    assert (p.limit, p.anchors, p.stop_on_ar_end) == (50, {0: 5}, False)
    with pytest.raises(UserError, match="committed_end"):
        plan_end({}, rule="last", max_new_tokens=5)


def test_bad_inputs(model):
    with pytest.raises(UserError, match="vocabulary"):
        forced_decode(model, prompts_of([3]), [{0: VOCAB + 5}], max_new_tokens=4)
    with pytest.raises(UserError, match="one anchor set per prompt"):
        forced_decode(model, prompts_of([3, 3]), [{}], max_new_tokens=4)
    with pytest.raises(UserError, match="empty"):
        forced_decode_naive(model, [[]], [{}], max_new_tokens=4)
    with pytest.raises(UserError):
        forced_decode(model, prompts_of([3]), [{-1: 4}], max_new_tokens=4)


def test_default_end_token_ids_reads_the_model(model):
    assert default_end_token_ids(model) == [EOS]


def test_unreachable_hub_model_is_a_one_line_error(monkeypatch):
    from dlmkit.errors import UserError
    from dlmkit.models.ar import load_ar

    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # no network wait, online or not
    with pytest.raises(UserError, match="no-such-org/no-such-model.*cannot be fetched.*download it first"):
        load_ar("no-such-org/no-such-model")
