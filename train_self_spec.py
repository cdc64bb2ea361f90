#!/usr/bin/env python
"""Self-speculative masked diffusion: a frozen MDLM drafts, one trained causal layer and
target head verify, inside masked-diffusion sampling (Campbell et al. 2025, 2510.03929).

Phases, in order:
  baseline  the MDLM alone: N unconditional samples with `ddpm` and `ddpm_cache` at each
            step count of a grid, scored by a causal judge (NLL, gen-PPL; MDLM's
            protocol: decode, retokenize, exp of the mean NLL) and by unigram entropy,
            beside two references scored the same way: uniformly random tokens (far
            worse) and held-out real text (the floor). NFE is the number of network
            calls actually made per sample batch.
  train     the causal layer and the target head on top of the frozen MDLM (the MDLM's
            own training data), AdamW + warmup + cosine, checkpoints under
            OUT/checkpoints (or --ckpt-dir) with resume; validation compares the draft's
            and the target's cross-entropy on held-out masked tokens.
  sample    self-speculative sampling at each NFE budget (dtau calibrated to it), and the
            same cosine windows with the draft alone as a control; scored as in baseline.
  eval      the table of NLL and entropy against NFE (MDLM beside self-speculation), the
            MDLM NFE that each self-speculative NLL is worth, and a plot.

Writes summary.json (tables `mdlm_baseline`, `references`, `self_spec_train`,
`self_spec_dtau`, `self_spec_vs_mdlm`), one JSONL record per sample (`--resume` skips
finished ones), self_spec_train_log.jsonl, and two plots.

    python train_self_spec.py                      # tiny preset, CPU, about half an hour
    python train_self_spec.py --out results/train_self_spec/tiny --resume --phase train --phase sample --phase eval
    python train_self_spec.py --preset paper --device cuda   # accelerate launch for several GPUs
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from dlmkit.cli import (build_parser, count_list, model_overrides, positive_int, resolve_device,
                       resolve_dtype, run_main, seed_everything, selected_phases)
from dlmkit.decoding.mdlm_sampler import SAMPLERS, sample
from dlmkit.errors import UserError
from dlmkit.phases.self_spec import SAMPLE_DEFAULTS, TRAIN_DEFAULTS, pooled, standard_error
from dlmkit.presets import resolve_models
from dlmkit.results import Run, default_out, echo, save_figure

PHASES = ["baseline", "train", "sample", "eval"]
ROLES = ["mdlm", "judge"]

# Per preset: samples, tokens per sample, the step grid, samples drawn together.
# The paper grid is the proposal's NFE grid {28, 64, 128, 256, 512} plus 32, where MDLM's
# published OWT number (5.50) sits.
PRESET_DEFAULTS = {
    "tiny": dict(samples=64, length=128, steps=(8, 16, 32, 64, 128), batch_size=1),
    "paper": dict(samples=1000, length=1024, steps=(28, 32, 64, 128, 256, 512), batch_size=16),
}
JUDGE_CONTEXT = 1024  # MDLM scores gen-PPL in chunks of gpt2-large's context
BASELINE_NOTE = "baseline: "
REPO = Path(__file__).resolve().parent


def portable(source: str) -> str:
    """A model source as the resume check compares it: relative to the repo when inside it,
    so a run resumes from another clone of the repo."""
    try:
        return str(Path(source).resolve().relative_to(REPO))
    except (ValueError, OSError):
        return source




def make_parser():
    parser = build_parser("train_self_spec.py", __doc__, phases=PHASES, roles=ROLES)
    own = parser.add_argument_group("baseline phase")
    own.add_argument("--steps", type=count_list, default=None, metavar="S1,S2,...",
                     help="denoising step counts (default: tiny 8,16,32,64,128; paper 28,32,64,128,256,512)")
    own.add_argument("--length", type=int, default=None, metavar="L",
                     help="tokens per sample (default: tiny 128, paper 1024; at most the MDLM's model_length)")
    own.add_argument("--batch-size", type=int, default=None, metavar="B",
                     help="samples drawn together (default: tiny 1, paper 16); ddpm_cache skips a call only "
                          "when no sample of the batch changed, so NFE depends on it")
    train = parser.add_argument_group("train phase")
    train.add_argument("--train-steps", type=positive_int, default=None, metavar="N",
                       help="optimizer steps (default: tiny 1500, paper 50000)")
    train.add_argument("--train-batch-size", type=positive_int, default=None, metavar="B",
                       help="blocks per step (default: tiny 16, paper 256)")
    train.add_argument("--lr", type=float, default=None,
                       help="peak learning rate after linear warmup, then cosine to 0 (default: tiny 1e-3, paper 1.5e-4)")
    train.add_argument("--ckpt-dir", type=Path, default=None, metavar="DIR",
                       help="training checkpoints and the trained parts (final/) (default: OUT/checkpoints; "
                            "keep it out of git)")
    spec = parser.add_argument_group("sample and eval phases")
    spec.add_argument("--self-spec", type=Path, default=None, metavar="DIR",
                      help="trained causal layer + target head to sample with (default: CKPT_DIR/final, "
                           "what --phase train wrote)")
    spec.add_argument("--nfe", type=count_list, default=None, metavar="N1,N2,...",
                      help="NFE budgets; dtau is calibrated to each (default: tiny 8,16,32,64,128, matching the "
                           "baseline steps; paper 28,64,128,256,512)")
    spec.add_argument("--spec-batch-size", type=positive_int, default=None, metavar="B",
                      help="self-speculative samples drawn together (default 16; a sample's tokens and NFE do not "
                           "depend on it: every row has its own generator)")
    spec.add_argument("--calibration-samples", type=positive_int, default=None, metavar="N",
                      help="rows (never evaluated) on which dtau is calibrated to each budget (default: tiny 8, paper 16)")
    return parser


# --------------------------------------------------------------------------- models


def load_mdlm_tokenizer(source: str, preset: str):
    """The MDLM's tokenizer: files beside the weights (tiny), else GPT-2's (mdlm-owt ships none)."""
    from transformers import PreTrainedTokenizerFast

    from dlmkit.data.owt import load_owt_tokenizer
    from dlmkit.data.tiny_corpus import load_tiny_tokenizer

    directory = Path(source)
    if directory.is_dir() and (directory / "tokenizer.json").exists():
        # Not AutoTokenizer: it would read the MDLM's config.json and warn about model_type "mdlm".
        return PreTrainedTokenizerFast.from_pretrained(directory)
    return load_tiny_tokenizer() if preset == "tiny" else load_owt_tokenizer()


def check_vocab(mdlm, tokenizer, source: str) -> None:
    """MDLM's vocabulary is the tokenizer's plus the mask, or the tokenizer's with its mask last."""
    vocab = mdlm.config.vocab_size
    if len(tokenizer) not in (vocab, vocab - 1):
        raise UserError(f"the MDLM at {source} has vocab_size {vocab} but its tokenizer has {len(tokenizer)} "
                        "entries (expected vocab_size or vocab_size - 1); pass the tokenizer it was trained with")
    if len(tokenizer) == vocab and tokenizer.mask_token_id != mdlm.mask_id:
        raise UserError(f"the tokenizer's mask id {tokenizer.mask_token_id} is not the MDLM's mask id "
                        f"{mdlm.mask_id} (vocab_size - 1); pass the tokenizer it was trained with")


