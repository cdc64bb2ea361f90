import math

import pytest

from dlmkit.metrics.text import (
    gap_positions,
    gap_token_accuracy,
    gap_word_f1,
    lcs_length,
    rouge_l_f,
    word_f1,
    words,
)

# Qwen-like pieces: most carry their leading space, "s" does not.
VOCAB = [" the", " cat", " sat", " on", " mat", "s", " dog"]


def decode(ids):
    return "".join(VOCAB[i] for i in ids)


def test_words_lowercase_whitespace_keep_punctuation():
    assert words("  The Cat,\tsat.\nOK ") == ["the", "cat,", "sat.", "ok"]


def test_word_f1_hand_computed():
    # {the, cat, sat} vs {the, cat, ran, away}: P = 2/3, R = 2/4, F1 = 4/7
    assert word_f1("The cat sat", "the cat ran away") == pytest.approx(4 / 7)
    assert word_f1("a a a b", "b a") == 1.0  # sets: repeats and order do not count
    assert word_f1("end.", "end") == 0.0  # punctuation is not stripped
    assert word_f1("", "x") == 0.0 and word_f1("x", "   ") == 0.0
    assert word_f1("x y", "z") == 0.0


def test_lcs_and_rouge_l_hand_computed():
    assert lcs_length("ABCBDAB", "BDCABA") == 4
    assert lcs_length([], [1, 2]) == 0
    # LCS of "a b c d" and "a c b d" is 3: P = R = 3/4
    assert rouge_l_f("a b c d", "a c b d") == pytest.approx(0.75)
    assert word_f1("a b c d", "a c b d") == 1.0  # order-blind where ROUGE-L is not
    # "the cat" vs "the the cat": LCS 2, P = 1, R = 2/3, F = 0.8
    assert rouge_l_f("The cat", "the the cat") == pytest.approx(0.8)
    assert rouge_l_f("", "a") == 0.0 and rouge_l_f("b", "a") == 0.0


def test_gap_token_accuracy_hand_computed():
    reference = [1, 9, 3, 8, 5, 6]
    filled = [1, 2, 3, 4, 5]
    # G = {1, 3, 4, 5}; only position 4 matches, position 5 is not reached
    assert gap_positions(len(reference), {0, 2}) == [1, 3, 4, 5]
    assert gap_token_accuracy(filled, reference, {0, 2}) == pytest.approx(0.25)
    assert gap_token_accuracy(reference, reference, {0}) == 1.0
    assert math.isnan(gap_token_accuracy(filled, [1, 2], {0, 1}))


def test_gap_word_f1_hand_computed():
    reference = [0, 1, 2, 3, 0, 4]  # the cat sat on the mat
    filled = [0, 1, 6, 3, 0, 4]  # the cat dog on the mat
    # gaps {2..5}: "sat on the mat" vs "dog on the mat": 3 of 4 words shared
    assert gap_word_f1(filled, reference, {0, 1}, decode) == pytest.approx(0.75)
    # anchors cannot inflate it: the whole texts share 2 of 3 words, the gaps none
    assert word_f1(decode([0, 1, 6]), decode([0, 1, 2])) == pytest.approx(2 / 3)
    assert gap_word_f1([0, 1, 6], [0, 1, 2], {0, 1}, decode) == 0.0


def test_gap_word_f1_decodes_each_gap_run_apart():
    # anchor at 1 splits the gaps into runs [0] and [2]: "dog" + "s" must stay two words
    reference = [1, 0, 5]  # cat | the | s
    filled = [6, 0, 5]  # dog | the | s
    assert gap_word_f1(filled, reference, {1}, decode) == pytest.approx(0.5)  # {dog, s} vs {cat, s}
