"""Every script's paper path at the real geometries, on a CPU, with random weights: catches shape,
dtype, vocabulary and memory errors at real sizes before anyone rents a GPU.

Each case writes tiny-in-depth random checkpoints in the real hub formats (config.json +
model.safetensors; the Qwen3.5 one as the hub's vision-language composite) to a temp dir, loads
them through dlmkit's own loaders, and runs the decoding algorithms its script uses on random
token ids of the real vocabulary sizes, at small canvases and step counts:

  inverse    Dream-7B geometry (2 of 28 layers, bf16, vocab 152064, untied head) -> load_dream ->
             diffusion_generate (64-token canvas, 8 steps, the paper's sampling settings) ->
             anchors at 25% -> Qwen2.5-0.5B at full size (bf16, vocab 151936) -> load_ar ->
             forced_decode, chunked and stepwise (their tokens must agree)
  bridge     Qwen2.5-32B geometry (1 of 64 layers, bf16, vocab 152064, untied) -> load_ar -> greedy
             answer -> teacher-forced logit lens at the paper taps -> the lens tokens injected into
             Dream-7B's canvas (1 layer) before step 0 (experiments/bridge's Injection hook)
  specdiff   mdlm-owt at full size (fp32, vocab 50258, 1024 positions) -> load_mdlm -> MDLMDrafter;
             gpt2-xl geometry (2 of 48 layers) target and gpt2 geometry (2 of 12 layers) drafter ->
             load_ar -> speculative_generate (MDLM drafter at T 1 and 0, AR drafter) and ar_generate;
             greedy speculative output must equal greedy AR output; a gpt2-large geometry judge
             (2 of 36 layers) scores the outputs (judge_nll)
  self_spec  mdlm-owt at full size -> SelfSpecMDLM -> save/load of the trained parts -> one sampler
             step over the whole 1024-token canvas and one training loss + backward (batch 1)
  clsd       Qwen3.5-9B geometry (2 of 32 layers: one DeltaNet, one attention; bf16, vocab 248320)
             written with the hub's model.language_model.* keys (plus vision and MTP keys the loader
             must drop) -> load_verifier -> graft (DeltaNet + attention) -> one 2-step Euler draft;
             then a one-layer graft -> clsd_generate: two draft + score rounds (2 candidates of 16
             tokens); embeddings tied to stay under 8 GB (the untied head would add 2 GB; every
             shape is the same)

Each case runs in its own process, so its peak RSS is its own and its memory goes back after it:

    OMP_NUM_THREADS=1 python benchmarks/real_geometry.py                 # all cases, a table
    python benchmarks/real_geometry.py --case clsd --json out.json        # one case
    pytest -m benchmark tests/test_real_geometry.py                       # the same, as tests
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

from dlmkit.models.real_configs import with_layers  # noqa: E402

CASES = ("inverse", "bridge", "specdiff", "self_spec", "clsd")


def _build(cls, config, dtype):
    """A randomly initialised `cls(config)` made directly in `dtype` (no fp32 copy of a big table)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return cls(config).eval()
    finally:
        torch.set_default_dtype(previous)


def _free():
    import gc

    gc.collect()


# --------------------------------------------------------------------------- writers (real hub formats)


def write_dream(directory: Path, layers: int = 2) -> Path:
    from dlmkit.models.dream import DreamConfig, random_dream, save_dream

    model = random_dream(DreamConfig(**with_layers("dream-7b", layers)), seed=0, dtype=torch.bfloat16)
    save_dream(model, directory)
    return directory


def write_qwen2(directory: Path, name: str = "qwen2.5-0.5b", layers: int | None = None) -> Path:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(**with_layers(name, layers), bos_token_id=151643, eos_token_id=151645)
    torch.manual_seed(0)
    _build(Qwen2ForCausalLM, config, torch.bfloat16).save_pretrained(directory)  # safetensors, dtype bfloat16
    return directory


def write_gpt2(directory: Path, name: str, layers: int) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    _build(GPT2LMHeadModel, GPT2Config(**with_layers(name, layers)), torch.float32).save_pretrained(directory)
    return directory


