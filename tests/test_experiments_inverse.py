"""Unit tests of the inverse-speculation phases (dlmkit/experiments/inverse): no models, hand-built records."""

import json
import math

import pytest

from dlmkit.errors import UserError
from dlmkit.experiments.inverse.ablation import control_anchors
from dlmkit.experiments.inverse.gap import gap_table
from dlmkit.anchors import anchors_after
from dlmkit.experiments.inverse.pearl import GRID_128, pearl_table, step_grid
from dlmkit.metrics.scoring import mean_ci, not_reproduced, proportion_ci
from dlmkit.experiments.inverse.context import check_shared_vocabulary
from dlmkit.experiments.inverse.settings import checked_fractions

# --------------------------------------------------------------------------- vocabulary check


class FakeTokenizer:
    def __init__(self, tokens):
        self.tokens = tokens

    def get_vocab(self):
        return {t: i for i, t in enumerate(self.tokens)}


def test_shared_vocabulary_passes_when_ids_agree_and_the_ar_embeds_them():
    base = ["a", "b", "c", "<eos>"]
    # The DLM's extra ids past the AR tokenizer (its mask) are fine while the AR embeds them
    # (Dream-7B's 152064 rows vs Qwen2.5's 151936: both tokenizers agree on the shared ids).
    check_shared_vocabulary(FakeTokenizer(base + ["<mask>"]), 8, 4, FakeTokenizer(base), 6, "ar_small")


def test_shared_vocabulary_names_the_first_differing_token():
    with pytest.raises(UserError, match=r"dlm and ar_medium have different vocabularies \(5 vs 5 tokens; "
                                        r"token 1 is 'b' for dlm but 'x' for ar_medium\); pass gap-fillers"):
        check_shared_vocabulary(FakeTokenizer(list("abcde")), 5, None, FakeTokenizer(list("axcde")), 5, "ar_medium")


def test_shared_vocabulary_refuses_an_ar_too_small_for_the_dlm_ids():
    with pytest.raises(UserError, match=r"\(1212 vs 600 tokens\)"):
        check_shared_vocabulary(FakeTokenizer([str(i) for i in range(1212)]), 1212, 1211,
                                FakeTokenizer([str(i) for i in range(1212)]), 600, "ar_small")


def test_fractions_flag_checks_the_range_and_sorts():
    assert checked_fractions([0.25, 0.1, 0.25, 1.0], 128) == (0.1, 0.25, 1.0)
    for bad in (0, 1.01, -0.5):
        with pytest.raises(UserError, match=r"--fractions: step fraction must be in \(0, 1\]"):
            checked_fractions([0.1, bad], 128)


# --------------------------------------------------------------------------- ablation controls


def _record(gen_len=10, width=16, item_id="p"):
    # Commit step of each position: the answer fills left to right, the trailing end tokens early.
    commit = [0, 0, 1, 1, 2, 5, 3, 7, 9, 11] + [0] * (width - 10)
    tokens = [100 + p for p in range(gen_len)] + [0] * (width - gen_len)
    return {"id": item_id, "commit_step": commit, "tokens": tokens, "gen_len": gen_len}


def test_controls_keep_positions_tokens_order_and_the_end_signal():
    record = _record()
    special = {0, 1, 2, 3}
    sets = control_anchors(record, 0.25, 16, vocab_size=50, special_ids=special, seed=7)  # 4 steps done
    real = sets["real"]
    assert real.positions == (0, 1, 2, 3, 4, 6, 10, 11, 12, 13, 14, 15)
    answer = [p for p in real.positions if p < 10]
    random_token, random_position = sets["random_token"], sets["random_position"]
    assert random_token.positions == real.positions
    assert all(t not in special and 0 <= t < 50 for t in random_token.tokens[:len(answer)])
    assert random_token.tokens[len(answer):] == real.tokens[len(answer):]
    assert random_position.tokens == real.tokens  # same tokens, same order
    inside = random_position.positions[:len(answer)]
    assert len(set(inside)) == len(inside) and all(0 <= p < 10 for p in inside)
    assert random_position.positions[len(answer):] == real.positions[len(answer):]
    assert len(random_position) == len(real) and random_position.length == real.length


