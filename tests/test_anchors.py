import gzip
import statistics

import pytest
import torch

from dlmkit.anchors import (
    Anchors,
    anchors_at_fraction,
    anchors_from_diffusion,
    contiguous_prefix_fraction,
    contiguous_prefix_length,
    coverage,
    decode_gzip_template,
    encode_gzip_template,
    gzip_text_size,
    pack_anchors,
    payload_sizes,
    random_position_control,
    random_token_control,
    runs,
    steps_done_at,
    template_text,
    template_to_anchors,
    unpack_anchors,
)
from dlmkit.data.published import load_anchors
from dlmkit.decoding.diffusion import DiffusionOutput
from dlmkit.errors import UserError

# A toy tokenizer whose ids are characters: decode/encode round-trip exactly.
ALPHABET = "abcdefghijklmnopqrstuvwxyz .é"


def decode(ids):
    return "".join(ALPHABET[i] for i in ids)


def encode(text):
    return [ALPHABET.index(c) for c in text]


# --------------------------------------------------------------------------- extraction


def test_steps_done_follows_the_paper():
    assert steps_done_at(0.10, 128) == 12
    assert steps_done_at(0.25, 128) == 32
    assert steps_done_at(1.0, 128) == 128
    assert steps_done_at(0.005, 128) == 0


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.01, 2, float("nan"), "x", None])
def test_fraction_outside_unit_interval_names_the_range(bad):
    with pytest.raises(UserError, match=r"\(0, 1\]"):
        steps_done_at(bad, 128)


def test_anchors_at_fraction_reads_commit_steps():
    commit = torch.tensor([0, 5, 12, 11, -1, 128, 3])
    tokens = torch.tensor([10, 11, 12, 13, 14, 15, 16])
    a = anchors_at_fraction(commit, tokens, 0.10, 128)  # 12 steps done: commit_step < 12
    assert a.positions == (0, 1, 3, 4, 6)
    assert a.tokens == (10, 11, 13, 14, 16)
    assert a.length == 7
    assert a.coverage == pytest.approx(5 / 7)
    short = anchors_at_fraction(commit, tokens, 0.10, 128, length=4)
    assert short.positions == (0, 1, 3) and short.length == 4


def test_anchors_from_diffusion_excludes_the_prompt():
    prompt = torch.tensor([[7, 7, 7], [8, 8, 8]])
    generated = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    out = DiffusionOutput(sequences=torch.cat([prompt, generated], 1),
                          commit_step=torch.tensor([[0, 3, 1, 9], [9, 0, 9, 0]]), prompt_length=3)
    a, b = anchors_from_diffusion(out, 0.25, 8)  # 2 steps done
    assert (a.positions, a.tokens) == ((0, 2), (1, 3))
    assert (b.positions, b.tokens) == ((1, 3), (6, 8))
    # Consistent with DiffusionOutput.committed_by
    assert out.committed_by(2)[0].nonzero().flatten().tolist() == list(a.positions)


def test_anchor_validation():
    with pytest.raises(UserError):
        Anchors((3, 1), (1, 2), 5)
    with pytest.raises(UserError):
        Anchors((1, 5), (1, 2), 5)
    with pytest.raises(UserError):
        Anchors((1,), (1, 2), 5)
    a = Anchors.from_mapping({"4": 9, "0": 1, "9": 3}, 8, drop_outside=True)
    assert a.positions == (0, 4) and a.tokens == (1, 9)


def test_coverage_prefix_and_runs():
    a = Anchors((0, 1, 2, 5, 6, 9), (1,) * 6, 10)
    assert coverage(a) == pytest.approx(0.6)
    assert coverage(a, 5) == pytest.approx(3 / 5)
    assert contiguous_prefix_length(a) == 3
    assert contiguous_prefix_fraction(a) == pytest.approx(0.5)
    assert contiguous_prefix_fraction(Anchors((1, 2), (1, 1), 4)) == 0.0
    assert contiguous_prefix_fraction(Anchors((), (), 4)) != contiguous_prefix_fraction(Anchors((), (), 4))  # NaN
    assert runs(a.positions) == [(0, 3), (5, 7), (9, 10)]


def test_published_prefix_fraction_is_about_91_percent():
    records = load_anchors()
    fractions = [contiguous_prefix_fraction(Anchors.from_mapping(r["anchors"]["0.1"], r["gen_len"]))
                 for r in records]
    assert statistics.mean(f for f in fractions if f == f) == pytest.approx(0.911, abs=0.002)


# --------------------------------------------------------------------------- controls


