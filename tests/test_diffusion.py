"""Dream's diffusion sampler: token-for-token parity with the reference, the unmasking
schedule, permanence, randomness, hooks, left padding, commit steps and input errors."""

import functools
import json

import numpy as np
import pytest
import torch

from dlmkit.decoding.diffusion import (ALGS, diffusion_generate, sample_tokens, top_k_filter, top_p_filter,
                                       top_p_top_k_filter)
from dlmkit.errors import UserError
from dlmkit.models.dream import dream_config, load_dream, random_dream

MASK = 380
PROMPTS = [[5, 17, 42], [7, 3, 99, 12, 64, 8, 250], [31, 4, 160, 77, 2]]


@functools.lru_cache(maxsize=None)
def _tiny():
    # Large init so the random network has peaked, varied distributions.
    return random_dream(dream_config("tiny", initializer_range=0.25), seed=0)


@pytest.fixture
def tiny():
    return _tiny()


@functools.lru_cache(maxsize=None)
def _fixture_model(path):
    return load_dream(path)


def _generate(model, prompt, **kwargs):
    kwargs.setdefault("max_new_tokens", 12)
    kwargs.setdefault("steps", 6)
    return diffusion_generate(model, torch.tensor([prompt]), **kwargs)


class FixedLogits(torch.nn.Module):
    """A stand-in model whose logits are fixed random numbers: fast on long canvases."""

    mask_token_id = 15

    def __init__(self, vocab=16, seed=0):
        super().__init__()
        self.vocab, self.seed = vocab, seed

    def forward(self, x, attention_mask=None, position_ids=None):
        g = torch.Generator().manual_seed(self.seed)
        logits = torch.randn(x.shape[0], x.shape[1], self.vocab, generator=g)
        logits[..., self.mask_token_id] = -1e4  # a real Dream never proposes the mask
        return logits


def _expected_schedule(num_masked, steps, eps=1e-3):
    """Commits per step by the reference rule, in float32 as the reference computes it."""
    ts = np.linspace(1, eps, steps + 1, dtype=np.float32)
    counts = []
    for i in range(steps):
        k = num_masked if i == steps - 1 else int(np.float32(num_masked) * (np.float32(1) - ts[i + 1] / ts[i]))
        counts.append(k)
        num_masked -= k
    return counts


# --- parity with the reference implementation (shared fixture) -------------------------


@pytest.mark.parametrize("alg", ["entropy", "maskgit_plus", "topk_margin"])
def test_fixture_cases_token_for_token(fixtures_dir, alg):
    model = _fixture_model(fixtures_dir / "dream")
    data = json.loads((fixtures_dir / "dream" / "cases.json").read_text())
    assert data["meta"]["mask_token_id"] == model.mask_token_id
    cases = [c for c in data["cases"] if c["alg"] == alg]
    assert len(cases) == 27
    for case in cases:
        out = _generate(model, case["prompt"], max_new_tokens=case["max_new_tokens"], steps=case["steps"],
                        alg=alg, temperature=0.0, top_k=case["top_k"], top_p=case["top_p"], eps=1e-3)
        where = (alg, case["steps"], case["max_new_tokens"], case["top_k"], case["top_p"], case["prompt"])
        assert out.sequences[0].tolist() == case["sequence"], where
        assert out.generated[0].tolist() == case["generated"], where
        assert out.commit_step[0].tolist() == case["commit_step"], where


# --- the schedule -------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["maskgit_plus", "topk_margin", "entropy"])
def test_unmask_counts_per_step(tiny, alg):
    out = _generate(tiny, PROMPTS[0], max_new_tokens=20, steps=7, alg=alg, temperature=0.7,
                    generator=torch.Generator().manual_seed(1))
    per_step = torch.bincount(out.commit_step[0], minlength=7).tolist()
    assert per_step == _expected_schedule(20, 7)
    assert sum(per_step) == 20 and (out.generated != MASK).all()


def test_origin_unmasks_at_random_and_finishes(tiny):
    counts = set()
    for seed in range(4):
        out = _generate(tiny, PROMPTS[0], max_new_tokens=20, steps=5, alg="origin",
                        generator=torch.Generator().manual_seed(seed))
        assert (out.generated != MASK).all()
        assert out.commit_step.min() >= 0 and out.commit_step.max() <= 4
        counts.add(tuple(torch.bincount(out.commit_step[0], minlength=5).tolist()))
    assert len(counts) > 1  # the number committed per step is drawn, not fixed


