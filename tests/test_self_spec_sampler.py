"""The self-speculative sampler: cosine windows, exact NFE, losslessness at the level of the
sampler (windows in a random order, accept/resample, re-masking), not just the primitive."""

import math
from dataclasses import dataclass

import pytest
import torch
from scipy import stats

from dlmkit.decoding.self_spec_sampler import (calibrate_dtau, self_spec_sample, steps_if_all_accepted,
                                               window_size)
from dlmkit.models.mdlm import MDLM, MDLMConfig
from dlmkit.models.self_spec import SelfSpecConfig, SelfSpecMDLM

VOCAB, LENGTH = 3, 3  # tokens 0..2, the mask is 3
MASK = VOCAB


@dataclass
class StubDraft:
    ids: torch.Tensor
    logits: torch.Tensor


class JointModel:
    """A known joint P over V^L. The target is P's exact conditional in the sampler's order
    (given the canvas and the drafts before it); the draft is a deliberately wrong factorized
    guess, so many drafts are rejected. Sampling must still return P."""

    training = False

    def __init__(self, joint: torch.Tensor, draft_bias: float = 3.0, perfect: bool = False):
        self.joint = joint.double()  # (V,) * L
        self.mask_id = MASK
        self.draft_bias = draft_bias
        self.perfect = perfect  # target == draft
        self._cache = {}

    def eval(self):
        return self

    def conditional(self, known: dict[int, int], position: int) -> torch.Tensor:
        key = (tuple(sorted(known.items())), position)
        if key not in self._cache:
            self._cache[key] = self._conditional(known, position)
        return self._cache[key]

    def _conditional(self, known: dict[int, int], position: int) -> torch.Tensor:
        index = tuple(known.get(p, slice(None)) for p in range(LENGTH))
        table = self.joint[index]  # remaining free axes, in position order
        free = [p for p in range(LENGTH) if p not in known]
        others = [i for i, p in enumerate(free) if p != position]
        marginal = table.sum(dim=others) if others else table  # sum(dim=[]) would sum everything
        return marginal / marginal.sum()

    def _draft_probs(self, known, position):
        exact = self.conditional(known, position)
        wrong = exact * torch.tensor([self.draft_bias, 1.0, 1.0 / self.draft_bias], dtype=torch.float64)
        return wrong / wrong.sum()

    def _logits(self, probs):
        return torch.cat([probs.log(), torch.tensor([-math.inf], dtype=torch.float64)])

    def draft(self, ids):
        logits = torch.zeros(*ids.shape, VOCAB + 1, dtype=torch.float64)
        for b, row in enumerate(ids.tolist()):
            known = {p: t for p, t in enumerate(row) if t != MASK}
            for p in range(LENGTH):
                probs = self._draft_probs(known, p) if p not in known else torch.eye(VOCAB, dtype=torch.float64)[row[p]]
                logits[b, p] = self._logits(probs)
        return StubDraft(ids=ids, logits=logits)

    def target_logits(self, draft, order, tokens, valid):
        out = torch.zeros(*order.shape, VOCAB + 1, dtype=torch.float64)
        for b in range(order.shape[0]):
            known = {p: t for p, t in enumerate(draft.ids[b].tolist()) if t != MASK}
            for j in range(order.shape[1]):
                if not valid[b, j]:
                    continue
                position = int(order[b, j])
                out[b, j] = draft.logits[b, position] if self.perfect else self._logits(
                    self.conditional(known, position))
                known[position] = int(tokens[b, j])
        return out


def random_joint(seed: int) -> torch.Tensor:
    """A joint over V^L with no tiny cells (every cell is tested) and real dependencies."""
    gen = torch.Generator().manual_seed(seed)
    joint = (torch.rand(VOCAB ** LENGTH, generator=gen, dtype=torch.float64) + 0.5) ** 3
    return (joint / joint.sum()).reshape((VOCAB,) * LENGTH)