def write_mdlm(directory: Path) -> Path:
    from dlmkit.models.mdlm import MDLM, MDLMConfig, save_mdlm

    torch.manual_seed(0)
    model = MDLM(MDLMConfig(**with_layers("mdlm-owt", None)))
    with torch.no_grad():  # the released output layer is trained; a zero one would draft uniformly
        model.backbone.output_layer.linear.weight.normal_(0, 0.02)
    save_mdlm(model, directory)
    return directory


def write_qwen35(directory: Path, layer_types=("linear_attention", "full_attention"), tied: bool = True) -> Path:
    """A Qwen3.5 checkpoint as the hub ships it: a `qwen3_5` composite config whose text_config is
    the text tower, text weights under model.language_model.*, and vision / MTP weights beside them."""
    from safetensors.torch import save_file
    from transformers import Qwen3_5ForCausalLM

    from dlmkit.models.qwen35 import text_config

    config = text_config(**with_layers("qwen3.5-9b", len(layer_types), layer_types=list(layer_types),
                                       tie_word_embeddings=tied), eos_token_id=248044)
    torch.manual_seed(0)
    model = _build(Qwen3_5ForCausalLM, config, torch.bfloat16)
    state = {}
    for key, value in model.state_dict().items():
        if key == "lm_head.weight" and tied:
            continue
        state["model.language_model." + key.removeprefix("model.") if key.startswith("model.") else key] = value
    state["model.visual.patch_embed.proj.weight"] = torch.zeros(8, 3, 2, 2, dtype=torch.bfloat16)
    state["mtp.fc.weight"] = torch.zeros(8, 8, dtype=torch.bfloat16)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"),
              metadata={"format": "pt"})
    text = {k: v for k, v in config.to_dict().items() if k not in ("transformers_version", "architectures")}
    composite = {"architectures": ["Qwen3_5ForConditionalGeneration"], "model_type": "qwen3_5",
                 "text_config": text, "vision_config": {"depth": 1}, "torch_dtype": "bfloat16"}
    (directory / "config.json").write_text(json.dumps(composite, indent=2) + "\n")
    return directory


# --------------------------------------------------------------------------- cases


def case_inverse(tmp: Path) -> dict:
    from dlmkit.anchors import anchors_from_diffusion
    from dlmkit.decoding.diffusion import diffusion_generate
    from dlmkit.decoding.forced import forced_decode
    from dlmkit.models.ar import load_ar
    from dlmkit.models.dream import load_dream

    ar_vocab = with_layers("qwen2.5-0.5b", None)["vocab_size"]
    dream = load_dream(write_dream(tmp / "dream"), dtype=torch.bfloat16)
    vocab = dream.config.vocab_size
    assert (vocab, dream.dtype, dream.mask_token_id) == (152064, torch.bfloat16, 151666)
    prompt_len, new, steps = 16, 48, 8
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 151643, (1, prompt_len), generator=gen)

    def no_extra_ids(step, x, logits):
        # A trained Dream never commits ids past Qwen2.5's table (its own extra specials); random
        # weights would, and forced_decode would refuse them, rightly. This hook stands in for training.
        logits = logits.clone()
        logits[..., ar_vocab:] = -1e4
        return logits

    out = diffusion_generate(dream, prompt, max_new_tokens=new, steps=steps, alg="entropy", temperature=0.2,
                             top_p=0.95, top_k=50, logits_hook=no_extra_ids, generator=gen)
    assert out.sequences.shape == (1, prompt_len + new) and not bool((out.generated == dream.mask_token_id).any())
    anchors = anchors_from_diffusion(out, 0.25, steps)[0]
    del dream, out
    _free()

    ar, tokenizer = load_ar(write_qwen2(tmp / "ar_small"), dtype=torch.bfloat16, with_tokenizer=False)
    assert ar.config.vocab_size == ar_vocab and ar.dtype == torch.bfloat16 and tokenizer is None
    ids = prompt[0].tolist()
    chunked = forced_decode(ar, [ids], [anchors], max_new_tokens=new, rule="fixed")
    stepwise = forced_decode(ar, [ids], [anchors], max_new_tokens=new, rule="fixed", chunked=False)
    row = chunked.rows[0]
    assert len(row.tokens) == new and all(row.tokens[p] == t for p, t in anchors.as_dict().items())
    assert row.tokens == stepwise.rows[0].tokens, "chunked and stepwise forced decoding disagree"
    return {"dream_vocab": vocab, "ar_vocab": ar_vocab, "anchors": len(anchors), "gap_tokens": row.gap_tokens,
            "passes_chunked": chunked.forward_passes, "passes_stepwise": stepwise.forward_passes}


