"""MDLM samplers (ddpm, ddpm_cache) and the metrics of generated text (gen-PPL, entropy)."""

import math
import random

import pytest
import torch
from scipy.stats import chisquare

from dlmkit.decoding.mdlm_sampler import ddpm, ddpm_cache, make_canvas, sample
from dlmkit.errors import UserError
from dlmkit.metrics.lm import generative_perplexity, judge_nll, unigram_entropy
from dlmkit.models.mdlm import MDLM, MDLMConfig
from dlmkit.models.mdlm_diffusion import subs_log_probs

VOCAB = 10  # 9 tokens + mask (id 9)
MASK = VOCAB - 1


def tiny_mdlm(seed=0, time_conditioning=False):
    cfg = MDLMConfig(vocab_size=VOCAB, model_length=16, hidden_dim=32, cond_dim=8, n_blocks=1, n_heads=2,
                     dropout=0.0, time_conditioning=time_conditioning)
    model = MDLM(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            std = 1.0 if "output_layer.linear" in name else 0.3  # peaked, non-uniform predictions
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return model.eval()


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_prefix_is_kept_and_every_mask_is_filled():
    model = tiny_mdlm()
    prefix = torch.tensor([3, 1, 4, 1, 5])
    canvas = make_canvas(prefix, 12, MASK).repeat(3, 1)
    out = ddpm(model, canvas, steps=8, generator=seeded(0))
    assert out.tokens.shape == (3, 12)
    assert torch.equal(out.tokens[:, :5], prefix.expand(3, 5))
    assert not (out.tokens == MASK).any()
    assert torch.all(out.unmask_step[:, :5] == -1) and torch.all(out.unmask_step[:, 5:] >= 0)


def test_fixed_positions_anywhere_in_the_canvas_are_kept():
    model = tiny_mdlm()
    canvas = torch.tensor([[MASK, 2, MASK, MASK, 7, MASK, 0, MASK]])
    out = ddpm_cache(model, canvas, steps=4, generator=seeded(1))
    fixed = canvas != MASK
    assert torch.equal(out.tokens[fixed], canvas[fixed]) and not (out.tokens == MASK).any()


def test_seeded_samplers_are_deterministic():
    model = tiny_mdlm()
    canvas = make_canvas(torch.tensor([1, 2]), 16, MASK).repeat(4, 1)
    for sampler in ("ddpm", "ddpm_cache"):
        a = sample(model, canvas, 10, sampler=sampler, generator=seeded(7), q_positions="masked")
        b = sample(model, canvas, 10, sampler=sampler, generator=seeded(7), q_positions="masked")
        c = sample(model, canvas, 10, sampler=sampler, generator=seeded(8))
        assert torch.equal(a.tokens, b.tokens) and torch.equal(a.q, b.q) and a.nfe == b.nfe
        assert not torch.equal(a.tokens, c.tokens)


def test_cache_skips_calls_when_nothing_changes_and_matches_ddpm():
    model = tiny_mdlm()
    canvas = make_canvas(torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3]), 16, MASK)  # 4 masks
    steps = 64
    plain = ddpm(model, canvas, steps, generator=seeded(3))
    cached = ddpm_cache(model, canvas, steps, generator=seeded(3))
    assert plain.nfe in (steps, steps + 1)  # + the final noise-removal call when masks remain
    assert cached.nfe <= 5 < steps  # at most one call per unmasking event (4 masks) + the first
    distinct_steps = cached.unmask_step[cached.unmask_step >= 0].unique()
    assert cached.nfe == 1 + int((distinct_steps < steps - 1).sum())  # a call after each change, before the end
    assert torch.equal(plain.tokens, cached.tokens)  # caching only skips identical calls


def test_cache_is_off_for_a_time_conditioned_model():
    model = tiny_mdlm(time_conditioning=True)
    canvas = make_canvas(torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 2, 3]), 16, MASK)
    out = ddpm_cache(model, canvas, 32, generator=seeded(3))
    assert out.nfe >= 32