def test_controls_are_seeded_per_prompt():
    kwargs = dict(vocab_size=1000, special_ids={0}, seed=42)
    one = control_anchors(_record(), 0.5, 16, **kwargs)
    assert one == control_anchors(_record(), 0.5, 16, **kwargs)
    other = control_anchors(_record(item_id="q"), 0.5, 16, **kwargs)
    assert other["random_token"].tokens != one["random_token"].tokens
    reseeded = control_anchors(_record(), 0.5, 16, vocab_size=1000, special_ids={0}, seed=43)
    assert reseeded["random_token"].tokens != one["random_token"].tokens


# --------------------------------------------------------------------------- phase C


def test_step_grid_is_the_published_one_at_128_and_scales():
    assert step_grid(128) == list(GRID_128)
    assert step_grid(12) == [1, 2, 3, 4, 6, 9, 12]
    assert step_grid(4)[-1] == 4 and step_grid(4)[0] >= 1


def test_anchors_after_reads_commit_steps():
    record = _record()
    anchors = anchors_after(record["commit_step"], record["tokens"], 2)
    assert anchors.positions == (0, 1, 2, 3, 10, 11, 12, 13, 14, 15) and anchors.length == 16
    assert anchors_after(record["commit_step"], record["tokens"], 2, length=12).positions == (0, 1, 2, 3, 10, 11)


def _pearl_record(item_id, difficulty, f1_by_steps, rerun):
    runs = [{"method": m, "steps": n, "fraction": n / 8, "f1": f, "correct": f > 0.5}
            for m in ("dream_steps", "anchors+ar_small") for n, f in f1_by_steps.items()]
    for r in runs:
        if r["method"] == "dream_steps" and r["steps"] == 8:
            r["f1"] = rerun
    return {"id": item_id, "task": "gsm8k", "difficulty": difficulty, "steps": 8, "grid": sorted(f1_by_steps),
            "reference_correct": True, "rerun_f1": rerun,
            "pearl_steps_per_prompt": {"dream_steps": None, "anchors+ar_small": None}, "runs": runs}


def test_pearl_point_is_the_fewest_steps_whose_mean_f1_keeps_95_percent_of_the_rerun():
    records = [_pearl_record("a", "easy", {2: 0.2, 4: 0.58, 8: 0.6}, 0.6),
               _pearl_record("b", "hard", {2: 0.4, 4: 0.5, 8: 0.6}, 0.6)]
    rows = {(r["stratum"], r["method"]): r for r in pearl_table(records)}
    assert rows[("gsm8k/easy", "dream_steps")]["pearl_steps"] == 4  # 0.58 >= 0.95 * 0.6 = 0.57
    assert rows[("gsm8k/hard", "dream_steps")]["pearl_steps"] == 8
    assert rows[("gsm8k/all", "dream_steps")]["pearl_steps"] == 8  # mean at 4 is 0.54 < 0.57
    assert rows[("gsm8k/all", "dream_steps")]["n"] == 2
    zero = pearl_table([_pearl_record("z", "easy", {2: 0.0, 8: 0.0}, 0.0)])
    assert all(r["pearl_steps"] is None for r in zero)  # no run-to-run agreement: nothing to keep


# --------------------------------------------------------------------------- tables


def test_gap_table_leaves_out_prompts_without_gaps_and_carries_n():
    rows = [{"fraction": 0.1, "rule": rule, "coverage": c, "gap_positions": g, "gap_f1": f, "gap_token_acc": f,
             "gap_f1_alone": 0.1, "gap_token_acc_alone": 0.1}
            for rule in ("oracle", "committed_end") for c, g, f in ((0.1, 9, 0.5), (0.2, 8, 0.7), (0.3, 7, 0.6))]
    rows.append({"fraction": 0.1, "rule": "oracle", "coverage": 1.0, "gap_positions": 0})
    table = gap_table([{"rows": rows}], [0.1])
    oracle = next(r for r in table if r["end_rule"] == "oracle")
    assert oracle["n"] == 3 and math.isclose(oracle["gap_f1"], 0.6)
    assert oracle["published_gap_f1"] == 0.475 and oracle["spearman_coverage_vs_gap_f1"] == pytest.approx(0.5)
    assert next(r for r in table if r["end_rule"] == "committed_end")["published_gap_f1"] is None


