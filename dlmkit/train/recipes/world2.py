"""The generation-2 side of the tiny recipes: each role's corpus and the fact gate.

    python -m dlmkit.train.tiny ROLE [--out DIR]      # ROLE: dlm, ar_small, ar_medium, ar_large, ar_control

A role trains on its own corpus (`dlmkit/data/tinyworld2.py`, `role_corpus`): the same chat examples
(training towns only) for every role, plus knowledge-augmented documents for the towns the
role may know; the control also reads chat examples about the held-out towns
(`TinyWorld2.heldout_chat_examples`, never a test prompt).

The gate: a role "knows" a held-out fact when its free answer to a single-fact probe
question names the right value (`states_fact`); the letter is scored beside it. Dream must
pass it before it is used (the target is near 1); ar_small should sit near chance (0.25 for
a model that copies one of the four options) and ar_medium at about the average of the
two on its half.
"""

from __future__ import annotations

import re

from dlmkit.data.tinyworld2 import N_CHAT, PER_TOWN, TinyWorld2, states_fact
from dlmkit.metrics.answers import check_answer


def dream_rows(tokenizer, world: TinyWorld2, role: str = "dlm"
               ) -> tuple[list[tuple[list[int], list[int]]], list[tuple[list[int], list[int]]]]:
    """Dream's rows: chat pairs (prompt, answer), and documents as rows with an empty prompt (the
    whole document is the region that gets masked), so masked diffusion teaches both the answer
    format and every town's facts."""
    from dlmkit.data.tiny_corpus import chat_pairs

    chats = chat_pairs(tokenizer, world.chat_examples(N_CHAT, "train"))
    docs = [([], ids) for ids in tokenizer(world.role_documents(role, PER_TOWN))["input_ids"]]
    return chats, docs


def probes(world: TinyWorld2, limit: int | None = None) -> list[dict]:
    """The held-out fact probes, or an even spread of `limit` of them."""
    items = world.fact_probes("test")
    if limit and limit < len(items):
        step = len(items) / limit
        items = [items[int(i * step)] for i in range(limit)]
    return items


def gate(world: TinyWorld2, items: list[dict], responses: list[str], tokenizer=None) -> dict:
    """Fact and letter accuracy on held-out probes, split by the towns ar_medium reads."""
    known = set(world.gazetteer.medium_known)
    groups: dict[str, list[tuple[bool, bool]]] = {"all": [], "medium_known": [], "medium_unknown": []}
    for item, text in zip(items, responses):
        score = (states_fact(item, text), check_answer(item, text))
        groups["all"].append(score)
        groups["medium_known" if item["facts"][0][0] in known else "medium_unknown"].append(score)
    out = {}
    for name, scores in groups.items():
        if scores:
            out[f"fact_accuracy_{name}"] = sum(s[0] for s in scores) / len(scores)
            out[f"letter_accuracy_{name}"] = sum(s[1] for s in scores) / len(scores)
    # The answer names the town (a copy of the prompt): a model that writes another name states
    # that town's fact, whatever it knows.
    out["town_copied_all"] = sum(re.search(rf"\b{item['facts'][0][0]}\b", text) is not None
                                 for item, text in zip(items, responses)) / max(len(items), 1)
    out["probes"] = len(items)
    if tokenizer is not None:
        lengths = [len(tokenizer(r)["input_ids"]) for r in responses]
        out["mean_answer_tokens"] = sum(lengths) / max(len(lengths), 1)
    return out


def reference_answer_tokens(tokenizer, items: list[dict]) -> dict:
    """Mean tokens of the reference answers per task (what a canvas must hold)."""
    per: dict[str, list[int]] = {}
    for item in items:
        per.setdefault(item["task"], []).append(len(tokenizer(item["target"])["input_ids"]))
    return {task: sum(v) / len(v) for task, v in sorted(per.items())}


def _value_candidates(tokenizer, values) -> tuple[list[int], list[int]]:
    """An attribute's values as one position to rank: the tokens before that position that every
    value shares (none for " pear"; a bell count is a space token, then a digit: " 4") and each
    value's token there."""
    spelled = [tokenizer(" " + v)["input_ids"] for v in values]
    return spelled[0][:-1], [ids[-1] for ids in spelled]


def _ranked_first(logits, values, candidates) -> str:
    """The value whose token the logits at its position rank highest."""
    return values[max(range(len(values)), key=lambda k: float(logits[candidates[k]]))]