# --------------------------------------------------------------------------- scoring


def score_samples(rows: list[list[int]], tokenizer, judge, judge_tokenizer, length: int) -> list[dict]:
    """Per sample: judge NLL (sum and count, MDLM's gen-PPL protocol) and unigram entropy."""
    from dlmkit.metrics.lm import generative_perplexity, unigram_entropy

    texts = tokenizer.batch_decode(rows)  # special tokens kept, as MDLM decodes
    context = getattr(judge.config, "n_positions", None) or getattr(judge.config, "max_position_embeddings", None)
    chunk = min(JUDGE_CONTEXT, context or JUDGE_CONTEXT)
    scored = generative_perplexity(texts, judge, judge_tokenizer, chunk_size=chunk, max_length=length)
    entropies = unigram_entropy(rows)
    return [{"text": text, "tokens": row, "judge_nll": nll if count else None, "judge_tokens": count,
             "entropy": entropy}
            for text, row, nll, count, entropy in zip(texts, rows, scored.nll_per_text, scored.tokens_per_text,
                                                      entropies)]


# --------------------------------------------------------------------------- the baseline phase


def batch_seed(seed: int, first_index: int) -> int:
    """Sampling noise of a batch: a pure function of (seed, its first sample), shared by
    both samplers, so ddpm and ddpm_cache draw the same tokens and differ only in NFE."""
    return seed * 1_000_003 + first_index


