"""The tiny task world: a seeded generator of tasks that mirror the paper's benchmarks.

The tiny preset trains and evaluates small models on this world instead of MMLU, ARC,
GSM8K, HumanEval, OpenWebText and NuminaMath, which cannot be downloaded here. Each task
family keeps its benchmark's format and has an answer a program can check:

    mmlu       multiple choice, answered by a letter (lexicon and reasoning questions)
    arc        multiple choice, answered by a letter (facts about a fixed world of animals)
    gsm8k      word problems with step-by-step solutions ending "#### N"
    humaneval  small Python functions with HumanEval's fields (prompt, entry_point,
               canonical_solution, test)
    documents  a plain-text stream about the same world (OpenWebText's role)
    math_cot   problems with worked solutions (NuminaMath-CoT's fields)

Every item is a pure function of (seed, task, difficulty, split, index). Train and test
are separated by a hash of the question text, so no test question appears in training.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from dlmkit.errors import UserError

DIFFICULTIES = ("easy", "medium", "hard")
# The strata of the paper's 310-prompt set, mirrored by the tiny world.
STRATA = {
    "mmlu": ("easy", "hard"),
    "arc": ("easy", "hard"),
    "gsm8k": ("easy", "medium", "hard"),
    "humaneval": ("mixed",),
}
SPLITS = ("train", "test")
TEST_SHARE = 8  # one question in TEST_SHARE (by text hash) belongs to the test split
LETTERS = "ABCD"

MC_SUFFIX = "Answer with the letter only."
GSM8K_SUFFIX = "\nSolve step by step."
HUMANEVAL_PREFIX = "Complete the following Python function:\n\n"

# --------------------------------------------------------------------------- lexicon

CATEGORIES = {
    "fruit": ["apple", "pear", "plum", "grape", "mango", "lemon", "peach", "cherry", "melon", "kiwi"],
    "animal": ["otter", "eagle", "trout", "camel", "horse", "whale", "sparrow", "frog", "bear", "moth"],
    "color": ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown"],
    "tool": ["hammer", "saw", "drill", "wrench", "chisel", "shovel", "rake", "ladder", "pliers", "axe"],
    "instrument": ["flute", "drum", "violin", "harp", "guitar", "piano", "trumpet", "cello", "banjo", "oboe"],
    "country": ["peru", "chad", "fiji", "oman", "laos", "mali", "cuba", "iran", "togo", "niger"],
}

# A fixed world of animals. Facts never change with the seed, so a model can learn them
# from the document stream and be asked about them in arc questions.
ANIMALS = {
    #          habitat   covering    food        legs  weight_kg
    "otter": ("river", "fur", "fish", 4, 10),
    "eagle": ("mountain", "feathers", "mice", 2, 5),
    "trout": ("river", "scales", "insects", 0, 2),
    "camel": ("desert", "fur", "grass", 4, 500),
    "horse": ("field", "fur", "grass", 4, 450),
    "whale": ("ocean", "skin", "krill", 0, 40000),
    "sparrow": ("field", "feathers", "seeds", 2, 1),
    "frog": ("pond", "skin", "insects", 4, 1),
    "bear": ("forest", "fur", "berries", 4, 300),
    "moth": ("forest", "scales", "nectar", 6, 0),
}
FLYERS = {"eagle", "sparrow", "moth"}
SWIMMERS = {"otter", "trout", "whale", "frog"}

NAMES = ["Ana", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jon", "Kai", "Lea",
         "Max", "Nia", "Omar", "Pia", "Raj", "Sam", "Tia", "Uma", "Vic", "Wes", "Yara", "Zed"]
THINGS = ["apples", "pens", "books", "coins", "marbles", "cards", "shells", "stamps", "cookies",
          "stickers", "eggs", "beads"]
PLACES = ["the market", "school", "the park", "the shop", "the fair", "the library"]
FILLER = [
    "It is a sunny day.", "The sky is clear.", "Everyone is in a good mood.",
    "The town is busy this morning.", "A light wind blows from the hills.",
    "The bell rings at noon.", "There is music in the square.",
]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def split_of(question: str) -> str:
    """The split a question belongs to, decided by its text alone."""
    return "test" if _stable_hash(question) % TEST_SHARE == 0 else "train"


def _mc_text(question: str, choices: list[str]) -> str:
    lines = [question] + [f"  {letter}. {choice}" for letter, choice in zip(LETTERS, choices)]
    return "\n".join(lines) + "\n" + MC_SUFFIX


def _shuffle_choices(rng: random.Random, correct: str, wrong: list[str]) -> tuple[list[str], str]:
    choices = [correct] + wrong[:3]
    rng.shuffle(choices)
    return choices, LETTERS[choices.index(correct)]


# --------------------------------------------------------------------------- mmlu


def _mmlu(rng: random.Random, difficulty: str) -> dict:
    if difficulty == "easy":  # lexicon membership
        category = rng.choice(sorted(CATEGORIES))
        correct = rng.choice(CATEGORIES[category])
        others = [w for c, ws in sorted(CATEGORIES.items()) if c != category for w in ws]
        choices, answer = _shuffle_choices(rng, correct, rng.sample(others, 3))
        question = f"Which of the following is {_a(category)}?"
        rationale = f"{correct.capitalize()} is {_a(category)}."
    elif difficulty == "medium":  # ordering of small numbers or words
        if rng.random() < 0.5:
            numbers = rng.sample(range(1, 100), 4)
            correct = max(numbers)
            question = "Which number is the largest?"
            choices, answer = _shuffle_choices(rng, str(correct), [str(n) for n in numbers if n != correct])
            rationale = f"{correct} is the largest number."
        else:
            words = rng.sample([w for ws in CATEGORIES.values() for w in ws], 4)
            correct = min(words)
            question = "Which word comes first in alphabetical order?"
            choices, answer = _shuffle_choices(rng, correct, [w for w in words if w != correct])
            rationale = f"{correct.capitalize()} comes first."
    else:  # arithmetic with distractors one step away, or a syllogism
        if rng.random() < 0.5:
            a, b = rng.randint(2, 20), rng.randint(2, 20)
            op = rng.choice(["+", "*"])
            value = a + b if op == "+" else a * b
            wrong = sorted({value + 1, value - 1, value + 10, value - 2} - {value})
            choices, answer = _shuffle_choices(rng, str(value), [str(w) for w in rng.sample(wrong, 3)])
            question = f"What is {a} {op} {b}?"
            rationale = f"{a} {op} {b} = {value}."
        else:
            group = rng.choice(["blips", "zorbs", "quans", "fets", "drams"])
            color = rng.choice(CATEGORIES["color"])
            name = rng.choice(NAMES)
            wrong = rng.sample([c for c in CATEGORIES["color"] if c != color], 3)
            choices, answer = _shuffle_choices(rng, color, wrong)
            question = f"All {group} are {color}. {name} is one of the {group}. What color is {name}?"
            rationale = f"{name} is {color}."
    return {"question": question, "choices": choices, "answer": answer, "rationale": rationale}


# --------------------------------------------------------------------------- arc


def _arc(rng: random.Random, difficulty: str) -> dict:
    animals = sorted(ANIMALS)
    if difficulty == "easy":  # one fact
        kind = rng.choice(["habitat", "covering", "food"])
        animal = rng.choice(animals)
        column = {"habitat": 0, "covering": 1, "food": 2}[kind]
        correct = ANIMALS[animal][column]
        pool = sorted({v[column] for v in ANIMALS.values()} - {correct})
        question = {"habitat": f"Where does the {animal} live?",
                    "covering": f"What covers the body of the {animal}?",
                    "food": f"What does the {animal} eat?"}[kind]
        choices, answer = _shuffle_choices(rng, correct, rng.sample(pool, 3))
        rationale = {"habitat": f"The {animal} lives in the {correct}.",
                     "covering": f"The {animal} is covered in {correct}.",
                     "food": f"The {animal} eats {correct}."}[kind]
    elif difficulty == "medium":  # which animal has a property
        prop = rng.choice(["fly", "swim"])
        members = FLYERS if prop == "fly" else SWIMMERS
        correct = rng.choice(sorted(members))
        choices, answer = _shuffle_choices(rng, correct, rng.sample(sorted(set(animals) - members), 3))
        question = f"Which animal can {prop}?"
        rationale = f"The {correct} can {prop}."
    else:  # comparisons over numeric facts, drawn until the answer is unique
        column, question = rng.choice([(4, "Which animal is the heaviest?"), (3, "Which animal has the most legs?")])
        while True:
            picked = rng.sample(animals, 4)
            values = sorted((ANIMALS[a][column] for a in picked), reverse=True)
            if values[0] > values[1]:
                break
        correct = max(picked, key=lambda a: ANIMALS[a][column])
        rationale = (f"The {correct} is the heaviest." if column == 4
                     else f"The {correct} has {ANIMALS[correct][3]} legs.")
        choices, answer = _shuffle_choices(rng, correct, [a for a in picked if a != correct])
    return {"question": question, "choices": choices, "answer": answer, "rationale": rationale}


# --------------------------------------------------------------------------- gsm8k


def _gsm8k(rng: random.Random, difficulty: str) -> dict:
    name, friend = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    n_steps = {"easy": 1, "medium": 2, "hard": 3}[difficulty]
    n_filler = {"easy": 0, "medium": 1, "hard": 3}[difficulty]
    total = rng.randint(2, 12)
    sentences = [f"{name} has {total} {thing}."]
    solution = [f"{name} starts with {total} {thing}."]
    for _ in range(n_steps):
        op = rng.choice(["buy", "give", "double"] if total <= 20 else ["give"])
        if op == "buy":
            k = rng.randint(1, 9)
            place = rng.choice(PLACES)
            sentences.append(f"{name} buys {k} more {thing} at {place}.")
            solution.append(f"After buying {k} more: {total} + {k} = {total + k}.")
            total += k
        elif op == "give" and total > 1:
            k = rng.randint(1, total - 1)
            sentences.append(f"{name} gives {k} {thing} to {friend}.")
            solution.append(f"After giving {k} away: {total} - {k} = {total - k}.")
            total -= k
        else:
            sentences.append(f"Then the number of {thing} {name} has doubles.")
            solution.append(f"After doubling: {total} * 2 = {total * 2}.")
            total *= 2
    for _ in range(n_filler):
        sentences.insert(rng.randint(1, len(sentences)), rng.choice(FILLER))
    question = " ".join(sentences) + f" How many {thing} does {name} have now?"
    solution.append(f"#### {total}")
    return {"question": question, "answer": str(total), "target": "\n".join(solution)}


# --------------------------------------------------------------------------- humaneval

_FUNCTIONS = {
    # name: (difficulty, signature args, docstring template, body template, example maker)
    "add_k": ("easy", "x", "Return x plus {k}.", "return x + {k}", lambda r, k: r.randint(-9, 20)),
    "times_k": ("easy", "x", "Return x multiplied by {k}.", "return x * {k}", lambda r, k: r.randint(-9, 20)),
    "is_multiple": ("easy", "n", "Return True if n is a multiple of {k}.", "return n % {k} == 0",
                    lambda r, k: r.randint(0, 40)),
    "repeat_text": ("easy", "s", "Return the string s repeated {k} times.", "return s * {k}",
                    lambda r, k: r.choice(["ab", "x", "hi", "cat"])),
    "sum_list": ("medium", "xs", "Return the sum of the numbers in xs plus {k}.", "return sum(xs) + {k}",
                 lambda r, k: [r.randint(0, 9) for _ in range(r.randint(1, 4))]),
    "scale_all": ("medium", "xs", "Return a list with every number in xs multiplied by {k}.",
                  "return [x * {k} for x in xs]", lambda r, k: [r.randint(0, 9) for _ in range(r.randint(1, 4))]),
    "keep_above": ("medium", "xs", "Return the numbers in xs that are greater than {k}.",
                   "return [x for x in xs if x > {k}]",
                   lambda r, k: [r.randint(0, 12) for _ in range(r.randint(1, 5))]),
    "count_char": ("medium", "s", "Return how many times the letter '{c}' appears in s.", "return s.count('{c}')",
                   lambda r, k: r.choice(["banana", "apple", "level", "otter", "camel", "eagle"])),
    "clamp": ("hard", "x", "Return x limited to the range from {k} to {k2}.",
              "if x < {k}:\n        return {k}\n    if x > {k2}:\n        return {k2}\n    return x",
              lambda r, k: r.randint(-5, 25)),
    "count_even_above": ("hard", "xs", "Return how many numbers in xs are even and greater than {k}.",
                         "count = 0\n    for x in xs:\n        if x % 2 == 0 and x > {k}:\n"
                         "            count += 1\n    return count",
                         lambda r, k: [r.randint(0, 12) for _ in range(r.randint(1, 5))]),
    "first_over": ("hard", "xs", "Return the first number in xs greater than {k}, or -1 if there is none.",
                   "for x in xs:\n        if x > {k}:\n            return x\n    return -1",
                   lambda r, k: [r.randint(0, 12) for _ in range(r.randint(1, 5))]),
}


def _humaneval(rng: random.Random, difficulty: str) -> dict:
    if difficulty == "mixed":
        difficulty = rng.choice(DIFFICULTIES)
    family = rng.choice(sorted(f for f, spec in _FUNCTIONS.items() if spec[0] == difficulty))
    _, arg, doc, body, make_example = _FUNCTIONS[family]
    k = rng.randint(2, 9)
    fields = {"k": k, "k2": k + rng.randint(3, 10), "c": rng.choice("aeilnt")}
    suffix = rng.choice(["", "_v2", "_fn", "_value", "_it"])
    entry_point = f"{family}{suffix}"
    code = f"def {entry_point}({arg}):\n    {body.format(**fields)}\n"
    namespace: dict = {}
    exec(code, namespace)  # our own generated code, to compute the expected outputs
    fn = namespace[entry_point]
    examples = []
    while len(examples) < 4:
        example = make_example(rng, k)
        if example not in examples:
            examples.append(example)
    shown = examples[0]
    prompt = (f"def {entry_point}({arg}):\n"
              f'    """{doc.format(**fields)}\n'
              f"    >>> {entry_point}({shown!r})\n"
              f"    {fn(shown)!r}\n"
              f'    """\n')
    solution = f"    {body.format(**fields)}\n"
    test = "def check(candidate):\n" + "".join(
        f"    assert candidate({e!r}) == {fn(e)!r}\n" for e in examples)
    return {"question": prompt, "prompt": prompt, "entry_point": entry_point,
            "canonical_solution": solution, "test": test,
            "target": f"```python\n{prompt}{solution}```", "difficulty_drawn": difficulty}


