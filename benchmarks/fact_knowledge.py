"""Do the world-2 tiny models know the facts, and can they answer questions about them?

For every shipped generation-2 role (dlm, ar_small, ar_medium, ar_large, ar_control), on the
training towns and on the held-out towns (which every test prompt asks about):

  cloze     the fact in the documents' own words with the value hidden ("The fruit of
            Faring is the ___."): the right value ranked first among the attribute's values
            (dlmkit.train.recipes.world2.cloze_accuracy)
  probe     the single-fact chat question ("Which fruit is grown in Faring?" + four options):
            does the free answer state the right value, and the right letter (world2.gate);
            greedy answers, Dream in 32 entropy-ordered steps over a 32-position canvas
  another   the probe answers whose value is the asked town's value for another attribute
  fact      (tinyworld2.states_another_fact): a true fact, not the one asked
  value     given the probe's reference answer up to its value ("Now, the fruit of Faring is
  given     the ___"), the value the model ranks first (world2.value_given_answer; a DLM with
  answer    the rest of its canvas masked): knowing the asked fact, apart from writing the
            sentence that asks for it
  letter    given the probe's reference answer up to its letter (the right value written),
  given     the letter the model ranks first among A-D (world2.letter_given_answer): reading
  answer    the options, apart from knowing the value
  reads     crossed probes (TinyWorld2.crossed_probes): the question's noun names one MMLU-like
            attribute, its other words (frame) are another's question, its options the third's
            ("Which tool is grown in Faring?" + four instruments); the share of answers whose
            first value is the noun's, the frame's or the options' attribute: what the model
            reads to tell which attribute is asked

A model that knows a fact (cloze) but does not state it when asked (probe) has not learned
to extract it: what separates the testbed's designed knowledge asymmetry from what the
inverse-speculation pipeline can use.

    OMP_NUM_THREADS=1 python benchmarks/fact_knowledge.py [--json results/fact_knowledge/tiny.json]
    OMP_NUM_THREADS=1 python benchmarks/fact_knowledge.py --roles dlm --dream DIR --revision 3

`--dream` measures another Dream checkpoint directory in the dlm row (an earlier build, written out
of the git history), on the world of `--revision` (default: the revision the shipped roles learned).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROLES = ("dlm", "ar_small", "ar_medium", "ar_large", "ar_control")


def measure(role: str, directory: Path | None = None, revision: int | None = None) -> dict:
    import torch

    from dlmkit.data.tinyworld2 import TinyWorld2, stated_attribute, states_another_fact
    from dlmkit.presets import TINY, TINY_ROOT, tiny_world_of
    from dlmkit.train.recipes import world2

    torch.manual_seed(0)
    directory = directory or TINY_ROOT / TINY[role]
    world = tiny_world_of(role)
    if revision is not None:
        world = TinyWorld2(world.seed, revision)
    row = {"role": role, "revision": world.revision}
    if role == "dlm":
        from dlmkit.models.dream import load_dream, load_dream_tokenizer
        from dlmkit.train.recipes.dream import greedy_responses

        model, tokenizer = load_dream(directory), load_dream_tokenizer(directory)

        def answer(items):
            return greedy_responses(model, tokenizer, items, gen_len=32, steps=32, batch_size=64)
    else:
        from dlmkit.models.ar import load_ar
        from dlmkit.train.recipes.causal_lm import greedy_responses

        model, tokenizer = load_ar(directory)

        def answer(items):
            return greedy_responses(model, tokenizer, items, max_new_tokens=24)
    model.eval()
    row["parameters"] = sum(p.numel() for p in model.parameters())
    for split, name in (("train", "training_towns"), ("test", "heldout_towns")):
        row[f"cloze_{name}"] = world2.cloze_accuracy(model, tokenizer, world, split, diffusion=role == "dlm")
        items = world.fact_probes(split)
        responses = answer(items)
        gate = world2.gate(world, items, responses)
        row[f"probe_fact_{name}"] = gate["fact_accuracy_all"]
        row[f"probe_another_fact_{name}"] = sum(states_another_fact(item, text, world.gazetteer.facts)
                                                for item, text in zip(items, responses)) / len(items)
        row[f"value_given_answer_{name}"] = world2.value_given_answer(model, tokenizer, items, diffusion=role == "dlm")
        row[f"probe_letter_{name}"] = gate["letter_accuracy_all"]
        row[f"probe_town_copied_{name}"] = gate["town_copied_all"]
        row[f"letter_given_answer_{name}"] = world2.letter_given_answer(model, tokenizer, items,
                                                                        diffusion=role == "dlm")
        crossed = world.crossed_probes(split)
        stated = [stated_attribute(text) for text in answer(crossed)]
        for part in ("noun", "frame", "options"):
            followed = sum(s == item["reads"][part] for s, item in zip(stated, crossed))
            row[f"reads_{part}_{name}"] = followed / len(crossed)
    return row


def main(argv=None) -> int:
    from dlmkit.data.tinyworld2 import REVISIONS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roles", nargs="+", choices=ROLES, default=list(ROLES))
    parser.add_argument("--json", type=Path, default=None, help="also write the rows (with provenance) here")
    parser.add_argument("--dream", type=Path, default=None, help="a Dream checkpoint directory for the dlm row "
                        "instead of the shipped one")
    parser.add_argument("--revision", type=int, choices=REVISIONS, default=None,
                        help="the world-2 revision to ask in (default: the one the shipped roles learned)")
    args = parser.parse_args(argv)
    if args.dream is not None and not (args.dream / "config.json").exists():
        parser.error(f"--dream {args.dream}: no Dream checkpoint there (config.json missing); pass a directory "
                     "written by `python -m dlmkit.train.tiny dlm`")
    from dlmkit.results import atomic_write_json, git_state

    git = git_state(exclude=args.json) if args.json else None  # the tree as the measurement starts
    rows = [measure(role, args.dream if role == "dlm" else None, args.revision) for role in args.roles]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    if args.json:
        atomic_write_json(args.json, {"command": "python benchmarks/fact_knowledge.py " + " ".join(argv or sys.argv[1:]),
                                      **git, "rows": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
