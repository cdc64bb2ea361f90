"""The adaptive DLM stop (decoding/early_stop.py): rules over what a partial run shows, the
same decision offline (from a finished run's record) and online (stopping the run)."""

import pytest
import torch

from dlmkit.decoding.early_stop import (PartialStates, StopRule, drafts_before, drafts_of, online_state, signals,
                                        state_of, stop_step)
from dlmkit.errors import UserError

END, MASK = 0, 99


def test_signals_read_before_the_committed_end():
    canvas = [5, MASK, MASK, END, MASK, MASK]
    conf = [1.0, 0.4, 0.7, 1.0, 0.99, 0.99]
    argmax = [5, 6, END, END, END, END]
    # positions 4, 5 lie past the committed end; position 2's argmax is an end token
    assert signals(canvas, argmax, conf, MASK, [END]) == {"left_conf": 0.7, "left_text_conf": 0.4}
    # no end committed yet: every open position counts, and far end tokens keep left_conf high
    canvas = [5, MASK, MASK, MASK]
    assert signals(canvas, [5, 6, END, END], [1.0, 0.3, 0.98, 0.999], MASK, [END]) == {"left_conf": 0.999,
                                                                                       "left_text_conf": 0.3}
    assert signals([5, 6, END], [5, 6, END], [0.3] * 3, MASK, [END]) == {"left_conf": 0.0, "left_text_conf": 0.0}
    assert signals([MASK], [7], [0.123456], MASK, [END])["left_conf"] == 0.1235  # rounded alike online and offline


def test_state_and_drafts_of_a_canvas():
    state = state_of([5, MASK, 7, END, MASK], MASK, [END], 0.5, 0.25)
    assert (state.end, state.coverage, state.left_conf, state.left_text_conf) == (3, 2 / 3, 0.5, 0.25)
    state = state_of([MASK, 6], MASK, [END])
    assert (state.end, state.coverage) == (None, 0.5)
    drafts = drafts_of([5, MASK, MASK, END, MASK], [5, 8, 9, END, 4], [1, 0.61234, 0.2, 1, 0.9], MASK, [END])
    assert drafts == {"positions": [1, 2], "tokens": [8, 9], "conf": [0.612, 0.2]}


def _signals(left_conf, left_text_conf):
    return {"left_conf": left_conf, "left_text_conf": left_text_conf}


def test_rules_on_a_hand_built_run():
    # 6 positions, 8 steps: the answer 0..3, end tokens at 4 and 5 (committed at step 1)
    commit_step = [0, 2, 5, 6, 1, 1]
    tokens = [5, 6, 7, 8, END, END]
    rec = _signals([0.99, 0.95, 0.97, 0.6, 0.5, 0.5, 0.0, 0.0], [0.8, 0.95, 0.97, 0.6, 0.3, 0.3, 0.0, 0.0])
    run = lambda rule: stop_step(rule, commit_step, tokens, rec, [END], 8)  # noqa: E731
    assert run(StopRule("confidence", 0.9)) == 4
    assert run(StopRule("confidence", 0.55)) == 5
    assert run(StopRule("text_confidence", 0.9)) == 1
    assert run(StopRule("text_confidence", 0.9, min_steps=2)) == 4
    assert run(StopRule("text_confidence", 0.4)) == 5
    assert run(StopRule("confidence", 0.9, min_steps=6)) == 6
    assert run(StopRule("text_confidence", 0.9, window=2)) == 5  # the dip after step 1 does not last
    assert run(StopRule("text_confidence", 0.9, window=3)) == 6
    assert run(StopRule("confidence", 0.3, max_steps=3)) == 3
    # end committed after 2 steps; coverage of 0..3: 1/4 after 2 steps, 2/4 after 3, 3/4 after 6
    assert run(StopRule("end_coverage", 0.5)) == 3
    assert run(StopRule("end_coverage", 0.75)) == 6
    assert run(StopRule("fixed", 0.25)) == 2
    assert run(StopRule("fixed", 0.01)) == 1  # at least one step


def test_bad_rules():
    with pytest.raises(UserError, match="choose from"):
        StopRule("plateau", 0.5)
    with pytest.raises(UserError, match="fraction"):
        StopRule("fixed", 2.0)
    with pytest.raises(UserError, match="min_steps"):
        StopRule("confidence", 0.5, min_steps=5, max_steps=2)
    with pytest.raises(UserError, match="window"):
        StopRule("confidence", 0.5, window=0)
    with pytest.raises(UserError, match="PartialStates"):
        stop_step(StopRule("confidence", 0.5), [0, 1], [5, 6], _signals([0.2], [0.2]), [END], 4)


def test_drafts_before():
    drafts = {"positions": [1, 2, 7], "tokens": [10, 11, 12], "conf": [0.9, 0.3, 0.95]}
    assert drafts_before(drafts) == {1: 10, 2: 11, 7: 12}
    assert drafts_before(drafts, limit=5, min_conf=0.5) == {1: 10}


def test_online_stop_equals_the_offline_rule_on_the_tiny_dream():
    """A run stopped by the rule online holds exactly the anchors and drafts that the full run's
    record gives at the rule's offline stop step."""
    from dlmkit.data.chat import chat_prompt_ids, end_token_ids
    from dlmkit.decoding.diffusion import diffusion_generate
    from dlmkit.models.dream import load_dream, load_dream_tokenizer
    from dlmkit.presets import TINY, TINY_ROOT, tiny_world_of

    model = load_dream(TINY_ROOT / TINY["dlm"])
    tokenizer = load_dream_tokenizer(TINY_ROOT / TINY["dlm"])
    ends = end_token_ids(tokenizer)
    item = tiny_world_of("dlm").item("arc", "easy", 0)
    ids = torch.tensor([chat_prompt_ids(tokenizer, item["prompt"])])
    kwargs = dict(max_new_tokens=48, steps=48, alg="entropy", temperature=0.2, top_p=0.95)

    full_states = PartialStates(48, model.mask_token_id, ends)
    full = diffusion_generate(model, ids, tokens_hook=full_states, generator=torch.Generator().manual_seed(3),
                              **kwargs)
    recorded = full_states.signals_of(0)
    assert all(len(v) == 48 and v[-1] == 0.0 for v in recorded.values())
    stops = set()
    for rule in (StopRule("text_confidence", 0.9), StopRule("confidence", 0.9), StopRule("end_coverage", 0.6),
                 StopRule("text_confidence", 0.9, window=3)):
        offline = stop_step(rule, full.commit_step[0].tolist(), full.generated[0].tolist(), recorded, ends, 48)
        assert 1 <= offline < 48
        stops.add(offline)

        class Stop(Exception):
            pass

        seen, history = {}, []

        def hook(step, x, logits):
            if step is None:
                return
            state, drafts = online_state(x[0, -48:], logits[0, -48:], model.mask_token_id, ends)
            history.append(state)
            seen.update(steps=step + 1, canvas=x[0, -48:].clone(), drafts=drafts)
            if rule.stops(history, 48):
                raise Stop

        with pytest.raises(Stop):
            diffusion_generate(model, ids, tokens_hook=hook, generator=torch.Generator().manual_seed(3), **kwargs)
        assert seen["steps"] == offline
        committed = full.commit_step[0] < offline
        assert torch.equal(seen["canvas"] != model.mask_token_id, committed)
        assert torch.equal(seen["canvas"][committed], full.generated[0][committed])
        assert seen["drafts"] == full_states.drafts(0, offline)
    assert len(stops) > 1  # the rules read different signals: a test that would pass for one rule only is weak