def test_recorded_q_is_the_subs_distribution_at_the_unmasking_step():
    model = tiny_mdlm()
    canvas = make_canvas(torch.tensor([4, 2]), 10, MASK).repeat(3, 1)
    steps = 6
    out = ddpm_cache(model, canvas, steps, generator=seeded(11), q_positions="masked", q_dtype=torch.float64)
    assert torch.equal(out.q_positions, torch.arange(2, 10))
    for b in range(3):
        for slot, col in enumerate(out.q_positions.tolist()):
            k = int(out.unmask_step[b, col])
            # The canvas just before step k: what was unmasked earlier, masks elsewhere.
            state = torch.where((out.unmask_step[b] < k), out.tokens[b], torch.tensor(MASK)).unsqueeze(0)
            with torch.no_grad():
                p = subs_log_probs(model(state).double(), state, MASK).exp()[0, col]
            if k == steps:  # filled by the final argmax: a point mass
                p = torch.nn.functional.one_hot(p.argmax(), VOCAB).double()
            torch.testing.assert_close(out.q[b, slot], p, atol=1e-6, rtol=0)
            assert out.q[b, slot, out.tokens[b, col]] > 0 and out.q[b, slot, MASK] == 0


def test_tokens_are_drawn_from_the_recorded_q():
    model = tiny_mdlm(seed=2)
    rows = 8000
    canvas = torch.tensor([[5, 1, MASK, 3]]).repeat(rows, 1)
    out = ddpm(model, canvas, steps=1, generator=seeded(0), q_positions=[2], q_dtype=torch.float64)
    drawn = out.unmask_step[:, 2] == 0  # the ~0.001% left for the final argmax are excluded
    q = out.q[0, 0]
    assert torch.allclose(out.q[drawn, 0], q.expand(int(drawn.sum()), VOCAB))
    counts = torch.bincount(out.tokens[drawn, 2], minlength=VOCAB)[:MASK].double()
    expected = q[:MASK] * counts.sum()
    assert chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-3
    uniform = torch.full((MASK,), counts.sum().item() / MASK, dtype=torch.float64)
    assert chisquare(counts.numpy(), uniform.numpy()).pvalue < 1e-6  # the test can tell distributions apart


def test_q_for_selected_positions_and_fixed_ones():
    model = tiny_mdlm()
    canvas = make_canvas(torch.tensor([6, 2, 8]), 9, MASK).repeat(2, 1)
    out = ddpm_cache(model, canvas, 4, generator=seeded(0), q_positions=[1, 4, 8])
    assert out.q.shape == (2, 3, VOCAB) and out.q.dtype == torch.float32
    assert torch.all(out.q[:, 0, 2] == 1)  # a fixed token is a point mass on itself
    torch.testing.assert_close(out.q.sum(-1), torch.ones(2, 3))
    assert ddpm_cache(model, canvas, 4, generator=seeded(0)).q is None