# --------------------------------------------------------------------------- documents and math


def _document(rng: random.Random) -> str:
    """A short paragraph about the animal world, the lexicon, or a counting story."""
    kind = rng.choice(["animal", "animal", "lexicon", "story"])
    if kind == "animal":
        animal = rng.choice(sorted(ANIMALS))
        habitat, covering, food, legs, weight = ANIMALS[animal]
        facts = [f"The {animal} lives in the {habitat}.", f"The {animal} is covered in {covering}.",
                 f"The {animal} eats {food}.", f"The {animal} has {legs} legs.",
                 f"An adult {animal} weighs about {weight} kilograms."]
        if animal in FLYERS:
            facts.append(f"The {animal} can fly.")
        if animal in SWIMMERS:
            facts.append(f"The {animal} can swim.")
        rng.shuffle(facts)
        return " ".join(facts[: rng.randint(3, len(facts))])
    if kind == "lexicon":
        category = rng.choice(sorted(CATEGORIES))
        words = rng.sample(CATEGORIES[category], 4)
        return " ".join(f"{w.capitalize()} is {_a(category)}." for w in words)
    item = _gsm8k(rng, rng.choice(DIFFICULTIES))
    return item["question"].rsplit(" How many", 1)[0] + " " + item["target"].splitlines()[-2]


