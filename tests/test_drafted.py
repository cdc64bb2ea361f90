"""Drafted gap filling (decoding/drafted.py): the same tokens as forced decoding whatever the
drafts, fewer passes when they are right."""

import random

import pytest

from dlmkit.anchors import Anchors
from dlmkit.decoding.drafted import drafted_forced_decode
from dlmkit.decoding.forced import forced_decode, forced_decode_naive
from dlmkit.errors import UserError
from test_forced import EOS, PATTERNS, VOCAB, model, prompts_of, same_tokens  # noqa: F401 (model: a fixture)

LIMITS = [16, 12, 16, 14, 6]
BATCH = [PATTERNS["mixed"], PATTERNS["none"], PATTERNS["all"], PATTERNS["late_runs"], {0: 3, 1: 4}]


def drafts_from(result, kind: str, seed: int = 0) -> list[dict]:
    """Drafts for every gap of a forced-decoding result: right (the AR's own token), wrong,
    mixed (60% right), or none."""
    rng, out = random.Random(seed), []
    for row in result.rows:
        drafts = {}
        for p, (token, forced) in enumerate(zip(row.tokens, row.forced)):
            if forced or kind == "none":
                continue
            right = kind == "right" or (kind == "mixed" and rng.random() < 0.6)
            drafts[p] = token if right else (token + 1 + rng.randrange(VOCAB - 1)) % VOCAB
        out.append(drafts)
    return out


@pytest.mark.parametrize("rule", ["fixed", "committed_end"])
@pytest.mark.parametrize("kind", ["right", "wrong", "mixed", "none"])
def test_same_tokens_as_forced_batched_and_alone(model, rule, kind):
    prompts = prompts_of([5, 12, 3, 9, 1])
    kwargs = dict(max_new_tokens=LIMITS, rule=rule, end_token_ids=[EOS])
    naive = forced_decode_naive(model, prompts, BATCH, **kwargs)
    forced = forced_decode(model, prompts, BATCH, **kwargs)
    assert same_tokens(naive, forced)
    drafts = drafts_from(forced, kind)
    batched = drafted_forced_decode(model, prompts, BATCH, drafts, **kwargs)
    alone = drafted_forced_decode(model, prompts, BATCH, drafts, batch_size=1, **kwargs)
    assert same_tokens(forced, batched) and same_tokens(forced, alone)
    assert [r.forward_passes for r in batched.rows] == [r.forward_passes for r in alone.rows]
    offered = [len(d) for d in drafts]
    assert [r.drafts_fed for r in batched.rows] <= offered
    accepted = [r.drafts_accepted for r in batched.rows]
    if kind == "right":
        # every gap drafted right: one pass per row (the prefill checks them all)
        assert [r.forward_passes for r in batched.rows] == [1 if r.gap_tokens else 0 for r in forced.rows]
        assert accepted == offered
    elif kind in ("wrong", "none"):
        # nothing accepted: exactly the forced decoder's passes (a wrong draft costs no pass)
        assert accepted == [0] * len(drafts)
        assert [r.forward_passes for r in batched.rows] == [r.forward_passes for r in forced.rows]
    else:
        assert 0 < sum(accepted) < sum(offered)
        assert all(d <= f for d, f in zip([r.forward_passes for r in batched.rows],
                                          [r.forward_passes for r in forced.rows]))
        assert batched.forward_passes < forced.forward_passes


def test_passes_are_runs_of_right_drafts(model):
    """One pass per run of right drafts: a wrong draft ends the pass, the AR's token replaces it."""
    prompts = prompts_of([6])
    forced = forced_decode(model, prompts, [{}], max_new_tokens=12, rule="fixed")
    tokens = forced.rows[0].tokens
    drafts = {p: t for p, t in enumerate(tokens)}
    drafts[4] = (tokens[4] + 1) % VOCAB  # wrong at 4 and 9: passes fill 0..4, 5..9, 10..11
    drafts[9] = (tokens[9] + 1) % VOCAB
    out = drafted_forced_decode(model, prompts, [{}], [drafts], max_new_tokens=12, rule="fixed")
    assert out.rows[0].tokens == tokens
    assert out.rows[0].forward_passes == 3
    assert (out.rows[0].drafts_fed, out.rows[0].drafts_accepted) == (12, 10)


def test_drafted_end_of_text(model):
    prompts, anchors = prompts_of([8]), [{0: 5, 1: 6}]
    free = forced_decode(model, prompts, anchors, max_new_tokens=30, rule="fixed").rows[0].tokens
    stop = free[10]  # the AR's greedy token at 10 is declared an end token
    kwargs = dict(max_new_tokens=30, rule="committed_end", end_token_ids=[stop])
    forced = forced_decode(model, prompts, anchors, **kwargs)
    assert forced.rows[0].stop_reason == "ar_end" and len(forced.rows[0].tokens) <= 10
    n = len(forced.rows[0].tokens)
    cases = {
        "drafted end where the AR ends": {p: free[p] for p in range(2, n)} | {n: stop},
        "no draft at the end": {p: free[p] for p in range(2, n)},
        "drafts run past the end": {p: free[p] for p in range(2, 30)},
        "wrong draft at the end": {p: free[p] for p in range(2, n)} | {n: (stop + 1) % VOCAB},
    }
    for name, drafts in cases.items():
        out = drafted_forced_decode(model, prompts, anchors, [drafts], **kwargs)
        assert same_tokens(forced, out), name
        assert out.rows[0].forward_passes == 1, name  # the end is found in the prefill's pass


def test_drafted_end_before_the_last_anchor_is_rejected(model):
    prompts, anchors = prompts_of([8]), [{0: 5, 1: 6, 14: 9}]
    free = forced_decode(model, prompts, anchors, max_new_tokens=15, rule="fixed").rows[0].tokens
    kwargs = dict(max_new_tokens=15, rule="committed_end", end_token_ids=[EOS])
    forced = forced_decode(model, prompts, anchors, **kwargs)
    drafts = {p: free[p] for p in range(2, 14)} | {3: EOS}  # an end token before the DLM's last anchor
    out = drafted_forced_decode(model, prompts, anchors, [drafts], **kwargs)
    assert same_tokens(forced, out)
    assert EOS not in out.rows[0].tokens and len(out.rows[0].tokens) == 15


def test_drafts_on_anchors_or_past_the_end_are_ignored(model):
    prompts = prompts_of([4])
    anchors = Anchors((0, 2, 3), (9, 8, 7), 10)
    forced = forced_decode(model, prompts, [anchors], max_new_tokens=10, rule="fixed")
    drafts = {0: 1, 2: 1, 3: 1, 40: 3}
    out = drafted_forced_decode(model, prompts, [anchors], [Anchors.from_mapping(drafts, 41)], max_new_tokens=10,
                                rule="fixed")
    assert same_tokens(forced, out) and out.rows[0].drafts_fed == 0


def test_bad_drafts(model):
    with pytest.raises(UserError, match="one per prompt"):
        drafted_forced_decode(model, prompts_of([3, 3]), [{}, {}], [{}], max_new_tokens=4)
    with pytest.raises(UserError, match="vocabulary"):
        drafted_forced_decode(model, prompts_of([3]), [{}], [{1: VOCAB + 3}], max_new_tokens=4)
    with pytest.raises(UserError, match="mapping"):
        drafted_forced_decode(model, prompts_of([3]), [{}], [[1, 2]], max_new_tokens=4)