def test_reference_schedule_for_the_paper_setting():
    # 512 masked positions, 128 steps: 47 committed after 12 steps, 127 after 32.
    model = FixedLogits()
    out = diffusion_generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=512, steps=128, alg="entropy")
    assert out.committed_by(12).sum().item() == 47
    assert out.committed_by(32).sum().item() == 127
    assert out.committed_by(128).all()


def test_more_steps_than_tokens(tiny):
    out = _generate(tiny, PROMPTS[0], max_new_tokens=4, steps=10)
    assert (out.generated != MASK).all() and out.commit_step.max().item() == 9


# --- permanence, determinism, randomness ----------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_committed_tokens_never_change(tiny, alg):
    out = _generate(tiny, PROMPTS[1], max_new_tokens=16, steps=8, alg=alg, temperature=1.0, top_p=0.9,
                    alg_temp=0.5, generator=torch.Generator().manual_seed(3), return_history=True)
    canvases = torch.stack(out.history)  # (steps, B, L)
    assert (canvases[:, 0, :7] == torch.tensor(PROMPTS[1])).all()
    for before, after in zip(canvases[:-1], canvases[1:]):
        was_filled = before != MASK
        assert (after[was_filled] == before[was_filled]).all()
    assert torch.equal(canvases[-1], out.sequences)


def test_commit_steps_agree_with_history(tiny):
    out = _generate(tiny, PROMPTS[2], max_new_tokens=16, steps=8, alg="entropy", return_history=True)
    generated = torch.stack(out.history)[:, 0, out.prompt_length:]  # (steps, N)
    first_filled = (generated != MASK).long().argmax(dim=0)
    assert out.commit_step[0].tolist() == first_filled.tolist()
    assert len(out.history) == 8


def test_temperature_zero_is_deterministic(tiny):
    a = _generate(tiny, PROMPTS[1], alg="entropy", top_p=0.95)
    b = _generate(tiny, PROMPTS[1], alg="entropy", top_p=0.95)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.commit_step, b.commit_step)


@pytest.mark.parametrize("alg", ["origin", "entropy"])
def test_seeded_sampling_is_reproducible(tiny, alg):
    def run(seed):
        return _generate(tiny, PROMPTS[1], max_new_tokens=16, steps=8, alg=alg, temperature=1.5, alg_temp=1.0,
                         generator=torch.Generator().manual_seed(seed))

    a, b, c = run(7), run(7), run(8)
    assert torch.equal(a.sequences, b.sequences) and torch.equal(a.commit_step, b.commit_step)
    assert not (torch.equal(a.sequences, c.sequences) and torch.equal(a.commit_step, c.commit_step))


# --- hooks --------------------------------------------------------------------------------------


def test_hooks_are_called_as_the_reference_does(tiny):
    calls = []

    def tokens_hook(step, x, logits):
        calls.append(("tokens", step, x.clone(), None if logits is None else tuple(logits.shape)))

    def logits_hook(step, x, logits):
        calls.append(("logits", step, x.clone(), tuple(logits.shape)))

    out = _generate(tiny, PROMPTS[0], max_new_tokens=6, steps=3, tokens_hook=tokens_hook, logits_hook=logits_hook)
    shape = (1, 9, 384)
    assert [(kind, step, s) for kind, step, _, s in calls] == [
        ("tokens", None, None),
        ("logits", 0, shape), ("tokens", 0, shape),
        ("logits", 1, shape), ("tokens", 1, shape),
        ("logits", 2, shape), ("tokens", 2, shape),
    ]
    assert (calls[0][2][0, 3:] == MASK).all()  # before the loop: the all-mask canvas
    assert torch.equal(calls[-1][2], out.sequences)  # after the last step: the answer


def test_logits_hook_can_steer_tokens(tiny):
    def force_token_9(step, x, logits):
        logits = logits.clone()
        logits[..., 9] = 1e4
        return logits

    out = _generate(tiny, PROMPTS[0], logits_hook=force_token_9)
    assert (out.generated == 9).all()


def test_tokens_hook_injection_before_step_zero(tiny):
    def inject(step, x, logits):
        if step is None:
            x = x.clone()
            x[0, 3 + 2] = 77  # generation position 2
            return x
        return None  # leave the canvas as it is

    out = _generate(tiny, PROMPTS[0], max_new_tokens=12, steps=6, tokens_hook=inject)
    assert out.generated[0, 2].item() == 77 and out.commit_step[0, 2].item() == -1
    assert (out.commit_step[0, [0, 1, *range(3, 12)]] >= 0).all()
    # The injected token counts as filled: 11 positions follow the schedule of 11.
    assert torch.bincount(out.commit_step[0, out.commit_step[0] >= 0], minlength=6).tolist() == \
        _expected_schedule(11, 6)