def _math_cot(rng: random.Random, difficulty: str) -> dict:
    a = rng.randint(2, 9)
    x = rng.randint(1, 12)
    b = rng.randint(1, 30)
    if difficulty == "easy":
        problem = f"Compute {a * x} + {b}."
        steps = [f"We add the two numbers: {a * x} + {b} = {a * x + b}."]
        value = a * x + b
    else:
        problem = f"Solve for x: {a}x + {b} = {a * x + b}."
        steps = [f"Subtract {b} from both sides: {a}x = {a * x + b} - {b} = {a * x}.",
                 f"Divide both sides by {a}: x = {a * x} / {a} = {x}."]
        value = x
    steps.append(f"The answer is $\\boxed{{{value}}}$.")
    return {"problem": problem, "solution": "\n".join(steps), "answer": str(value)}


# --------------------------------------------------------------------------- the world

_GENERATORS = {"mmlu": _mmlu, "arc": _arc, "gsm8k": _gsm8k, "humaneval": _humaneval}


def _format_prompt(task: str, raw: dict) -> str:
    if task in ("mmlu", "arc"):
        return _mc_text(raw["question"], raw["choices"])
    if task == "gsm8k":
        return raw["question"] + GSM8K_SUFFIX
    return HUMANEVAL_PREFIX + raw["prompt"]