def case_specdiff(tmp: Path) -> dict:
    from dlmkit.decoding.drafters import ARDrafter, MDLMDrafter
    from dlmkit.decoding.spec_loop import CachedLM, ar_generate, speculative_generate
    from dlmkit.metrics.lm import judge_nll
    from dlmkit.models.ar import load_ar
    from dlmkit.models.mdlm import load_mdlm

    mdlm = load_mdlm(write_mdlm(tmp / "mdlm"))
    assert (mdlm.config.vocab_size, mdlm.config.model_length, mdlm.mask_id) == (50258, 1024, 50257)
    target, _ = load_ar(write_gpt2(tmp / "target", "gpt2-xl", 2), with_tokenizer=False)
    drafter, _ = load_ar(write_gpt2(tmp / "drafter", "gpt2", 2), with_tokenizer=False)
    assert target.config.vocab_size == 50257 and target.config.n_embd == 1600
    gen = torch.Generator().manual_seed(0)
    prefix = torch.randint(0, 50257, (96,), generator=gen).tolist()
    cached = CachedLM(target)
    n, gamma = 8, 4
    greedy_ar = ar_generate(cached, prefix, n)
    greedy_spec = speculative_generate(cached, MDLMDrafter(mdlm, steps=2), prefix, n, gamma)
    assert greedy_spec.tokens == greedy_ar.tokens, "greedy SpecDiff differs from greedy AR decoding"
    sampled = speculative_generate(cached, MDLMDrafter(mdlm, steps=2), prefix, n, gamma, temperature=1.0,
                                   generator=torch.Generator().manual_seed(1))
    one_step = speculative_generate(cached, MDLMDrafter(mdlm, steps=1), prefix, n, gamma, temperature=1.0,
                                    generator=torch.Generator().manual_seed(2))
    sd = speculative_generate(cached, ARDrafter(drafter), prefix, n, gamma, temperature=1.0,
                              generator=torch.Generator().manual_seed(3))
    for result in (sampled, one_step, sd):
        assert len(result.tokens) == n and all(0 <= t < 50257 for t in result.tokens)
    del target, drafter, cached
    _free()
    judge, _ = load_ar(write_gpt2(tmp / "judge", "gpt2-large", 2), with_tokenizer=False)
    scored = judge_nll([prefix + sampled.tokens, prefix + sd.tokens], judge, pad_token_id=50256)
    assert scored.num_tokens == 2 * (len(prefix) + n - 1) and math.isfinite(scored.gen_ppl)
    return {"judge_gen_ppl": scored.gen_ppl, "target_calls_ar": greedy_ar.target_calls,
            "target_calls_specdiff_greedy": greedy_spec.target_calls,
            "accepted_t1": sum(sampled.accepted), "drafter_nfe_t2": sampled.drafter_nfe,
            "accepted_sd": sum(sd.accepted)}


