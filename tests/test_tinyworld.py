import pytest

from dlmkit.data.tinyworld import LETTERS, STRATA, TinyWorld, split_of
from dlmkit.metrics.answers import check_answer
from dlmkit.errors import UserError
from dlmkit.metrics.code_exec import passes_tests


def test_same_seed_same_items_other_seed_other_items():
    a, b, c = TinyWorld(0).strata(3), TinyWorld(0).strata(3), TinyWorld(1).strata(3)
    assert a == b
    assert [i["prompt"] for i in a] != [i["prompt"] for i in c]


def test_item_is_independent_of_how_many_are_drawn():
    world = TinyWorld(0)
    assert world.items("gsm8k", "hard", 10)[:3] == world.items("gsm8k", "hard", 3)


def test_strata_mirror_the_paper_prompt_set():
    items = TinyWorld(0).strata(4)
    counts = {}
    for item in items:
        counts[(item["task"], item["difficulty"])] = counts.get((item["task"], item["difficulty"]), 0) + 1
    assert counts == {(t, d): 4 for t, levels in STRATA.items() for d in levels}
    assert len({i["id"] for i in items}) == len(items)


def test_train_and_test_never_share_a_question():
    world = TinyWorld(0)
    for task, level in [("mmlu", "easy"), ("arc", "hard"), ("gsm8k", "easy"), ("humaneval", "mixed")]:
        test = {i["prompt"] for i in world.items(task, level, 20, "test")}
        train = {i["prompt"] for i in world.items(task, level, 200, "train")}
        assert not test & train
        assert all(split_of(p) == "test" for p in test)


@pytest.mark.parametrize("task,level", [(t, d) for t, ls in STRATA.items() for d in ls])
def test_reference_answers_check_and_wrong_answers_do_not(task, level):
    for item in TinyWorld(3).items(task, level, 6):
        assert check_answer(item, item["target"]), item["id"]
        if task in ("mmlu", "arc"):
            wrong = LETTERS[(LETTERS.index(item["answer"]) + 1) % 4]
            assert not check_answer(item, f"{wrong}. something")
            assert item["prompt"].endswith("Answer with the letter only.")
        elif task == "gsm8k":
            assert item["target"].splitlines()[-1] == f"#### {item['answer']}"
            assert not check_answer(item, f"#### {int(item['answer']) + 1}")
            assert item["prompt"].endswith("\nSolve step by step.")


def test_humaneval_items_have_humaneval_fields_and_execute():
    item = TinyWorld(0).item("humaneval", "hard", 0)
    assert item["prompt"].startswith("Complete the following Python function:\n\n")
    assert item["test"].startswith("def check(candidate):")
    assert passes_tests(item, item["canonical_solution"])  # completion-only, as HumanEval samples are
    assert not passes_tests(item, "    return None\n")


def test_chat_messages_are_one_user_turn_and_the_reference_answer():
    item = TinyWorld(0).item("arc", "easy", 1)
    assert [m["role"] for m in item["messages"]] == ["user", "assistant"]
    assert item["messages"][0]["content"] == item["prompt"]
    assert item["messages"][1]["content"] == item["target"]


def test_documents_and_math_cot_are_deterministic_and_split():
    world = TinyWorld(0)
    assert world.documents(5) == TinyWorld(0).documents(5)
    assert not set(world.documents(100, "test")) & set(world.documents(800, "train"))
    record = world.math_cot(3)[0]
    assert set(record) >= {"problem", "solution", "messages"}
    assert record["solution"].endswith(f"\\boxed{{{record['answer']}}}$.")


def test_bad_task_names_the_choices():
    with pytest.raises(UserError, match="choose from mmlu"):
        TinyWorld(0).item("squad", "easy", 0)
    with pytest.raises(UserError, match="unknown difficulty"):
        TinyWorld(0).item("mmlu", "extreme", 0)
