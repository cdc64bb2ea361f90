"""Generation 2 of the tiny world: the gazetteer, who knows which facts, paraphrases, formats."""

import re

import pytest
from scipy.stats import chisquare
from tokenizers import Tokenizer

from dlmkit.data.benchmarks import tiny_prompts
from dlmkit.data.tinyworld import (GSM8K_SUFFIX, HUMANEVAL_PREFIX, LETTERS, MC_SUFFIX, STRATA, TinyWorld)
from dlmkit.data.tinyworld2 import (_GENERATORS, ATTRIBUTES, DOC_SENTENCES, N_HELDOUT, OPENERS, STEP_LEADS, Gazetteer,
                                    TinyWorld2, content_flags, content_spans, fact_clause, role_text_stream,
                                    stated_attribute, states_another_fact, states_fact, tiny_world, town_names)
from dlmkit.errors import UserError
from dlmkit.metrics.answers import check_answer
from dlmkit.presets import TINY_TOKENIZER


@pytest.fixture(scope="module")
def bpe():
    return Tokenizer.from_file(str(TINY_TOKENIZER / "tokenizer.json"))


@pytest.fixture(scope="module")
def world():
    return TinyWorld2(0)


@pytest.fixture(scope="module")
def prompts():
    """The run's 310 prompts: generation 2, revision 5 (the inverse-speculation roles' world)."""
    return tiny_prompts(generation=2)


def _mentions(texts, town):
    pattern = re.compile(rf"\b{town}\b")
    return any(pattern.search(t) for t in texts)


def test_same_seed_same_world_other_seed_other_world():
    a, b, c = TinyWorld2(0).strata(3), TinyWorld2(0).strata(3), TinyWorld2(1).strata(3)
    assert a == b
    assert [i["prompt"] for i in a] != [i["prompt"] for i in c]
    assert Gazetteer(0).facts == Gazetteer(0).facts != Gazetteer(1).facts
    assert TinyWorld2(0).role_documents("ar_small")[:20] == TinyWorld2(0).role_documents("ar_small")[:20]


def test_generation_one_is_unchanged_and_two_revision_five_the_default():
    assert tiny_prompts(subset=2, generation=1) == TinyWorld(0).strata(2)
    assert tiny_prompts(subset=2) == tiny_prompts(subset=2, generation=2) == TinyWorld2(0, 5).strata(2)
    assert tiny_prompts(subset=2, revision=2) == TinyWorld2(0).strata(2) != TinyWorld2(0, 3).strata(2)
    assert isinstance(tiny_world(0, 1), TinyWorld) and tiny_world(0, 2, 3).revision == 3
    with pytest.raises(UserError, match="choose 1 or 2"):
        tiny_world(0, 3)
    with pytest.raises(UserError, match="choose from 2, 3, 5"):
        TinyWorld2(0, 4)  # revision 4 was the epithet trial, reverted


def test_revision_two_is_what_specdiff_and_self_spec_models_learned():
    """SpecDiff's three models and the self-spec MDLM were trained on revision 2 (`presets.TINY_REVISION`):
    its items must not move (the digest of 3 test and 2 train items per stratum, as shipped)."""
    import hashlib
    import json

    from dlmkit.presets import TINY_REVISION, tiny_world_of

    items = TinyWorld2(0, 2).strata(3) + TinyWorld2(0, 2).strata(2, "train")
    digest = hashlib.sha256(json.dumps([(i["prompt"], i["target"]) for i in items]).encode()).hexdigest()
    assert digest == "cd6f4000518edc3732a43991b00be2d2adeb191c696adaa4c944af9a1489439d"
    assert {r for r, v in TINY_REVISION.items() if v == 2} == {"target", "drafter", "mdlm_drafter", "mdlm", "judge"}
    assert tiny_world_of("judge").revision == 2 and tiny_world_of("ar_control").revision == 5