def case_bridge(tmp: Path) -> dict:
    from dlmkit.decoding.diffusion import DreamSettings, diffusion_generate
    from dlmkit.experiments.bridge.context import default_taps
    from dlmkit.experiments.bridge.inject import Injection
    from dlmkit.experiments.bridge.probe import greedy_answer
    from dlmkit.models.ar import load_ar
    from dlmkit.models.dream import load_dream
    from dlmkit.models.logit_lens import teacher_forced_lens

    large, _ = load_ar(write_qwen2(tmp / "ar_large", "qwen2.5-32b", 1), dtype=torch.bfloat16, with_tokenizer=False)
    config = large.config
    assert (config.vocab_size, config.hidden_size, config.tie_word_embeddings) == (152064, 5120, False)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 151643, (16,), generator=gen).tolist()
    answer, _ = greedy_answer(large, prompt, 8, [151645])
    taps = default_taps("paper", 1)
    full = torch.tensor([prompt + answer])
    positions = [len(prompt) - 1 + k for k in range(len(answer))]
    readout = teacher_forced_lens(large, full, positions, taps)
    lens_ids = readout.top_ids[taps[-1]]
    assert len(lens_ids) == len(answer) and all(0 <= t < 152064 for t in lens_ids)
    assert all(0 < p <= 1 for p in readout.top_probs[taps[-1]])
    del large, full
    _free()

    dream = load_dream(write_dream(tmp / "dream", 1), dtype=torch.bfloat16)
    # Inject the lens tokens (those that are not Dream's mask) at their positions before step 0.
    injected = {p: t for p, t in enumerate(lens_ids) if t != dream.mask_token_id}
    hook = Injection(len(prompt), injected, dream.mask_token_id)
    settings = DreamSettings(max_new_tokens=48, steps=4)
    out = diffusion_generate(dream, torch.tensor([prompt]), max_new_tokens=settings.max_new_tokens,
                             steps=settings.steps, alg=settings.alg, temperature=settings.temperature,
                             top_p=settings.top_p, top_k=settings.top_k, eps=settings.eps, tokens_hook=hook,
                             generator=gen)
    assert hook.injected_changed == 0 and hook.permanence_violations == 0
    assert all(int(out.generated[0, p]) == t for p, t in injected.items())
    return {"taps": taps, "answer_len": len(answer), "injected": len(injected),
            "max_lens_prob": max(readout.top_probs[taps[-1]])}


def case_self_spec(tmp: Path) -> dict:
    from dlmkit.decoding.self_spec_sampler import self_spec_sample
    from dlmkit.models.mdlm import load_mdlm
    from dlmkit.models.self_spec import SelfSpecConfig, SelfSpecMDLM, load_self_spec, save_self_spec, self_spec_loss

    backbone = load_mdlm(write_mdlm(tmp / "mdlm"))
    model = SelfSpecMDLM(backbone, SelfSpecConfig.for_backbone(backbone, backbone="mdlm-owt geometry"))
    save_self_spec(model, tmp / "self_spec")
    model = load_self_spec(tmp / "self_spec", backbone)
    length = backbone.config.model_length
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randint(0, model.mask_id, (1, length), generator=gen)
    model.train()
    loss = self_spec_loss(model, x0, max_window=64, generator=gen)
    loss.loss.backward()
    grads = sum(p.grad is not None for p in model.parameters() if p.requires_grad)
    assert torch.isfinite(loss.loss) and grads > 0
    assert all(p.grad is None for p in backbone.parameters()), "the frozen MDLM received gradients"
    model.zero_grad(set_to_none=True)
    canvas = torch.full((1, length), model.mask_id, dtype=torch.long)
    canvas[:, :length // 2] = x0[:, :length // 2]
    sample = self_spec_sample(model, canvas, dtau=0.25, generator=torch.Generator().manual_seed(1), max_steps=1)
    revealed = int((sample.tokens != model.mask_id).sum()) - length // 2
    assert revealed == sample.revealed_per_step[0][0] >= 1 and int(sample.nfe[0]) == 1
    return {"loss": loss.loss.item(), "draft_loss": loss.draft_loss.item(), "masked": loss.masked_tokens,
            "drafted": int(sample.drafted[0]), "accepted": int(sample.accepted[0]), "revealed": revealed}


def case_clsd(tmp: Path) -> dict:
    from dlmkit.decoding.clsd import clsd_generate, draft
    from dlmkit.models.clsd import graft
    from dlmkit.models.qwen35 import load_verifier

    verifier = load_verifier(write_qwen35(tmp / "verifier"), dtype=torch.bfloat16)
    _free()
    config = verifier.config
    assert (config.vocab_size, config.hidden_size, config.layer_types) == (248320, 4096,
                                                                         ["linear_attention", "full_attention"])
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 248044, (16,), generator=gen).tolist()
    # 1. A DiT of both layer kinds drafts at real width (DeltaNet and gated attention under adaLN).
    dit = graft(verifier, [0, 1], block_len=16)
    assert dit.layer_types == ["linear_attention", "full_attention"]
    with torch.no_grad():
        cond = verifier.model(input_ids=torch.tensor([prompt])).last_hidden_state[:, -1]
        noise = torch.randn((2, 16, config.hidden_size), generator=gen).to(torch.bfloat16)
        drafts = dit.to_embeddings(draft(dit, cond, noise, 2))
    assert drafts.shape == (2, 16, 4096) and drafts.dtype == torch.bfloat16 and bool(torch.isfinite(drafts).all())
    dit_params = sum(p.numel() for p in dit.parameters())
    del dit, drafts
    _free()
    # 2. The whole loop with a one-layer DiT (the float32 token-reading table is 4 GB at this vocabulary;
    # both layers plus it would pass 8 GB). threshold 0 keeps the whole best draft (random weights are
    # never confident): round 1 emits 16 + 1 tokens, the verifier extends its cache by them, round 2
    # finishes the 20.
    dit = graft(verifier, [1], block_len=16)
    out = clsd_generate(verifier, dit, prompt, max_new=20, stop_ids=set(), candidates=2, euler_steps=2,
                        threshold=0.0, generator=gen)
    assert len(out.tokens) == 20 and all(0 <= t < 248320 for t in out.tokens) and len(out.rounds) == 2
    return {"verifier_params": sum(p.numel() for p in verifier.parameters()), "dit_params_two_layers": dit_params,
            "rounds": len(out.rounds), "verifier_calls": out.verifier_calls, "first_round": out.rounds[0]}