def run_references(run: Run, cfg: dict, preset: str, tokenizer, mdlm, judge, judge_tokenizer) -> list[dict]:
    from dlmkit.data.owt import heldout_blocks

    n, length = cfg["samples"], cfg["length"]
    log = run.log("baseline_references")
    done = log.done_ids()
    # Held-out text first: on the paper preset it needs OpenWebText, and a missing dataset
    # should stop the run before hours of sampling, not after.
    if not all(f"heldout/{i}" in done for i in range(n)):
        blocks = heldout_blocks(preset, n, block_len=length, tokenizer=tokenizer)
        todo = [i for i in range(n) if f"heldout/{i}" not in done]
        for record, i in zip(score_samples(blocks[todo].tolist(), tokenizer, judge, judge_tokenizer, length), todo):
            log.append({"id": f"heldout/{i}", "reference": "heldout", "index": i, **record})
    if not all(f"random/{i}" in done for i in range(n)):
        # Uniform over every token but the mask (the last id), drawn once for all n.
        gen = torch.Generator().manual_seed(cfg["seed"] * 1_000_003 + 999_983)
        rows = torch.randint(0, mdlm.mask_id, (n, length), generator=gen)
        todo = [i for i in range(n) if f"random/{i}" not in done]
        for record, i in zip(score_samples(rows[todo].tolist(), tokenizer, judge, judge_tokenizer, length), todo):
            log.append({"id": f"random/{i}", "reference": "random", "index": i, **record})

    records = log.records()
    rows = []
    for name, label in (("random", "uniform random tokens"), ("heldout", "held-out real text")):
        chosen = [r for r in records if r["reference"] == name and r["index"] < n]
        rows.append({"reference": label, "samples": len(chosen), **pooled(chosen)})
    return rows


def run_samples(run: Run, cfg: dict, device: str, tokenizer, mdlm, judge,
                judge_tokenizer) -> tuple[list[dict], list[dict]]:
    from tqdm.auto import tqdm

    n, length, batch_size = cfg["samples"], cfg["length"], cfg["batch_size"]
    log = run.log("baseline_samples")
    done = log.done_ids()
    work = [(steps, sampler, start) for steps in cfg["steps"] for sampler in SAMPLERS
            for start in range(0, n, batch_size)]
    bar = tqdm(work, desc="baseline samples", unit="batch")
    for steps, sampler, start in bar:
        indices = list(range(start, min(start + batch_size, n)))
        ids = [f"{sampler}/{steps}/{i}" for i in indices]
        if all(i in done for i in ids):
            continue
        bar.set_postfix(sampler=sampler, steps=steps)
        canvas = torch.full((len(indices), length), mdlm.mask_id, dtype=torch.long, device=device)
        gen = torch.Generator().manual_seed(batch_seed(cfg["seed"], start))
        out = sample(mdlm, canvas, steps, sampler=sampler, generator=gen)
        scored = score_samples(out.tokens.cpu().tolist(), tokenizer, judge, judge_tokenizer, length)
        for sample_id, index, record in zip(ids, indices, scored):
            if sample_id not in done:
                log.append({"id": sample_id, "sampler": sampler, "steps": steps, "index": index, "nfe": out.nfe,
                            "batch_size": len(indices), **record})

    records = log.records()
    table = []
    for steps in cfg["steps"]:
        for sampler in SAMPLERS:
            chosen = [r for r in records if r["sampler"] == sampler and r["steps"] == steps and r["index"] < n]
            nfe = sum(r["nfe"] for r in chosen) / len(chosen) if chosen else float("nan")
            table.append({"sampler": sampler, "steps": steps, "nfe": nfe, **pooled(chosen)})
    return table, records