def test_summaries_and_the_reproduction_check():
    assert mean_ci([1.0], "f1") == {"f1": 1.0, "f1_low": None, "f1_high": None}
    ci = mean_ci([0.2, 0.4, 0.6, 0.8], "f1")
    assert ci["f1_low"] <= 0.5 <= ci["f1_high"]
    acc = proportion_ci([True, False, True, True], "accuracy")
    assert acc["accuracy"] == 0.75 and acc["accuracy_low"] < 0.75 < acc["accuracy_high"]
    rows = [{"f1": 0.5, "f1_low": 0.4, "f1_high": 0.6, "published_f1": 0.55},
            {"f1": 0.3, "f1_low": 0.25, "f1_high": 0.35, "published_f1": 0.8}]
    assert not_reproduced(rows, {"f1": "published_f1"}, lambda r: "row") == ["row f1 0.300 vs published 0.800"]


def test_deployable_payload_cuts_at_the_first_committed_end_or_the_last_anchor():
    from dlmkit.anchors import Anchors
    from dlmkit.experiments.inverse.payload import deployable_anchors

    end = 99
    canvas = Anchors((0, 1, 5, 9, 12, 20), (7, 8, 9, end, 4, end), 32)
    cut = deployable_anchors(canvas, {end})
    # Up to and including the first committed end: the answer's length is then known.
    assert cut.positions == (0, 1, 5, 9) and cut.length == 10
    # No end committed yet: up to the last anchor (the gap-filler writes on after it).
    open_canvas = Anchors((0, 3, 7), (7, 8, 9), 32)
    assert deployable_anchors(open_canvas, {end}).length == 8
    assert deployable_anchors(Anchors((), (), 32), {end}).length == 0


def test_by_task_table_separates_the_oracle_cut_from_the_anchors_content():
    from dlmkit.experiments.inverse.fill import by_task_note, by_task_table

    def fill(fraction, rule, correct, stop="ar_end"):
        return {"model": "ar_small", "fraction": fraction, "rule": rule, "f1": 0.5, "correct": correct,
                "stop_reason": stop}

    records = [{"task": "code", "dream_correct": True,
                "fills": [fill(None, "alone", True), fill(0.25, "oracle", False, "last_anchor"),
                          fill(0.25, "committed_end", True)]},
               {"task": "math", "dream_correct": False,
                "fills": [fill(None, "alone", True), fill(0.25, "oracle", False), fill(0.25, "committed_end", False)]}]
    rows = by_task_table(records, [0.25])
    cell = {(r["task"], r["end_rule"]): r for r in rows}
    assert cell[("code", "oracle")]["cut_at_last_anchor"] == 1.0 and cell[("code", "oracle")]["accuracy"] == 0.0
    assert cell[("code", "committed_end")]["accuracy"] == 1.0 and cell[("math", "dlm")]["accuracy"] == 0.0
    assert cell[("math", "oracle")]["cut_at_last_anchor"] == 0.0
    note = by_task_note(rows, 0.25)
    assert "code 1.00 alone, 0.00 oracle (100% cut at the last anchor)" in note


# --------------------------------------------------------------------------- what anchors carry, the claims


class _CarryContext:
    """Token i decodes to WORDS[i]; Dream ran 10 steps."""

    WORDS = ["", " Now,", " pear", " is", " the", " fruit.", " That", " answer", " C."]

    class dream:
        steps = 10

    fractions = (0.3,)

    def decode(self, ids):
        return "".join(self.WORDS[i] for i in ids)


