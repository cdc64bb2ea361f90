import pytest

from dlmkit.metrics.answers import (check_answer, exact_match_normalize, extract_gsm8k_answer, extract_letter,
                                    gsm8k_filter)
from dlmkit.metrics.code_exec import build_program, extract_code, run_program


@pytest.mark.parametrize("response,letter", [
    ("C", "C"), ("C. melon", "C"), ("The answer is B.", "B"), ("(D)", "D"), ("answer: a", None), ("", None),
])
def test_extract_letter(response, letter):
    assert extract_letter(response) == letter


# lm-evaluation-harness gsm8k (v3): (response, strict-match filtered, flexible-extract filtered), worked out by
# hand from its filters (regex findall, group_select, first non-empty group, strip, "[invalid]").
LM_EVAL_FILTERED = [
    ("so 3 + 4 = 7.\n#### 7", "7", "7"),
    ("#### 1,234.", "1,234.", "1,234."),
    ("#### -5", "-5", "-5"),
    ("She pays $18 in total.", "[invalid]", "$18"),
    ("no number here", "[invalid]", "[invalid]"),
    ("#### 12\nand 3 more", "12", "3"),  # flexible takes the last match
    ("It is 12. Hope this helps..", "[invalid]", ".."),  # ".." matches the two-character group
    ("Answer is 5 $.", "[invalid]", "$."),  # a lone digit only matches the second group; "$." is later
    ("The loss is -1,250 dollars", "[invalid]", "-1,250"),
    ("It costs 5", "[invalid]", "5"),  # the tuple's first non-empty group
    ("x = 3.5, so the answer is 7", "[invalid]", "7"),
    ("#### 1,000,000", "1,000,000", "1,000,000"),
]


@pytest.mark.parametrize("response,strict,flexible", LM_EVAL_FILTERED)
def test_gsm8k_filters_match_lm_eval(response, strict, flexible):
    assert gsm8k_filter(response, "strict-match") == strict
    assert gsm8k_filter(response, "flexible-extract") == flexible


@pytest.mark.parametrize("response,answer,strict,flexible,last", [
    ("so 3 + 4 = 7.\n#### 7", "7", True, True, True),
    ("#### 1,234.", "1234", True, True, True),  # "," and a final "." are ignored
    ("#### -5", "-5", True, True, True),
    ("She pays $18 in total.", "18", False, True, True),
    ("no number here", "3", False, False, False),
    ("It is 12. Hope this helps..", "12", False, False, True),  # lm-eval: ".." -> "." != "12"
    ("Answer is 5 $.", "5", False, False, True),  # lm-eval: "$." -> "" != "5"
    ("The loss is -1,250 dollars", "-1250", False, True, True),
    ("#### 3.50", "3.5", False, False, False),  # exact match of strings, not of numbers
    ("#### 1,000,000", "1,000,000", True, True, True),  # the target is normalised alike
    ("Step 1 ... #### 42", "Natalia sold 48/2 = 24 clips.\n#### 42", True, True, True),  # a full solution target
])
def test_gsm8k_correctness_follows_lm_eval_exact_match(response, answer, strict, flexible, last):
    item = {"task": "gsm8k", "answer": answer}
    assert check_answer(item, response, gsm8k_mode="strict-match") is strict
    assert check_answer(item, response, gsm8k_mode="flexible-extract") is flexible
    assert check_answer(item, response) is flexible  # lm-eval's flexible-extract is the default
    assert check_answer(item, response, gsm8k_mode="last-number") is last
    assert check_answer(item, response, gsm8k_mode="strict") is strict  # the old names still work


def test_exact_match_normalisation_and_extracted_answers():
    assert exact_match_normalize("$1,234.") == "1234" and exact_match_normalize("1.5.") == "1.5"
    assert exact_match_normalize("The answer is:\n#### 7") == "7"
    assert extract_gsm8k_answer("#### 1,234.", "strict-match") == "1234"
    assert extract_gsm8k_answer("no number here", "flexible-extract") is None
    assert extract_gsm8k_answer("It is 12. Hope this helps..", "flexible-extract") == "."
    assert extract_gsm8k_answer("It is 12. Hope this helps..", "last-number") == "12"
    with pytest.raises(ValueError, match="flexible-extract"):
        extract_gsm8k_answer("1", "loose")


ITEM = {"entry_point": "add_one", "prompt": "def add_one(x):\n", "humaneval_prompt": "def add_one(x):\n",
        "test": "def check(candidate):\n    assert candidate(1) == 2\n"}


def test_code_in_a_fence_replaces_the_prompt_when_it_defines_the_function():
    response = "Here:\n```python\ndef add_one(x):\n    return x + 1\n```\ntrailing words"
    assert extract_code(response) == "def add_one(x):\n    return x + 1\n"
    assert build_program(ITEM, response).startswith("def add_one(x):\n    return x + 1\n")
    assert run_program(build_program(ITEM, response))["passed"]
    assert run_program(build_program(ITEM, "    return x + 1\n"))["passed"]  # completion-only style


def test_infinite_loop_times_out():
    result = run_program("while True:\n    pass\n", timeout=1.0)
    assert result == {"passed": False, "status": "timeout", "stderr": ""}


def test_file_deletion_is_contained(tmp_path):
    victim = tmp_path / "keep.txt"
    victim.write_text("precious")
    program = f"import os, shutil\nos.remove({str(victim)!r})\n"
    assert not run_program(program)["passed"]
    program = f"import shutil\nshutil.rmtree({str(tmp_path)!r})\n"
    assert not run_program(program)["passed"]
    assert victim.read_text() == "precious"


def test_child_runs_in_an_empty_temporary_directory():
    assert run_program("import os\nassert os.listdir('.') == []\n")["passed"]