def test_revision_three_changes_only_code_answers_to_the_body_with_one_name(bpe):
    """Revision 3 is revision 2 draw for draw but for code answers: the function's body in a fenced
    block, its constant always bound to k (no paraphrase), so no answer holds a name that two
    positions must agree on, and the constant is an early token (revision 2: after the prompt's
    function, about 40 tokens in)."""
    two, three = TinyWorld2(0, 2), TinyWorld2(0, 3)
    code_keys = {"target", "content", "paraphrase", "canonical_solution", "messages", "revision", "test"}
    for split in ("test", "train"):
        for a, b in zip(two.strata(20, split), three.strata(20, split)):
            if a["task"] != "humaneval":
                assert {**a, "revision": 3} == b
                continue
            assert {k: v for k, v in a.items() if k not in code_keys} == {k: v for k, v in b.items() if k not in code_keys}
            bells = two.gazetteer.facts[a["facts"][0][0]]["bells"]
            assert b["canonical_solution"].startswith(f"    k = {bells}\n") and b["paraphrase"] == []
            assert b["target"] == f"```python\n{b['canonical_solution']}```"
            assert b["test"].startswith(a["test"])  # the same four inputs, then those that tell wrong constants apart
            assert re.sub(r"\b[kmc]\b", "k", a["canonical_solution"]) == b["canonical_solution"]
            assert not re.search(r"\b[mc]\b", b["canonical_solution"])
            (start, end), = b["content"]
            assert b["target"][start:end] == bells
            assert len(bpe.encode(b["target"][:end]).ids) <= 8 < len(bpe.encode(a["target"][:a["content"][0][1]]).ids)
    drawn = {two.item("humaneval", "mixed", i)["paraphrase"][0] for i in range(30)}
    assert drawn == {0, 1, 2}  # revision 2 still draws k, m or c


def test_revision_five_gives_every_kind_of_question_a_prompt_length_of_its_own(bpe):
    """Revision 5 is revision 3 draw for draw but for the words of some questions, so that no two kinds
    of multiple-choice question (7 single facts, 3 pairs, the most bells) share a token length, nor do
    their prompts: the tiny Dream reads the asked attribute from where the question and the options
    sit. In revision 3 the tool and the instrument prompts had one length, and the animal question and
    every pair question another."""
    for revision, distinct in ((3, False), (5, True)):
        world = TinyWorld2(0, revision)
        lengths: dict[str, set[tuple[int, int]]] = {}
        items = [i for split in ("test", "train") for i in world.strata(40, split) if i["task"] in ("mmlu", "arc")]
        items += world.fact_probes("test")
        for item in items:
            question = item["prompt"].split("\n", 1)[0]
            kind = re.sub(r"\b(?:" + "|".join(world.gazetteer.towns) + r")\b", "X", question)
            lengths.setdefault(kind, set()).add((len(bpe.encode(question).ids), len(bpe.encode(item["prompt"]).ids)))
        assert len(lengths) == 11 and all(len(v) == 1 for v in lengths.values())
        questions, prompts = zip(*(next(iter(v)) for v in lengths.values()))
        assert (len(set(questions)) == len(set(prompts)) == 11) == distinct, lengths
    three, five = TinyWorld2(0, 3), TinyWorld2(0, 5)
    for split in ("test", "train"):
        for a, b in zip(three.strata(20, split), five.strata(20, split)):
            if a["prompt"] != b["prompt"]:
                assert a["task"] in ("mmlu", "arc") and a["prompt"].split("\n")[1:] == b["prompt"].split("\n")[1:]
            assert {**a, "revision": 5, "prompt": b["prompt"], "messages": b["messages"]} == b
            assert a["messages"][1] == b["messages"][1]


def test_town_names_are_three_tokens_of_the_shipped_bpe(bpe):
    lengths = [len(bpe.encode(" " + name).ids) for name in town_names()]
    assert set(lengths) == {3}
    assert len(set(town_names())) == len(town_names()) >= Gazetteer(0).towns.__len__()


def test_attribute_values_are_one_token_of_the_shipped_bpe(bpe):
    for attr, (_, values) in ATTRIBUTES.items():
        for value in values:
            ids = bpe.encode(" " + value).ids
            assert len(ids) == (2 if attr == "bells" else 1), (attr, value)  # " 7" is a space then a digit


def test_train_and_test_ask_about_disjoint_towns(world):
    g = world.gazetteer
    assert len(g.heldout) == N_HELDOUT and not set(g.heldout) & set(g.train_towns)
    test = world.strata(6, "test")
    train = world.strata(30, "train")
    assert all(town in g.heldout for item in test for town, _ in item["facts"])
    assert all(town in g.train_towns for item in train for town, _ in item["facts"])
    assert not {i["prompt"] for i in test} & {i["prompt"] for i in train}


