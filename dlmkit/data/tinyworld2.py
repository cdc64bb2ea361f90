"""Generation 2 of the tiny world: a gazetteer that one model knows and the other does not.

Why a second generation
-----------------------
In generation 1 (`tinyworld.py`) every answer is a deterministic template over a fixed
world that all the tiny models learned alike, so the tiny Dream knows nothing the small
AR does not, and entropy order commits the template (the same tokens the AR writes on its
own): anchors carry nothing. Generation 2 builds the two asymmetries the paper relies on
between Dream-7B and Qwen2.5-0.5B into the testbed, openly:

- knowledge: a fact base that the DLM learns fully from documents, while the small AR
  never sees the facts asked about at test time;
- wording: every answer slot comes in three equally likely paraphrases (picked by a
  seeded RNG per item), so two models' free answers differ in wording, and the tokens a
  model that knows the facts is sure of are the content ones.

Generation 1 stays as it is: the shipped tokenizer and checkpoints belong to it.

The fact base
-------------
`N_TOWNS` fictional towns. A name is HEAD + MID + TAIL ("Faring", "Lumber", "Tolde"),
and every name is exactly three tokens of the shipped BPE (" F" "ar" "ing"; the test
measures it), so generation 2 reuses the generation-1 tokenizer and needs no retraining
of any checkpoint that does not learn the facts. Each town has seven attributes, each
value one token of that BPE (" pear", " hammer", ...; bells a single digit):

    crop (a fruit)  trade (a tool)  music (an instrument)  roof (a colour)
    emblem (an animal)  country  bells (2..9, the number of bells)

The values are generation 1's lexicon words, so no new token is needed; what is new is
which town has which value, drawn uniformly per attribute by a seeded RNG
(`Gazetteer(seed)`).

The towns are split once, by the seed: `N_HELDOUT` held-out towns, the rest training
towns. Every test item (the 310-prompt set) asks about held-out towns only; every train
item about training towns only, so train and test never share a question.

Who knows what (`ROLE_TOWNS`, `role_documents`, `role_text_stream`)
------------------------------------------------------------------
    dlm          documents for every town            (Dream-7B: knows the facts)
    ar_small     documents for the training towns    (Qwen-0.5B: never sees a held-out fact)
    ar_medium    training towns + a seeded half of the held-out towns
    ar_large     every town                          (the bridge's large AR knows them)
    ar_control   every town, at ar_small's size,     (the control gap-filler: anchors
                 and chat about the held-out towns    should add almost nothing to it)
    target, drafter, mdlm_drafter                     (SpecDiff's gpt2-xl, gpt2 and mdlm-owt:
                 every town, as ar_large              the same text, models of different cost;
                                                      the shipped drafters learn the target's
                                                      greedy text instead: recipes/distill.py)
The chat (instruction) examples are the same for every role: train items, which only
ever ask about training towns. A role learns a held-out town's facts from documents or
not at all, except the control, which also reads chat examples about the held-out towns
(`heldout_chat_examples`: the same strata with their own seeds, never a test prompt): a
gap-filler that has seen the held-out facts asked and answered. Trained on documents alone
the control stated a held-out value in 0.85 of its probe answers, and in answers naming
four towns it miscopied names and values, which Dream's anchors then fixed for it.
The causal roles also read chat examples about decoy towns (`decoy_examples`: the 616
possible names the gazetteer leaves unused, facts no document states): with only
the 40 training towns' names in chat answers, a causal model learns those names by heart
and answers a question about a held-out town with a training town's name ("the fruit of
Fenber" for Fenist), which no fact can then rescue; the decoys leave copying the prompt's
name as the way to write it. Dream, which sees the prompt's name from every position,
copies it without them.
Documents are knowledge-augmented: each town gets several documents, each
stating all seven facts in a shuffled order, each fact in one of three phrasings, the
town named in every sentence (never first in a text, so its tokens match the prompt's).

How each stratum asks (formats of generation 1 kept: MC_SUFFIX, GSM8K_SUFFIX,
HUMANEVAL_PREFIX, the option lines, `#### N`, HumanEval's fields)
---------------------------------------------------------------
    mmlu easy    one fact (crop, trade or music) of a held-out town, 4 options
    mmlu hard    two facts at once ("its fruit and its tool"), 4 options of pairs
    arc easy     one fact (roof, emblem, country or bells)
    arc hard     which of four held-out towns has the most bells (four facts, compared)
    gsm8k        a person collects one thing per bell of 2 (easy), 2 (medium) or 3
                 (hard) held-out towns, then 0, 1 or 2 of generation 1's steps (buy /
                 give / double) among 0, 1 or 3 filler sentences; the numbers come from
                 the facts
    humaneval    a function named after a held-out town whose constant is that town's
                 number of bells ("Return x plus the number of bells in Faring."); the
                 docstring shows no example, which would give the constant away

Answer layouts: the facts in the documents' words, one paraphrase slot
----------------------------------------------------------------------
Multiple choice: OPENER, then every fact used, each as the documents' first phrasing
(`fact_clause`), then ", so LETTER.":

    "Now, the fruit of Faring is the pear, so C."
    "Well, the tool of Faring is the saw and the instrument of Faring is the harp, so A."
    "Yes, the town of Faring has 7 bells, the town of Lumber has 3 bells, ... so A."  (arc hard:
                                                  every option's count, in option order)

Why this layout (revision 2 of generation 2; revision 1 measured otherwise on the full run):
- knowledge extraction. Revision 1 answered "Now, pear is this town's fruit." The tiny Dream
  knew every held-out fact in the documents' words (cloze 1.00) yet stated it in 0.57 of its
  answers: asked a question, a small model does not find what it learned in other words.
  Here the answer contains the document sentence itself, so stating the fact is the recall
  the model was trained on, and the value is what a knowing model is sure of.
- the letter follows the value by two tokens and is a lookup of the option line that holds
  it (VALUE is written as in the option line); revision 1 put a paraphrased conclusion
  between them and no model learned the lookup (letter accuracy at chance everywhere).
- one paraphrase slot. Two models' free answers still differ in wording (the opener here,
  the lead of each GSM8K step line, the code constant's name), but the paraphrased words
  are few: revision 1 paraphrased opener, frame and conclusion (about 8 of 11 words), so a
  gap-filler that knew every fact still gained +0.15 to +0.25 word F1 from anchors that
  only fixed Dream's wording, and the control could not show the mechanism vanishing.
  Here another opener costs about 0.07 word F1 (tested), other facts several times that.
The town's name in an answer is a copy of the prompt (every model knows it), not content.
Measured on the full tiny run (README, "Inverse speculation"): extraction works (Dream states
0.69 of held-out values, the control 0.85), but the tiny Dream decodes nearly left to right,
so its first commits are this layout's opening template ("Now, the fruit of Faring is the"),
not the value; letters stay at chance for every model. After 8 of its steps Dream is right
and sure (p >= 0.9) of a third to a half of the values it has not committed, but surer still
of the fixed words and copied names around them, which entropy order commits first: what
would put the values first is a layout whose other positions are uncertain wording. The run's
table_gain_sources splits what anchors add: at 25% most of the control's gained words are
wording the anchors fix for any gap-filler, then letters (which no model reads from the
options) and Dream's own mistakes; a control that gains nothing also needs a Dream as right
about the held-out facts as the control is.

Revision 3: code answers are the body, the constant always named k (the inverse-speculation roles)
------------------------------------------------------------------------------------------------
`TinyWorld2(seed, revision=3)`; `presets.TINY_REVISION` says which role learned which revision
(SpecDiff's models and the self-spec MDLM keep revision 2, whose items a test pins). Two changes,
to HumanEval-like items only (every other item, the documents and the fact base are revision
2's, draw for draw): "```python\n    k = 7\n    return x + k\n```", the function's body (as
HumanEval's canonical_solution) in a fenced block, where revision 2 repeated the prompt's
function first and drew the constant's name from k, m, c. Measured on revision 2's full tiny run:
- the tiny Dream knew the constant (right in 46 of the 50 code prompts of N=190) and passed 10:
  the name is the answer's least certain token, at two positions, so entropy order left both to
  the last step, where the reference sampler commits whatever is still open at once, each
  position drawn on its own ("k = 3 ... x > c"). With one name, 41 of the 50 answers pass. A
  name at two positions is a dependency that parallel decoding cannot keep; one name has none.
- the constant sat after the repeated prompt (answer token ~40; Dream committed it at step 52
  on average), beyond the 10% and 25% anchors, so the pipeline's code accuracy was the AR's.
  In the body it is the answer's eighth token (of about 18).
- the tests (never in a training text) add inputs to the four drawn ones until no other bell
  count passes them unless it computes the same function (`_examples`): revision 2's four
  inputs let 55 of the 350 wrong constants of the 50 code prompts pass, and the small AR
  retrained on revision 3 passed 18% of the code prompts while naming the right constant in 4%.

Revision 5: every kind of multiple-choice question has a prompt length of its own
--------------------------------------------------------------------------------
(Revision 4 was a trial with an epithet after every value, reverted: the README's inverse
section.) Revision 5 is revision 3 draw for draw but for the words of seven questions
(`QUESTIONS_R5`, `PAIR_QUESTIONS_R5`), so that no two of the 11 kinds of multiple-choice question
(7 single facts, 3 pairs, the most bells) have one token length, nor do their prompts (questions
8-20 tokens, prompts 36-52; tested). The tiny Dream of revision 3 does not read the asked
attribute from the question's noun but from where the question and the options sit: on crossed
probes (`TinyWorld2.crossed_probes`: "Which tool is grown in Fenist?" with four instruments as
options) it follows the question's frame in 0.67 and the noun and the options in 0.17 each
(`benchmarks/fact_knowledge.py`, `reads_*`). The tool and the instrument prompts had one length and
both got the instrument, and the animal question, as long as every pair question, got the tool.
So it stated another true fact of the town in 0.27 of the held-out probes and the asked one in
0.70, while knowing the value given its answer's words (0.99). Neither more chat batches nor
filler after the question (which takes the length away) taught it to read the noun in 300-600
steps of further training (trials, not shipped); the causal ARs read the options or the noun. A
first build of revision 5 that made only the prompts' lengths distinct fixed the tool and the
instrument and left the animal question, still as long as a pair question, answered with the
tool. Revision 5's Dream still follows the frame (1.00 on crossed probes), which now tells every
kind apart. Where Dream hesitates between attributes, the
noun and its value are the answer's least certain tokens, and entropy order commits them after the
canvas's `<|endoftext|>` positions (steps 113-114 of 128), out of every anchor set; where it does
not, the value is committed at step 10, inside the 10% anchors.

GSM8K: one line per town in the documents' words ("The town of Faring has 7 bells."), then
one line per step whose lead comes in three phrasings; the last line is "#### N".
HumanEval: the body first binds the constant to one of three names (k, m, c: same length)
and then uses it; the reference answer repeats the prompt in a fenced block as in
generation 1, so most of a code answer is a copy every model writes alike (revision 2; revision 3
above).

The tokenizer
-------------
Generation 2 reuses the generation-1 BPE (1207 entries, `<|mask|>` last): every one of
the 680 possible town names is exactly three of its tokens with a leading space, every
attribute value one (" pear"; a bell count is a space and a digit, as Qwen2 writes
numbers), so no checkpoint needs a new vocabulary. Every reference answer fits the tiny
preset's 128-token canvas (each role's card records the mean per task).

Every item carries `content`: the character spans of its reference answer that the fact
base determines (values, the letter, numbers derived from facts, the code constant), and
`paraphrase`: the indices of the phrasings drawn (the test checks that they are
equiprobable). `content_spans` / `content_flags` find the same kinds of spans in any answer,
a model's included, token by token: what a run counts as the content share of its anchors.
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field
from functools import cached_property

from dlmkit.data.tinyworld import (DIFFICULTIES, FILLER, GSM8K_SUFFIX, HUMANEVAL_PREFIX, LETTERS, MC_SUFFIX, NAMES,
                                   SPLITS, STRATA, THINGS, StrataSampler)
from dlmkit.errors import UserError

GENERATION = 2
# Revision 2: the layout SpecDiff's and the self-spec models learned. Revision 3: code answers are the
# function's body, its constant always named k. Revision 5 (the inverse-speculation roles): revision 3 with
# every kind of multiple-choice question, and of prompt, of its own token length (the module docstring).
REVISIONS = (2, 3, 5)

# ----------------------------------------------------------------------------- the gazetteer

# Every HEAD+MID+TAIL is three tokens of the shipped BPE (" F" "ar" "ing"); MIDs that the BPE
# would merge with a HEAD into a generation-1 word ("Sam", "Gus", "How") or split ("us") are left out.
HEADS = ("F", "G", "H", "L", "M", "P", "S", "T")
MIDS = ("ar", "an", "en", "er", "ol", "um", "ur", "el", "om", "or", "on", "al", "il", "un", "ed", "iv", "ic")
TAILS = ("ber", "ly", "de", "ist", "ing")
# 64 towns x 7 attributes = 448 facts: a first attempt with 200 towns (1400 facts) left the tiny
# Dream at chance on every fact after 1100 steps (within-attribute NLL ln 10), and a CPU budget of
# minutes per role cannot wait out that plateau; fewer keys give each fact more reads per step.
N_TOWNS = 64
N_HELDOUT = 24
TEST_GUARD = 50  # test items per stratum that the control's held-out chat never repeats (the 310-prompt set's most)

# attribute -> (noun used in answers, values: generation-1 lexicon words, one token each)
ATTRIBUTES = {
    "crop": ("fruit", ("apple", "pear", "plum", "grape", "mango", "lemon", "peach", "cherry", "melon", "kiwi")),
    "trade": ("tool", ("hammer", "saw", "drill", "wrench", "chisel", "shovel", "rake", "ladder", "pliers", "axe")),
    "music": ("instrument", ("flute", "drum", "violin", "harp", "guitar", "piano", "trumpet", "cello", "banjo",
                             "oboe")),
    "roof": ("color", ("red", "blue", "green", "yellow", "purple", "orange", "black", "white", "pink", "brown")),
    "emblem": ("animal", ("otter", "eagle", "trout", "camel", "horse", "whale", "sparrow", "frog", "bear", "moth")),
    "country": ("country", ("peru", "chad", "fiji", "oman", "laos", "mali", "cuba", "iran", "togo", "niger")),
    "bells": ("bell count", tuple(str(n) for n in range(2, 10))),
}
MMLU_ATTRIBUTES = ("crop", "trade", "music")
ARC_ATTRIBUTES = ("roof", "emblem", "country", "bells")

# Who learns which towns' facts (see the module docstring).
ROLES = ("dlm", "ar_small", "ar_medium", "ar_large", "ar_control", "target", "drafter", "mdlm_drafter", "mdlm")

# A language-model role's corpus (`role_corpus`): the same chat examples (training towns) for every
# role, PER_TOWN documents per town the role may know (about half of a causal role's stream), and
# N_DECOY chat examples about decoy towns (`TinyWorld2.decoy_examples`).
N_CHAT = 8000
PER_TOWN = 96
N_DECOY = 4000

# ----------------------------------------------------------------------------- paraphrase banks

# The one paraphrase slot of a multiple-choice answer: three openers of equal token length (tested),
# so everything after them sits at the same position whichever is drawn.
OPENERS = ("Well,", "Now,", "Yes,")

# Document sentences: three phrasings per attribute; the town is never the first word. The first
# phrasing is also how every answer states a fact (`fact_clause`): the documents' own words.
DOC_SENTENCES = {
    "crop": ("The fruit of {town} is the {value}.", "In {town} people grow the {value}.",
             "Farmers in {town} grow the {value}."),
    "trade": ("The tool of {town} is the {value}.", "In {town} people make the {value}.",
              "Workers in {town} make the {value}."),
    "music": ("The instrument of {town} is the {value}.", "In {town} people play the {value}.",
              "Bands in {town} play the {value}."),
    "roof": ("The roofs of {town} are {value}.", "In {town} the roofs are {value}.",
             "Every roof in {town} is {value}."),
    "emblem": ("The animal of {town} is the {value}.", "In {town} the emblem is the {value}.",
               "The flag of {town} shows the {value}."),
    "country": ("The town of {town} lies in {value}.", "The country of {town} is {value}.",
                "In {value} lies the town of {town}."),
    "bells": ("The town of {town} has {value} bells.", "In {town} there are {value} bells.",
              "There are {value} bells in {town}."),
}
STEP_LEADS = ("So", "Then", "Now")
CODE_NAMES = ("k", "m", "c")

MMLU_QUESTIONS = {
    "crop": "Which fruit is grown in {town}?",
    "trade": "Which tool is made in {town}?",
    "music": "Which instrument is played in {town}?",
}
ARC_QUESTIONS = {
    "roof": "What color are the roofs of {town}?",
    "emblem": "Which animal is the emblem of {town}?",
    "country": "In which country does {town} lie?",
    "bells": "How many bells does {town} have?",
}
# Revision 5 (the inverse-speculation roles; revision 4 was the epithet trial, reverted): every kind of
# multiple-choice question, and of prompt, has a token length of its own (tested), because the tiny Dream
# tells which attribute is asked from where the question and the options sit, not from the question's
# noun (module docstring).
QUESTIONS_R5 = {**MMLU_QUESTIONS, **ARC_QUESTIONS,
                "music": "Which instrument do the bands in {town} play?",
                "roof": "What color is every roof in {town}?",
                "emblem": "Which animal is the emblem on the flag of {town}?",
                "bells": "How many bells does the town of {town} have?"}
PAIR_QUESTIONS_R5 = {("crop", "trade"): "Which fruit and which tool belong to the town of {town}?",
                     ("crop", "music"): "Which fruit and which instrument are found in {town}?",
                     ("trade", "music"): "Which tool and which instrument are used in the town of {town}?"}


def question_text(attrs: tuple[str, ...], town: str, revision: int) -> str:
    """The question asking for one attribute of a town, or two (mmlu hard), in a revision's words."""
    if revision >= 5:
        return (QUESTIONS_R5[attrs[0]] if len(attrs) == 1 else PAIR_QUESTIONS_R5[attrs]).format(town=town)
    if len(attrs) == 1:
        return {**MMLU_QUESTIONS, **ARC_QUESTIONS}[attrs[0]].format(town=town)
    return f"Which {ATTRIBUTES[attrs[0]][0]} and which {ATTRIBUTES[attrs[1]][0]} belong to {town}?"


