"""SpecDiff's MDLM drafter stays lossless for every T and gamma (issue #13; every cell of the tiny grid).

The drafter here is a stub MDLM whose draft positions copy each other: a masked draft
position copies the nearest unmasked draft position with probability COPY, otherwise it
draws from a base law. If a draft could be drawn conditioned on a draft to its right (a
random unmask order, T >= 2), the accept test at the earlier position would depend on a
later token and the emitted tokens would lean towards repeats. Both tests below fail on
the random-order drafter and pass on the left-to-right one."""

import math
from types import SimpleNamespace

import pytest
import torch
from scipy import stats
from transformers import GPT2Config, GPT2LMHeadModel

from dlmkit.decoding.drafters import MDLMDrafter
from dlmkit.decoding.spec_loop import CachedLM, speculative_generate
from dlmkit.experiments.specdiff.settings import PRESET_DEFAULTS

COPY = 0.9


class CopyingMDLM(torch.nn.Module):
    """An MDLM stand-in over `vocab` real ids + the mask (id vocab). Only the `window` canvas
    positions before the last `slack` (the drafts) are modelled: a masked one copies the
    nearest unmasked position of the window with probability COPY, else draws from `base`.
    The last `slack` positions must be masks at every call (the drafter's held slack)."""

    def __init__(self, vocab: int, window: int, base: torch.Tensor, model_length: int = 16, slack: int = 1,
                 next_only: bool = False):
        super().__init__()
        self.next_only = next_only  # copy only the next position, when it is known (else draw from base)
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # the drafter reads the device from a parameter
        self.vocab, self.window, self.base = vocab, window, base.double() / base.sum()
        self.slack = slack
        self.mask_id = vocab
        self.config = SimpleNamespace(model_length=model_length, time_conditioning=False)

    def forward(self, ids, sigma=None):
        batch, length = ids.shape
        assert bool((ids[:, length - self.slack:] == self.mask_id).all()), "the slack masks were revealed"
        ids = ids[:, :length - self.slack]
        start = ids.shape[1] - self.window
        logits = self.base.log().expand(batch, length, self.vocab).clone()
        known = ids[:, start:] != self.mask_id  # (batch, window)
        if bool(known.any()):
            pos = torch.arange(self.window, dtype=torch.float64)
            # distance from each draft position i to each known one j, ties broken to the left
            distance = (pos[:, None] - pos[None, :]).abs() + pos[None, :] * 1e-3
            if self.next_only:
                distance = torch.where(pos[None, :] == pos[:, None] + 1, distance, torch.inf)
            distance = torch.where(known[:, None, :], distance, torch.inf)
            source = distance.argmin(-1)  # (batch, window)
            copied = ids[:, start:].gather(1, source).clamp(max=self.vocab - 1)
            mix = (1 - COPY) * self.base + COPY * torch.nn.functional.one_hot(copied, self.vocab)
            has = torch.isfinite(distance).any(-1)[..., None]  # (batch, window, 1): a position with a source
            logits[:, start:start + self.window] = torch.where(has, mix.log(), logits[:, start:start + self.window])
        mask_logit = torch.full((batch, length, 1), -30.0, dtype=torch.float64)
        return torch.cat([logits, mask_logit], -1).float()


def uniform_target(vocab: int) -> GPT2LMHeadModel:
    """A causal LM whose next-token law is uniform everywhere (zero embeddings, tied head)."""
    config = GPT2Config(vocab_size=vocab, n_embd=8, n_layer=1, n_head=2, n_positions=32, bos_token_id=0,
                        eos_token_id=0)
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        model.transformer.wte.weight.zero_()
    return model


def seeded(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("steps,slack", [(1, 1), (2, 1), (4, 1), (2, 0)])
def test_copying_drafter_leaves_a_uniform_target_uniform(steps, slack):
    # Target: uniform over {0, 1}, so P(second emitted == first) = 1/2 exactly. Drafter: the
    # two draft positions copy each other with probability 0.9. With these seeds and 4000
    # generations the random-order drafter gave 0.489 (T=1, z=-1.4), 0.567 (T=2, z=8.5) and
    # 0.586 (T=4, z=10.9); the left-to-right one gives 0.489, 0.499 (z=-0.2) and 0.508 (z=1.0).
    n = 4000
    lm = CachedLM(uniform_target(2))
    drafter = MDLMDrafter(CopyingMDLM(2, window=2, base=torch.ones(2), slack=slack), steps, slack=slack)
    generator = seeded(100 + steps)
    same = accepted = 0
    for _ in range(n):
        out = speculative_generate(lm, drafter, [0], 2, gamma=2, temperature=1.0, generator=generator)
        same += out.tokens[0] == out.tokens[1]
        accepted += sum(out.accepted)
    z = (same / n - 0.5) / math.sqrt(0.25 / n)
    assert abs(z) < 3, f"P(out2 == out1) = {same / n:.4f}, z = {z:.1f}"
    assert accepted > n  # the drafts are used, not rejected wholesale


VOCAB = 2  # the smallest vocabulary puts the whole bias into few cells: the test has power


def fixed_target() -> GPT2LMHeadModel:
    """A small causal LM with a non-uniform two-step joint (a seeded random GPT-2)."""
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=32, initializer_range=0.3,
                        bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config).eval()


