"""Ground-truth answer extraction with lm-evaluation-harness conventions.

Multiple choice: the first standalone letter A-D. GSM8K: "strict" takes the number after
"####" (regex `#### (\\-?[0-9\\.\\,]+)`), "flexible" the last number in the text; both
drop ",", "$" and a trailing "." before exact match.
"""

from __future__ import annotations

import re

_LETTER = re.compile(r"\b([A-D])\b")
_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def extract_letter(response: str) -> str | None:
    """The chosen letter, or None when the response names none."""
    match = _LETTER.search(response.strip())
    return match.group(1) if match else None


def normalize_number(text: str) -> str:
    text = text.replace(",", "").replace("$", "").strip()
    return text[:-1] if text.endswith(".") else text


def extract_gsm8k_answer(response: str, mode: str = "strict") -> str | None:
    """The final numeric answer of a GSM8K-style response ("strict" or "flexible")."""
    if mode == "strict":
        match = _STRICT.search(response)
        return normalize_number(match.group(1)) if match else None
    if mode == "flexible":
        found = [a or b for a, b in _FLEXIBLE.findall(response)]
        found = [normalize_number(f) for f in found if normalize_number(f) not in ("", "-", ".")]
        return found[-1] if found else None
    raise ValueError(f"mode must be 'strict' or 'flexible', got {mode!r}")


def check_answer(item: dict, response: str, gsm8k_mode: str = "flexible") -> bool:
    """Whether a response answers a benchmark or tiny-world item (HumanEval: executed)."""
    if item["task"] in ("mmlu", "arc"):
        return extract_letter(response) == item["answer"]
    if item["task"] == "gsm8k":
        return extract_gsm8k_answer(response, mode=gsm8k_mode) == normalize_number(item["answer"])
    if item["task"] == "humaneval":
        from dlmkit.metrics.code_exec import passes_tests

        return passes_tests(item, response)
    raise ValueError(f"no answer checker for task {item['task']!r}")