def test_left_to_right_reveals_the_leftmost_masks_as_many_per_step_as_mdlm():
    model = tiny_mdlm()
    steps, rows = 5, 1500
    canvas = make_canvas(torch.tensor([4, 2]), 14, MASK).repeat(rows, 1)
    rand = sample(model, canvas, steps, generator=seeded(4))
    ltr = sample(model, canvas, steps, generator=seeded(5), order="left_to_right", q_positions="masked",
                 q_dtype=torch.float64)
    # Along each row the step that revealed a position never decreases: left to right.
    assert bool((ltr.unmask_step[:, 3:] >= ltr.unmask_step[:, 2:-1]).all())
    assert not bool((rand.unmask_step[:, 3:] >= rand.unmask_step[:, 2:-1]).all())  # MDLM's order is not
    # The number revealed per step has MDLM's law: equal means (two-sample z < 4) at every step.
    for k in range(steps):
        a, b = (rand.unmask_step == k).sum(1).double(), (ltr.unmask_step == k).sum(1).double()
        z = (a.mean() - b.mean()) / ((a.var() + b.var()) / rows).sqrt()
        assert abs(float(z)) < 4, (k, float(a.mean()), float(b.mean()))
    ltr = sample(model, canvas[:6], steps, generator=seeded(5), order="left_to_right", q_positions="masked",
                 q_dtype=torch.float64)
    # Each q saw only what lay to its left: the SUBS distribution of the canvas before its step.
    for b in range(6):
        for col in range(2, 14):
            k = int(ltr.unmask_step[b, col])
            state = torch.where(ltr.unmask_step[b] < k, ltr.tokens[b], torch.tensor(MASK)).unsqueeze(0)
            assert bool((state[0, col:] == MASK).all())  # nothing to its right is known yet
            with torch.no_grad():
                p = subs_log_probs(model(state).double(), state, MASK).exp()[0, col]
            if k == steps:
                p = torch.nn.functional.one_hot(p.argmax(), VOCAB).double()
            torch.testing.assert_close(ltr.q[b, col - 2], p, atol=1e-6, rtol=0)


def test_held_masks_stay_masked_and_the_others_follow_the_schedule_over_themselves():
    model = tiny_mdlm()
    steps, rows = 4, 1500
    free = make_canvas(torch.tensor([4, 2]), 8, MASK).repeat(rows, 1)
    held = make_canvas(torch.tensor([4, 2]), 10, MASK).repeat(rows, 1)
    plain = sample(model, free, steps, generator=seeded(1), order="left_to_right")
    out = sample(model, held, steps, generator=seeded(2), order="left_to_right", held=[8, 9], q_positions="masked")
    assert bool((out.tokens[:, 8:] == MASK).all()) and bool((out.tokens[:, :8] != MASK).all())
    assert bool((out.unmask_step[:, 8:] == steps + 1).all())
    assert out.q_positions.tolist() == list(range(2, 8))  # "masked" leaves the held columns out
    # Reveal counts per step have the law of six free masks, not eight: equal means (z < 4).
    for k in range(steps):
        a, b = (plain.unmask_step == k).sum(1).double(), (out.unmask_step == k).sum(1).double()
        z = (a.mean() - b.mean()) / ((a.var() + b.var()) / rows).sqrt()
        assert abs(float(z)) < 4, (k, float(a.mean()), float(b.mean()))
    # The q of a one-step draw is the SUBS law of the canvas with its held masks, which is not
    # the law of the canvas cut after the drafts: the network saw the held masks.
    one = sample(model, held[:1], 1, generator=seeded(3), held=[8, 9], q_positions=list(range(2, 8)),
                 q_dtype=torch.float64)
    with torch.no_grad():
        seen = subs_log_probs(model(held[:1]).double(), held[:1], MASK)[0, 2:8].exp()
        unseen = subs_log_probs(model(free[:1]).double(), free[:1], MASK)[0, 2:8].exp()
    torch.testing.assert_close(one.q[0], seen, atol=1e-6, rtol=0)
    assert one.nfe == 1 and float((seen - unseen).abs().max()) > 1e-3
    with pytest.raises(UserError, match="held columns"):
        sample(model, held[:1], 2, held=[1])
    with pytest.raises(UserError, match="held columns"):
        sample(model, held[:1], 2, held=[10])


def test_sampler_rejects_bad_input():
    model = tiny_mdlm()
    canvas = make_canvas(torch.tensor([1]), 8, MASK)
    with pytest.raises(UserError, match="sampler"):
        sample(model, canvas, 4, sampler="analytic")
    with pytest.raises(UserError, match="order"):
        sample(model, canvas, 4, order="entropy")
    with pytest.raises(UserError, match="steps"):
        ddpm(model, canvas, 0)
    with pytest.raises(UserError, match="model length"):
        ddpm(model, make_canvas(torch.tensor([1]), 17, MASK), 4)
    with pytest.raises(UserError, match="q_positions"):
        ddpm(model, canvas, 4, q_positions=[8])
    with pytest.raises(UserError, match="longer"):
        make_canvas(torch.arange(5), 3, MASK)