def exact_joint(model, prefix, temperature):
    """P(x1, x2 | prefix) under the target at `temperature` for all VOCAB**2 pairs, x1-major."""
    with torch.no_grad():
        first = torch.softmax(model(torch.tensor([prefix])).logits[0, -1].double() / temperature, -1)
        pairs = torch.tensor([prefix + [a] for a in range(VOCAB)])
        second = torch.softmax(model(pairs).logits[:, -1].double() / temperature, -1)
    return (first[:, None] * second).reshape(-1)


@pytest.mark.parametrize("steps,gamma", [(2, 2), (4, 2)])
def test_first_two_tokens_follow_the_targets_exact_joint(steps, gamma):
    # Joint (0,0) .395, (0,1) .331, (1,0) .231, (1,1) .043: x2 depends on x1. The random-order
    # drafter failed this with p = 2.6e-6 (T=2) and 1.4e-9 (T=4).
    prefix, n, temperature = [1, 0], 3000, 1.0
    model = fixed_target()
    joint = exact_joint(model, prefix, temperature)
    assert float(joint.max() / joint.min()) > 3  # a non-uniform target
    lm = CachedLM(model)
    drafter = MDLMDrafter(CopyingMDLM(VOCAB, window=gamma, base=torch.ones(VOCAB)), steps)
    generator = seeded(7 + steps)
    counts = torch.zeros(VOCAB * VOCAB, dtype=torch.float64)
    for _ in range(n):
        out = speculative_generate(lm, drafter, prefix, gamma, gamma, temperature, generator)
        counts[out.tokens[0] * VOCAB + out.tokens[1]] += 1
    assert (joint * n).min() > 5  # every cell is tested as it stands
    result = stats.chisquare(counts.numpy(), (joint * n).numpy())
    assert result.pvalue > 1e-3, result


def consecutive_equal_rate(gamma: int, steps: int, seed: int) -> tuple[float, float, int]:
    """(share of consecutive emitted tokens that are equal, share of ones, pairs) over generations of
    gamma tokens from a uniform binary target, drafted by the copying MDLM over gamma masks."""
    n = -(-4000 // (gamma - 1))  # about 4000 consecutive pairs whatever gamma
    lm = CachedLM(uniform_target(2))
    drafter = MDLMDrafter(CopyingMDLM(2, window=gamma, base=torch.ones(2), model_length=gamma + 8, next_only=True),
                          steps)
    generator = seeded(seed)
    equal = ones = 0
    for _ in range(n):
        tokens = speculative_generate(lm, drafter, [0], gamma, gamma=gamma, temperature=1.0, generator=generator).tokens
        equal += sum(a == b for a, b in zip(tokens, tokens[1:]))
        ones += sum(tokens)
    return equal / (n * (gamma - 1)), ones / (n * gamma), n * (gamma - 1)


@pytest.mark.parametrize("gamma,steps", [(g, t) for g in PRESET_DEFAULTS["tiny"]["gammas"]
                                         for t in PRESET_DEFAULTS["tiny"]["steps"]])
def test_every_cell_of_the_tiny_grid_emits_the_targets_law(gamma, steps):
    # Under a uniform binary target every emitted token is an independent fair bit, so the
    # indicators "token k equals token k+1" are independent fair bits too: a z-test is exact.
    # Each draft position copies the next one when that is already revealed, so a draft drawn
    # after a later one leans the output towards repeats. MDLM's random order fails every cell
    # with T >= 2 here (P(repeat) 0.548-0.577, z 6.0-9.7, these seeds); left to right, a draft
    # never sees the next one and the cells pass.
    equal, ones, pairs = consecutive_equal_rate(gamma, steps, seed=1000 * gamma + steps)
    z_equal = (equal - 0.5) / math.sqrt(0.25 / pairs)
    z_ones = (ones - 0.5) / math.sqrt(0.25 / (pairs * gamma / (gamma - 1)))
    assert abs(z_equal) < 3.5 and abs(z_ones) < 3.5, f"P(repeat) {equal:.4f} (z {z_equal:.1f}), P(1) {ones:.4f}"