def baseline_notes(table: list[dict], references: list[dict], records: list[dict], cfg: dict) -> list[str]:
    """Plain sentences on what the issue asks to hold, true or not."""
    notes = []
    random_nll, heldout_nll = references[0]["judge_nll"], references[1]["judge_nll"]
    worst = max(row["judge_nll"] for row in table)
    verdict = "below" if worst < random_nll else "NOT below"
    notes.append(f"every MDLM row's judge NLL ({worst:.3f} at worst) is {verdict} uniform random tokens "
                 f"({random_nll:.3f}); held-out real text scores {heldout_nll:.3f} (the floor)")
    wanted = [r for r in records if r["steps"] in cfg["steps"] and r["index"] < cfg["samples"]]
    noise = max(standard_error([r["judge_nll"] for r in wanted
                                if (r["sampler"], r["steps"]) == (row["sampler"], row["steps"])]) for row in table)
    for sampler in SAMPLERS:
        curve = [(row["steps"], row["judge_nll"]) for row in table if row["sampler"] == sampler]
        falls = all(b[1] <= a[1] for a, b in zip(curve, curve[1:]))
        first, last = curve[0], curve[-1]
        shape = "falls at every step" if falls else ("falls overall but not at every step" if last[1] < first[1]
                                                     else "does NOT fall")
        notes.append(f"{sampler}: judge NLL {shape} as the step count grows ({first[1]:.3f} at {first[0]} steps, "
                     f"{last[1]:.3f} at {last[0]}; {', '.join(f'{v:.3f}' for _, v in curve)}); a row's mean has a "
                     f"standard error of up to {noise:.3f} over {cfg['samples']} samples")
    by_key = {}
    for r in wanted:
        by_key.setdefault((r["steps"], r["index"]), {})[r["sampler"]] = r["tokens"]
    pairs = [v for v in by_key.values() if len(v) == 2]
    same = sum(v["ddpm"] == v["ddpm_cache"] for v in pairs)
    if same == len(pairs):
        notes.append(f"ddpm and ddpm_cache share their sampling noise and drew identical tokens in all {same} "
                     "sample pairs, so their rows differ only in NFE (the calls the cache saved)")
    else:
        notes.append(f"ddpm and ddpm_cache share their sampling noise yet only {same} of {len(pairs)} sample "
                     "pairs are identical: the cache changed the samples, which it should not")
    return [BASELINE_NOTE + n for n in notes]