CASE_FUNCTIONS = {"inverse": case_inverse, "bridge": case_bridge, "specdiff": case_specdiff,
                  "self_spec": case_self_spec, "clsd": case_clsd}


# --------------------------------------------------------------------------- running


def run_here(name: str) -> dict:
    """Run one case in this process: {"case", "ok", "seconds", "peak_rss_gib", "error", "details"}."""
    start = time.perf_counter()
    error, details = None, None
    with tempfile.TemporaryDirectory(prefix=f"real_geometry_{name}_") as tmp:
        try:
            with torch.inference_mode(False):
                details = CASE_FUNCTIONS[name](Path(tmp))
        except Exception as exc:  # noqa: BLE001 - reported, and the exit status says so
            import traceback

            error = "".join(traceback.format_exception_only(exc)).strip()
            traceback.print_exc()
    return {"case": name, "ok": error is None, "seconds": time.perf_counter() - start,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "error": error,
            "details": details, "threads": torch.get_num_threads()}


def run_isolated(name: str, timeout: float = 900) -> dict:
    """Run one case in a fresh Python process (its own peak RSS; its memory freed after)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--case", name, "--child"], env=env,
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"case": name, "ok": False, "seconds": None, "peak_rss_gib": None, "details": None,
                "error": f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    return json.loads(lines[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", choices=CASES, action="append", help="run only this case (repeatable)")
    p.add_argument("--json", type=Path, help="also write the results to this JSON file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # run in this process, print one JSON line
    args = p.parse_args(argv)
    cases = args.case or list(CASES)
    if args.child:
        result = run_here(cases[0])
        print(json.dumps(result, default=str))
        return 0 if result["ok"] else 1
    results = [run_isolated(name) for name in cases]
    print("| case | ok | seconds | peak RSS GiB | error |")
    print("|---|---|---|---|---|")
    for r in results:
        seconds = f"{r['seconds']:.1f}" if r["seconds"] is not None else ""
        rss = f"{r['peak_rss_gib']:.2f}" if r["peak_rss_gib"] is not None else ""
        print(f"| {r['case']} | {'yes' if r['ok'] else 'NO'} | {seconds} | {rss} | {(r['error'] or '')[:120]} |")
    if args.json:
        from dlmkit.results import atomic_write_json, device_description, git_state, package_versions

        atomic_write_json(args.json, {"cases": results, "device": device_description("cpu"),
                                      "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                                      "versions": package_versions(), "git": git_state()})
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