def test_anchor_content_counts_content_template_end_and_what_the_ar_writes_alone():
    from dlmkit.experiments.inverse.carry import carry_rows

    # Dream's answer " Now, pear is the fruit. That answer C." then end-of-text (id 0) at 8, 9
    tokens = [1, 2, 3, 4, 5, 6, 7, 8, 0, 0]
    commit = [9, 0, 5, 6, 7, 8, 4, 1, 2, 3]  # after 3 of 10 steps: " pear" (1), " C." (7), end (8)
    a = {"q": {"id": "q", "task": "mmlu", "tokens": tokens, "commit_step": commit, "gen_len": 8}}

    def fills(alone):
        return [{"model": m, "fraction": None, "rule": "alone", "tokens": alone} for m in ("ar_small", "ar_control")]

    b = [{"id": "q", "task": "mmlu", "fills": fills([1, 2, 3, 4, 5, 6, 7, 8])}]
    b[0]["fills"][0]["tokens"] = [1, 3, 3, 4, 5, 6, 7, 6]  # ar_small alone gets the value and the letter wrong
    rows = carry_rows(_CarryContext(), a, b, ("ar_small", "ar_control"),
                      lambda rec, m: next(f["tokens"] for f in rec["fills"] if f["model"] == m))
    row = next(r for r in rows if r["task"] == "all")
    assert row["anchors_per_prompt"] == 3 and row["answer_anchors_per_prompt"] == 2
    assert row["content_share"] == 1.0 and row["end_share_of_all"] == 1 / 3
    assert row["equal_to_ar_small_alone"] == 0.0 and row["equal_to_ar_control_alone"] == 1.0


def test_gained_words_split_right_content_dream_mistakes_and_wording():
    from dlmkit.experiments.inverse.carry import gained_words

    reference = "Now, the fruit of Faring is the pear, so C."
    dream = "Well, the fruit of Faring is the plum, so C."  # Dream's value is wrong, its letter right
    alone = "Yes, the fruit of Faring is the kiwi, so A."
    anchored = "Well, the fruit of Faring is the plum, so C."
    got = gained_words("mmlu", dream, reference, alone, anchored)
    # gained: "well," (wording), "plum," (content, not in the reference: Dream's mistake), "c." (right)
    assert got == {"right": 1, "wrong": 1, "wording": 1, "content": 2, "lost": 0}
    # a word the lone output shared with Dream and the anchored one dropped is lost, not gained
    got = gained_words("mmlu", dream, reference, "Well, the fruit of Faring is the plum, so A.", "Yes, the fruit of "
                       "Faring is the plum, so C.")
    assert got == {"right": 1, "wrong": 0, "wording": 0, "content": 1, "lost": 1}
    # no reference answer: content is counted, not judged
    got = gained_words("gsm8k", "7 + 5 = 12.", None, "7 + 3 = 10.", "7 + 5 = 12.")
    assert got["right"] is None and got["wrong"] is None and got["content"] == 2 and got["wording"] == 0  # "5", "12."


def test_gain_sources_table_averages_per_prompt_and_marks_unchecked_groups():
    from dlmkit.experiments.inverse.carry import gain_note, gain_rows

    class Context:
        fractions = (0.1,)

    a = {"m": {"text": "Well, the fruit of Faring is the plum, so C."}, "g": {"text": "7 + 5 = 12."}}

    def fills(alone, anchored, f1s):
        return {(None,): {"text": alone, "f1": f1s[0]}, (0.1,): {"text": anchored, "f1": f1s[1]}}

    b = [{"id": "m", "task": "mmlu", "fills": fills("Yes, the fruit of Faring is the kiwi, so A.",
                                                   "Well, the fruit of Faring is the plum, so C.", (0.5, 1.0))},
         {"id": "g", "task": "gsm8k", "fills": fills("7 + 3 = 10.", "7 + 5 = 12.", (0.4, 1.0))}]
    references = {"m": "Now, the fruit of Faring is the pear, so C.", "g": None}
    rows = gain_rows(Context(), a, b, ("ar_control",), lambda r, m, f: r["fills"][(f,)], references)
    by_task = {r["task"]: r for r in rows}
    assert by_task["mmlu"]["f1_gain"] == pytest.approx(0.5) and by_task["mmlu"]["gained_wrong_words"] == 1
    assert by_task["mmlu"]["dream_content_words_not_in_reference"] == 1  # "plum,"
    assert by_task["all"]["f1_gain"] == pytest.approx(0.55) and by_task["all"]["gained_content_words"] == 2
    assert by_task["all"]["gained_right_words"] is None and by_task["gsm8k"]["gained_right_words"] is None
    assert by_task["all"]["gained_wording_words"] == pytest.approx(0.5)
    assert "@0.1 +0.550 F1" in gain_note(rows) and "no reference answers" in gain_note(rows)