def plot_baseline(path: Path, table: list[dict], references: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for sampler, marker, style in (("ddpm", "o", "-"), ("ddpm_cache", "x", "--")):
        rows = [r for r in table if r["sampler"] == sampler]
        ax.plot([r["steps"] for r in rows], [r["judge_nll"] for r in rows], style, marker=marker, label=sampler)
    for ref, color in zip(references, ("tab:red", "tab:green")):
        ax.axhline(ref["judge_nll"], color=color, linestyle=":", label=ref["reference"])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("denoising steps")
    ax.set_ylabel("judge NLL (nats / token)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def load_models(args, cfg: dict, specs: dict, device: str, dtype):
    """The MDLM, its tokenizer and the judge, checked against each other and the length."""
    from dlmkit.models.ar import load_ar
    from dlmkit.models.mdlm import load_mdlm

    mdlm = load_mdlm(specs["mdlm"].source, device=device, dtype=dtype)
    if cfg["length"] > mdlm.config.model_length:
        raise UserError(f"--length {cfg['length']} exceeds the MDLM's model_length {mdlm.config.model_length}; "
                        "lower --length")
    tokenizer = load_mdlm_tokenizer(specs["mdlm"].source, args.preset)
    check_vocab(mdlm, tokenizer, specs["mdlm"].source)
    judge, judge_tokenizer = load_ar(specs["judge"].source, device=device, dtype=dtype)
    return mdlm, tokenizer, judge, judge_tokenizer


def phase_baseline(run: Run, args, cfg: dict, specs: dict, device: str, dtype) -> None:
    mdlm, tokenizer, judge, judge_tokenizer = load_models(args, cfg, specs, device, dtype)
    references = run_references(run, cfg, args.preset, tokenizer, mdlm, judge, judge_tokenizer)
    table, records = run_samples(run, cfg, device, tokenizer, mdlm, judge, judge_tokenizer)
    run.add_table("mdlm_baseline", table)
    run.add_table("references", references)
    run.summary["notes"] = [n for n in run.summary["notes"] if not n.startswith(BASELINE_NOTE)]
    for note in baseline_notes(table, references, records, cfg):
        run.note(note)
        echo(note)
    plot_baseline(run.dir / "baseline_nll_vs_steps.png", table, references,
                  f"MDLM ({args.preset}): {cfg['samples']} samples of {cfg['length']} tokens")
    run.phase_done("baseline")


# --------------------------------------------------------------------------- the self-speculative phases


def weights_digest(directory: Path) -> str:
    """sha256 of the trained parts: samples drawn with other weights must not be mixed in on resume."""
    import hashlib

    return hashlib.sha256((Path(directory) / "model.safetensors").read_bytes()).hexdigest()[:16]


def phase_sample(run: Run, args, cfg: dict, specs: dict, device: str, dtype, trained: Path) -> None:
    from dlmkit.models.self_spec import load_self_spec
    from dlmkit.phases.self_spec import phase_sample as sample_phase

    mdlm, tokenizer, judge, judge_tokenizer = load_models(args, cfg, specs, device, dtype)
    model = load_self_spec(trained, mdlm, device=device, dtype=dtype)
    digest = weights_digest(trained)
    before = run.summary["config"].get("self_spec_weights")
    if before and before != digest and run.log("self_spec_samples").records():
        raise UserError(f"{run.dir} holds samples of other self-spec weights ({before}, now {digest}); remove "
                        f"{run.dir / 'self_spec_samples.jsonl'} and the self_spec_dtau table, or pass another --out")
    run.summary["config"]["self_spec_weights"] = digest
    run.summary["config"]["self_spec_source"] = portable(str(trained))
    sample_phase(run, model=model, cfg=cfg, device=device,
                 score=lambda rows: score_samples(rows, tokenizer, judge, judge_tokenizer, cfg["length"]))


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    from dlmkit.phases.self_spec import phase_eval, phase_train

    parser = make_parser()
    args = parser.parse_args(argv)
    phases = selected_phases(args)

    defaults, tdefaults, sdefaults = PRESET_DEFAULTS[args.preset], TRAIN_DEFAULTS[args.preset], SAMPLE_DEFAULTS[args.preset]
    cfg = {"samples": args.subset or defaults["samples"], "length": args.length or defaults["length"],
           "steps": args.steps or list(defaults["steps"]), "batch_size": args.batch_size or defaults["batch_size"],
           "samplers": list(SAMPLERS), "seed": args.seed,
           "nfe": args.nfe or list(sdefaults["nfe"]),
           "spec_batch_size": args.spec_batch_size or sdefaults["spec_batch_size"],
           "calibration_samples": args.calibration_samples or sdefaults["calibration_samples"]}
    tcfg = {**tdefaults, **{k: v for k, v in (("steps", args.train_steps), ("batch_size", args.train_batch_size),
                                               ("lr", args.lr)) if v is not None}}
    if cfg["length"] < 2 or cfg["batch_size"] < 1:
        raise UserError("--length must be >= 2 and --batch-size >= 1")
    if not tcfg["lr"] > 0:
        raise UserError(f"--lr must be > 0, got {tcfg['lr']}")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    specs = resolve_models(args.preset, ROLES, model_overrides(args))
    out = args.out or default_out(parser.prog, args.preset, args.subset)
    ckpt_dir = args.ckpt_dir or Path(out) / "checkpoints"
    trained = args.self_spec or ckpt_dir / "final"
    if "sample" in phases and "train" not in phases and not (trained / "model.safetensors").exists():
        raise UserError(f"no trained self-spec parts at {trained}; run --phase train first or pass --self-spec DIR")

    # Records carry no seed, length or model: resuming with other ones would mix two runs.
    identity = {"seed": args.seed, "length": cfg["length"], "batch_size": cfg["batch_size"],
                "models": {role: portable(spec.source) for role, spec in specs.items()}}
    previous = Path(out) / "summary.json"
    if args.resume and previous.exists():
        before = json.loads(previous.read_text()).get("config", {}).get("identity")
        if before and before != identity:
            raise UserError(f"{out} holds a run with other settings ({before}); resume with the same --seed, "
                            "--length, --batch-size and models, or pass --overwrite")
    seed_everything(args.seed)
    run = Run(out, script=parser.prog, argv=sys.argv[1:] if argv is None else list(argv), preset=args.preset,
              models=specs, device=device, dtype=str(dtype).removeprefix("torch."), seed=args.seed,
              config={**cfg, "identity": identity, "phases": phases, "train": tcfg}, resume=args.resume,
              overwrite=args.overwrite)
    for phase in phases:
        if phase == "baseline":
            phase_baseline(run, args, cfg, specs, device, dtype)
        elif phase == "train":
            final = phase_train(run, preset=args.preset, seed=args.seed, tcfg=tcfg,
                                mdlm_source=specs["mdlm"].source, mdlm_label=portable(specs["mdlm"].source),
                                ckpt_dir=ckpt_dir, device=device, resume=args.resume)
            trained = args.self_spec or final
        elif phase == "sample":
            phase_sample(run, args, cfg, specs, device, dtype, trained)
        elif phase == "eval":
            phase_eval(run, cfg=cfg, preset=args.preset)
    run.save()
    return 0


if __name__ == "__main__":
    run_main(main)
