"""Time Dream's denoising step and compare it with a roofline bound.

One denoising step is one bidirectional forward over the whole canvas (prompt + answer)
plus the sampler's bookkeeping. The roofline bound for it is

    FLOPs  = batch * (2 * matmul_params * canvas + 4 * layers * canvas^2 * hidden)
    bytes  = params * bytes_per_param        (every weight read once per step)
    bound  = max(FLOPs / peak_flops, bytes / peak_bw)

On CUDA the peaks default to an H100's bf16 numbers (~790 TFLOP/s dense matmul, ~3.0 TB/s;
pass your device's own); on a CPU they are measured in the same run (a 1024^2 matmul and
a 256 MB copy), so the ratio says how far the step is from what this machine can do.

Beside it, the sampler's share at the paper's settings (temperature 0.2, top_p 0.95, top_k 50)
with every answer position open (a step's costliest case): the reference's two filters (a sort
of the whole vocabulary per position) against dlmkit's one-pass filter, which keeps the same
tokens (`top_p_top_k_filter`), median of repeats with min and max, in the same run.

    python benchmarks/bench_dream.py --random-config tiny --device cpu --canvas 128
    python benchmarks/bench_dream.py --random-config dream-7b --device cuda      # bf16
    python benchmarks/bench_dream.py --model Dream-org/Dream-v0-Instruct-7B --device cuda
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from dlmkit.decoding.diffusion import (ALGS, diffusion_generate, sample_tokens, top_k_filter,  # noqa: E402
                                       top_p_filter, top_p_top_k_filter)
from dlmkit.timing import time_calls  # noqa: E402
from dlmkit.cli import run_main  # noqa: E402
from dlmkit.errors import UserError  # noqa: E402
from dlmkit.models.dream import (  # noqa: E402
    DREAM_SIZES,
    count_matmul_parameters,
    count_parameters,
    dream_config,
    load_dream,
    random_dream,
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="Dream checkpoint directory or hub id (real weights)")
    which.add_argument("--random-config", choices=sorted(DREAM_SIZES),
                       help="random weights of this size instead of a checkpoint")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda (default: cuda when a GPU is visible)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="weights and activations (default: bfloat16 on cuda, float32 on cpu)")
    p.add_argument("--canvas", type=int, default=512, help="tokens per sequence: prompt + answer (default 512)")
    p.add_argument("--prompt-len", type=int, default=64, help="prompt tokens inside the canvas (default 64)")
    p.add_argument("--batch", type=int, default=1, help="sequences denoised together (default 1)")
    p.add_argument("--steps", type=int, default=8, help="timed denoising steps (default 8)")
    p.add_argument("--warmup", type=int, default=2, help="untimed forwards first (default 2)")
    p.add_argument("--alg", choices=ALGS, default="entropy", help="unmasking order of the sampler (default entropy)")
    p.add_argument("--peak-flops", type=float, default=None,
                   help="device peak FLOP/s (default: H100 bf16 790e12 on cuda; measured in this run on cpu)")
    p.add_argument("--peak-bw", type=float, default=None,
                   help="device peak memory B/s (default: H100 3.0e12 on cuda; measured in this run on cpu)")
    p.add_argument("--sampling-repeats", type=int, default=20,
                   help="timed repeats of the sampler comparison (default 20; 0 skips it)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights and the prompt (default 0)")
    args = p.parse_args(argv)
    if args.canvas < 2 or not 1 <= args.prompt_len < args.canvas:
        p.error("need 1 <= --prompt-len < --canvas")
    if min(args.batch, args.steps) < 1 or args.warmup < 0:
        p.error("--batch and --steps must be >= 1, --warmup >= 0")
    return args


def roofline_seconds(config, canvas: int, batch: int, bytes_per_param: int, peak_flops: float, peak_bw: float):
    """(flops, bytes, lower-bound seconds) of one forward over `batch` canvases."""
    attention = 4 * config.num_hidden_layers * canvas**2 * config.num_attention_heads * config.head_dim
    flops = batch * (2 * count_matmul_parameters(config) * canvas + attention)
    nbytes = count_parameters(config) * bytes_per_param
    return flops, nbytes, max(flops / peak_flops, nbytes / peak_bw)


def measured_peaks(dtype, device="cpu", size: int = 1024, copy_bytes: int = 1 << 28) -> tuple[float, float]:
    """This device's matmul FLOP/s (size^2 operands of `dtype`) and copy bandwidth (read + write),
    measured now, for an honest roofline. On a GPU pass sizes that fill it (e.g. 8192, 4 GB)."""
    device = torch.device(device)
    a = torch.randn(size, size, dtype=dtype, device=device)
    b = torch.randn(size, size, dtype=dtype, device=device)
    a @ b
    with Timer(device) as t:
        for _ in range(5):
            a @ b
    flops = 5 * 2 * size**3 / t.seconds
    del a, b
    src = torch.randn(copy_bytes // 4, dtype=torch.float32, device=device)  # random, not zeros (METHOD.md)
    dst = torch.empty_like(src)
    dst.copy_(src)
    with Timer(device) as t:
        for _ in range(3):
            dst.copy_(src)
    bandwidth = 3 * 2 * copy_bytes / t.seconds  # read + write
    return flops, bandwidth


def sampling_comparison(logits, device, repeats: int, seed: int) -> dict:
    """Time sample_tokens' filtering at the paper's settings over `logits` (open positions, V):
    the reference's top_p then top_k filters against the one-pass filter, alone and with the
    rest of sample_tokens (softmax, the seeded draw, the entropy confidence)."""
    scaled = logits.float() / 0.2
    reference = lambda: top_k_filter(top_p_filter(scaled, 0.95), 50)  # noqa: E731
    one_pass = lambda: top_p_top_k_filter(scaled, 0.95, 50)  # noqa: E731

    def whole(filters):  # the filtered logits through the rest of sample_tokens (temperature already applied)
        return lambda: sample_tokens(filters(), temperature=1.0, confidence="neg_entropy",
                                     generator=torch.Generator(device=logits.device).manual_seed(seed))

    return {"rows": logits.shape[0], "equal": bool(torch.equal(reference(), one_pass())),
            **{name: (time_calls(f, device, repeats, warmup=2), time_calls(whole(f), device, repeats, warmup=2))
               for name, f in (("reference (sort)", reference), ("one pass", one_pass))}}


def _fmt(t) -> str:
    return f"{t.median_ms:.2f} ({t.min_ms:.2f}..{t.max_ms:.2f})"


def measured_cpu_peaks(dtype, size: int = 1024, copy_bytes: int = 1 << 28) -> tuple[float, float]:
    return measured_peaks(dtype, "cpu", size, copy_bytes)


class Timer:
    """Wall time that waits for queued GPU work at both ends."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __enter__(self):
        if self.cuda:
            torch.cuda.synchronize()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("CUDA requested but no GPU is visible; pass --device cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if args.random_config == "dream-7b" and device.type != "cuda":
        raise UserError("random dream-7b weights need a GPU (~15 GB in bf16); pass --device cuda or --random-config tiny")

    if args.model:
        model = load_dream(args.model, device=device, dtype=dtype)
        name = str(args.model)
    else:
        model = random_dream(dream_config(args.random_config), seed=args.seed, device=device, dtype=dtype)
        name = f"random {args.random_config}"
    cfg = model.config

    gen = torch.Generator().manual_seed(args.seed)
    prompt = torch.randint(0, cfg.vocab_size, (args.batch, args.prompt_len), generator=gen)
    prompt[prompt == model.mask_token_id] = 0  # a prompt holds no mask tokens
    prompt = prompt.to(device)
    answer_len = args.canvas - args.prompt_len
    canvas = torch.cat([prompt, torch.full((args.batch, answer_len), model.mask_token_id, device=device)], dim=1)

    with torch.no_grad():
        for _ in range(args.warmup):
            model(canvas)
        with Timer(device) as forward:
            for _ in range(args.steps):
                model(canvas)
        with Timer(device) as run:  # the whole sampler: forwards plus sampling and bookkeeping
            diffusion_generate(model, prompt, max_new_tokens=answer_len, steps=args.steps, alg=args.alg,
                               generator=torch.Generator(device=device).manual_seed(args.seed))

        sampling = sampling_comparison(model(canvas)[:, args.prompt_len:].reshape(-1, cfg.vocab_size), device,
                                       args.sampling_repeats, args.seed) if args.sampling_repeats else None

    forward_s, step_s = forward.seconds / args.steps, run.seconds / args.steps
    if device.type == "cpu" and (args.peak_flops is None or args.peak_bw is None):
        flops_now, bw_now = measured_cpu_peaks(dtype)
        args.peak_flops = args.peak_flops or flops_now
        args.peak_bw = args.peak_bw or bw_now
        peaks = "measured on this CPU"
    else:
        args.peak_flops = args.peak_flops or 790e12
        args.peak_bw = args.peak_bw or 3.0e12
        peaks = "given" if device.type == "cpu" else "H100 bf16 defaults unless given"
    flops, nbytes, bound_s = roofline_seconds(cfg, args.canvas, args.batch, torch.finfo(dtype).bits // 8,
                                              args.peak_flops, args.peak_bw)
    limiter = "compute" if flops / args.peak_flops >= nbytes / args.peak_bw else "memory"

    print(f"Dream benchmark: {name}, {count_parameters(cfg) / 1e6:,.1f} M params, {device} {str(dtype)[6:]}, "
          f"batch {args.batch}, canvas {args.canvas} ({args.prompt_len} prompt + {answer_len} answer), "
          f"{args.steps} steps, alg {args.alg}")
    print()
    print("| measure | value |")
    print("|---|---|")
    print(f"| forward only, ms/step | {forward_s * 1e3:.2f} |")
    print(f"| full sampler, ms/step | {step_s * 1e3:.2f} |")
    print(f"| answer tokens/s ({answer_len} tokens in {args.steps} steps, x{args.batch}) | "
          f"{args.batch * answer_len / run.seconds:.1f} |")
    print(f"| roofline: GFLOP/step | {flops / 1e9:.1f} |")
    print(f"| roofline: GB weights/step | {nbytes / 1e9:.3f} |")
    print(f"| roofline: bound ms/step ({limiter}-bound at {args.peak_flops:.3g} FLOP/s, {args.peak_bw:.3g} B/s, "
          f"{peaks}) | "
          f"{bound_s * 1e3:.4g} |")
    print(f"| measured / roofline (forward) | {forward_s / bound_s:.2f}x |")
    print(f"| measured / roofline (full step) | {step_s / bound_s:.2f}x |")
    print(f"| achieved TFLOP/s (forward) | {flops / forward_s / 1e12:.3f} |")
    if sampling is not None:
        print()
        print(f"Sampling {sampling['rows']} open positions (temperature 0.2, top_p 0.95, top_k 50, neg-entropy "
              f"confidence), ms, median (min..max) of {args.sampling_repeats}:")
        print()
        print("| filters | filters alone | filters + sampling | same kept tokens |")
        print("|---|---|---|---|")
        for name in ("reference (sort)", "one pass"):
            f, t = sampling[name]
            print(f"| {name} | {_fmt(f)} | {_fmt(t)} | {sampling['equal']} |")
        (ref_f, ref_t), (one_f, one_t) = sampling["reference (sort)"], sampling["one pass"]
        print(f"| ratio reference / one pass | {ref_f.median_ms / one_f.median_ms:.2f}x | {ref_t.median_ms / one_t.median_ms:.2f}x | |")


if __name__ == "__main__":
    run_main(main)