def _t2(small_alone=0.4, small10=0.65, small25=0.8, dream_acc=0.8, small_acc=0.3, acc25=0.7, control_gain=0.02):
    rows = [{"method": "Dream (full)", "accuracy": dream_acc, "f1": None}]
    for model, f1 in (("ar_small", small_alone), ("ar_medium", small_alone + 0.05), ("ar_control", 0.9)):
        rows.append({"method": f"{model} alone", "f1": f1, "accuracy": small_acc})
    for fraction, f1 in ((0.1, small10), (0.25, small25)):
        rows.append({"method": "ar_small + anchors", "fraction": fraction, "end_rule": "committed_end", "f1": f1,
                     "accuracy": acc25})
        rows.append({"method": "ar_control + anchors", "fraction": fraction, "end_rule": "committed_end",
                     "f1": 0.9 + control_gain, "accuracy": 0.8})
    return rows


def test_checks_state_each_claim_with_its_number_and_verdict():
    from dlmkit.experiments.inverse.checks import check_rows

    met = {r["claim"]: r for r in check_rows({"table2_pipeline": _t2()})}
    assert met["F1 gain from real anchors @0.1"]["measured"] == pytest.approx(0.25)
    assert all(met[c]["met"] for c in ("Dream accuracy / ar_small alone accuracy", "ar_small alone F1 against Dream",
                                       "F1 gain from real anchors @0.1", "F1 gain from real anchors @0.25",
                                       "ar_control F1 gain from anchors @0.1"))
    assert met["pipeline accuracy @0.25 / Dream accuracy"]["measured"] == pytest.approx(0.875)
    # the tables that were not run are listed, not guessed
    assert met["abs(ar_medium - ar_small) F1 with anchors @0.1"]["met"] is None
    assert "table3_size (not in this run)" == met["abs(ar_medium - ar_small) F1 with anchors @0.1"]["source"]
    failed = {r["claim"]: r for r in check_rows({"table2_pipeline": _t2(small_alone=0.6, small10=0.7,
                                                                         control_gain=0.2)})}
    assert failed["ar_small alone F1 against Dream"]["met"] is False
    assert failed["F1 gain from real anchors @0.1"]["met"] is False
    assert failed["ar_control F1 gain from anchors @0.25"]["met"] is False


def test_ablation_checks_order_random_token_random_position_and_real():
    from dlmkit.experiments.inverse.checks import ablation_checks

    def rows(rt, rp, real):
        out = [{"fraction": None, "anchors": "none", "f1": 0.4, "rouge_l": 0.4}]
        for fraction in (0.1, 0.25):
            out += [{"fraction": fraction, "end_rule": "committed_end", "anchors": c, "f1": f, "rouge_l": f - 0.01}
                    for c, f in (("random_token", rt), ("random_position", rp), ("real", real))]
        return out

    assert all(r["met"] for r in ablation_checks(rows(0.1, 0.5, 0.7)))
    bad = ablation_checks(rows(0.45, 0.8, 0.7))
    assert [r["met"] for r in bad[:3]] == [False, False, False]  # random tokens above alone; positions above real


