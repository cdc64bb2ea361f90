"""The speculative loop on tiny random models: KV-cache rollback, hand-built drafters,
greedy equality with the target's own decoding, chi-square losslessness of whole
generations against the target's exact marginals (enumerated), seeded determinism."""

import pytest
import torch
from scipy import stats
from transformers import GPT2Config, GPT2LMHeadModel

from dlmkit.decoding.drafters import ARDrafter, Draft, MDLMDrafter
from dlmkit.decoding.spec_loop import CachedLM, align_vocab, ar_generate, speculative_generate
from dlmkit.errors import UserError
from dlmkit.models.mdlm import MDLM, MDLMConfig

VOCAB = 8  # the GPT-2s' vocabulary; the MDLM adds the mask as id 8


def random_gpt2(seed: int, std: float = 0.6, layers: int = 1) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=layers, n_head=2, n_positions=64, bos_token_id=0,
                        eos_token_id=0, initializer_range=std, attn_pdrop=0, embd_pdrop=0, resid_pdrop=0)
    return GPT2LMHeadModel(config).eval()


def random_mdlm(seed: int) -> MDLM:
    model = MDLM(MDLMConfig(vocab_size=VOCAB + 1, model_length=16, hidden_dim=16, cond_dim=8, n_blocks=1,
                            n_heads=2, dropout=0.0))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.1 if "output_layer.linear" in name else 0.3))
    return model.eval()


