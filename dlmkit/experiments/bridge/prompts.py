"""The prompts of the bridge experiment.

`published`: the twenty open-ended questions of the published bridge script (5 easy sanity
checks, 5 medium explanations, 10 hard multi-step problems). They have no reference answer:
the experiment scores against the large AR model's own answer, so none is needed.
`benchmark`: the suite's prompt set (dlmkit.data.benchmarks; the tiny world's mirror on the
tiny preset), whose items also carry ground truth, so answers get an accuracy as well.
The tiny models know only the tiny world, so the tiny preset uses `benchmark`.
"""

from __future__ import annotations

from dlmkit.data.benchmarks import prompt_set as benchmark_set, tiny_prompts
from dlmkit.errors import UserError

PROMPT_SETS = ("published", "benchmark")
TINY_DEFAULT_PER_STRATUM = 2  # 16 tiny-world prompts: about the published set's 20

PUBLISHED = {
    "easy": [
        "What is the capital of France?",
        "What does DNA stand for?",
        "How many sides does a hexagon have?",
        "What is the boiling point of water in Celsius?",
        "Who wrote Romeo and Juliet?",
    ],
    "medium": [
        "Explain the difference between mitosis and meiosis.",
        "What causes tides on Earth?",
        "Describe how a transformer neural network processes text.",
        "What is the significance of the Krebs cycle?",
        "How does a binary search tree maintain its ordering property?",
    ],
    "hard": [
        "A farmer has chickens and cows. He counts 20 heads and 56 legs. How many chickens does he have?",
        "You have 8 balls, one slightly heavier. Using a balance scale only twice, find the heavy ball. "
        "Explain your strategy step by step.",
        "Write a Python function that returns the length of the longest increasing subsequence of a list "
        "of integers.",
        "Explain the causes and consequences of the 2008 financial crisis. Connect the housing bubble, "
        "derivatives, bank failures, and government response into a coherent narrative.",
        "A patient presents with sudden onset chest pain, diaphoresis, and jaw pain. Walk through the "
        "differential diagnosis, initial workup, and treatment priorities.",
        "Compare and contrast photosynthesis and cellular respiration. Explain how they are complementary "
        "processes and why both are necessary for life on Earth.",
        "Prove that the square root of 2 is irrational.",
        "Describe the mechanism of action of ACE inhibitors and explain why they are preferred over other "
        "antihypertensives in patients with diabetes and chronic kidney disease.",
        "Implement a function to detect a cycle in a linked list using O(1) space.",
        "Explain how RLHF (Reinforcement Learning from Human Feedback) is used to align large language "
        "models, including the reward model training and PPO stages.",
    ],
}


def published_prompts(subset: int | None = None) -> list[dict]:
    """The published prompts as items (no ground truth), `subset` per difficulty."""
    items = []
    for difficulty, texts in PUBLISHED.items():
        for k, text in enumerate(texts[:subset] if subset else texts):
            items.append({"id": f"bridge-{difficulty}-{k}", "task": "open", "difficulty": difficulty,
                          "prompt": text, "answer": None})
    return items


def default_prompt_set(preset: str) -> str:
    return "published" if preset == "paper" else "benchmark"


def bridge_prompts(preset: str, prompt_set: str | None = None, subset: int | None = None) -> list[dict]:
    """The items one bridge run probes."""

    prompt_set = prompt_set or default_prompt_set(preset)
    if prompt_set not in PROMPT_SETS:
        raise UserError(f"unknown prompt set {prompt_set!r}; pass --prompt-set {' or '.join(PROMPT_SETS)}")
    if prompt_set == "published":
        if preset == "tiny":
            raise UserError("the published prompts ask about the real world, which the tiny models never saw; "
                            "pass --prompt-set benchmark with --preset tiny")
        return published_prompts(subset)
    if preset == "tiny":
        return tiny_prompts(subset or TINY_DEFAULT_PER_STRATUM)
    return benchmark_set(preset, subset)


def has_ground_truth(item: dict) -> bool:
    return item["task"] in ("mmlu", "arc", "gsm8k", "humaneval")


__all__ = ["PROMPT_SETS", "PUBLISHED", "bridge_prompts", "default_prompt_set", "has_ground_truth",
           "published_prompts"]