# --------------------------------------------------------------------------- drafted gap fill and adaptive stop


def test_sent_drafts_stop_after_the_first_drafted_end_and_filter_by_confidence():
    from dlmkit.decoding.early_stop import sent_drafts

    drafts = {"positions": [2, 3, 5, 6, 9], "tokens": [10, 0, 11, 12, 0], "conf": [0.95, 0.9, 0.4, 0.99, 1.0]}
    assert sent_drafts(drafts, {0}) == {2: 10, 3: 0}  # nothing after the drafted end travels
    assert sent_drafts(drafts, {7}) == {2: 10, 3: 0, 5: 11, 6: 12, 9: 0}
    assert sent_drafts(drafts, {7}, min_conf=0.92) == {2: 10, 6: 12, 9: 0}


def test_draft_payload_counts_template_and_drafts():
    from dlmkit.anchors import Anchors, encode_gzip_template
    from dlmkit.experiments.inverse.drafted import draft_payload

    decode = lambda ids: "".join(chr(97 + i % 26) for i in ids)  # noqa: E731
    anchors = Anchors((0, 1, 4), (1, 2, 3), 6)
    sizes = draft_payload(anchors, {2: 5, 3: 6, 7: 8}, decode)
    assert sizes["template_bytes"] == len(encode_gzip_template(anchors, decode))
    assert sizes["template_with_drafts_bytes"] > sizes["template_bytes"]
    assert sizes["draft_varint_bytes"] == 1 + 1 + 3 * 2  # length, count, then (gap, id) per draft
    assert draft_payload(anchors, {}, decode)["draft_varint_bytes"] == 0


def _adaptive_rows_and_note(grid, records):
    """stop.adaptive_table (by rule name) and its note over `records`, with `grid` as STOP_GRID."""
    from dlmkit.experiments.inverse import stop

    original = stop.STOP_GRID
    stop.STOP_GRID = grid
    try:
        rows = {r["rule"]: r for r in stop.adaptive_table(records)}
        return rows, stop.adaptive_note(list(rows.values()))
    finally:
        stop.STOP_GRID = original


def test_adaptive_table_compares_with_the_fixed_curve_at_equal_steps():
    from dlmkit.decoding.early_stop import StopRule

    grid = (StopRule("fixed", 0.1), StopRule("fixed", 0.2), StopRule("confidence", 0.9),
            StopRule("text_confidence", 0.5))
    f1s = {"fixed 0.1": ([10, 10], [0.5, 0.6]), "fixed 0.2": ([20, 20], [0.7, 0.8]),
           grid[2].name: ([5, 9], [0.6, 0.6]), grid[3].name: ([12, 18], [0.5, 0.6])}
    records = []
    for k in range(2):
        records.append({"adaptive": [{"stop_rule": name, "dlm_steps": steps[k], "f1": f1[k], "rouge_l": f1[k],
                                      "correct": f1[k] > 0.55, "coverage": 0.5} for name, (steps, f1) in f1s.items()]})
    rows, note = _adaptive_rows_and_note(grid, records)
    sure = rows[grid[2].name]
    assert sure["mean_dlm_steps"] == 7 and sure["fixed_f1_at_same_steps"] is None  # below the curve's first point
    assert sure["paired_fixed"] == "fixed 0.1" and sure["paired_fixed_f1"] == pytest.approx(0.55)
    unsure = rows[grid[3].name]
    assert unsure["fixed_f1_at_same_steps"] == pytest.approx(0.65) and unsure["f1_minus_fixed"] == pytest.approx(-0.1)
    assert unsure["paired_fixed"] == "fixed 0.2"
    # fixed 0.1 reaches F1 0.55 in 10 steps; the 0.9 rule reaches 0.6 in 7 (30% fewer)
    assert "with >= 25% fewer mean steps: left_conf < 0.9" in note
    assert sure["share_at_max_steps"] is None and rows["fixed 0.1"]["share_at_max_steps"] is None  # no cap
    assert "step cap" not in note