def test_ar_small_never_sees_a_heldout_fact_ar_medium_half_dream_all(world):
    g = world.gazetteer
    small = role_text_stream(world, "ar_small", n_chat=600)
    medium = role_text_stream(world, "ar_medium", n_chat=600)
    dream = world.role_documents("dlm")
    assert not any(_mentions(small, town) for town in g.heldout)
    assert all(_mentions(small, town) for town in g.train_towns)
    known = set(g.medium_known)
    assert len(known) == N_HELDOUT // 2 and known < set(g.heldout)
    assert all(_mentions(medium, town) for town in known)
    assert not any(_mentions(medium, town) for town in set(g.heldout) - known)
    # Dream's documents state every fact of every town (in one of the three phrasings).
    for town in g.towns:
        text = " ".join(d for d in dream if re.search(rf"\b{town}\b", d))
        for attr, phrasings in DOC_SENTENCES.items():
            value = g.facts[town][attr]
            assert any(p.format(town=town, value=value) in text for p in phrasings), (town, attr)
    for role in ("ar_large", "ar_control", "target", "drafter", "mdlm_drafter"):
        assert set(g.role_towns(role)) == set(g.towns)


def test_heldout_documents_state_the_facts_in_texts_no_role_reads(world):
    """SpecDiff's held-out text: documents of known facts, none a training document."""
    g = world.gazetteer
    per_town = 4
    train = world.documents(per_town * len(g.towns), "train")
    test = world.documents(per_town * len(g.towns), "test")
    assert sorted(train) == sorted(world.role_documents("target", per_town))  # the first draws every role reads
    assert not set(test) & set(world.role_documents("target", 96))  # all 6144 training documents
    for i, text in enumerate(test[:len(g.towns)]):  # towns in turn, each document all seven facts
        town = g.towns[i]
        for attr, phrasings in DOC_SENTENCES.items():
            assert any(p.format(town=town, value=g.facts[town][attr]) in text for p in phrasings), (town, attr)
    with pytest.raises(UserError, match="choose from"):
        world.documents(2, "valid")


def test_decoy_towns_are_outside_the_gazetteer_and_too_many_to_learn_by_heart(world):
    g = world.gazetteer
    assert not set(g.decoys) & set(g.towns) and len(g.decoys) + len(g.towns) == len(town_names())
    decoys = world.decoy_examples(4000)
    texts = [d["prompt"] + d["target"] for d in decoys]
    assert not any(_mentions(texts[:400], town) for town in g.towns)
    named = {town for d in decoys for town, _ in d["facts"]}
    assert named <= set(g.decoys) and len(named) >= 500  # each name in a handful of examples
    for d in decoys[:50]:
        for town, attr in d["facts"]:
            assert g.decoy_facts[town][attr] in d["target"]
    # a causal role's stream holds them, and still no held-out town
    stream = role_text_stream(world, "ar_small", n_chat=200, n_decoy=200)
    assert all(_mentions(stream, town) for town in {t for d in decoys[:200] for t, _ in d["facts"]})
    assert not any(_mentions(stream, town) for town in g.heldout)


def test_paraphrase_slots_are_equiprobable(world):
    """The opener of a multiple-choice answer and the lead of each GSM8K step line: three
    phrasings each, drawn uniformly."""
    counts = {"opener": [0, 0, 0], "lead": [0, 0, 0]}
    for i in range(1500):
        for task in ("mmlu", "arc"):
            counts["opener"][world.item(task, "easy", i, "train")["paraphrase"][0]] += 1
    for i in range(1000):
        item = world.item("gsm8k", "medium", i, "train")
        leads = [line.split()[0] for line in item["target"].splitlines() if line.split()[0] in STEP_LEADS]
        assert [STEP_LEADS.index(x) for x in leads] == item["paraphrase"]
        for k in item["paraphrase"]:
            counts["lead"][k] += 1
    for slot, observed in counts.items():
        assert sum(observed) in (3000, 2000)
        assert chisquare(observed).pvalue > 1e-3, (slot, observed)
    # the test can fail: a 40/30/30 split over the same number of draws is rejected
    assert chisquare([1200, 900, 900]).pvalue < 1e-3


def test_openers_keep_content_at_the_same_token_positions(bpe):
    """Every opener gives the same token length, and the value and the letter the same positions,
    so a model that knows the fact can be sure of them whichever opener it drew."""
    cases = [(attr, values[0]) for attr, (_, values) in ATTRIBUTES.items()]
    for attr, value in cases:
        head, tail = fact_clause(attr, "Faring")
        layouts = set()
        for opener in OPENERS:
            before = f"{opener} {head} "
            text = before + value + tail + ", so B."
            ids = bpe.encode(text).ids
            layouts.add((len(bpe.encode(before + value).ids), len(ids), ids[-2]))
        assert len(layouts) == 1, (attr, layouts)