def test_random_token_control_keeps_positions_and_avoids_specials():
    a = Anchors(tuple(range(0, 60, 2)), tuple(range(30)), 64)
    special = {0, 1, 2, 3}
    r = random_token_control(a, 8, generator=torch.Generator().manual_seed(0), special_ids=special)
    assert r.positions == a.positions and r.length == a.length
    assert all(4 <= t < 8 for t in r.tokens)
    assert len(set(r.tokens)) > 1
    again = random_token_control(a, 8, generator=torch.Generator().manual_seed(0), special_ids=special)
    assert again == r  # seeded
    assert random_token_control(a, 8, generator=1, special_ids=special) != r


def test_random_position_control_keeps_count_order_tokens_and_length():
    a = Anchors((0, 1, 2, 3, 10), (50, 40, 30, 20, 10), 12)
    for seed in range(20):
        r = random_position_control(a, generator=torch.Generator().manual_seed(seed))
        assert len(r) == len(a) and r.tokens == a.tokens  # same tokens, same order
        assert list(r.positions) == sorted(set(r.positions))
        assert all(0 <= p < 12 for p in r.positions)  # within the answer, not range(256)
    draws = {random_position_control(a, generator=s).positions for s in range(20)}
    assert len(draws) > 5
    with pytest.raises(UserError):
        random_position_control(a, generator=0, length=4)


# --------------------------------------------------------------------------- payloads


def test_template_text_marks_each_gap_with_one_null():
    a = Anchors((0, 1, 4, 7), tuple(encode("hi") + encode("x") + encode("y")), 9)
    assert template_text(a, decode) == "hi\x00\x00x\x00\x00y\x00"
    # Runs are decoded together: the decode callable sees each run once.
    calls = []
    template_text(a, lambda ids: calls.append(list(ids)) or decode(ids))
    assert calls == [encode("hi"), encode("x"), encode("y")]


def test_gzip_template_round_trip_and_exact_size():
    a = Anchors((0, 1, 2, 3, 6, 7), tuple(encode("the ") + encode("é.")), 10)
    payload = encode_gzip_template(a, decode)
    text = "the \x00\x00é.\x00\x00"
    assert decode_gzip_template(payload) == text
    assert payload == gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)
    assert len(payload) == len(gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0))
    assert payload == encode_gzip_template(a, decode)  # deterministic: mtime 0
    assert template_to_anchors(decode_gzip_template(payload), encode) == a  # exact with this tokenizer


def test_template_is_lossy_when_runs_retokenise_differently():
    # A tokenizer that merges "ab" into one id re-tokenises a two-token run "a","b" as one token.
    vocab = ["a", "b", "ab"]
    a = Anchors((0, 1), (0, 1), 3)
    text = template_text(a, lambda ids: "".join(vocab[i] for i in ids))
    back = template_to_anchors(text, lambda s: [2] if s == "ab" else [vocab.index(c) for c in s])
    assert back != a and back.tokens == (2,)


@pytest.mark.parametrize("fmt", ["varint", "fixed"])
def test_pack_round_trip(fmt):
    cases = [
        Anchors((), (), 0),
        Anchors((), (), 300),
        Anchors((0, 1, 2, 200, 511), (151643, 0, 127, 128, 151645), 512),
        Anchors.from_mapping({p: (p * 7919) % 152064 for p in range(0, 512, 3)}, 512),
    ]
    for a in cases:
        assert unpack_anchors(pack_anchors(a, fmt), fmt) == a


def test_pack_byte_counts():
    a = Anchors((0, 1, 2, 10), (5, 6, 300, 151643), 200)
    # varint: length 200 -> 2 B, count 4 -> 1 B; pairs (gap, id): (0,5) 2 B, (0,6) 2 B,
    # (0,300) 1+2 B, (7,151643) 1+3 B  -> 3 + 2 + 2 + 3 + 4 = 14
    assert len(pack_anchors(a, "varint")) == 14
    assert len(pack_anchors(a, "fixed")) == 8 + 8 * 4
    assert pack_anchors(Anchors((), (), 5), "varint") == bytes([5, 0])
    assert pack_anchors(Anchors((3,), (1,), 5), "varint") == bytes([5, 1, 3, 1])
    with pytest.raises(UserError):
        pack_anchors(a, "zip")
    with pytest.raises(UserError):
        unpack_anchors(pack_anchors(a, "varint")[:-1], "varint")
    with pytest.raises(UserError):
        unpack_anchors(pack_anchors(a, "fixed")[:-3], "fixed")


def test_payload_sizes_reports_every_codec():
    a = Anchors((0, 1, 5), tuple(encode("ab") + encode("c")), 8)
    sizes = payload_sizes(a, decode, full_text="ab xyc  ")
    assert sizes["gzip_template_bytes"] == len(encode_gzip_template(a, decode))
    assert sizes["varint_bytes"] == len(pack_anchors(a)) == 2 + 3 * 2
    assert sizes["fixed_bytes"] == 8 + 8 * 3
    assert sizes["raw_text_bytes"] == 8
    assert sizes["gzip_text_bytes"] == gzip_text_size("ab xyc  ")