def test_adaptive_table_says_when_a_rule_only_stops_at_its_cap():
    from dlmkit.decoding.early_stop import StopRule

    capped = StopRule("text_confidence", 0.9, max_steps=8)
    grid = (StopRule("fixed", 0.05), StopRule("fixed", 0.1), capped)
    steps = {"fixed 0.05": [6, 6, 6], "fixed 0.1": [12, 12, 12], capped.name: [8, 8, 5]}
    records = [{"adaptive": [{"stop_rule": name, "dlm_steps": s[k], "f1": 0.5, "rouge_l": 0.5, "correct": True,
                              "coverage": 0.5} for name, s in steps.items()]} for k in range(3)]
    rows, note = _adaptive_rows_and_note(grid, records)
    assert rows[capped.name]["share_at_max_steps"] == pytest.approx(2 / 3)
    assert f"step cap rather than their signal on most prompts: {capped.name} (67% of prompts)" in note


def test_drafted_table_when_the_anchors_left_nothing_to_fill():
    """At a late stop on a few short answers the anchors can cover every position: no pass, no
    ratio, and the phase's note must say so instead of failing on the missing number."""
    from dlmkit.experiments.inverse.drafted import _times, drafted_table

    row = {"model": "ar_small", "stop": "fixed", "fraction": 0.25, "min_conf": 0.0, "dlm_steps": 32,
           "positions": 0, "drafted_passes": 0, "forced_passes": 0, "tokens_equal": True, "drafts_sent": 0,
           "drafts_fed": 0, "drafts_accepted": 0, "template_with_drafts_bytes": 9, "template_bytes": 9,
           "draft_varint_bytes": 0}
    (table,) = drafted_table([{"rows": [row]}, {"rows": [dict(row)]}])
    assert table["passes_vs_one_per_position"] is None and table["acceptance"] is None
    assert table["tokens_equal_forced"] == 1.0
    assert _times(None) == "n/a (nothing left to fill)" and _times(2.386) == "2.39x"


def test_commit_order_splits_content_from_template_and_scores_open_drafts(load_script):
    """benchmarks/commit_order.py on a hand-built A record: "Now, pear, so C." where the value
    is still open at the cutoff and drafted right but unsure, the letter open and drafted wrong."""
    order = load_script("benchmarks/commit_order.py")
    pieces = ["Now", ",", " pear", ",", " so", " C", "."]
    ids = list(range(10, 17))
    decode = lambda toks: "".join(pieces[t - 10] for t in toks)  # noqa: E731
    record = {"task": "mmlu", "difficulty": "hard", "gen_len": 7, "tokens": ids, "commit_step": [0, 1, 6, 2, 3, 7, 4],
              "drafts": {"5": {"positions": [2, 5], "tokens": [12, 99], "conf": [0.6, 0.95]}}}
    rows = {r["kind"]: r for r in order.rows_of([record, {**record, "difficulty": "easy"}], decode)}
    assert rows["content"]["positions"] == 2 and rows["content"]["committed"] == 0.0
    assert rows["content"]["draft_right"] == 0.5 and rows["content"]["right_and_sure"] == 0.0
    assert abs(rows["content"]["draft_p"] - 0.775) < 1e-9
    assert rows["template"]["positions"] == 5 and rows["template"]["committed"] == 1.0


def test_commit_order_counts_a_position_committed_at_the_cutoff_step_as_open(load_script):
    """Drafts kept "after c steps" hold every position whose commit_step is >= c (commit_step is
    the 0-based index of the step that fills it): the one filled by step index c is still open."""
    order = load_script("benchmarks/commit_order.py")
    pieces = ["Now", ",", " pear", "."]
    decode = lambda toks: "".join(pieces[t - 10] for t in toks)  # noqa: E731
    record = {"task": "mmlu", "difficulty": "hard", "gen_len": 4, "tokens": [10, 11, 12, 13],
              "commit_step": [0, 1, 3, 2], "drafts": {"2": {"positions": [2, 3], "tokens": [12, 13], "conf": [0.5, 0.99]}}}
    rows = {r["kind"]: r for r in order.rows_of([record], decode)}
    assert rows["template"]["committed"] == 2 / 3  # "." (commit_step 2) is open after 2 steps
    assert rows["template"]["draft_right"] == 1.0 and rows["template"]["right_and_sure"] == 1.0