# ----------------------------------------------------------------------------- gen-PPL and entropy

TEXT = "the cat sat on the mat. "


@pytest.fixture(scope="module")
def judge():
    """A character-level GPT-2 fitted for a moment on a repetitive text."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    chars = sorted(set(TEXT))
    vocab = {"<eos>": 0, "<unk>": 1, **{c: i + 2 for i, c in enumerate(chars)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", unk_token="<unk>")

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0))
    ids = torch.tensor(tokenizer(TEXT * 20)["input_ids"])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step in range(40):
        starts = torch.randint(0, len(ids) - 48, (8,), generator=seeded(step))
        batch = torch.stack([ids[s : s + 48] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tokenizer


def test_gen_ppl_prefers_the_judges_own_text(judge):
    model, tokenizer = judge
    own = [TEXT * 2, TEXT * 2 + "the cat"]
    rng = random.Random(0)
    shuffled = ["".join(rng.sample(t, len(t))) for t in own]
    good = generative_perplexity(own, model, tokenizer, chunk_size=32)
    bad = generative_perplexity(shuffled, model, tokenizer, chunk_size=32)
    assert good.gen_ppl < 3.0 and bad.gen_ppl > 10 * good.gen_ppl
    assert good.gen_ppl == pytest.approx(math.exp(good.mean_nll))


def test_gen_ppl_equals_hand_computation_and_ignores_batching(judge):
    model, tokenizer = judge
    texts = [TEXT * 3, "the mat", TEXT + "cat<eos>sat<eos>on"]
    chunk = 16
    result = generative_perplexity(texts, model, tokenizer, chunk_size=chunk, batch_size=4)
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text)["input_ids"]
        eos_seen = 0
        counted = []
        for tok in ids:
            eos_seen += tok == tokenizer.eos_token_id
            counted.append(tok != tokenizer.eos_token_id or eos_seen == 1)  # only the first EOS counts
        for start in range(0, len(ids), chunk):
            piece = torch.tensor(ids[start : start + chunk])
            with torch.no_grad():
                logp = model(input_ids=piece[None]).logits[0].log_softmax(-1)
            for i in range(1, len(piece)):
                if counted[start + i]:
                    total -= logp[i - 1, piece[i]].item()
                    count += 1
    assert result.num_tokens == count
    assert result.mean_nll == pytest.approx(total / count, rel=1e-5)
    one_by_one = generative_perplexity(texts, model, tokenizer, chunk_size=chunk, batch_size=1)
    assert one_by_one.mean_nll == pytest.approx(result.mean_nll, rel=1e-5)
    assert result.tokens_per_text[1] == len("the mat") - 1


def test_judge_nll_truncation_and_errors(judge):
    model, tokenizer = judge
    ids = tokenizer(TEXT * 2)["input_ids"]
    full = judge_nll([ids], model, chunk_size=1024)
    assert full.num_tokens == len(ids) - 1
    short = generative_perplexity([TEXT * 2], model, tokenizer, max_length=10)
    assert short.num_tokens == 9
    with pytest.raises(UserError, match="chunk_size"):
        judge_nll([ids], model, chunk_size=1)
    with pytest.raises(UserError, match="list"):
        generative_perplexity(TEXT, model, tokenizer)


def test_unigram_entropy():
    values = unigram_entropy(torch.tensor([[1, 1, 1, 1], [1, 2, 3, 4], [1, 1, 2, 2]]))
    assert values == pytest.approx([0.0, math.log(4), math.log(2)])
    assert unigram_entropy([[5, 5, 9, 9, 7]], ignore_ids=[7]) == pytest.approx([math.log(2)])