def test_window_schedule_covers_the_canvas_and_widens():
    for total, dtau in [(128, 0.05), (128, 0.2), (1024, 0.03), (7, 1.0)]:
        masked, windows = total, []
        while masked:
            windows.append(window_size(masked, total, dtau))
            masked -= windows[-1]
        assert sum(windows) == total and min(windows) >= 1
        assert len(windows) == steps_if_all_accepted(total, dtau)
        assert windows[0] <= windows[len(windows) // 2]  # small first: little is known yet
    assert window_size(10, 128, 1.0) == 10  # dtau reaching tau = 1 speculates everything left
    assert steps_if_all_accepted(128, 1e-4) == 128  # one position per step at the finest


@pytest.mark.parametrize("dtau, n", [(1.0, 2000), (0.4, 1500)])
def test_sampler_reproduces_the_target_joint_chi_square(dtau, n):
    joint = random_joint(0)
    model = JointModel(joint)
    canvas = torch.full((n, LENGTH), MASK)
    out = self_spec_sample(model, canvas, dtau, generator=torch.Generator().manual_seed(1))
    assert not bool((out.tokens == MASK).any())
    assert int(out.accepted.sum()) < int(out.drafted.sum())  # the wrong draft is really rejected
    counts = torch.zeros(VOCAB ** LENGTH)
    flat = (out.tokens * torch.tensor([VOCAB ** 2, VOCAB, 1])).sum(1)
    counts.scatter_add_(0, flat, torch.ones(n))
    expected = joint.reshape(-1) * n
    assert float(expected.min()) > 5
    _, p_value = stats.chisquare(counts.numpy(), expected.numpy())
    assert p_value > 1e-3, p_value
    # A draft-only sampler from the same wrong draft is far off: the test can fail.
    wrong = self_spec_sample(model, canvas[:1000], dtau, generator=torch.Generator().manual_seed(1), verify=False)
    wrong_counts = torch.zeros(VOCAB ** LENGTH).scatter_add_(0, (wrong.tokens * torch.tensor([9, 3, 1])).sum(1),
                                                             torch.ones(1000))
    assert stats.chisquare(wrong_counts.numpy(), (joint.reshape(-1) * 1000).numpy())[1] < 1e-6


def test_one_step_first_token_in_sigma_order_follows_the_target():
    """One step over the whole canvas: whatever is accepted, the token revealed first in the
    order (at a uniformly random position) is distributed as the target's first conditional."""
    joint = random_joint(3)
    model = JointModel(joint)
    n = 2000
    canvas = torch.full((n, LENGTH), MASK)
    out = self_spec_sample(model, canvas, 1.0, generator=torch.Generator().manual_seed(2), max_steps=1)
    assert bool((out.tokens == MASK).any())  # rejections left positions masked after the one step
    first_position = (out.reveal_rank == 0).long().argmax(1)
    first_token = out.tokens.gather(1, first_position[:, None]).squeeze(1)
    for position in range(LENGTH):
        rows = first_position == position
        counts = torch.bincount(first_token[rows], minlength=VOCAB).double()
        expected = model.conditional({}, position) * counts.sum()
        assert stats.chisquare(counts.numpy(), expected.numpy())[1] > 1e-3
    share = torch.bincount(first_position, minlength=LENGTH).double() / n  # sigma is uniform
    assert torch.allclose(share, torch.full((LENGTH,), 1 / LENGTH, dtype=torch.float64), atol=0.03)


def test_perfect_target_accepts_every_draft():
    joint = random_joint(1)
    model = JointModel(joint, perfect=True)
    out = self_spec_sample(model, torch.full((200, LENGTH), MASK), 1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.accepted, out.drafted) and bool((out.nfe == 1).all())  # one window, all accepted


def tiny_self_spec(seed=0):
    torch.manual_seed(seed)
    mdlm = MDLM(MDLMConfig(vocab_size=17, model_length=24, hidden_dim=32, cond_dim=8, n_blocks=1, n_heads=2,
                           dropout=0.0))
    with torch.no_grad():
        mdlm.backbone.output_layer.linear.weight.normal_(0, 0.5)
    return SelfSpecMDLM(mdlm, SelfSpecConfig.for_backbone(mdlm, dropout=0.0))


def test_untrained_model_target_equals_draft_so_all_accepted_and_nfe_is_the_schedule():
    model = tiny_self_spec()
    canvas = torch.full((5, 24), model.mask_id)
    out = self_spec_sample(model, canvas, 0.2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.accepted, out.drafted)
    assert bool((out.nfe == steps_if_all_accepted(24, 0.2)).all())
    assert torch.equal(out.causal_passes, out.nfe)
    assert all(len(steps) == int(n) and sum(steps) == 24 for steps, n in zip(out.revealed_per_step, out.nfe))


def test_trained_like_target_counts_nfe_exactly_and_rows_do_not_depend_on_the_batch():
    model = tiny_self_spec()
    with torch.no_grad():
        model.causal.out_proj.weight.normal_(0, 0.3)  # target != draft: rejections happen
    canvas = torch.full((4, 24), model.mask_id)
    canvas[:, :3] = torch.tensor([1, 2, 3])  # a fixed prefix stays as it is
    gens = [torch.Generator().manual_seed(10 + i) for i in range(4)]
    calls = []
    real_draft = model.draft
    model.draft = lambda ids: calls.append(ids.shape[0]) or real_draft(ids)
    out = self_spec_sample(model, canvas, 0.5, generator=gens)
    assert torch.equal(out.tokens[:, :3], canvas[:, :3]) and not bool((out.tokens == model.mask_id).any())
    assert int(out.accepted.sum()) < int(out.drafted.sum())
    assert sum(calls) == int(out.nfe.sum())  # every row's NFE is a backbone pass it really had
    assert all(sum(steps) == 21 and len(steps) == int(n) for steps, n in zip(out.revealed_per_step, out.nfe))
    alone = self_spec_sample(model, canvas[2:3], 0.5, generator=[torch.Generator().manual_seed(12)])
    assert torch.equal(alone.tokens[0], out.tokens[2]) and int(alone.nfe[0]) == int(out.nfe[2])


def test_calibration_meets_a_budget_and_says_when_it_cannot():
    model = tiny_self_spec()
    canvas = torch.full((2, 24), model.mask_id)
    found = calibrate_dtau(model, canvas, 8, iterations=6)
    assert found["reachable"] and abs(found["nfe"] - 8) <= 1
    assert calibrate_dtau(model, canvas, 0.5)["reachable"] is False  # even dtau = 1 takes one step


def test_bad_arguments_are_user_errors():
    from dlmkit.errors import UserError

    model = tiny_self_spec()
    with pytest.raises(UserError, match="dtau"):
        self_spec_sample(model, torch.full((1, 4), model.mask_id), 0.0)
    with pytest.raises(UserError, match="generators"):
        self_spec_sample(model, torch.full((2, 4), model.mask_id), 0.5, generator=[torch.Generator()])
