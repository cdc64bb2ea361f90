"""The speculative-sampling primitive on hand-built distributions (as HF's and vLLM's
rejection-sampler tests do), plus chi-square losslessness on a small vocabulary."""

import pytest
import torch
from scipy import stats

from dlmkit.decoding.speculative import (PAD, greedy_verify, probs_from_logits, residual_distribution,
                                         sample_from, speculative_verify)


def _one_hot(ids, vocab):
    return torch.nn.functional.one_hot(torch.tensor(ids), vocab).double()


def test_draft_equal_to_target_is_always_accepted_and_gets_a_bonus():
    vocab, gamma = 6, 4
    probs = torch.softmax(torch.randn(3, gamma + 1, vocab, generator=torch.Generator().manual_seed(0)), -1)
    drafts = torch.tensor([[0, 1, 2, 3], [5, 5, 5, 5], [2, 0, 4, 1]])
    verdict = speculative_verify(drafts, probs[:, :gamma], probs, torch.Generator().manual_seed(1))
    assert verdict.accepted.tolist() == [gamma] * 3
    assert verdict.n_new.tolist() == [gamma + 1] * 3
    assert torch.equal(verdict.tokens[:, :gamma], drafts)
    assert (verdict.tokens[:, gamma] >= 0).all()


def test_zero_target_probability_rejects_and_resamples_from_the_residual():
    # p puts no mass on the draft's token 1: rejection is certain; the residual max(0, p - q)
    # lives only where p exceeds q, i.e. on token 3.
    q = torch.tensor([[[0.0, 1.0, 0.0, 0.0]]]).double()
    p = torch.tensor([[[0.5, 0.0, 0.0, 0.5]]]).double()
    q2 = torch.tensor([[[0.6, 0.4, 0.0, 0.0]]]).double()
    verdict = speculative_verify(torch.tensor([[1]]), q2, p)
    assert verdict.accepted.tolist() == [0]
    assert verdict.tokens.tolist() == [[3, PAD]]
    assert verdict.n_new.tolist() == [1]
    assert torch.allclose(residual_distribution(p, q), torch.tensor([[[0.5, 0.0, 0.0, 0.5]]]).double())


def test_rejection_in_the_middle_pads_the_rest():
    vocab = 4
    drafts = torch.tensor([[0, 1, 2]])
    q = _one_hot([[0, 1, 2]], vocab)
    p = torch.cat([_one_hot([[0, 1]], vocab), _one_hot([[3, 3]], vocab)], dim=1)  # third draft has p = 0
    verdict = speculative_verify(drafts, q, p)
    assert verdict.accepted.tolist() == [2]
    assert verdict.tokens.tolist() == [[0, 1, 3, PAD]]
    assert verdict.n_new.tolist() == [3]


def test_all_accepted_without_bonus_emits_only_the_drafts():
    drafts = torch.tensor([[2, 2]])
    q = _one_hot([[2, 2]], 3)
    verdict = speculative_verify(drafts, q, q.clone())
    assert verdict.tokens.tolist() == [[2, 2, PAD]] and verdict.n_new.tolist() == [2]


def test_shape_and_vocab_mismatch_are_named():
    with pytest.raises(ValueError, match="vocabularies differ"):
        speculative_verify(torch.tensor([[0]]), torch.ones(1, 1, 4) / 4, torch.ones(1, 1, 5) / 5)
    with pytest.raises(ValueError, match="shapes disagree"):
        speculative_verify(torch.tensor([[0, 1]]), torch.ones(1, 1, 4) / 4, torch.ones(1, 2, 4) / 4)


def test_greedy_verify_accepts_while_the_draft_is_the_argmax():
    logits = torch.tensor([[[0.0, 5, 0, 0], [0, 0, 5, 0], [5.0, 0, 0, 0], [0, 0, 0, 5]]])
    assert greedy_verify(torch.tensor([[1, 2, 0]]), logits).tokens.tolist() == [[1, 2, 0, 3]]
    assert greedy_verify(torch.tensor([[1, 3, 0]]), logits).tokens.tolist() == [[1, 2, PAD, PAD]]
    assert greedy_verify(torch.tensor([[0, 2, 0]]), logits).tokens.tolist() == [[1, PAD, PAD, PAD]]
    no_bonus = greedy_verify(torch.tensor([[1, 2, 0]]), logits[:, :3])
    assert no_bonus.tokens.tolist() == [[1, 2, 0, PAD]] and no_bonus.n_new.tolist() == [3]


