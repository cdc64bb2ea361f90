"""Time one CLSD block: the DiT drafts N candidate blocks of L tokens in K Euler steps, tokens
are read off the drafts, and the verifier scores all N in one batched pass over a cached
prompt. The model card's target: < 500 ms per 128-token block (B200, Qwen3.5-9B).

Weights are random (only shapes and times matter): the verifier is Qwen3.5-9B's text tower
(hidden 4096, 32 layers, every 4th full attention, vocab 248320; the rest transformers'
Qwen3_5TextConfig defaults, which are the 9B's) and the DiT is its 12-layer graft with
adaLN-Zero, built directly on the device in bf16 (nothing is allocated on the CPU).
--config tiny uses the shipped tiny verifier's shape and runs on a CPU in seconds.

Without flash-linear-attention (and causal-conv1d), transformers runs Gated DeltaNet with
its pure-torch fallback; the script prints which path ran, since the fallback is far from
the kernels the target assumes.

    OMP_NUM_THREADS=1 python benchmarks/bench_clsd.py                     # tiny, CPU
    python benchmarks/bench_clsd.py --config qwen3.5-9b --device cuda      # one H100/B200
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from dlmkit.cli import resolve_device, resolve_dtype, run_main, synchronize  # noqa: E402
from dlmkit.errors import UserError  # noqa: E402
from dlmkit.models.cache import cache_kwargs, output_cache  # noqa: E402
from dlmkit.models.clsd import PAPER_SOURCE_INDICES, CLSDDiT, DiTConfig, NearestEmbedding, scale_source_indices  # noqa: E402
from dlmkit.models.qwen35 import TINY_VERIFIER, expand_cache, qwen35_9b_config, text_config  # noqa: E402
from dlmkit.decoding.clsd import draft  # noqa: E402

TARGET_MS = 500.0


def build_config(name: str):
    if name == "qwen3.5-9b":
        return qwen35_9b_config()
    if name == "tiny":
        return text_config(1207, eos_token_id=0, **TINY_VERIFIER)
    raise UserError(f"unknown --config {name!r}; pass tiny or qwen3.5-9b")


def build_models(config, device: str, dtype):
    """Random verifier and DiT created on `device` in `dtype` (no CPU copy of 9B weights)."""
    from transformers import Qwen3_5ForCausalLM

    indices = PAPER_SOURCE_INDICES if config.num_hidden_layers == 32 else scale_source_indices(config.num_hidden_layers)
    text = config.to_dict()
    text.update(num_hidden_layers=len(indices), layer_types=[config.layer_types[i] for i in indices])
    for key in ("model_type", "architectures", "transformers_version", "dtype", "torch_dtype"):
        text.pop(key, None)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            verifier = Qwen3_5ForCausalLM(config).eval()
            dit = CLSDDiT(DiTConfig(source_indices=indices, block_len=128, embed_scale=0.02, text=text)).eval()
            for block in dit.blocks:  # off the zero init, so the gates do real work
                torch.nn.init.normal_(block.adaLN_modulation[1].weight, std=0.02)
    finally:
        torch.set_default_dtype(previous)
    verifier.requires_grad_(False)
    dit.requires_grad_(False)
    return verifier, dit


@torch.no_grad()
def one_block(verifier, dit, read_tokens, cache, cond, candidates: int, block_len: int, euler_steps: int,
              device: str):
    """(draft ms, score ms) of one round."""
    embedding = verifier.get_input_embeddings().weight
    synchronize(device)
    t0 = time.perf_counter()
    noise = torch.randn(candidates, block_len, embedding.shape[1], device=device, dtype=embedding.dtype)
    drafts = dit.to_embeddings(draft(dit, cond, noise, euler_steps))
    tokens = read_tokens(drafts)
    synchronize(device)
    t1 = time.perf_counter()
    hidden = verifier.model(input_ids=tokens, **cache_kwargs(expand_cache(cache, candidates)),
                            use_cache=True).last_hidden_state
    logprobs = verifier.lm_head(hidden[:, :-1]).float().log_softmax(-1)
    scores = logprobs.gather(-1, tokens[:, 1:, None])[..., 0].mean(-1)
    int(scores.argmax())
    synchronize(device)
    return 1000 * (t1 - t0), 1000 * (time.perf_counter() - t1)


def measure_blocks(config, device: str, dtype, *, candidates: int, block_len: int, euler_steps: int,
                   prompt_len: int, repeats: int, warmup: int = 2, deadline: float | None = None):
    """([(draft ms, score ms)] of `repeats` rounds after `warmup` untimed ones, facts about the models).
    With a deadline (a time.perf_counter() value) the timed rounds stop early, keeping at least one."""
    torch.manual_seed(0)
    verifier, dit = build_models(config, device, dtype)
    info = {"verifier_params": sum(p.numel() for p in verifier.parameters()),
            "dit_params": sum(p.numel() for p in dit.parameters()), "dit_layers": len(dit.blocks),
            "deltanet_layers": dit.layer_types.count("linear_attention"),
            "attention_layers": dit.layer_types.count("full_attention"),
            "deltanet_path": "flash-linear-attention" if importlib.util.find_spec("fla") else "torch fallback"}
    prompt = torch.randint(0, config.vocab_size, (1, prompt_len), device=device)
    with torch.no_grad():
        out = verifier.model(input_ids=prompt, use_cache=True)
    cache, cond = output_cache(out), out.last_hidden_state[:, -1]
    read_tokens = NearestEmbedding(verifier.get_input_embeddings().weight)  # made once, as inference does
    times = []
    for i in range(repeats + warmup):
        if i > warmup and deadline is not None and time.perf_counter() + sum(times[-1]) / 1e3 > deadline:
            break
        result = one_block(verifier, dit, read_tokens, cache, cond, candidates, block_len, euler_steps, device)
        if i >= warmup:
            times.append(result)
    return times, info


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="tiny", help="tiny (CPU) or qwen3.5-9b (a GPU with ~30 GB free)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, float32 on CPU), float32, bfloat16")
    parser.add_argument("--candidates", type=int, default=32, help="candidate blocks per round")
    parser.add_argument("--block-len", type=int, default=128, help="tokens per block")
    parser.add_argument("--euler-steps", type=int, default=2, help="DiT Euler steps per draft")
    parser.add_argument("--prompt-len", type=int, default=256, help="cached prompt tokens before the block")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (after 2 warm-up rounds)")
    args = parser.parse_args(argv)
    if min(args.candidates, args.block_len, args.euler_steps, args.prompt_len, args.repeats) < 1:
        raise UserError("--candidates, --block-len, --euler-steps, --prompt-len and --repeats must be >= 1")
    if args.block_len > 128:
        raise UserError("--block-len must be <= 128 (the DiT's position table)")
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    config = build_config(args.config)
    if args.config != "tiny" and not device.startswith("cuda"):
        raise UserError(f"--config {args.config} needs a GPU; pass --device cuda, or --config tiny on a CPU")
    times, info = measure_blocks(config, device, dtype, candidates=args.candidates, block_len=args.block_len,
                                 euler_steps=args.euler_steps, prompt_len=args.prompt_len, repeats=args.repeats)
    print(f"config {args.config}: verifier {info['verifier_params'] / 1e9:.3f}B params, "
          f"DiT {info['dit_params'] / 1e9:.3f}B ({info['dit_layers']} layers: {info['deltanet_layers']} DeltaNet + "
          f"{info['attention_layers']} attention), {dtype}, {device}; DeltaNet path: {info['deltanet_path']}")
    draft_ms = statistics.median(t[0] for t in times)
    score_ms = statistics.median(t[1] for t in times)
    total = statistics.median(t[0] + t[1] for t in times)
    print(f"one block of {args.candidates} x {args.block_len} (median of {args.repeats}): draft {draft_ms:.1f} ms "
          f"(K={args.euler_steps}) + score {score_ms:.1f} ms = {total:.1f} ms")
    if device.startswith("cuda"):
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    print(f"measured / target ({TARGET_MS:.0f} ms per block, model card, B200, 9B): {total / TARGET_MS:.3f}"
          + ("" if args.config == "qwen3.5-9b" else "  [tiny config: not comparable to the 9B target]"))
    return 0


if __name__ == "__main__":
    run_main(main)