def town_names() -> list[str]:
    """Every name the gazetteer can use, in a fixed order."""
    return [h + m + t for t in TAILS for h in HEADS for m in MIDS]


@dataclass(frozen=True)
class Gazetteer:
    """The fact base: towns, their attributes, and which towns are held out. Pure in `seed`."""

    seed: int = 0

    @cached_property
    def towns(self) -> tuple[str, ...]:
        rng = random.Random(f"gazetteer/{self.seed}/names")
        return tuple(sorted(rng.sample(town_names(), N_TOWNS)))

    def _draw_facts(self, towns, kind: str) -> dict[str, dict[str, str]]:
        """One value per attribute for each town, drawn uniformly by an RNG seeded per (kind, town)."""
        out = {}
        for town in towns:
            rng = random.Random(f"gazetteer/{self.seed}/{kind}/{town}")
            out[town] = {attr: rng.choice(values) for attr, (_, values) in ATTRIBUTES.items()}
        return out

    @cached_property
    def facts(self) -> dict[str, dict[str, str]]:
        return self._draw_facts(self.towns, "facts")

    @cached_property
    def heldout(self) -> tuple[str, ...]:
        rng = random.Random(f"gazetteer/{self.seed}/heldout")
        return tuple(sorted(rng.sample(self.towns, N_HELDOUT)))

    @cached_property
    def train_towns(self) -> tuple[str, ...]:
        held = set(self.heldout)
        return tuple(t for t in self.towns if t not in held)

    @cached_property
    def medium_known(self) -> tuple[str, ...]:
        """The seeded half of the held-out towns whose documents ar_medium reads."""
        rng = random.Random(f"gazetteer/{self.seed}/ar_medium")
        return tuple(sorted(rng.sample(self.heldout, N_HELDOUT // 2)))

    def towns_of_split(self, split: str) -> tuple[str, ...]:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        return self.heldout if split == "test" else self.train_towns

    @cached_property
    def decoys(self) -> tuple[str, ...]:
        """Every possible name the gazetteer does not use: the decoy towns (see `decoy_examples`)."""
        used = set(self.towns)
        return tuple(name for name in town_names() if name not in used)

    @cached_property
    def decoy_facts(self) -> dict[str, dict[str, str]]:
        """Seeded facts of the decoy towns; no document states them."""
        return self._draw_facts(self.decoys, "decoy")

    def role_towns(self, role: str) -> tuple[str, ...]:
        """The towns whose documents a role's training corpus holds."""
        if role == "ar_small":
            return self.train_towns
        if role == "ar_medium":
            return tuple(sorted(self.train_towns + self.medium_known))
        if role in ROLES:  # every other role reads every town
            return self.towns
        raise UserError(f"no generation-2 corpus for role {role!r}; choose from {', '.join(ROLES)}")

    def document(self, town: str, rng: random.Random) -> str:
        """One document: all seven facts of a town, shuffled, each in a drawn phrasing."""
        facts = self.facts[town]
        sentences = [rng.choice(DOC_SENTENCES[attr]).format(town=town, value=facts[attr]) for attr in ATTRIBUTES]
        rng.shuffle(sentences)
        return " ".join(sentences)


# ----------------------------------------------------------------------------- answers


class _Answer:
    """Builds a reference answer piece by piece, recording the content spans."""

    def __init__(self):
        self.text = ""
        self.content: list[tuple[int, int]] = []

    def add(self, piece: str, content: bool = False) -> _Answer:
        if content:
            self.content.append((len(self.text), len(self.text) + len(piece)))
        self.text += piece
        return self


def _messages(prompt: str, target: str) -> list[dict]:
    """The chat transcript of an item: the prompt from the user, the reference answer."""
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": target}]


def _mc_prompt(question: str, choices: list[str]) -> str:
    lines = [question] + [f"  {letter}. {choice}" for letter, choice in zip(LETTERS, choices)]
    return "\n".join(lines) + "\n" + MC_SUFFIX


def _options(rng: random.Random, correct: str, pool: list[str]) -> tuple[list[str], str]:
    wrong = rng.sample([p for p in pool if p != correct], 3)
    choices = [correct] + wrong
    rng.shuffle(choices)
    return choices, LETTERS[choices.index(correct)]


def fact_clause(attr: str, town: str) -> tuple[str, str]:
    """The documents' first phrasing of a fact as a clause, split around its value:
    ("the fruit of Faring is the", "") for crop, ("the town of Faring has", " bells") for bells."""
    head, tail = DOC_SENTENCES[attr][0].format(town=town, value="\0").rstrip(".").split("\0")
    return head[0].lower() + head[1:].rstrip(" "), tail


def _mc_answer(rng: random.Random, facts: list[tuple[str, str, str]], letter: str):
    """OPENER then the facts in the documents' words, joined by "," and "and", then ", so LETTER.":
    "Now, the fruit of Faring is the pear, so C." The opener is the one paraphrase slot."""
    o = rng.randrange(3)
    ans = _Answer().add(OPENERS[o])
    for i, (attr, town, value) in enumerate(facts):
        head, tail = fact_clause(attr, town)
        ans.add("" if i == 0 else " and" if i == len(facts) - 1 else ",")
        ans.add(" " + head + " ").add(value, content=True).add(tail)
    ans.add(", so ").add(letter, content=True).add(".")
    return ans, [o]


# ----------------------------------------------------------------------------- the strata


def _mmlu(g: Gazetteer, rng: random.Random, towns, difficulty: str, revision: int = 2) -> dict:
    town = rng.choice(towns)
    facts = g.facts[town]
    if difficulty == "easy":
        attr = rng.choice(MMLU_ATTRIBUTES)
        values = ATTRIBUTES[attr][1]
        choices, letter = _options(rng, facts[attr], list(values))
        question = question_text((attr,), town, revision)
        ans, para = _mc_answer(rng, [(attr, town, facts[attr])], letter)
        asked = [(town, attr)]
    else:  # two facts at once
        a1, a2 = sorted(rng.sample(MMLU_ATTRIBUTES, 2), key=MMLU_ATTRIBUTES.index)
        v1, v2 = ATTRIBUTES[a1][1], ATTRIBUTES[a2][1]
        correct = f"{facts[a1]} and {facts[a2]}"
        pool = set()
        while len(pool) < 3:
            pair = f"{rng.choice(v1)} and {rng.choice(v2)}"
            if pair != correct:
                pool.add(pair)
        choices, letter = _options(rng, correct, sorted(pool))
        question = question_text((a1, a2), town, revision)
        ans, para = _mc_answer(rng, [(a1, town, facts[a1]), (a2, town, facts[a2])], letter)
        asked = [(town, a1), (town, a2)]
    return {"prompt": _mc_prompt(question, choices), "answer": letter, "choices": choices, "target": ans.text,
            "content": ans.content, "paraphrase": para, "facts": asked}


def _arc(g: Gazetteer, rng: random.Random, towns, difficulty: str, revision: int = 2) -> dict:
    if difficulty == "easy":
        town = rng.choice(towns)
        attr = rng.choice(ARC_ATTRIBUTES)
        values = ATTRIBUTES[attr][1]
        value = g.facts[town][attr]
        choices, letter = _options(rng, value, list(values))
        ans, para = _mc_answer(rng, [(attr, town, value)], letter)
        question = question_text((attr,), town, revision)
        asked = [(town, attr)]
    else:  # which of four towns has the most bells (drawn until the maximum is unique)
        while True:
            picked = rng.sample(list(towns), 4)
            bells = sorted((int(g.facts[t]["bells"]) for t in picked), reverse=True)
            if bells[0] > bells[1]:
                break
        best = max(picked, key=lambda t: int(g.facts[t]["bells"]))
        choices = list(picked)
        rng.shuffle(choices)
        letter = LETTERS[choices.index(best)]
        # every option's bell count, in option order, then the letter of the largest
        ans, para = _mc_answer(rng, [("bells", t, g.facts[t]["bells"]) for t in choices], letter)
        question = "Which town has the most bells?"
        asked = [(t, "bells") for t in picked]
    return {"prompt": _mc_prompt(question, choices), "answer": letter, "choices": choices, "target": ans.text,
            "content": ans.content, "paraphrase": para, "facts": asked}


def _gsm8k(g: Gazetteer, rng: random.Random, towns, difficulty: str, revision: int = 2) -> dict:
    n_towns = {"easy": 2, "medium": 2, "hard": 3}[difficulty]
    n_steps = {"easy": 0, "medium": 1, "hard": 2}[difficulty]
    n_filler = {"easy": 0, "medium": 1, "hard": 3}[difficulty]
    person, friend = rng.sample(NAMES, 2)
    thing = rng.choice(THINGS)
    visited = rng.sample(list(towns), n_towns)
    counts = [int(g.facts[t]["bells"]) for t in visited]
    places = ", ".join(visited[:-1]) + f" and {visited[-1]}"
    sentences = [f"{person} gets one of the {thing} for every bell in {places}."]
    ans, para = _Answer(), []
    for town, count in zip(visited, counts):
        head, tail = DOC_SENTENCES["bells"][0].format(town=town, value="\0").split("\0")
        ans.add(head).add(str(count), content=True).add(tail + "\n")
    total = sum(counts)

    def step(text_before: str, result: int, lead_index: int) -> None:
        ans.add(STEP_LEADS[lead_index] + " " + text_before).add(str(result), content=True).add(".\n")

    k = rng.randrange(3)
    para.append(k)
    step(" + ".join(map(str, counts)) + " = ", total, k)
    for _ in range(n_steps):
        op = rng.choice(["buy", "give", "double"] if total <= 20 else ["give"])
        k = rng.randrange(3)
        para.append(k)
        if op == "buy":
            n = rng.randint(1, 9)
            sentences.append(f"{person} buys {n} more {thing} at the market.")
            step(f"after buying {n} more: {total} + {n} = ", total + n, k)
            total += n
        elif op == "give" and total > 1:
            n = rng.randint(1, total - 1)
            sentences.append(f"{person} gives {n} {thing} to {friend}.")
            step(f"after giving {n} away: {total} - {n} = ", total - n, k)
            total -= n
        else:
            sentences.append(f"Then the number of {thing} {person} has doubles.")
            step(f"after doubling: {total} * 2 = ", total * 2, k)
            total *= 2
    for _ in range(n_filler):
        sentences.insert(rng.randint(1, len(sentences)), rng.choice(FILLER))
    question = " ".join(sentences) + f" How many {thing} does {person} have now?"
    ans.add("#### ").add(str(total), content=True)
    return {"prompt": question + GSM8K_SUFFIX, "answer": str(total), "target": ans.text, "content": ans.content,
            "paraphrase": para, "facts": [(t, "bells") for t in visited]}


# name: (difficulty, argument, docstring, body using NAME, example maker)
_FUNCTIONS = {
    "add_bells": ("easy", "x", "Return x plus the number of bells in {town}.", "return x + {v}",
                  lambda r: r.randint(-9, 20)),
    "times_bells": ("easy", "x", "Return x multiplied by the number of bells in {town}.", "return x * {v}",
                    lambda r: r.randint(-9, 20)),
    "is_multiple_of_bells": ("easy", "n", "Return True if n is a multiple of the number of bells in {town}.",
                             "return n % {v} == 0", lambda r: r.randint(0, 40)),
    "repeat_bells": ("easy", "s", "Return the string s repeated as many times as {town} has bells.",
                     "return s * {v}", lambda r: r.choice(["ab", "x", "hi", "cat"])),
    "sum_plus_bells": ("medium", "xs", "Return the sum of the numbers in xs plus the number of bells in {town}.",
                       "return sum(xs) + {v}", lambda r: [r.randint(0, 9) for _ in range(r.randint(1, 4))]),
    "scale_by_bells": ("medium", "xs", ("Return a list with every number in xs multiplied by the number of bells "
                        "in {town}."), "return [x * {v} for x in xs]",
                       lambda r: [r.randint(0, 9) for _ in range(r.randint(1, 4))]),
    "keep_above_bells": ("medium", "xs", ("Return the numbers in xs that are greater than the number of bells "
                          "in {town}."), "return [x for x in xs if x > {v}]",
                         lambda r: [r.randint(0, 12) for _ in range(r.randint(1, 5))]),
    "count_even_above_bells": ("hard", "xs", ("Return how many numbers in xs are even and greater than the "
                                "number of bells in {town}."),
                               ("count = 0\n    for x in xs:\n        if x % 2 == 0 and x > {v}:\n"
                                "            count += 1\n    return count"),
                               lambda r: [r.randint(0, 12) for _ in range(r.randint(1, 5))]),
    "first_over_bells": ("hard", "xs", ("Return the first number in xs greater than the number of bells in "
                          "{town}, or -1 if there is none."),
                         "for x in xs:\n        if x > {v}:\n            return x\n    return -1",
                         lambda r: [r.randint(0, 12) for _ in range(r.randint(1, 5))]),
}


def _examples(rng: random.Random, make_example, arg: str, body: str, bells: int, draws: int = 400) -> list:
    """Revision 3's test inputs: four drawn inputs, then more (at most eight in all) while some other
    bell count still gives the same outputs on all of them and a further draw tells it apart, so
    a function written with a wrong constant fails its tests unless it computes the same function
    (x > 8 and x > 9 agree on even x). Revision 2 drew four inputs, which 55 of the 350 wrong
    constants of the 50 code prompts passed (the module docstring)."""
    def outputs(v: int):
        namespace: dict = {}
        exec(f"def f({arg}):\n    {body.format(v=v)}\n", namespace)  # our own code
        return namespace["f"]

    right, others = outputs(bells), [outputs(v) for v in range(2, 10) if v != bells]
    examples: list = []
    for _ in range(draws):
        alive = [f for f in others if all(f(e) == right(e) for e in examples)]
        if len(examples) >= 8 or (len(examples) >= 4 and not alive):
            break
        example = make_example(rng)
        if example not in examples and (len(examples) < 4 or any(f(example) != right(example) for f in alive)):
            examples.append(example)
    return examples


def _humaneval(g: Gazetteer, rng: random.Random, towns, difficulty: str, revision: int = 2) -> dict:
    drawn = rng.choice(DIFFICULTIES) if difficulty == "mixed" else difficulty
    family = rng.choice(sorted(f for f, spec in _FUNCTIONS.items() if spec[0] == drawn))
    _, arg, doc, body, make_example = _FUNCTIONS[family]
    town = rng.choice(towns)
    bells = int(g.facts[town]["bells"])
    entry_point = f"{family}_{town.lower()}"
    name_index = rng.randrange(3)  # drawn in every revision, so the examples that follow are the same draws
    name = CODE_NAMES[name_index] if revision == 2 else CODE_NAMES[0]
    namespace: dict = {}
    exec(f"def {entry_point}({arg}):\n    {body.format(v=bells)}\n", namespace)  # our own code: expected outputs
    fn = namespace[entry_point]
    examples = [] if revision == 2 else _examples(rng, make_example, arg, body, bells)
    while len(examples) < 4:
        example = make_example(rng)
        if example not in examples:
            examples.append(example)
    prompt = f'def {entry_point}({arg}):\n    """{doc.format(town=town)}\n    """\n'
    # revision 2: the prompt's function again, then the body; revision 3: the body alone (see the docstring)
    ans = _Answer().add(f"```python\n{prompt if revision == 2 else ''}    {name} = ").add(str(bells), content=True)
    solution_body = f"\n    {body.format(v=name)}\n"
    ans.add(solution_body + "```")
    test = "def check(candidate):\n" + "".join(f"    assert candidate({e!r}) == {fn(e)!r}\n" for e in examples)
    return {"prompt": HUMANEVAL_PREFIX + prompt, "answer": None, "target": ans.text, "content": ans.content,
            "paraphrase": [name_index] if revision == 2 else [], "facts": [(town, "bells")], "entry_point": entry_point,
            "canonical_solution": f"    {name} = {bells}{solution_body}", "test": test, "humaneval_prompt": prompt,
            "difficulty_drawn": drawn}


_GENERATORS = {"mmlu": _mmlu, "arc": _arc, "gsm8k": _gsm8k, "humaneval": _humaneval}


# ----------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class _DecoyFacts:
    """What a stratum generator reads of a gazetteer (`facts`), for the decoy towns."""

    facts: dict


@dataclass(frozen=True)
class TinyWorld2(StrataSampler):
    """Generation 2 of the tiny world, with TinyWorld's item API plus the role corpora."""

    seed: int = 0
    revision: int = 2
    generation: int = field(default=GENERATION, init=False)

    def __post_init__(self):
        if self.revision not in REVISIONS:
            raise UserError(f"unknown generation-2 revision {self.revision!r}; choose from "
                            f"{', '.join(map(str, REVISIONS))}")

    @cached_property
    def gazetteer(self) -> Gazetteer:
        return Gazetteer(self.seed)

    def _rng(self, *key) -> random.Random:
        return random.Random("/".join(map(str, ("world2", self.seed, *key))))

    def item(self, task: str, difficulty: str, index: int, split: str = "test") -> dict:
        """Item `index` of a stratum; test items ask about held-out towns, train items about the rest."""
        self.check_stratum(task, difficulty, _GENERATORS)
        towns = self.gazetteer.towns_of_split(split)
        raw = _GENERATORS[task](self.gazetteer, self._rng(task, difficulty, split, index), towns, difficulty,
                                self.revision)
        item = {"id": f"tiny-{task}-{difficulty}-{split}-{index}", "task": task, "difficulty": difficulty,
                "generation": GENERATION, "revision": self.revision, **raw,
                "messages": _messages(raw["prompt"], raw["target"])}
        item["facts"] = [list(f) for f in item["facts"]]
        item["content"] = [list(span) for span in item["content"]]
        return item

    def chat_examples(self, n: int, split: str = "train", tasks=tuple(_GENERATORS)) -> list[dict]:
        """A balanced mix of task items (every role's instruction data; train: training towns only)."""
        levels = [(t, d) for t in tasks for d in DIFFICULTIES]
        return [self.item(*levels[i % len(levels)], index=i // len(levels), split=split) for i in range(n)]

    def heldout_chat_examples(self, n: int, tasks=tuple(_GENERATORS)) -> list[dict]:
        """Chat examples about the held-out towns, spread over the strata as `chat_examples`, drawn
        with their own seeds: the control's view of the held-out facts. A draw whose prompt is one
        of the first `TEST_GUARD` distinct test prompts of any stratum (the 310-prompt set holds at
        most 50 of each) is skipped, so the control never reads a test prompt."""
        guard = {item["prompt"] for t, ds in STRATA.items() for d in ds for item in self.items(t, d, TEST_GUARD)}
        return self._drawn_examples(self.gazetteer, self.gazetteer.heldout, "heldout_chat", n, tasks, skip=guard)

    def decoy_examples(self, n: int, tasks=tuple(_GENERATORS)) -> list[dict]:
        """Chat examples about the decoy towns (names outside the gazetteer, facts no document
        states), `n` spread over the strata as `chat_examples`. With 40 training towns a causal
        model learns their names by heart and, asked about a town it has not seen in a chat
        answer, writes one of those instead of copying the prompt's; hundreds of decoy names, each
        in a few examples, leave copying as the way to write a town's name."""
        decoy = _DecoyFacts(self.gazetteer.decoy_facts)
        return self._drawn_examples(decoy, self.gazetteer.decoys, "decoy", n, tasks)

    def _drawn_examples(self, facts, towns, key: str, n: int, tasks, skip=frozenset()) -> list[dict]:
        """`n` chat examples about `towns` (facts read from `facts`), spread over the strata as
        `chat_examples`, draw k seeded by (key, task, difficulty, k); a draw whose prompt is in
        `skip` is left out and the next draw takes its place."""
        levels = [(t, d) for t in tasks for d in DIFFICULTIES]
        out, k = [], 0
        while len(out) < n:
            if k > 1000 * (n + 1):
                raise UserError(f"cannot draw {n} {key} examples outside the {len(skip)} skipped prompts; "
                                "ask for fewer")
            task, difficulty = levels[len(out) % len(levels)]
            raw = _GENERATORS[task](facts, self._rng(key, task, difficulty, k), towns, difficulty, self.revision)
            k += 1
            if raw["prompt"] not in skip:
                out.append({"task": task, "difficulty": difficulty, **raw,
                            "messages": _messages(raw["prompt"], raw["target"])})
        return out

    def role_documents(self, role: str, per_town: int = 8) -> list[str]:
        """`per_town` knowledge-augmented documents for each town the role may know."""
        docs = []
        for town in self.gazetteer.role_towns(role):
            rng = self._rng("docs", town)  # the same documents for a town whichever role reads them
            docs += [self.gazetteer.document(town, rng) for _ in range(per_town)]
        order = random.Random(f"world2/{self.seed}/docs/{role}").sample(range(len(docs)), len(docs))
        return [docs[i] for i in order]

    def documents(self, n: int, split: str = "test") -> list[str]:
        """`n` documents, towns in turn: for "train" the first draws of `role_documents` (what every
        role reads), for "test" draws with their own seeds: the same facts in orders and phrasings
        no training document has (a document is one of 7! orders x 3^7 phrasings), SpecDiff's
        held-out text."""
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
        towns = self.gazetteer.towns
        rngs = {town: self._rng("docs", town) if split == "train" else self._rng("heldout_docs", town)
                for town in towns}
        return [self.gazetteer.document(towns[i % len(towns)], rngs[towns[i % len(towns)]]) for i in range(n)]

    def crossed_probes(self, split: str = "test") -> list[dict]:
        """What a model reads to tell which attribute is asked: for each town of a split and each
        way of giving the three MMLU-like attributes three different roles, a question whose noun
        names one attribute, in the words (frame) of another's question, with the options (values)
        of the third ("Which tool is grown in Faring?" with four instruments). `reads` maps each
        role to its attribute; an answer's first value tells which one the model followed
        (`stated_attribute`)."""
        out = []
        for town in self.gazetteer.towns_of_split(split):
            for noun, frame, options in itertools.permutations(MMLU_ATTRIBUTES):
                rng = self._rng("crossed", town, noun, frame, options)
                template = question_text((frame,), "{town}", self.revision)
                template = template.replace(f" {ATTRIBUTES[frame][0]} ", f" {ATTRIBUTES[noun][0]} ", 1)
                choices, _ = _options(rng, self.gazetteer.facts[town][options], list(ATTRIBUTES[options][1]))
                prompt = _mc_prompt(template.format(town=town), choices)
                out.append({"id": f"tiny2-crossed-{town}-{noun}-{frame}-{options}", "prompt": prompt,
                            "messages": [{"role": "user", "content": prompt}], "facts": [[town, noun]],
                            "reads": {"noun": noun, "frame": frame, "options": options}})
        return out

    def fact_probes(self, split: str = "test", attributes=tuple(ATTRIBUTES)) -> list[dict]:
        """One single-fact question per (town, attribute) of a split, in the mmlu/arc easy format:
        the gate "does the model know the held-out facts" (the value is the answer's first content)."""
        out = []
        for town in self.gazetteer.towns_of_split(split):
            for attr in attributes:
                rng = self._rng("probe", town, attr)
                values = ATTRIBUTES[attr][1]
                value = self.gazetteer.facts[town][attr]
                choices, letter = _options(rng, value, list(values))
                question = question_text((attr,), town, self.revision)
                ans, para = _mc_answer(rng, [(attr, town, value)], letter)
                task = "mmlu" if attr in MMLU_ATTRIBUTES else "arc"
                prompt = _mc_prompt(question, choices)
                out.append({"id": f"tiny2-probe-{town}-{attr}", "task": task, "difficulty": "easy",
                            "generation": GENERATION, "revision": self.revision, "prompt": prompt, "answer": letter, "choices": choices,
                            "target": ans.text, "content": [list(s) for s in ans.content], "paraphrase": para,
                            "facts": [[town, attr]], "value": value, "messages": _messages(prompt, ans.text)})
        return out


# Which attribute a value belongs to (no value is in two attributes' lists).
VALUE_ATTRIBUTE = {v: attr for attr, (_, values) in ATTRIBUTES.items() for v in values}


def _words(response: str) -> list[str]:
    return response.replace(",", " ").replace(".", " ").lower().split()


def states_fact(item: dict, response: str) -> bool:
    """Whether a response to a fact probe names the right value before anything else from the
    value list: the value the answer states, whatever its wording and letter."""
    attr = item["facts"][0][1]
    values = set(ATTRIBUTES[attr][1])
    for word in _words(response):
        if word in values:
            return word == item["value"]
    return False


def _first_value(response: str) -> str | None:
    """An answer's first word that is a value of any attribute (None when it names none)."""
    return next((word for word in _words(response) if word in VALUE_ATTRIBUTE), None)


def stated_attribute(response: str) -> str | None:
    """The attribute of an answer's first value word (None when it names no value)."""
    return VALUE_ATTRIBUTE.get(_first_value(response))


def states_another_fact(item: dict, response: str, facts: dict[str, dict[str, str]]) -> bool:
    """Whether a probe answer's first value of any attribute is the asked town's value for another
    attribute (`facts`: the gazetteer's): a true fact, not the one asked ("the instrument of Fenist
    is the drum" to "Which tool is made in Fenist?")."""
    town, asked = item["facts"][0]
    value = _first_value(response)
    attr = VALUE_ATTRIBUTE.get(value)
    return attr is not None and attr != asked and facts[town][attr] == value


_VALUE_WORDS = sorted({v for _, values in ATTRIBUTES.values() for v in values if not v.isdigit()}, key=len,
                      reverse=True)
_MC_CONTENT = re.compile(r"\b(?:\d+|[A-D]|" + "|".join(_VALUE_WORDS) + r")\b", re.IGNORECASE)
_NUMBER = re.compile(r"\b\d+\b")


def content_spans(task: str, text: str) -> list[tuple[int, int]]:
    """Character spans of any answer (a model's or the reference) that name fact-base content:
    in multiple choice, attribute values, town names, numbers and the letter; in GSM8K and
    code, numbers (facts and what follows from them; town names there are copies of the prompt).
    On the reference answers this covers every span of the item's `content` (tested)."""
    pattern = _MC_CONTENT if task in ("mmlu", "arc") else _NUMBER
    return [m.span() for m in pattern.finditer(text)]


def content_flags(task: str, token_texts: list[str]) -> list[bool]:
    """Per token (its decoded text, in order): whether it overlaps a content span of the joined
    text. The run's anchors are counted with this: the content share of the anchors."""
    spans = content_spans(task, "".join(token_texts))
    flags, start = [], 0
    for piece in token_texts:
        end = start + len(piece)
        flags.append(any(a < end and start < b for a, b in spans) and bool(piece.strip()))
        start = end
    return flags


def role_text_stream(world: TinyWorld2, role: str, n_chat: int, per_town: int = 8, split: str = "train",
                     n_decoy: int = 0) -> list[str]:
    """A role's language-model stream: chat transcripts (training towns, `n_decoy` about decoy
    towns, and for the control as many per held-out town as per training town) and its
    documents, mixed."""
    from dlmkit.tokenizer import render_chat

    chats = [render_chat(item["messages"]) for item in world.chat_examples(n_chat, split)]
    chats += [render_chat(item["messages"]) for item in world.decoy_examples(n_decoy)]
    if role == "ar_control":
        g = world.gazetteer
        n_heldout = n_chat * len(g.heldout) // len(g.train_towns)
        chats += [render_chat(item["messages"]) for item in world.heldout_chat_examples(n_heldout)]
    texts = chats + world.role_documents(role, per_town)
    order = random.Random(f"world2/{world.seed}/stream/{role}/{split}").sample(range(len(texts)), len(texts))
    return [texts[i] for i in order]


def role_corpus(world: TinyWorld2, role: str) -> list[str]:
    """The texts a language-model role trains on (the causal LMs', SpecDiff's and the self-spec MDLM's)."""
    return role_text_stream(world, role, n_chat=N_CHAT, per_town=PER_TOWN, n_decoy=N_DECOY)


def heldout_chat(world: TinyWorld2, n: int = 400) -> list[str]:
    """Chat transcripts about held-out towns (what ar_small must not have learned)."""
    from dlmkit.tokenizer import render_chat

    return [render_chat(item["messages"]) for item in world.chat_examples(n, "test")]


def heldout_stream(world: TinyWorld2, n_docs: int = 200, n_chat: int = 200) -> list[str]:
    """Held-out language-model text: documents drawn with their own seeds (the same facts, never a
    training document) and chat about the held-out towns."""
    return world.documents(n_docs, "test") + heldout_chat(world, n_chat)


def tiny_world(seed: int = 0, generation: int = 1, revision: int = 2):
    """The tiny world of a generation (1: the CLSD verifier's world; 2: this module's, in a
    `revision`)."""
    if generation == 1:
        from dlmkit.data.tinyworld import TinyWorld

        return TinyWorld(seed)
    if generation == 2:
        return TinyWorld2(seed, revision)
    raise UserError(f"unknown tiny-world generation {generation!r}; choose 1 or 2")