def _timing_record(full_ms, pipeline_ms):
    part = {"fraction": 0.1, "stop": "fixed", "k_steps": 12, "dlm_k_ms": pipeline_ms / 2, "fill_ms": pipeline_ms / 2,
            "fill_passes": 10, "drafted_fill_ms": pipeline_ms / 4, "drafted_fill_passes": 4,
            "ar_ms_per_output_token": 1.0, "sequential_ms": pipeline_ms, "async_ms": pipeline_ms,
            "drafted_sequential_ms": pipeline_ms * 3 / 4}
    return {"dream_full_ms": full_ms, "dream_ms_per_step": full_ms / 128, "ar_ms_per_token": 2.0, "ar_prefill_ms": 1.0,
            "fractions": [part]}


def test_repeated_timing_table_gives_the_median_of_per_repeat_ratios_and_their_range():
    from dlmkit.experiments.inverse.timing import repeated_timing_table, timing_table

    # three repeats of two prompts; the second repeat ran on a slow machine (everything 2x)
    repeats = [[_timing_record(1000, 100), _timing_record(3000, 300)],
               [_timing_record(2000, 200), _timing_record(6000, 600)],
               [_timing_record(1000, 125), _timing_record(3000, 375)]]
    rows = {(r["measure"], r["method"]): r for r in repeated_timing_table(repeats, (0.1,), 128, None)}
    full = rows[("dream full run (128 steps)", "full DLM run")]
    assert (full["ms"], full["ms_min"], full["ms_max"], full["repeats"]) == (2000, 2000, 4000, 3)
    forced = rows[("pipeline sequential", "fixed 0.1, forced fill")]
    # per repeat: 2000 / 200 = 10x, 4000 / 400 = 10x, 2000 / 250 = 8x; the median ratio, not a ratio of medians
    assert forced["speedup_vs_full_dlm"] == pytest.approx(10.0)
    assert (forced["speedup_min"], forced["speedup_max"]) == (pytest.approx(8.0), pytest.approx(10.0))
    assert forced["ms"] == 250 and rows[("fill (forced decoding)", None)]["fill_passes"] == 10  # counts: not timed
    # one repeat: the plain table, its range a point
    (single,) = [r for r in repeated_timing_table(repeats[:1], (0.1,), 128, None) if r["method"] == forced["method"]]
    plain = next(r for r in timing_table(repeats[0], (0.1,), 128, None) if r["method"] == forced["method"])
    assert single["speedup_vs_full_dlm"] == plain["speedup_vs_full_dlm"] == single["speedup_min"] == single["speedup_max"]


def test_sure_drafts_replays_phase_b_and_forces_the_sure_drafts(load_script, tmp_path):
    """benchmarks/sure_drafts.py on the committed tiny run: its anchors-only fill is phase B's,
    token for token, and forcing drafts adds only positions Dream had not committed."""
    bench = load_script("benchmarks/sure_drafts.py")
    out = tmp_path / "rows.json"
    assert bench.main(["--limit", "3", "--models", "ar_small", "--stops", "0.1", "--min-conf", "0.9", "0",
                       "--json", str(out)]) == 0
    rows = {r["forced"]: r for r in json.loads(out.read_text())}
    assert rows["anchors"]["equal_phase_b"] == 3 and rows["anchors"]["extra_anchors"] == 0
    sure, every = rows["anchors + sure p >= 0.9"], rows["anchors + sure p >= 0"]
    assert 0 < sure["extra_anchors"] <= every["extra_anchors"]  # a lower threshold forces a superset
    assert 0 <= every["extra_right"] <= 1 and 0 <= sure["extra_right"] <= 1
