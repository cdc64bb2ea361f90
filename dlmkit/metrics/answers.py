r"""Ground-truth answer extraction with lm-evaluation-harness conventions.

Multiple choice: the first standalone letter A-D.

GSM8K: lm-evaluation-harness's two filters (tasks/gsm8k/gsm8k.yaml, version 3), under its
metric names, then its exact_match:

    strict-match       regex `#### (\-?[0-9\.\,]+)`, group_select 0 (the first match)
    flexible-extract   regex `(-?[$0-9.,]{2,})|(-?[0-9]+)`, group_select -1 (the last match)

A regex filter takes re.findall's match number group_select; when the pattern has groups
(a tuple per match) it keeps the first non-empty one; it strips whitespace; with no match
the answer is "[invalid]". take_first keeps the one response. exact_match then deletes the
regexes ",", "\$", "(?s).*#### " and "\.$" (re.sub, in that order) from the answer and the
target alike, lower-cases both (ignore_case; ignore_punctuation is off) and compares. So
"It is 12. Hope this helps.." is wrong under flexible-extract: its last match is "..",
which leaves ".". A number needs two characters to match the first group, so "5 $." ends
on "$.", which leaves "".

"last-number" is our own, more lenient reading (not lm-eval's): the last match of the
flexible pattern that still holds a digit, so trailing punctuation never hides the number.
"strict" and "flexible" are accepted as the old names of strict-match and flexible-extract.
"""

from __future__ import annotations

import re

_LETTER = re.compile(r"\b([A-D])\b")
INVALID = "[invalid]"  # lm-eval's fallback when a filter finds nothing
# name -> (pattern, group_select), as in lm-eval's gsm8k.yaml
GSM8K_FILTERS = {
    "strict-match": (re.compile(r"#### (\-?[0-9\.\,]+)"), 0),
    "flexible-extract": (re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)"), -1),
}
GSM8K_MODES = (*GSM8K_FILTERS, "last-number")
_ALIASES = {"strict": "strict-match", "flexible": "flexible-extract"}
_IGNORE = [re.compile(r","), re.compile(r"\$"), re.compile(r"(?s).*#### "), re.compile(r"\.$")]


def extract_letter(response: str) -> str | None:
    """The chosen letter, or None when the response names none."""
    match = _LETTER.search(response.strip())
    return match.group(1) if match else None


def normalize_number(text: str) -> str:
    text = text.replace(",", "").replace("$", "").strip()
    return text[:-1] if text.endswith(".") else text


def _mode(mode: str) -> str:
    mode = _ALIASES.get(mode, mode)
    if mode not in GSM8K_MODES:
        raise ValueError(f"GSM8K mode must be one of {', '.join(GSM8K_MODES)}, got {mode!r}")
    return mode


def gsm8k_filter(response: str, name: str = "flexible-extract") -> str:
    """lm-eval's regex filter `name` (strict-match or flexible-extract) on one response:
    the selected match's first non-empty group, stripped, or "[invalid]"."""
    name = _mode(name)
    if name not in GSM8K_FILTERS:
        raise ValueError(f"{name!r} is not an lm-eval filter; use one of {', '.join(GSM8K_FILTERS)}")
    pattern, group_select = GSM8K_FILTERS[name]
    matches = pattern.findall(response)
    if not matches:
        return INVALID
    match = matches[group_select]
    if isinstance(match, tuple):
        match = [m for m in match if m][0]
    return match.strip()


def exact_match_normalize(text: str) -> str:
    """lm-eval gsm8k's exact_match view of a string: regexes_to_ignore deleted, lower case."""
    for pattern in _IGNORE:
        text = pattern.sub("", text)
    return text.lower()


def gsm8k_exact_match(filtered: str, target: str) -> bool:
    """exact_match of a filtered answer against the target (the full solution or its final number)."""
    return exact_match_normalize(filtered) == exact_match_normalize(target)


def _last_number(response: str) -> str | None:
    pattern = GSM8K_FILTERS["flexible-extract"][0]
    found = [normalize_number(a or b) for a, b in pattern.findall(response)]
    found = [f for f in found if any(c.isdigit() for c in f)]
    return found[-1] if found else None


def extract_gsm8k_answer(response: str, mode: str = "strict-match") -> str | None:
    """The final numeric answer of a GSM8K-style response as compared (None when the filter finds
    nothing): lm-eval's filter then its exact_match normalisation, or our "last-number"."""
    mode = _mode(mode)
    if mode == "last-number":
        return _last_number(response)
    filtered = gsm8k_filter(response, mode)
    return None if filtered == INVALID else exact_match_normalize(filtered)


def check_answer(item: dict, response: str, gsm8k_mode: str = "flexible-extract") -> bool:
    """Whether a response answers a benchmark or tiny-world item (HumanEval: executed)."""
    if item["task"] in ("mmlu", "arc"):
        return extract_letter(response) == item["answer"]
    if item["task"] == "gsm8k":
        mode = _mode(gsm8k_mode)
        if mode == "last-number":
            return _last_number(response) == exact_match_normalize(item["answer"])
        return gsm8k_exact_match(gsm8k_filter(response, mode), item["answer"])
    if item["task"] == "humaneval":
        from dlmkit.metrics.code_exec import passes_tests

        return passes_tests(item, response)
    raise ValueError(f"no answer checker for task {item['task']!r}")
