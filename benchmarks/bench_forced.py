"""Replay anchor patterns through forced decoding and time three decoders.

  naive     one full forward over prompt + output-so-far per position, no cache (the paper's
            cost model: a forward per token, anchors included)
  stepwise  KV cache, one token per forward (an ordinary decode loop that overrides anchors)
  ours      dlmkit.decoding.forced.forced_decode: KV cache, a gap token and the anchor run
            after it in one forward, optionally batched over prompts (--batch)

Anchor patterns:
  default        the published Dream-v0-Instruct-7B patterns (dlmkit/data/published/published_anchors.json,
                 512-token canvas, 128 entropy-ordered steps): per prompt the anchor positions
                 at each step fraction and gen_len, the answer length.
  --anchors FILE a JSONL of our own runs, one answer per line, either
                   {"gen_len": L, "anchors": {"0.1": {"POS": ID, ...}, ...}}    (published shape) or
                   {"commit_step": [...], "tokens": [...], "steps": S, "gen_len": L}
                 (gen_len optional in the second shape: default the whole commit_step row).

What is replayed: every prompt decodes exactly gen_len positions (end rule "fixed"), so the
positions and the pass counts are the published ones. The AR has random weights, so its
tokens mean nothing; only counts and times do. Prompts are random ids of --prompt-len
tokens (the published file keeps only the prompt text). Anchor ids are Qwen2 ids: the
qwen2.5-0.5b config keeps them (ids >= its vocabulary of 151936 wrap modulo the vocab);
the tiny config has a small vocabulary, so every id is taken modulo it.

Targets printed beside the measurement (from the issue):
  wall time   ours >= 3x faster than naive at 10% (summed over prompts)
  passes      ours <= one per gap position + one per prompt; on the published 10% patterns
              that bound is 1.42x fewer passes than one per position in total, 4x at the
              median prompt

    OMP_NUM_THREADS=1 python benchmarks/bench_forced.py --limit 20
    python benchmarks/bench_forced.py --config qwen2.5-0.5b --device cuda --batch 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from dlmkit.anchors import Anchors, anchors_at_fraction  # noqa: E402
from dlmkit.decoding.forced import forced_decode, forced_decode_naive  # noqa: E402
from dlmkit.cli import run_main, synchronize  # noqa: E402
from dlmkit.errors import UserError  # noqa: E402
from dlmkit.data.published import ANCHORS_FILE as PUBLISHED  # noqa: E402
from dlmkit.models.real_configs import QWEN25_05B  # noqa: E402


CONFIGS = {
    # A small random Qwen2 that runs on one CPU thread in well under a minute for 20 prompts.
    "tiny": dict(vocab_size=1024, hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                 tie_word_embeddings=True),
    # Qwen2.5-0.5B(-Instruct) geometry: 494 M parameters, tied embeddings (dlmkit/models/real_configs.py).
    "qwen2.5-0.5b": QWEN25_05B,
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="tiny",
                   help="random AR: tiny (CPU) or the Qwen2.5-0.5B geometry in bf16 (GPU) (default tiny)")
    p.add_argument("--anchors", type=Path, help="JSONL of our own runs instead of the published patterns")
    p.add_argument("--published", type=Path, default=PUBLISHED, help="published patterns (default: the copy shipped in dlmkit/data/published)")
    p.add_argument("--limit", type=int, help="replay only the first N prompts")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.10, 0.25],
                   help="step fractions to replay (default 0.10 0.25)")
    p.add_argument("--steps", type=int, default=128, help="diffusion steps of --anchors commit_step rows (default 128)")
    p.add_argument("--prompt-len", type=int, default=64, help="random prompt tokens per prompt (default 64)")
    p.add_argument("--batch", type=int, default=1, help="also run ours batched over this many prompts (default 1: off)")
    p.add_argument("--decoders", default="naive,stepwise,ours", help="comma list of decoders to time")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="default: bfloat16 for qwen2.5-0.5b on cuda, float32 otherwise")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and prompts (default 0)")
    p.add_argument("--per-prompt", action=argparse.BooleanOptionalAction, default=True,
                   help="print one row per prompt (default on)")
    p.add_argument("--json", type=Path, help="also write every measurement to this JSON file")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error("--limit must be >= 1")
    if args.batch < 1 or args.prompt_len < 1:
        p.error("--batch and --prompt-len must be >= 1")
    unknown = set(args.decoders.split(",")) - {"naive", "stepwise", "ours"}
    if unknown:
        p.error(f"unknown decoder(s) {sorted(unknown)}; use naive, stepwise, ours")
    for f in args.fractions:
        if not 0 < f <= 1:
            p.error(f"step fractions must be in (0, 1], got {f}")
    return args


# --------------------------------------------------------------------------- inputs


def load_patterns(args) -> list[dict]:
    """[{name, gen_len, anchors: {fraction: Anchors}}] (positions < gen_len)."""
    items = []
    if args.anchors:
        if not args.anchors.exists():
            raise UserError(f"--anchors {args.anchors} does not exist; pass a JSONL written by run_full_suite.py")
        for n, line in enumerate(args.anchors.read_text().splitlines()):
            if line.strip():
                items.append(_pattern(json.loads(line), f"{args.anchors.name}:{n}", args))
    else:
        if not args.published.exists():
            raise UserError(f"no published patterns at {args.published}; pass --published PATH or --anchors FILE")
        for record in json.loads(args.published.read_text()):
            items.append(_pattern(record, f"{record['index']}:{record['benchmark']}", args))
    return items[:args.limit] if args.limit else items


def _pattern(record: dict, name: str, args) -> dict:
    if "commit_step" in record:
        width = len(record["commit_step"])
        gen_len = int(record.get("gen_len", width))
        steps = int(record.get("steps", args.steps))
        anchors = {f: anchors_at_fraction(record["commit_step"], record["tokens"], f, steps, length=gen_len)
                   for f in args.fractions}
    elif "anchors" in record and "gen_len" in record:
        gen_len = int(record["gen_len"])
        anchors = {}
        for f in args.fractions:
            key = next((k for k in record["anchors"] if abs(float(k) - f) < 1e-9), None)
            if key is None:
                raise UserError(f"{name}: no anchors at fraction {f}; the file has {sorted(record['anchors'])}")
            anchors[f] = Anchors.from_mapping(record["anchors"][key], gen_len, drop_outside=True)
    else:
        raise UserError(f"{name}: a record needs gen_len + anchors, or commit_step + tokens (see --help)")
    return {"name": name, "gen_len": gen_len, "anchors": anchors}


def build_model(args):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no GPU is visible; pass --device cpu")
    default = "bfloat16" if (args.config == "qwen2.5-0.5b" and device.type == "cuda") else "float32"
    dtype = getattr(torch, args.dtype or default)
    torch.manual_seed(args.seed)
    config = Qwen2Config(**CONFIGS[args.config], use_cache=True, eos_token_id=None, pad_token_id=None)
    with device:  # initialise on the device: 0.5B random weights are slow to make on a CPU
        model = Qwen2ForCausalLM(config).to(dtype).eval()
    return model, device, dtype


# --------------------------------------------------------------------------- timing


def timed(fn, device):
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return out, time.perf_counter() - start


def run_fraction(model, device, prompts, items, fraction, vocab, decoders, batch) -> dict:
    anchors = [{p: t % vocab for p, t in item["anchors"][fraction].as_dict().items()} for item in items]
    lengths = [item["gen_len"] for item in items]
    rows, outputs = [], {d: [] for d in decoders}
    call = {
        "naive": lambda i: forced_decode_naive(model, [prompts[i]], [anchors[i]], max_new_tokens=lengths[i], rule="fixed"),
        "stepwise": lambda i: forced_decode(model, [prompts[i]], [anchors[i]], max_new_tokens=lengths[i], rule="fixed",
                                            chunked=False),
        "ours": lambda i: forced_decode(model, [prompts[i]], [anchors[i]], max_new_tokens=lengths[i], rule="fixed"),
    }
    for i, item in enumerate(items):
        row = {"prompt": item["name"], "gen_len": lengths[i], "anchors": len(anchors[i]),
               "gaps": lengths[i] - len(anchors[i])}
        for d in decoders:
            result, seconds = timed(lambda: call[d](i), device)
            outputs[d].append(result.rows[0].tokens)
            row[f"{d}_passes"] = result.forward_passes
            row[f"{d}_ms"] = seconds * 1e3
        rows.append(row)
    batched = None
    if batch > 1 and "ours" in decoders:
        result, seconds = timed(lambda: forced_decode(model, prompts, anchors, max_new_tokens=lengths, rule="fixed",
                                                      batch_size=batch), device)
        batched = {"batch": batch, "passes": result.forward_passes, "ms": seconds * 1e3,
                   "identical_to_unbatched": _identical([r.tokens for r in result.rows], outputs["ours"])}
    agree = {d: _identical(outputs[d], outputs.get("naive")) for d in decoders if d != "naive"}
    return {"fraction": fraction, "rows": rows, "batched": batched, "identical_to_naive": agree}


def _identical(tokens, reference):
    if reference is None:
        return None
    return sum(a == b for a, b in zip(tokens, reference))


def warm_up(model, device, vocab):
    prompt = [[i % vocab for i in range(8)]]
    for _ in range(2):
        forced_decode_naive(model, prompt, [{1: 3}], max_new_tokens=4, rule="fixed")
        forced_decode(model, prompt, [{1: 3}], max_new_tokens=4, rule="fixed")
        forced_decode(model, prompt * 2, [{1: 3}, {}], max_new_tokens=4, rule="fixed", chunked=False)
    synchronize(device)


# --------------------------------------------------------------------------- report


def summarize(result: dict, decoders) -> dict:
    rows = result["rows"]
    positions = sum(r["gen_len"] for r in rows)
    bound = sum(r["gaps"] + 1 for r in rows)
    s = {"fraction": result["fraction"], "prompts": len(rows), "positions": positions,
         "anchors": sum(r["anchors"] for r in rows), "gap_positions": sum(r["gaps"] for r in rows),
         "bound_passes": bound, "bound_ratio_total": positions / bound,
         "bound_ratio_median": statistics.median(r["gen_len"] / (r["gaps"] + 1) for r in rows)}
    for d in decoders:
        s[f"{d}_passes"] = sum(r[f"{d}_passes"] for r in rows)
        s[f"{d}_ms"] = sum(r[f"{d}_ms"] for r in rows)
    if "ours" in decoders:
        s["ours_within_bound"] = all(r["ours_passes"] <= r["gaps"] + 1 for r in rows)
        s["ours_pass_ratio_total"] = positions / max(s["ours_passes"], 1)
        # a prompt with no gap needs no pass; count it as one so the ratio stays finite
        s["ours_pass_ratio_median"] = statistics.median(r["gen_len"] / max(r["ours_passes"], 1) for r in rows)
        if "naive" in decoders:
            s["wall_ratio_naive_over_ours"] = s["naive_ms"] / s["ours_ms"]
            s["wall_ratio_median_prompt"] = statistics.median(r["naive_ms"] / r["ours_ms"] for r in rows)
        if "stepwise" in decoders:
            s["wall_ratio_stepwise_over_ours"] = s["stepwise_ms"] / s["ours_ms"]
    if result["batched"]:
        b = result["batched"]
        s["batched"] = b
        if "naive" in decoders:
            s["wall_ratio_naive_over_ours_batched"] = s["naive_ms"] / b["ms"]
    s["identical_to_naive"] = result["identical_to_naive"]
    return s


def print_report(args, model, dtype, results, decoders, n_items):
    params = sum(p.numel() for p in model.parameters())
    source = args.anchors or args.published
    print(f"Forced-decoding replay: {n_items} prompts from {source}; AR = random {args.config} Qwen2 "
          f"({params / 1e6:.1f} M params, vocab {model.config.vocab_size}, {args.device} {str(dtype)[6:]}); "
          f"prompts = {args.prompt_len} random ids; anchor ids mod {model.config.vocab_size}; "
          f"each prompt decodes exactly gen_len positions; threads {torch.get_num_threads()}")
    for result, s in results:
        f = result["fraction"]
        if args.per_prompt:
            print(f"\n### fraction {f:g}: per prompt\n")
            cols = ["prompt", "gen_len", "anchors", "gaps"] + [f"{d}_passes" for d in decoders] + \
                   [f"{d}_ms" for d in decoders]
            print("| " + " | ".join(cols) + " |")
            print("|" + "---|" * len(cols))
            for r in result["rows"]:
                print("| " + " | ".join(f"{r[c]:.1f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")
        print(f"\n### fraction {f:g}: summed over {s['prompts']} prompts\n")
        print("| decoder | sequential passes | wall ms | passes vs one per position |")
        print("|---|---|---|---|")
        for d in decoders:
            print(f"| {d} | {s[f'{d}_passes']} | {s[f'{d}_ms']:.1f} | {s['positions'] / max(s[f'{d}_passes'], 1):.2f}x |")
        if s.get("batched"):
            b = s["batched"]
            print(f"| ours, batch {b['batch']} | {b['passes']} | {b['ms']:.1f} | {s['positions'] / max(b['passes'], 1):.2f}x |")
        print()
        print(f"- positions {s['positions']}, anchors {s['anchors']}, gap positions {s['gap_positions']}; "
              f"bound (one pass per gap + one per prompt) = {s['bound_passes']} passes")
        issue = " (issue, published 10%: 1.42x total, 4x median)" if abs(f - 0.10) < 1e-9 else ""
        print(f"- bound vs one pass per position: {s['bound_ratio_total']:.2f}x in total, "
              f"{s['bound_ratio_median']:.2f}x at the median prompt{issue}")
        if "ours" in decoders:
            print(f"- ours measured: {s['ours_pass_ratio_total']:.2f}x fewer passes in total, "
                  f"{s['ours_pass_ratio_median']:.2f}x at the median prompt; every prompt within the bound: "
                  f"{'yes' if s['ours_within_bound'] else 'NO'}")
            if "wall_ratio_naive_over_ours" in s:
                target = " (target at 10%: >= 3x)" if abs(f - 0.10) < 1e-9 else ""
                print(f"- wall time naive / ours: {s['wall_ratio_naive_over_ours']:.2f}x summed, "
                      f"{s['wall_ratio_median_prompt']:.2f}x at the median prompt{target}")
            if "wall_ratio_naive_over_ours_batched" in s:
                print(f"- wall time naive / ours batched ({s['batched']['batch']} prompts per batch): "
                      f"{s['wall_ratio_naive_over_ours_batched']:.2f}x")
            if "wall_ratio_stepwise_over_ours" in s:
                print(f"- wall time stepwise / ours: {s['wall_ratio_stepwise_over_ours']:.2f}x")
        agree = {k: v for k, v in s["identical_to_naive"].items() if v is not None}
        if agree:
            print("- prompts whose tokens equal naive's: " + ", ".join(f"{k} {v}/{s['prompts']}" for k, v in agree.items()))
        if s.get("batched"):
            print(f"- prompts whose batched tokens equal unbatched ours: "
                  f"{s['batched']['identical_to_unbatched']}/{s['prompts']}")


def main(argv=None):
    args = parse_args(argv)
    decoders = args.decoders.split(",")
    items = load_patterns(args)
    if not items:
        raise UserError("no prompts to replay; check --anchors / --limit")
    model, device, dtype = build_model(args)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(args.seed)
    prompts = [torch.randint(0, vocab, (args.prompt_len,), generator=g).tolist() for _ in items]
    warm_up(model, device, vocab)
    results = []
    for f in args.fractions:
        result = run_fraction(model, device, prompts, items, f, vocab, decoders, args.batch)
        results.append((result, summarize(result, decoders)))
    print_report(args, model, dtype, results, decoders, len(items))
    if args.json:
        from dlmkit.results import atomic_write_json

        atomic_write_json(args.json, {"config": args.config, "device": str(device), "dtype": str(dtype),
                                      "prompt_len": args.prompt_len, "source": str(args.anchors or args.published),
                                      "fractions": [{"summary": s, "rows": r["rows"]} for r, s in results]})


if __name__ == "__main__":
    run_main(main)
