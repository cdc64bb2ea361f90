"""transformers' assisted generation with a draft length that holds (dlmkit/decoding/assisted.py),
on tiny random GPT-2s built here: the draft length changes the target calls as it should,
greedy output is the target's own, and the caller's models and random state are untouched."""

import copy
import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from dlmkit.decoding.assisted import assisted_generate
from dlmkit.decoding.spec_loop import CachedLM, ar_generate
from dlmkit.errors import UserError


def random_gpt2(seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=8, n_embd=16, n_layer=1, n_head=2, n_positions=64, bos_token_id=0,
                        eos_token_id=0, initializer_range=0.6)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def target():
    return random_gpt2(0)


@pytest.fixture(scope="module")
def assistant():
    return random_gpt2(1)


@pytest.mark.parametrize("gamma", [1, 4, 8])
def test_an_agreeing_assistant_takes_one_target_call_per_gamma_plus_one_tokens(target, gamma):
    # transformers 5 ignores a num_assistant_tokens passed to generate and stops drafts early below
    # confidence 0.4: the same target calls at every gamma. A fixed draft length gives ceil(n / (gamma + 1)).
    twin = copy.deepcopy(target)
    out = assisted_generate(target, twin, [0, 5], 24, gamma)
    assert len(out.tokens) == 24
    assert out.target_calls == math.ceil(24 / (gamma + 1))
    assert out.assistant_calls >= 24 * gamma // (gamma + 1)  # gamma drafts per round, not fewer
    # The target passed as its own assistant is copied, not counted twice.
    assert assisted_generate(target, target, [0, 5], 24, gamma).target_calls == out.target_calls


@pytest.mark.parametrize("gamma", [1, 3])
def test_greedy_output_is_the_targets_own_greedy_decoding(target, assistant, gamma):
    for prefix in ([0], [0, 5, 2], [3, 3, 1, 7, 6]):
        reference = ar_generate(CachedLM(target), prefix, 20).tokens
        out = assisted_generate(target, assistant, prefix, 20, gamma)
        assert out.tokens == reference
        assert out.target_calls <= 20 and out.assistant_calls > 0


def test_models_and_global_random_state_are_left_as_they_were(target, assistant):
    before = (target.generation_config.to_dict(), assistant.generation_config.to_dict())
    state = torch.get_rng_state()
    a = assisted_generate(target, assistant, [0, 1], 16, 3, temperature=1.0, seed=5)
    b = assisted_generate(target, assistant, [0, 1], 16, 3, temperature=1.0, seed=5)
    c = assisted_generate(target, assistant, [0, 1], 16, 3, temperature=1.0, seed=6)
    assert a == b and a.tokens != c.tokens and len(a.tokens) == 16  # EOS (id 0) does not stop it
    assert torch.equal(torch.get_rng_state(), state)
    assert (target.generation_config.to_dict(), assistant.generation_config.to_dict()) == before
    assert not target._forward_hooks and not assistant._forward_hooks
    stopped = assisted_generate(target, assistant, [0, 1], 16, 3, temperature=1.0, seed=5, eos_token_id=a.tokens[3])
    assert stopped.tokens[-1] == a.tokens[3] and len(stopped.tokens) <= 4


def test_bad_arguments_are_named(target, assistant):
    with pytest.raises(UserError, match="gamma"):
        assisted_generate(target, assistant, [0], 4, 0)
    with pytest.raises(UserError, match="empty"):
        assisted_generate(target, assistant, [], 4, 2)