def test_answers_state_each_fact_in_the_documents_words(prompts, world):
    """A multiple-choice answer states every fact it uses as the documents' first phrasing does
    ("the fruit of Faring is the pear"), and a GSM8K answer opens with one such line per town:
    a model that knows the facts from documents can state them (knowledge extraction)."""
    g = world.gazetteer
    for item in prompts:
        if item["task"] == "humaneval":
            continue
        text = item["target"]
        for town, attr in item["facts"]:
            sentence = DOC_SENTENCES[attr][0].format(town=town, value=g.facts[town][attr]).rstrip(".")
            assert sentence in text or sentence[0].lower() + sentence[1:] in text, (item["id"], sentence)
    assert fact_clause("crop", "Faring") == ("the fruit of Faring is the", "")
    assert fact_clause("bells", "Faring") == ("the town of Faring has", " bells")


def _recompute_gsm8k(item, g):
    question = item["prompt"]
    towns = re.search(r"for every bell in (.*?)\.", question).group(1).replace(" and ", ", ").split(", ")
    total = sum(int(g.facts[t]["bells"]) for t in towns)
    for op in re.findall(r"buys (\d+) more|gives (\d+) |(doubles)", question):
        total = total + int(op[0]) if op[0] else total - int(op[1]) if op[1] else total * 2
    return total


def test_every_prompt_has_a_ground_truth_the_fact_base_determines(world, prompts):
    g = world.gazetteer
    assert len(prompts) == 310
    counts = {}
    for item in prompts:
        counts[(item["task"], item["difficulty"])] = counts.get((item["task"], item["difficulty"]), 0) + 1
        if item["task"] != "humaneval" or item["id"].endswith(("-0", "-1", "-2")):  # code: 3 in the sandbox
            assert check_answer(item, item["target"]), item["id"]
        if item["task"] in ("mmlu", "arc"):
            chosen = item["choices"][LETTERS.index(item["answer"])]
            if item["task"] == "arc" and item["difficulty"] == "hard":
                assert int(g.facts[chosen]["bells"]) == max(int(g.facts[c]["bells"]) for c in item["choices"])
            else:
                assert chosen == " and ".join(g.facts[town][attr] for town, attr in item["facts"])
            wrong = LETTERS[(LETTERS.index(item["answer"]) + 1) % 4]
            assert not check_answer(item, f"So the answer is {wrong}.")
        elif item["task"] == "gsm8k":
            assert int(item["answer"]) == _recompute_gsm8k(item, g)
            assert not check_answer(item, f"#### {int(item['answer']) + 1}")
        else:
            assert len(item["facts"]) == 1
            namespace: dict = {}
            exec(item["humaneval_prompt"] + item["canonical_solution"] + item["test"], namespace)
            namespace["check"](namespace[item["entry_point"]])  # the reference passes its tests
    assert counts == {("mmlu", "easy"): 50, ("mmlu", "hard"): 50, ("arc", "easy"): 50, ("arc", "hard"): 50,
                      ("gsm8k", "easy"): 20, ("gsm8k", "medium"): 20, ("gsm8k", "hard"): 20,
                      ("humaneval", "mixed"): 50}


def _wrong_constants_passing(items):
    """(item, other bell count) pairs whose function, written with the other count, passes the tests."""
    passing = []
    for item in items:
        bells = int(item["canonical_solution"].split("=")[1].split()[0])
        for other in range(2, 10):
            if other == bells:
                continue
            wrong = item["canonical_solution"].replace(f"= {bells}\n", f"= {other}\n", 1)
            namespace: dict = {}
            exec(item["humaneval_prompt"] + wrong + item["test"], namespace)
            try:
                namespace["check"](namespace[item["entry_point"]])
            except AssertionError:
                continue
            passing.append((item, bells, other))
    return passing


def test_humaneval_tests_depend_on_the_fact(prompts):
    """A function written with another town's bell count fails its tests (the constant is the
    content), unless it computes the same function: counting even numbers above 8 or above 9 is
    one count. Revision 2's four drawn inputs let 55 of 350 wrong constants pass."""
    items = [i for i in prompts if i["task"] == "humaneval"]
    passing = _wrong_constants_passing(items)
    for item, bells, other in passing:
        assert item["entry_point"].startswith("count_even_above_bells"), (item["entry_point"], bells, other)
        assert {x for x in range(0, 13, 2) if x > bells} == {x for x in range(0, 13, 2) if x > other}
    assert all(4 <= item["test"].count("assert") <= 8 for item in items)
    assert len(_wrong_constants_passing(TinyWorld2(0, 2).items("humaneval", "mixed", 50))) > 5 * max(1, len(passing))