# --- batches with left padding --------------------------------------------------------------


def _left_pad(prompts, pad_id):
    width = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


@pytest.mark.parametrize("alg", ["entropy", "maskgit_plus", "topk_margin"])
def test_left_padded_batch_equals_one_prompt_at_a_time(tiny, alg):
    ids, mask = _left_pad(PROMPTS, tiny.pad_token_id)
    batch = diffusion_generate(tiny, ids, mask, max_new_tokens=10, steps=5, alg=alg, top_p=0.9)
    assert batch.prompt_length == 7 and batch.sequences.shape == (3, 17)
    for row, prompt in enumerate(PROMPTS):
        single = _generate(tiny, prompt, max_new_tokens=10, steps=5, alg=alg, top_p=0.9)
        assert batch.generated[row].tolist() == single.generated[0].tolist(), (alg, row)
        assert batch.commit_step[row].tolist() == single.commit_step[0].tolist(), (alg, row)
        assert batch.sequences[row, :7].tolist() == ids[row].tolist()  # prompt and padding untouched


@pytest.mark.parametrize("alg", ["entropy", "origin", "maskgit_plus"])
def test_sampled_batch_with_a_generator_per_row_equals_one_prompt_at_a_time(tiny, alg):
    """Temperature > 0: each row draws from its own generator what it would draw alone."""
    ids, mask = _left_pad(PROMPTS, tiny.pad_token_id)
    kwargs = dict(max_new_tokens=10, steps=5, alg=alg, temperature=0.7, top_p=0.95)
    generators = [torch.Generator().manual_seed(100 + row) for row in range(len(PROMPTS))]
    batch = diffusion_generate(tiny, ids, mask, generator=generators, **kwargs)
    for row, prompt in enumerate(PROMPTS):
        single = _generate(tiny, prompt, generator=torch.Generator().manual_seed(100 + row), **kwargs)
        assert batch.generated[row].tolist() == single.generated[0].tolist(), (alg, row)
        assert batch.commit_step[row].tolist() == single.commit_step[0].tolist(), (alg, row)
    shared = diffusion_generate(tiny, ids, mask, generator=torch.Generator().manual_seed(100), **kwargs)
    assert shared.generated.tolist() != batch.generated.tolist()  # one shared generator draws otherwise
    with pytest.raises(UserError, match="one per row"):
        diffusion_generate(tiny, ids, mask, generator=generators[:2], **kwargs)


def test_equal_confidences_break_alike_in_a_padded_batch(tiny):
    """top_k=1 leaves one token everywhere: every masked position has the same confidence, and which
    ones commit is decided by tie-breaking, which must not move with the row's left padding."""
    ids, mask = _left_pad(PROMPTS, tiny.pad_token_id)
    kwargs = dict(max_new_tokens=10, steps=2, alg="entropy", temperature=0.7, top_k=1)
    batch = diffusion_generate(tiny, ids, mask, generator=[torch.Generator().manual_seed(r) for r in range(3)],
                               **kwargs)
    for row, prompt in enumerate(PROMPTS):
        single = _generate(tiny, prompt, generator=torch.Generator().manual_seed(row), **kwargs)
        assert batch.commit_step[row].tolist() == single.commit_step[0].tolist(), row
        assert batch.generated[row].tolist() == single.generated[0].tolist(), row


def test_left_padding_passes_mask_and_positions_like_the_reference():
    seen = []

    class Spy(FixedLogits):
        def forward(self, x, attention_mask=None, position_ids=None):
            seen.append((attention_mask, position_ids))
            return super().forward(x)

    ids, mask = _left_pad([[1, 2], [3, 4, 5, 6]], pad_id=0)
    diffusion_generate(Spy(), ids, mask, max_new_tokens=3, steps=2)
    attention_mask, position_ids = seen[0]
    assert attention_mask.tolist() == [[0, 0, 1, 1, 1, 1, 1], [1] * 7]
    assert position_ids.tolist() == [[1, 1, 0, 1, 2, 3, 4], [0, 1, 2, 3, 4, 5, 6]]  # pads get 1, as the reference
    diffusion_generate(Spy(), ids[1:], mask[1:], max_new_tokens=3, steps=2)
    assert seen[-1] == (None, None)  # no padding: no mask, default positions