class StrataSampler:
    """What every generation of the world shares: a stratum's first n distinct items, and the
    prompt set (n items per stratum), from the generation's own `item(task, difficulty, index, split)`."""

    @staticmethod
    def check_stratum(task: str, difficulty: str, tasks) -> None:
        """A one-line error for a task the generation does not make (`tasks`) or a difficulty it lacks."""
        if task not in tasks:
            raise UserError(f"unknown tiny-world task {task!r}; choose from {', '.join(tasks)}")
        allowed = DIFFICULTIES + (("mixed",) if task == "humaneval" else ())
        if difficulty not in allowed:
            raise UserError(f"unknown difficulty {difficulty!r} for {task}; choose from {', '.join(allowed)}")

    def items(self, task: str, difficulty: str, n: int, split: str = "test") -> list[dict]:
        """The first n distinct items of a stratum (distinct prompts)."""
        out, seen, index = [], set(), 0
        while len(out) < n:
            item = self.item(task, difficulty, index, split)
            index += 1
            if item["prompt"] not in seen:
                seen.add(item["prompt"])
                out.append(item)
            if index > 50 * n + 1000:
                raise UserError(f"the tiny world has fewer than {n} distinct {task}/{difficulty} {split} items")
        return out

    def strata(self, n_per_stratum: int, split: str = "test") -> list[dict]:
        """The tiny mirror of the paper's prompt set: n items for each (task, stratum)."""
        return [item for task, levels in STRATA.items() for level in levels
                for item in self.items(task, level, n_per_stratum, split)]