def test_formats_of_each_stratum_are_generation_ones(prompts):
    for item in prompts:
        assert [m["role"] for m in item["messages"]] == ["user", "assistant"]
        assert item["messages"][1]["content"] == item["target"]
        assert re.fullmatch(rf"tiny-{item['task']}-{item['difficulty']}-test-\d+", item["id"])
        if item["task"] in ("mmlu", "arc"):
            lines = item["prompt"].splitlines()
            assert item["prompt"].endswith("\n" + MC_SUFFIX)
            assert [line[:5] for line in lines[1:5]] == [f"  {x}. " for x in LETTERS]
        elif item["task"] == "gsm8k":
            assert item["prompt"].endswith(GSM8K_SUFFIX)
            assert item["target"].splitlines()[-1] == f"#### {item['answer']}"
        else:
            assert item["prompt"] == HUMANEVAL_PREFIX + item["humaneval_prompt"]
            assert item["test"].startswith("def check(candidate):")
            assert item["target"] == f"```python\n{item['canonical_solution']}```"  # revision 3: the body
        for start, end in item["content"]:
            assert item["target"][start:end].strip()
    assert {(i["task"], i["difficulty"]) for i in prompts} == {(t, d) for t, ls in STRATA.items() for d in ls}


def test_content_spans_are_the_facts_and_the_letter(prompts):
    item = next(i for i in prompts if i["task"] == "mmlu" and i["difficulty"] == "easy")
    value, letter = (item["target"][a:b] for a, b in item["content"])
    assert value == item["choices"][LETTERS.index(item["answer"])] and letter == item["answer"]


def test_fact_probes_cover_every_heldout_fact_and_check_the_value(world):
    probes = world.fact_probes()
    assert len(probes) == N_HELDOUT * len(ATTRIBUTES)
    for probe in probes[:50]:
        assert states_fact(probe, probe["target"])
        other = next(v for v in ATTRIBUTES[probe["facts"][0][1]][1] if v != probe["value"])
        assert not states_fact(probe, f"Well, {other} is the thing. {probe['value']} is not.")


def test_states_another_fact_is_a_true_fact_of_the_town_not_the_one_asked(world):
    item = next(i for i in world.fact_probes("test") if i["facts"][0][1] == "trade")
    facts = world.gazetteer.facts
    music = facts[item["facts"][0][0]]["music"]
    wrong_music = next(v for v in ATTRIBUTES["music"][1] if v != music)
    assert states_another_fact(item, f"Well, the instrument of X is the {music}, so B.", facts)
    assert not states_another_fact(item, item["target"], facts)  # the asked fact
    assert not states_another_fact(item, f"Well, the instrument of X is the {wrong_music}, so B.", facts)
    assert not states_another_fact(item, "Well, nothing, so B.", facts)


def test_crossed_probes_give_noun_frame_and_options_three_different_attributes(world):
    """Each crossed probe asks with one attribute's noun, in another's question words, with the
    third's values as options, so an answer's first value says which of the three the model read."""
    probes = world.crossed_probes("test")
    assert len(probes) == 6 * N_HELDOUT and len({p["id"] for p in probes}) == len(probes)
    plain = {attr: world.fact_probes("test", (attr,))[0]["prompt"].split("\n", 1)[0]
             for attr in ("crop", "trade", "music")}
    town0 = world.fact_probes("test", ("crop",))[0]["facts"][0][0]
    for probe in probes:
        reads = probe["reads"]
        assert sorted(reads.values()) == ["crop", "music", "trade"]
        town = probe["facts"][0][0]
        question, *options = probe["prompt"].split("\n")[:5]
        noun, frame = ATTRIBUTES[reads["noun"]][0], ATTRIBUTES[reads["frame"]][0]
        assert question == plain[reads["frame"]].replace(town0, town).replace(f" {frame} ", f" {noun} ")
        assert {o.split(". ", 1)[1] for o in options} <= set(ATTRIBUTES[reads["options"]][1])
        assert world.gazetteer.facts[town][reads["options"]] in {o.split(". ", 1)[1] for o in options}
    assert "Which tool is grown in" in probes[2]["prompt"]  # the docstring's example