def test_inverse_cdf_sampling_hits_the_right_bins():
    probs = torch.tensor([0.2, 0.0, 0.5, 0.3]).double().expand(5, 4)
    u = torch.tensor([0.0, 0.19, 0.2, 0.69, 0.999]).double()
    assert sample_from(probs, u).tolist() == [0, 0, 2, 2, 3]


def test_seeded_determinism():
    g = torch.Generator().manual_seed(0)
    q = torch.softmax(torch.randn(64, 3, 7, generator=g), -1)
    p = torch.softmax(torch.randn(64, 4, 7, generator=g), -1)
    drafts = sample_from(q, torch.rand(64, 3, generator=g, dtype=torch.float64))
    a = speculative_verify(drafts, q, p, torch.Generator().manual_seed(5))
    b = speculative_verify(drafts, q, p, torch.Generator().manual_seed(5))
    assert torch.equal(a.tokens, b.tokens)


def _chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    keep = probs > 0
    assert counts[~keep].sum() == 0, "a token with zero target probability was emitted"
    expected = probs[keep] / probs[keep].sum() * counts.sum()
    return stats.chisquare(counts[keep].numpy(), expected.numpy()).pvalue


@pytest.mark.parametrize("seed", [0, 1])
def test_every_emitted_position_follows_the_target_distribution(seed):
    """1e5 rounds of a 3-token draft from q against p on 6 ids: the first emitted token follows
    p_1, and the token after two accepted drafts (a resample or an accept) follows p_3. A
    broken residual (e.g. resampling from p, or from q) fails at these sample sizes."""
    n, vocab, gamma = 100_000, 6, 3
    g = torch.Generator().manual_seed(100 + seed)
    q = torch.softmax(2 * torch.randn(gamma, vocab, generator=g), -1).double()
    p = torch.softmax(2 * torch.randn(gamma + 1, vocab, generator=g), -1).double()
    p[0, 4] = 0.0  # a token the target never emits but the drafter proposes
    p[0] /= p[0].sum()
    drafts = sample_from(q.expand(n, -1, -1), torch.rand(n, gamma, generator=g, dtype=torch.float64))
    verdict = speculative_verify(drafts, q.expand(n, -1, -1), p.expand(n, -1, -1), g)
    first = torch.bincount(verdict.tokens[:, 0], minlength=vocab).double()
    assert _chi_square_p(first, p[0]) > 1e-3
    # Positions are independent here, so given two accepted tokens the third emitted token
    # must follow p_3 (= p[2]) whether it was accepted or resampled.
    reached = verdict.n_new >= 3
    third = torch.bincount(verdict.tokens[reached, 2], minlength=vocab).double()
    assert _chi_square_p(third, p[2]) > 1e-3
    # The acceptance rate of the first draft is sum min(p, q).
    expected_rate = torch.minimum(p[0], q[0]).sum().item()
    assert abs((verdict.accepted >= 1).double().mean().item() - expected_rate) < 0.01


def test_chi_square_catches_a_wrong_residual():
    """The test above has power: resampling rejections from p itself (a classic bug) is detected."""
    n, vocab = 100_000, 6
    g = torch.Generator().manual_seed(7)
    q = torch.softmax(2 * torch.randn(1, vocab, generator=g), -1).double()
    p = torch.softmax(2 * torch.randn(1, vocab, generator=g), -1).double()
    drafts = sample_from(q.expand(n, -1, -1), torch.rand(n, 1, generator=g, dtype=torch.float64))
    r = torch.rand(n, generator=g, dtype=torch.float64)
    accept = r * q[0, drafts[:, 0]] <= p[0, drafts[:, 0]]
    wrong = torch.where(accept, drafts[:, 0], sample_from(p.expand(n, -1), torch.rand(n, generator=g, dtype=torch.float64)))
    assert _chi_square_p(torch.bincount(wrong, minlength=vocab).double(), p[0]) < 1e-6


def test_probs_from_logits_refuses_temperature_zero():
    with pytest.raises(ValueError, match="greedy_verify"):
        probs_from_logits(torch.zeros(3), 0.0)
    assert torch.allclose(probs_from_logits(torch.tensor([0.0, 0.0]), 2.0), torch.tensor([0.5, 0.5]).double())