def test_padding_changes_the_answer_without_a_mask(tiny):
    ids, mask = _left_pad(PROMPTS, tiny.pad_token_id)
    with_mask = diffusion_generate(tiny, ids, mask, max_new_tokens=10, steps=5)
    without = diffusion_generate(tiny, ids, max_new_tokens=10, steps=5)
    assert not torch.equal(with_mask.generated[0], without.generated[0])  # so the padded test above means something


# --- sampling helpers -------------------------------------------------------------------------


def test_filters_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    low = torch.finfo(logits.dtype).min
    assert (top_p_filter(logits, 0.7)[0] > low).tolist() == [True, True, False, False]
    assert (top_p_filter(logits, 0.4)[0] > low).tolist() == [True, False, False, False]
    assert (top_k_filter(logits, 3)[0] > low).tolist() == [True, True, True, False]


def _nucleus_cases():
    g = torch.Generator().manual_seed(0)
    for vocab in (1207, 60, 51):
        for scale in (0.1, 1.0, 3.0, 10.0, 40.0):  # flat (long nucleus, top_k decides) to peaked (nucleus of 1)
            logits = torch.randn(32, vocab, generator=g) * scale
            yield logits
            yield logits.round()  # ties, some at the cut
    minus_inf = torch.randn(8, 60, generator=g)
    minus_inf[:, 5:] = -torch.inf  # fewer finite logits than top_k
    yield minus_inf
    # cumulative mass exactly at top_p = 0.95 and 0.5, where float rounding decides
    yield torch.log(torch.tensor([[0.5, 0.45, 0.03, 0.02] + [0.0] * 56]).clamp_min(1e-30))
    yield torch.log(torch.tensor([[0.25, 0.25, 0.25, 0.25] + [0.0] * 56]).clamp_min(1e-30))


@pytest.mark.parametrize("top_p, top_k", [(0.95, 50), (0.5, 3), (0.9999, 50), (0.01, 50), (0.95, 1)])
def test_one_pass_nucleus_keeps_what_the_two_filters_keep(top_p, top_k):
    for logits in _nucleus_cases():
        for dtype in (torch.float32, torch.float64, torch.bfloat16):
            x = logits.to(dtype)
            assert torch.equal(top_p_top_k_filter(x, top_p, top_k), top_k_filter(top_p_filter(x, top_p), top_k))


def test_one_pass_nucleus_is_not_trivially_the_whole_row():
    # the fast path must cut: a peaked row keeps one token, a flat one top_k
    low = torch.finfo(torch.float32).min
    peaked, flat = torch.tensor([[9.0, 1.0, 0.0, 0.0]]), torch.zeros(1, 60)
    assert int((top_p_top_k_filter(peaked, 0.95, 2) > low).sum()) == 1
    assert int((top_p_top_k_filter(flat + torch.arange(60) * 1e-3, 0.95, 50) > low).sum()) == 50


def test_confidences_at_temperature_zero():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    conf, tok = sample_tokens(logits)
    assert tok.item() == 0 and conf.item() == pytest.approx(0.5)
    conf, _ = sample_tokens(logits, confidence="margin")
    assert conf.item() == pytest.approx(0.2)
    conf, _ = sample_tokens(logits, confidence="neg_entropy")
    assert conf.item() == pytest.approx((probs * probs.log()).sum().item(), abs=1e-6)
    conf, _ = sample_tokens(logits, top_k=2, confidence="margin")  # filters act at temperature 0
    assert conf.item() == pytest.approx(0.5 / 0.8 - 0.3 / 0.8)


# --- one-line errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(steps=0), "steps must be"),
    (dict(max_new_tokens=0), "max_new_tokens must be"),
    (dict(alg="greedy"), "unknown diffusion alg"),
    (dict(top_p=1.5), "top_p"),
    (dict(top_k=0), "top_k"),
    (dict(temperature=-1.0), "temperature"),
])
def test_bad_arguments_raise_one_line_errors(tiny, kwargs, fragment):
    with pytest.raises(UserError) as info:
        _generate(tiny, PROMPTS[0], **kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_model_without_mask_token():
    model = FixedLogits()
    model.mask_token_id = None
    with pytest.raises(UserError, match="mask_token_id"):
        diffusion_generate(model, torch.tensor([[1, 2]]), max_new_tokens=4, steps=2)
