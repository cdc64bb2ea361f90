"""HumanEval verdicts: build the check program from a response and run it in the sandbox.

A response passes when prompt + completion (or the response's own definition of the entry
point) + the item's tests + `check(entry_point)` runs to its end; the isolation and the
unforgeable verdict are dlmkit.metrics.sandbox's. Many programs run in parallel, one sandbox per
core, with the same verdicts as one at a time (each run is independent).
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

from dlmkit.metrics.sandbox import SandboxUnavailable, allow_unsafe, check_available, run_program

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


def passes_tests(item: dict, response: str, timeout: float = 5.0) -> bool:
    """HumanEval pass/fail of one response."""
    return run_program(build_program(item, response), timeout=timeout)["passed"]


def run_programs(programs: list[str], timeout: float = 5.0, workers: int | None = None,
                 progress: bool = True) -> list[dict]:
    """run_program over many programs, `workers` sandboxes at a time (default: one per core), in order."""
    from tqdm.auto import tqdm

    check_available()  # the one-line error before any thread starts
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:  # threads wait on sandboxes; the work is theirs
        results = pool.map(lambda program: run_program(program, timeout=timeout), programs)
        return list(tqdm(results, total=len(programs), desc="sandbox", unit="program", disable=not progress))


def score_responses(items: list[dict], responses: list[str], timeout: float = 5.0,
                    workers: int | None = None, progress: bool = True) -> list[bool]:
    """passes_tests for many (item, response) pairs, in parallel."""
    programs = [build_program(item, response) for item, response in zip(items, responses, strict=True)]
    return [r["passed"] for r in run_programs(programs, timeout=timeout, workers=workers, progress=progress)]


__all__ = ["SandboxUnavailable", "allow_unsafe", "build_program", "extract_code", "passes_tests",
           "run_program", "run_programs", "score_responses"]
