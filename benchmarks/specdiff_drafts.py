"""Why SpecDiff's tiny MDLM drafter is accepted less often than the AR drafter: its drafts beside
the target's continuation, on SpecDiff's own held-out prompts and shipped tiny models.

  next-token CE   on held-out documents cut into 48-token windows: the cross-entropy (nats) of
                  the MDLM drafter at each of the last 8 positions, all masked at once (the
                  state of a T = 1 draft of 8, with and without one slack mask after them),
                  and of the AR drafter and the target at the
                  same positions given the true prefix (teacher forcing). Position 1 is the
                  same question for all three: the next token after the same prefix.
  drafts          every 4 tokens along the target's greedy continuation of each prompt: each
                  drafter's greedy draft of --gamma tokens from the true prefix (the MDLM at
                  T = 1 without and with the slack mask, and at T = gamma), how many of them equal the target's tokens
                  before the first mismatch (what a greedy round would accept), and how often
                  the last drafted token is <|endoftext|> (beside how often the target's is)

    OMP_NUM_THREADS=1 python benchmarks/specdiff_drafts.py [--prompts 6] [--gamma 16] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def next_token_ce(target, drafter, mdlm, tokenizer, n_blocks: int = 256, window: int = 48, tail: int = 8) -> dict:
    import torch
    import torch.nn.functional as F

    from dlmkit.data.owt import bos_eos, tokenize_documents, wrap_token_lists
    from dlmkit.data.tinyworld2 import TinyWorld2
    from dlmkit.models.mdlm_diffusion import mask_out

    bos, eos = bos_eos(tokenizer)
    blocks = wrap_token_lists(tokenize_documents(tokenizer, TinyWorld2(0).documents(200, "test")), 64, bos, eos)
    x = blocks[:n_blocks, :window]
    truth = x[:, -tail:]
    out = {}
    with torch.no_grad():
        for slack in (0, 1):  # masks held after the tail (the drafter's slack), not scored
            masked = blocks[:n_blocks, :window + slack].clone()
            masked[:, window - tail:] = mdlm.mask_id
            logits = mask_out(mdlm(masked, None).float(), mdlm.mask_id)[:, window - tail:window]
            md = F.cross_entropy(logits.transpose(1, 2), truth, reduction="none").mean(0)
            out[f"mdlm_drafter (tail masked at once, slack {slack})"] = md.tolist()
        for name, model in (("AR drafter (teacher forced)", drafter), ("target (teacher forced)", target)):
            logits = model(input_ids=x).logits[:, -tail - 1:-1].float()
            out[name] = F.cross_entropy(logits.transpose(1, 2), truth, reduction="none").mean(0).tolist()
    return out


def drafts(target, drafter, mdlm, prompts, gamma: int, max_new: int = 64, stride: int = 4, eos_id: int = 0) -> dict:
    import torch

    from dlmkit.decoding.drafters import ARDrafter, MDLMDrafter
    from dlmkit.decoding.spec_loop import CachedLM, ar_generate

    makers = {"AR drafter": lambda: ARDrafter(drafter),
              "MDLM drafter, T=1, no slack": lambda: MDLMDrafter(mdlm, 1, slack=0),
              "MDLM drafter, T=1": lambda: MDLMDrafter(mdlm, 1),
              f"MDLM drafter, T={gamma}": lambda: MDLMDrafter(mdlm, gamma)}
    kept = {name: Counter() for name in makers}
    last_eos = Counter()  # drafts whose last token is <|endoftext|> (the target's text: "target")
    examples = []
    for prompt in prompts:
        continuation = ar_generate(CachedLM(target), prompt["ids"], max_new, 0.0, torch.Generator().manual_seed(0))
        sequence = prompt["ids"] + continuation.tokens
        for cut in range(len(prompt["ids"]), len(sequence) - gamma + 1, stride):
            truth = sequence[cut:cut + gamma]
            row = {"prompt": f"{prompt['set']}/{prompt['index']}", "cut": cut, "target": truth}
            last_eos["target"] += truth[-1] == eos_id
            for name, make in makers.items():
                tokens = make().draft(sequence[:cut], gamma, 0.0, torch.Generator().manual_seed(0)).tokens
                k = next((i for i, (a, b) in enumerate(zip(tokens, truth)) if a != b), gamma)
                kept[name][k] += 1
                last_eos[name] += tokens[-1] == eos_id
                row[name] = tokens
            examples.append(row)
    summary = {}
    for name, counts in kept.items():
        n = sum(counts.values())
        summary[name] = {"drafts": n, "mean_kept": sum(k * v for k, v in counts.items()) / n,
                         "first_token_wrong": counts[0] / n, "last_token_eos": last_eos[name] / n,
                         "target_last_token_eos": last_eos["target"] / n, "kept_histogram": dict(sorted(counts.items()))}
    return {"summary": summary, "examples": examples}


def main(argv=None) -> int:
    import torch

    from dlmkit.cli import OneLineParser, positive_int, run_main  # noqa: F401
    from dlmkit.experiments.specdiff.prompts import load_prompts
    from dlmkit.models.ar import load_ar
    from dlmkit.models.mdlm import load_mdlm
    from dlmkit.presets import resolve_models
    from dlmkit.results import atomic_write_json, markdown_table

    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=positive_int, default=6, help="prompts per set (documents, chat)")
    parser.add_argument("--gamma", type=positive_int, default=16, help="drafted tokens per draft")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers and every draft here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    specs = resolve_models("tiny", ["target", "drafter", "mdlm_drafter"])
    target, tokenizer = load_ar(specs["target"].source)
    drafter, _ = load_ar(specs["drafter"].source, with_tokenizer=False)
    mdlm = load_mdlm(specs["mdlm_drafter"].source)
    for model in (target, drafter, mdlm):
        model.eval()
    ce = next_token_ce(target, drafter, mdlm, tokenizer)
    print("### next-token cross-entropy on held-out documents (nats; position k of the last 8)\n")
    print(markdown_table([{"model": name, **{f"pos {k + 1}": v for k, v in enumerate(values)}}
                          for name, values in ce.items()], ".2f"))
    prompts = load_prompts("tiny", tokenizer, ["documents", "chat"], args.prompts, 12)
    result = drafts(target, drafter, mdlm, prompts, args.gamma, eos_id=tokenizer.eos_token_id)
    print(f"\n### greedy drafts of {args.gamma} tokens against the target's continuation\n")
    print(markdown_table([{"drafter": name, **{k: v for k, v in row.items() if k != "kept_histogram"}}
                          for name, row in result["summary"].items()], ".3f"))
    first = result["examples"][0]
    print(f"\nexample ({first['prompt']}, after {tokenizer.decode(prompts[0]['ids'][1:])!r}):")
    print(f"  target:  {tokenizer.decode(first['target'])!r}")
    for name in result["summary"]:
        print(f"  {name}: {tokenizer.decode(first[name])!r}")
    if args.json:
        atomic_write_json(args.json, {"next_token_ce": ce, **result, "gamma": args.gamma, "prompts": args.prompts})
    return 0


if __name__ == "__main__":
    from dlmkit.cli import run_main

    run_main(main)