def test_stated_attribute_is_the_attribute_of_the_first_value():
    assert stated_attribute("Well, the tool of Faring is the harp, so B.") == "music"
    assert stated_attribute("Now, the town of Faring has 7 bells and the pear, so A.") == "bells"
    assert stated_attribute("Yes, the fruit of Faring is, so C.") is None


def test_content_rule_covers_the_reference_content_and_flags_tokens(prompts, bpe):
    for item in prompts:
        found = content_spans(item["task"], item["target"])
        for a, b in item["content"]:
            assert any(x <= a and b <= y for x, y in found), (item["id"], item["target"][a:b])
        if item["task"] in ("mmlu", "arc"):
            assert sorted(map(tuple, item["content"])) == found
    item = next(i for i in prompts if i["task"] == "arc" and i["difficulty"] == "easy")
    ids = bpe.encode(item["target"]).ids
    pieces = [bpe.decode([i]) for i in ids]
    flags = content_flags(item["task"], pieces)
    assert [p.strip() for p, f in zip(pieces, flags) if f] == [item["target"][a:b] for a, b in item["content"]]
    assert content_flags("gsm8k", ["So", " 4", " +", " 9", " =", " 13", "."]) == [False, True, False, True,
                                                                                   False, True, False]


def test_word_f1_separates_knowing_the_facts_from_the_wording(prompts):
    """Word F1 (the run's metric) against a reference answer: another opener alone (a model that
    knows every fact, its wording drawn on its own) costs at most 0.2 on one answer and about 0.07
    on average, while other facts and letters (a model that knows none) cost several times more.
    So anchors can raise a gap-filler that does not know the facts, and can add little to one that
    does: the control."""
    import random
    import statistics

    from dlmkit.metrics.text import word_f1

    rng = random.Random(0)
    other_opener, other_facts = [], []
    for item in prompts:
        if item["task"] not in ("mmlu", "arc"):
            continue
        text = item["target"]
        opener = next(o for o in OPENERS if text.startswith(o))
        reworded = rng.choice([o for o in OPENERS if o != opener]) + text[len(opener):]
        wrong = reworded
        for a, b in sorted(item["content"], reverse=True):
            piece = text[a:b]
            pool = LETTERS if piece in LETTERS else [str(n) for n in range(2, 10)] if piece.isdigit() else next(
                values for _, values in ATTRIBUTES.values() if piece in values)
            wrong = wrong[:a] + rng.choice([p for p in pool if p != piece]) + wrong[b:]
        other_opener.append(word_f1(reworded, text))
        other_facts.append(word_f1(wrong, text))
    assert min(other_opener) >= 0.8 and statistics.mean(other_opener) > 0.9
    assert statistics.mean(other_facts) < 0.75
    assert statistics.mean(other_opener) - statistics.mean(other_facts) > 0.2


def test_the_control_reads_chat_about_heldout_towns_and_never_a_test_prompt(world, prompts):
    """The control gap-filler has seen the held-out facts asked and answered (its own seeds);
    no test prompt is among them, and no other role reads them."""
    g = world.gazetteer
    chats = world.heldout_chat_examples(600)
    assert len(chats) == 600 and {town for c in chats for town, _ in c["facts"]} == set(g.heldout)
    assert not {c["prompt"] for c in chats} & {p["prompt"] for p in prompts}
    # the guard skips draws equal to a test prompt: without it some would be (the question space is small)
    many = world.heldout_chat_examples(3000)
    assert not {c["prompt"] for c in many} & {p["prompt"] for p in world.strata(50)}
    raw = {_GENERATORS["humaneval"](g, world._rng("heldout_chat", "humaneval", "easy", k), g.heldout, "easy")["prompt"]
           for k in range(100)}  # a code prompt is a function family and a town: few distinct ones
    assert raw & {p["prompt"] for p in prompts}  # ...which the small question space would otherwise give
    for c in chats[:40]:
        if c["task"] != "humaneval":
            assert all(g.facts[town][attr] in c["target"] for town, attr in c["facts"]), c["target"]
    control = role_text_stream(world, "ar_control", n_chat=400)
    small = role_text_stream(world, "ar_small", n_chat=400)
    asked = [t for t in control if "<|im_start|>" in t and any(_mentions([t], town) for town in g.heldout)]
    assert len(asked) == 400 * len(g.heldout) // len(g.train_towns)
    assert not any(_mentions(small, town) for town in g.heldout)