def cloze_accuracy(model, tokenizer, world: TinyWorld2, split: str, *, diffusion: bool) -> float:
    """Does the model know a split's facts in the documents' own words? For every (town, attribute),
    the first document phrasing with the value hidden ("The fruit of Faring is the ___."): a DLM
    predicts the masked position, an AR the next token after the prefix; the prediction counts when
    it is the right one among that attribute's values. Beside the probes' gate it separates
    knowing a fact from answering a question about it (knowledge extraction)."""
    import torch

    from dlmkit.data.tinyworld2 import ATTRIBUTES, DOC_SENTENCES

    right = total = 0
    for town in world.gazetteer.towns_of_split(split):
        for attr, (_, values) in ATTRIBUTES.items():
            prefix, suffix = DOC_SENTENCES[attr][0].format(town=town, value="\0").split(" \0")
            lead, candidates = _value_candidates(tokenizer, values)
            ids = tokenizer(prefix)["input_ids"] + lead
            at = len(ids) - 1
            if diffusion:
                at = len(ids)
                ids = ids + [tokenizer.mask_token_id] + tokenizer(suffix)["input_ids"]
            x = torch.tensor([ids], device=model.device)
            with torch.no_grad():
                out = model(x, attention_mask=torch.ones_like(x))
            logits = (out if diffusion else out.logits)[0, at]
            right += _ranked_first(logits, values, candidates) == world.gazetteer.facts[town][attr]
            total += 1
    return right / total


def letter_given_answer(model, tokenizer, items: list[dict], *, diffusion: bool) -> float:
    """Can the model read the letter off the options once the right value is written? For every
    multiple-choice item, the reference answer is given up to its letter ("..., so ___."): a DLM
    predicts the masked letter with the rest of the answer in view, an AR the next token after
    ", so"; it counts when the right letter ranks first among A-D. Beside the probes' letter
    accuracy (which also needs the value) it separates not knowing a fact from not reading the
    options: a model that copied the letter of the option holding the value would score 1.0."""
    import torch

    from dlmkit.data.tiny_corpus import chat_pairs
    from dlmkit.data.tinyworld import LETTERS

    letters = [tokenizer(" " + x)["input_ids"][-1] for x in LETTERS]
    right = total = 0
    for item, (prompt, response) in zip(items, chat_pairs(tokenizer, items)):
        at = len(tokenizer(item["target"])["input_ids"]) - 2  # the reference answer ends " LETTER" "."
        if response[at] != letters[LETTERS.index(item["answer"])]:
            raise ValueError(f"{item.get('id')}: the reference answer does not end with its letter")
        ids = prompt + (response[:at] + [tokenizer.mask_token_id] + response[at + 1:] if diffusion else response[:at])
        x = torch.tensor([ids], device=model.device)
        with torch.no_grad():
            out = model(x, attention_mask=torch.ones_like(x))
        logits = (out[0, len(prompt) + at] if diffusion else out.logits[0, -1])[letters]
        right += LETTERS[int(logits.argmax())] == item["answer"]
        total += 1
    return right / max(total, 1)


def value_given_answer(model, tokenizer, items: list[dict], *, diffusion: bool) -> float:
    """Does the model know the asked value once the answer's own words lead to it? For every probe,
    the reference answer is given up to its value ("Now, the fruit of Faring is the ___"): a DLM
    predicts the masked value with the rest of its canvas masked (as when it commits the value
    mid-generation), an AR the next token; it counts when the right value ranks first among the
    attribute's values. Beside the probes' fact accuracy it separates knowing the asked fact from
    writing the sentence that asks for it (which attribute, which town)."""
    import torch

    from dlmkit.data.tiny_corpus import chat_pairs
    from dlmkit.data.tinyworld2 import ATTRIBUTES

    right = 0
    for item, (prompt, response) in zip(items, chat_pairs(tokenizer, items)):
        attr = item["facts"][0][1]
        values = ATTRIBUTES[attr][1]
        lead, candidates = _value_candidates(tokenizer, values)
        head = tokenizer(item["target"][:item["target"].index(" " + item["value"])])["input_ids"] + lead
        if response[:len(head)] != head:
            raise ValueError(f"{item.get('id')}: the reference answer does not tokenize through its value")
        at = len(head)
        ids = prompt + (head + [tokenizer.mask_token_id] * (len(response) - at) if diffusion else head)
        x = torch.tensor([ids], device=model.device)
        with torch.no_grad():
            out = model(x, attention_mask=torch.ones_like(x))
        logits = out[0, len(prompt) + at] if diffusion else out.logits[0, -1]
        right += _ranked_first(logits, values, candidates) == item["value"]
    return right / max(len(items), 1)

