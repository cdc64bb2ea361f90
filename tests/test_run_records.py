"""benchmarks/run_records.py: the per-prompt readings the README's inverse diagnosis cites."""

import math

import pytest


@pytest.fixture(scope="module")
def records(load_script):
    return load_script("benchmarks/run_records.py")


def test_unify_names_renames_every_use_after_the_first_binding(records):
    text = "```python\n    c = 3\n    count = 0\n    if x > m and k:\n        count += 1\n```"
    assert records.unify_names(text) == "```python\n    c = 3\n    count = 0\n    if x > c and c:\n        count += 1\n```"
    assert records.unify_names("```python\n    return x + 3\n```") is None  # nothing bound


def test_town_copies_count_named_towns_against_the_prompt(records):
    items = {"p": {"facts": [["Faring", "bells"], ["Lumber", "bells"]]}}
    fill = {"model": "ar_small", "rule": "alone", "text": "the town of Faring has 3 bells, the town of Fenber has 4"}
    with_anchors = {**fill, "rule": "committed_end", "text": "the town of Fenber"}
    rows = [{"id": "p", "eval": True, "task": "arc", "fills": [fill, with_anchors]},
            {"id": "p", "eval": False, "task": "arc", "fills": [fill]},  # not in the evaluation set
            {"id": "p", "eval": True, "task": "mmlu", "fills": [fill]}]  # one town: not counted
    assert records.town_copies(rows, items) == [{"model": "ar_small", "town_slots": 2, "prompt_towns_named": 0.5}]


def test_gap_by_task_skips_prompts_without_a_gap(records):
    row = {"fraction": 0.1, "rule": "committed_end"}
    rows = [{"id": "tiny-mmlu-hard-test-0", "eval": True, "rows": [{**row, "gap_f1": 0.75, "gap_f1_alone": 0.5},
                                                                   {**row, "rule": "oracle", "gap_f1": 0.0,
                                                                    "gap_f1_alone": 0.5}]},
            {"id": "tiny-mmlu-hard-test-1", "eval": True, "rows": [{**row, "gap_f1": 0.5, "gap_f1_alone": 0.5}]},
            {"id": "tiny-mmlu-hard-test-2", "eval": True, "rows": [{**row, "gap_f1": math.nan,
                                                                    "gap_f1_alone": math.nan}]},
            {"id": "tiny-mmlu-easy-test-0", "eval": False, "rows": [{**row, "gap_f1": 1.0, "gap_f1_alone": 0.0}]}]
    assert records.gap_by_task(rows) == [{"task": "mmlu", "fraction": 0.1, "prompts_with_a_gap": 2,
                                          "gap_f1_gain": 0.125, "prompts_gaining": 1}]


def test_code_constant_tells_a_wrong_constant_from_two_names(records):
    """Dream's failure in revision 2: the right constant under one name, used under another."""
    from dlmkit.data.tinyworld2 import TinyWorld2

    item = TinyWorld2(0, 2).item("humaneval", "mixed", 3)  # "c = 9 ... return x * c" style
    name = item["canonical_solution"].split("=")[0].strip()
    other = next(n for n in "kmc" if n != name)
    two_names = item["target"].replace(f"* {name}", f"* {other}")
    wrong = item["target"].replace("= 9", "= 5")
    rows = [{"id": item["id"], "task": "humaneval", "difficulty": "mixed", "text": t}
            for t in (item["target"], two_names, wrong)]
    assert "* " in item["target"] and two_names != item["target"] and wrong != item["target"]
    assert records.code_constant(rows, {item["id"]: item}) == {"prompts": 3, "constant_right": 2, "passes": 1,
                                                               "passes_with_one_name": 2}


def test_asked_attribute_counts_single_fact_answers_by_the_attribute_they_state(records):
    """Revision 3's Dream answered "Which tool ...?" with the town's instrument: counted as not
    stating the asked attribute; two-fact and code prompts are left out."""
    items = {"t": {"task": "mmlu", "facts": [["Fenist", "trade"]]}, "r": {"task": "arc", "facts": [["Fenist", "roof"]]},
             "h": {"task": "mmlu", "facts": [["Fenist", "crop"], ["Fenist", "trade"]]},
             "c": {"task": "humaneval", "facts": [["Fenist", "bells"]]}}
    rows = [{"id": "t", "text": "Well, the instrument of Fenist is the drum, so B."},
            {"id": "t", "text": "Now, the tool of Fenist is the saw, so A."},
            {"id": "r", "text": "Yes, the roofs of Fenist are red, so C."},
            {"id": "h", "text": "Now, the fruit of Fenist is the pear and the tool of Fenist is the saw, so A."},
            {"id": "c", "text": "```python\n    k = 3\n```"}]
    assert records.asked_attribute(rows, items) == [{"attribute": "roof", "prompts": 1, "states_it": 1.0},
                                                    {"attribute": "trade", "prompts": 2, "states_it": 0.5},
                                                    {"attribute": "all", "prompts": 3, "states_it": 2 / 3}]


def test_code_form_flags_bodies_that_start_with_another_familys_word(records):
    """Dream's first_over_bells answers in revision 5's run: " return" where the body starts with
    " for", after which the 10% anchors end on that word and ar_small writes another function."""
    from dlmkit.data.tinyworld2 import TinyWorld2

    world = TinyWorld2(0, 5)
    loop = next(it for it in (world.item("humaneval", "mixed", i) for i in range(60))
                if it["entry_point"].startswith("first_over_bells"))
    plain = next(it for it in (world.item("humaneval", "mixed", i) for i in range(60))
                 if it["entry_point"].startswith("sum_plus_bells"))
    hybrid = loop["target"].replace("    for x in xs:", "    return x in xs:")
    assert hybrid != loop["target"] and records.body_first_word(loop["target"]) == "for"
    assert records.body_first_word(hybrid) == "return" and records.body_first_word("```python\n```") is None
    a = [{"id": i["id"], "task": "humaneval", "difficulty": "mixed", "text": t}
         for i, t in ((loop, hybrid), (plain, plain["target"]))]
    row = {"rule": "committed_end", "fraction": 0.1}
    gap = [{"id": loop["id"], "eval": True, "fractions": [0.1], "rows": [{**row, "gap_f1": 0.25, "gap_f1_alone": 1.0}]},
           {"id": plain["id"], "eval": True, "fractions": [0.1], "rows": [{**row, "gap_f1": 1.0, "gap_f1_alone": 0.5}]}]
    items = {loop["id"]: loop, plain["id"]: plain}
    assert records.wrong_body(a, items) == {loop["id"]}
    rows = {r["family"]: r for r in records.code_form(a, gap, items)}
    assert rows["first_over_bells"] == {"family": "first_over_bells", "prompts": 1, "passes": 0, "body_starts_right": 0,
                                        "fraction": 0.1, "gap_f1_gain": -0.75}
    assert rows["sum_plus_bells"]["passes"] == 1 and rows["sum_plus_bells"]["body_starts_right"] == 1
    without = records.gap_without_wrong_body(a, gap, items)
    assert [(r["prompts"], r["n"], r["gap_f1_gain"]) for r in without] == [("evaluation set", 2, -0.125),
                                                                           ("without wrong code bodies", 1, 0.5)]