def seeded(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def target():
    return random_gpt2(0)


@pytest.fixture(scope="module")
def drafter():
    return random_gpt2(1)


@pytest.fixture(scope="module")
def mdlm():
    return random_mdlm(2)


# --------------------------------------------------------------------------- the cache


def test_rollback_after_a_rejection_gives_the_logits_of_a_fresh_forward(target):
    lm = CachedLM(random_gpt2(3, layers=2))
    prefix, drafts = [0, 3, 5, 1], [2, 2, 7, 4]
    lm.logits(prefix + drafts, len(drafts) + 1)  # a round that scored four drafts
    assert lm.cache.get_seq_length() == 8
    # Two accepted, the third rejected and resampled as 6: the next round's sequence.
    after = prefix + drafts[:2] + [6] + [1, 3]
    cached = lm.logits(after, 3)
    assert lm.cache.get_seq_length() == len(after) and lm.fed == after
    with torch.no_grad():
        fresh = lm.model(torch.tensor([after])).logits[0, -3:]
    torch.testing.assert_close(cached, fresh, atol=1e-5, rtol=1e-5)
    # An explicit rollback drops the positions too.
    lm.rollback(5)
    assert lm.cache.get_seq_length() == 5 and lm.fed == after[:5]
    torch.testing.assert_close(lm.logits(after, 1), fresh[-1:], atol=1e-5, rtol=1e-5)


def test_ar_drafter_cache_rolls_back_to_the_accepted_prefix(drafter):
    ar = ARDrafter(drafter)
    ar.draft([0, 1, 2], 4, 0, None)
    assert ar.lm.fed == [0, 1, 2] + ar.draft([0, 1, 2], 4, 0, None).tokens[:3]
    ar.draft([0, 1, 2, 5], 2, 0, None)  # a different token after the prefix: the cache is cut back
    assert ar.lm.fed[:4] == [0, 1, 2, 5] and len(ar.lm.fed) == 5


# --------------------------------------------------------------------------- hand-built drafters


class Scripted:
    """A drafter that proposes whatever `choose(sequence, g)` says, with a point-mass q."""

    def __init__(self, choose):
        self.choose = choose

    def reset(self):
        pass

    def draft(self, sequence, gamma, temperature, generator):
        tokens = self.choose(sequence, gamma)
        probs = None if temperature == 0 else torch.nn.functional.one_hot(torch.tensor(tokens), VOCAB).double()
        return Draft(tokens, probs, nfe=1)


def test_a_perfect_drafter_is_always_accepted_and_earns_bonus_tokens(target):
    greedy = ar_generate(CachedLM(target), [0, 4], 12).tokens

    def oracle(sequence, gamma):
        start = len(sequence) - 2
        return greedy[start:start + gamma]

    out = speculative_generate(CachedLM(target), Scripted(oracle), [0, 4], 12, gamma=3)
    assert out.tokens == greedy
    assert out.accepted == [3, 3, 3] and out.target_calls == 3  # 4 tokens per round: 3 drafts + bonus


def test_a_hopeless_drafter_still_gives_the_targets_output_one_token_per_call(target):
    greedy = ar_generate(CachedLM(target), [0, 4], 10).tokens

    def wrong(sequence, gamma):
        start = len(sequence) - 2
        return [(greedy[start] + 1) % VOCAB] * gamma

    out = speculative_generate(CachedLM(target), Scripted(wrong), [0, 4], 10, gamma=4)
    assert out.tokens == greedy
    assert out.accepted == [0] * 10 and out.target_calls == 10
    assert out.drafted == 7 * 4 + 3 + 2 + 1  # g = min(gamma, tokens still wanted)


def test_sampled_draft_with_zero_target_probability_is_never_kept():
    # A target that never emits token 7: a hook on the head pushes its logit to -1e9.
    model = random_gpt2(4)
    model.lm_head.register_forward_hook(lambda module, args, out: out.index_fill(-1, torch.tensor([7]), -1e9))
    lm = CachedLM(model)
    p7 = torch.softmax(lm.logits([0, 1], 1)[0].double(), -1)[7]
    assert p7 < 1e-6
    out = speculative_generate(CachedLM(model), Scripted(lambda s, g: [7] * g), [0, 1], 6, gamma=2, temperature=1.0,
                               generator=seeded(0))
    assert 7 not in out.tokens and sum(out.accepted) == 0


def test_vocab_alignment_slices_the_mask_and_refuses_mass_beyond_the_target():
    q = torch.tensor([[0.5, 0.5, 0.0]]).double()
    assert align_vocab(q, 2).tolist() == [[0.5, 0.5]]
    assert align_vocab(q, 4).shape[-1] == 4
    with pytest.raises(UserError, match="shares a tokenizer|share a tokenizer"):
        align_vocab(torch.tensor([[0.5, 0.25, 0.25]]).double(), 2)


def test_bad_arguments_are_named(target, drafter):
    with pytest.raises(UserError, match="empty"):
        ar_generate(CachedLM(target), [], 4)
    with pytest.raises(UserError, match="context"):
        ar_generate(CachedLM(target), [0] * 60, 10)
    with pytest.raises(UserError, match="gamma"):
        speculative_generate(CachedLM(target), ARDrafter(drafter), [0], 4, gamma=0)
    with pytest.raises(UserError, match="no room"):
        MDLMDrafter(random_mdlm(0), 2).draft([0, 1], 16, 1.0, None)
    mdlm = random_mdlm(0)
    assert mdlm.config.model_length == 16
    with pytest.raises(UserError, match="1 slack mask.*no room"):  # 15 drafts + the slack fill the canvas
        MDLMDrafter(mdlm, 2).draft([0, 1], 15, 1.0, None)
    assert len(MDLMDrafter(mdlm, 2, slack=0).draft([0, 1], 15, 1.0, seeded(0)).tokens) == 15
    with pytest.raises(UserError, match="slack"):
        MDLMDrafter(mdlm, 2, slack=-1)


# --------------------------------------------------------------------------- greedy equality


@pytest.mark.parametrize("gamma", [1, 3, 6])
def test_greedy_speculative_output_equals_target_greedy_for_both_drafters(target, drafter, mdlm, gamma):
    for prefix in ([0], [0, 5, 2], [3, 3, 1, 7, 6]):
        reference = ar_generate(CachedLM(target), prefix, 20).tokens
        sd = speculative_generate(CachedLM(target), ARDrafter(drafter), prefix, 20, gamma)
        spec = speculative_generate(CachedLM(target), MDLMDrafter(mdlm, 2), prefix, 20, gamma, generator=seeded(1))
        assert sd.tokens == reference and spec.tokens == reference
        assert sd.target_calls == sd.rounds and spec.target_calls == spec.rounds <= 20


def test_greedy_output_stops_at_eos_like_the_target(target, drafter):
    reference = ar_generate(CachedLM(target), [0, 2], 30, eos=3).tokens
    out = speculative_generate(CachedLM(target), ARDrafter(drafter), [0, 2], 30, 4, eos=3)
    assert out.tokens == reference


@pytest.mark.parametrize("slack", [0, 1, 2])
def test_greedy_mdlm_draft_is_the_argmax_at_unmask_time(mdlm, slack):
    # With one step every drafted position is unmasked from the same network call: the draft is
    # that call's argmax over real tokens, on a canvas with `slack` held masks after the drafts.
    context = [0, 4, 1]
    draft = MDLMDrafter(mdlm, 1, slack=slack).draft(context, 3, 0, seeded(0))
    with torch.no_grad():
        logits = mdlm(torch.tensor([context + [mdlm.mask_id] * (3 + slack)]))[0, 3:6, :VOCAB]
    assert draft.tokens == logits.argmax(-1).tolist() and draft.probs is None and draft.nfe == 1


# --------------------------------------------------------------------------- losslessness by chi-square


def exact_marginals(model, prefix, temperature):
    """P(x1, x2 | prefix) under the target at `temperature`, for all VOCAB**2 pairs."""
    with torch.no_grad():
        first = torch.softmax(model(torch.tensor([prefix])).logits[0, -1].double() / temperature, -1)
        pairs = torch.tensor([prefix + [a] for a in range(VOCAB)])
        second = torch.softmax(model(pairs).logits[:, -1].double() / temperature, -1)
    return (first[:, None] * second).reshape(-1)


def chi_square(counts, probs):
    """Pearson chi-square with cells of expected count < 5 pooled into one."""
    n = counts.sum()
    expected = probs * n
    small = expected < 5
    obs = torch.cat([counts[~small], counts[small].sum().reshape(1)]) if small.any() else counts
    exp = torch.cat([expected[~small], expected[small].sum().reshape(1)]) if small.any() else expected
    return stats.chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item())