@dataclass(frozen=True)
class TinyWorld(StrataSampler):
    """Seeded source of every kind of tiny-world text. `seed` picks the world's sample."""

    seed: int = 0

    def _rng(self, *key) -> random.Random:
        return random.Random("/".join(map(str, (self.seed, *key))))

    def item(self, task: str, difficulty: str, index: int, split: str = "test") -> dict:
        """Benchmark-style item `index` of a stratum: prompt, gold answer, reference response."""
        self.check_stratum(task, difficulty, _GENERATORS)
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        for attempt in range(10_000):
            rng = self._rng(task, difficulty, split, index, attempt)
            raw = _GENERATORS[task](rng, difficulty)
            prompt = _format_prompt(task, raw)
            if split_of(prompt) == split:
                break
        if task in ("mmlu", "arc"):
            # A one-line rationale, then the letter: the model names the right choice before it
            # looks up its letter, which a small model learns far more easily than letter-first.
            raw["target"] = f"{raw['rationale']} So the answer is {raw['answer']}."
        item = {
            "id": f"tiny-{task}-{difficulty}-{split}-{index}",
            "task": task,
            "difficulty": difficulty,
            "prompt": prompt,
            "answer": raw.get("answer"),
            "target": raw["target"],
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": raw["target"]}],
        }
        if task in ("mmlu", "arc"):
            item["choices"] = raw["choices"]
        if task == "humaneval":
            item["answer"] = None
            for key in ("entry_point", "canonical_solution", "test"):
                item[key] = raw[key]
            item["humaneval_prompt"] = raw["prompt"]
        return item


    def documents(self, n: int, split: str = "train") -> list[str]:
        """Plain-text documents (the OpenWebText role); split by text hash like the tasks."""
        out, index = [], 0
        while len(out) < n:
            text = _document(self._rng("doc", split, index))
            index += 1
            if split_of(text) == split:
                out.append(text)
        return out

    def math_cot(self, n: int, split: str = "train") -> list[dict]:
        """NuminaMath-CoT-shaped records: problem, solution, messages."""
        out, index = [], 0
        while len(out) < n:
            rng = self._rng("math", split, index)
            index += 1
            record = _math_cot(rng, rng.choice(["easy", "hard"]))
            if split_of(record["problem"]) != split:
                continue
            record["messages"] = [{"role": "user", "content": record["problem"]},
                                  {"role": "assistant", "content": record["solution"]}]
            out.append(record)
        return out

    def chat_examples(self, n: int, split: str = "train", tasks=tuple(_GENERATORS)) -> list[dict]:
        """A balanced mix of chat-formatted task items for instruction tuning."""
        levels = [(t, d) for t in tasks for d in DIFFICULTIES]
        return [self.item(*levels[i % len(levels)], index=i // len(levels), split=split) for i in range(n)]
