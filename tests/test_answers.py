import pytest

from dlmkit.metrics.answers import extract_gsm8k_answer, extract_letter
from dlmkit.metrics.code_exec import build_program, extract_code, run_program


@pytest.mark.parametrize("response,letter", [
    ("C", "C"), ("C. melon", "C"), ("The answer is B.", "B"), ("(D)", "D"), ("answer: a", None), ("", None),
])
def test_extract_letter(response, letter):
    assert extract_letter(response) == letter


@pytest.mark.parametrize("response,strict,flexible", [
    ("so 3 + 4 = 7.\n#### 7", "7", "7"),
    ("#### 1,234.", "1234", "1234"),
    ("#### -5", "-5", "-5"),
    ("She pays $18 in total.", None, "18"),
    ("no number here", None, None),
    ("#### 12\nand 3 more", "12", "3"),  # flexible takes the last number, as lm-eval does
])
def test_gsm8k_strict_and_flexible(response, strict, flexible):
    assert extract_gsm8k_answer(response, "strict") == strict
    assert extract_gsm8k_answer(response, "flexible") == flexible


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