@pytest.mark.parametrize("kind,gamma,temperature", [("ar", 2, 0.7), ("mdlm", 1, 1.0)])
def test_sampled_generations_follow_the_target_distribution(target, drafter, mdlm, kind, gamma, temperature):
    prefix, n = [0, 5], 400
    probs = exact_marginals(target, prefix, temperature)
    generator = seeded(123)
    lm = CachedLM(target)
    make = (lambda: ARDrafter(drafter)) if kind == "ar" else (lambda: MDLMDrafter(mdlm, 2))
    draft = make()
    counts = torch.zeros(VOCAB * VOCAB, dtype=torch.float64)
    accepted = drafted = 0
    for _ in range(n):
        out = speculative_generate(lm, draft, prefix, 2, gamma, temperature, generator)
        counts[out.tokens[0] * VOCAB + out.tokens[1]] += 1
        accepted, drafted = accepted + sum(out.accepted), drafted + out.drafted
    assert 0.1 < accepted / drafted < 0.9  # both the accept and the resample paths are exercised
    result = chi_square(counts, probs)
    assert result.pvalue > 1e-3, result


def test_the_chi_square_test_has_power_against_emitting_the_drafts(target, drafter):
    # Samples from the AR drafter alone (what a loop that accepted every draft would emit)
    # fail the same test against the target's marginals.
    generator = seeded(7)
    lm = CachedLM(drafter)
    probs = exact_marginals(target, [0, 5], 1.0)
    counts = torch.zeros(VOCAB * VOCAB, dtype=torch.float64)
    for _ in range(400):
        out = ar_generate(lm, [0, 5], 2, 1.0, generator)
        counts[out.tokens[0] * VOCAB + out.tokens[1]] += 1
    assert chi_square(counts, probs).pvalue < 1e-6


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_tokens_and_counters(target, drafter, mdlm):
    runs = []
    for _ in range(2):
        a = speculative_generate(CachedLM(target), ARDrafter(drafter), [0, 1], 16, 3, 1.0, seeded(5))
        b = speculative_generate(CachedLM(target), MDLMDrafter(mdlm, 2), [0, 1], 16, 3, 1.0, seeded(5))
        runs.append((a.tokens, a.accepted, a.drafter_nfe, b.tokens, b.accepted, b.drafter_nfe))
    assert runs[0] == runs[1]
    other = speculative_generate(CachedLM(target), ARDrafter(drafter), [0, 1], 16, 3, 1.0, seeded(6)).tokens
    assert other != runs[0][0]

