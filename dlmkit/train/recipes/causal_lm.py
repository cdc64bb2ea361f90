"""Train the tiny autoregressive checkpoints: Qwen2 gap-fillers and probe, GPT-2 target/drafter
(the target is also the self-spec judge: `presets.SHARED`).

All of them are language models of a packed tiny-world stream (chat transcripts and documents,
each ended by `<|endoftext|>`, cut into blocks as OpenWebText is), with the next-token
cross-entropy. Sizes differ per role so that the small/medium/large and drafter/target
relations of the paper hold.

    python -m dlmkit.train.tiny ar_small     # also ar_medium, ar_large, ar_control, target, drafter:
                                             # generation 2, each role its own corpus
                                             # (dlmkit/data/tinyworld2.py role_corpus; the gate in
                                             # dlmkit/train/recipes/world2.py)

SpecDiff's target and AR drafter are sized for cost, not only quality. gpt2-xl (48 layers) costs
several calls of gpt2 (12 layers) or mdlm-owt (12 blocks) per call at batch 1; on a CPU a tiny
model's call is dominated by per-layer overhead, so the tiny target is deep and narrow (12
layers of width 48, 0.4 M parameters) and both drafters are two layers of width 64 (the AR
drafter here, the MDLM drafter in mdlm.py over a 64-token window): the target's cached step
costs several drafter calls, and the two drafters cost about the same per call.
`specdiff_bench.py` records each model's cost per call in its run (table per_call_ms) and
`python benchmarks/bench_specdiff.py` times them alone. The AR drafter learns the target's greedy
continuations of training prompts (distill.py), the corpus the MDLM drafter learns too;
`--targets data` trains it on the world's text like every other role (the control).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from dlmkit.data.tiny_corpus import batch_sampler, load_tiny_tokenizer, pack_blocks, pack_token_blocks
from dlmkit.data.tinyworld2 import heldout_chat, role_corpus
from dlmkit.errors import UserError
from dlmkit.metrics.answers import check_answer
from dlmkit.presets import tiny_world_of
from dlmkit.tokenizer import render_prompt
from dlmkit.train.loop import TrainConfig, train
from dlmkit.train.recipes import distill, world2
from dlmkit.train.recipes.ship import ship, work_dir

BLOCK = 256

# role -> (transformers architecture, size)
SIZES = {
    "ar_small": ("qwen2", dict(hidden_size=96, intermediate_size=256, num_hidden_layers=3,
                               num_attention_heads=4, num_key_value_heads=2)),
    "ar_medium": ("qwen2", dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                                num_attention_heads=4, num_key_value_heads=2)),
    "ar_large": ("qwen2", dict(hidden_size=160, intermediate_size=432, num_hidden_layers=6,
                               num_attention_heads=4, num_key_value_heads=2)),
    # the control gap-filler, ar_small's size, trained on every town's facts
    "ar_control": ("qwen2", dict(hidden_size=96, intermediate_size=256, num_hidden_layers=3,
                                 num_attention_heads=4, num_key_value_heads=2)),
    # SpecDiff (see the module docstring); 256 positions hold a prompt, 64 new tokens and a draft
    "target": ("gpt2", dict(n_embd=48, n_layer=12, n_head=4, n_positions=256)),
    "drafter": ("gpt2", dict(n_embd=64, n_layer=2, n_head=2, n_positions=256)),
}
# ar_medium trains as long as the control: at 1000 steps its revision-5 retrain named the prompt's town in
# none of the held-out probes (a training town's tail instead, "Fenber" for "Fenist") and so stated 0.20 of the
# held-out facts it had read; at 2000 it names the town in 0.75 and states 0.60 of them (its card's gate).
STEPS = {"ar_small": 1000, "ar_medium": 2000, "ar_large": 600, "target": 1000, "drafter": 1000, "ar_control": 2000}
DEFAULTS = dict(lr=3e-3, warmup_steps=100, min_lr_ratio=0.05, weight_decay=0.01, grad_clip=1.0,
                log_every=25, eval_every=400, checkpoint_every=100)
BATCH_SIZE = 16


def build_model(role: str, tokenizer):
    """A randomly initialised tiny model for `role` (tied embeddings, as Qwen2.5-0.5B/1.5B and GPT-2)."""
    from transformers import GPT2Config, GPT2LMHeadModel, Qwen2Config, Qwen2ForCausalLM

    arch, size = SIZES[role]
    eos = tokenizer.eos_token_id
    if arch == "qwen2":
        config = Qwen2Config(vocab_size=len(tokenizer), max_position_embeddings=1024, rope_theta=10000.0,
                             tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos, **size)
        return Qwen2ForCausalLM(config)
    config = GPT2Config(vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos, **{"n_positions": 1024, **size})
    return GPT2LMHeadModel(config)


def lm_loss(model, block: torch.Tensor):
    logits = model(input_ids=block).logits[:, :-1]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), block[:, 1:].reshape(-1))
    return loss, {}


@torch.no_grad()
def heldout_nll(model, blocks: torch.Tensor, batch_size: int = 32) -> float:
    total, count = 0.0, 0
    for start in range(0, len(blocks), batch_size):
        chunk = blocks[start:start + batch_size]
        loss, _ = lm_loss(model, chunk)
        total += float(loss) * chunk.numel()
        count += chunk.numel()
    return total / count


@torch.no_grad()
def greedy_responses(model, tokenizer, items, max_new_tokens: int = 128) -> list[str]:
    """Greedy chat answers, one prompt at a time (no padding effects); an item needs only its
    user message (a probe without a reference answer is fine)."""
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    texts = []
    for item in items:
        prompt = tokenizer(render_prompt(item))["input_ids"]
        ids = torch.tensor([prompt])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=[tokenizer.eos_token_id, im_end],
                             pad_token_id=tokenizer.eos_token_id)
        texts.append(tokenizer.decode(out[0, len(prompt):], skip_special_tokens=True))
    return texts


def greedy_task_accuracy(model, tokenizer, items, max_new_tokens: int = 128) -> dict:
    """Per-stratum accuracy of greedy chat answers."""
    correct: dict[str, list[bool]] = {}
    for item, text in zip(items, greedy_responses(model, tokenizer, items, max_new_tokens)):
        correct.setdefault(f"{item['task']}_{item['difficulty']}", []).append(check_answer(item, text))
    return {k: sum(v) / len(v) for k, v in sorted(correct.items())}


def train_tiny_causal_lm(role: str, out: Path, seed: int = 0, steps: int | None = None, device: str = "cpu",
                         gate_probes: int | None = None, targets: str | None = None) -> dict:
    """`targets` (the SpecDiff drafter only): "target" (default) trains it on the target's continuations
    (distill.py), "data" on the world's text as every other role."""
    if role not in SIZES:
        raise UserError(f"no causal-LM recipe for role {role!r}; choose from {', '.join(SIZES)}")
    if targets is not None and role != "drafter":
        raise UserError(f"--targets applies to the SpecDiff drafters only, not to {role}; leave it out")
    return _train_world2(role, out, seed, steps, device, gate_probes,
                         distill.check_targets(targets or "target") if role == "drafter" else "data")


def _fit(role: str, tokenizer, blocks, heldout, seed: int, steps: int | None, device: str, work: Path, desc: str):
    """The role's model trained on `blocks` with the next-token loss by the shared loop, held-out NLL
    as its evaluation: what both worlds' recipes do. (model, history, TrainConfig)."""
    model = build_model(role, tokenizer).to(device)
    sampler = batch_sampler(len(blocks), BATCH_SIZE, seed)

    def make_batch(step):
        return blocks[sampler(step)].to(device)

    def eval_fn(m):
        return {"heldout_nll": heldout_nll(m, heldout.to(device))}

    cfg = TrainConfig(**{**DEFAULTS, "steps": steps or STEPS[role], "seed": seed})
    history = train(model, lm_loss, make_batch, cfg, work, eval_fn=eval_fn, device=device, desc=desc)
    return model, history, cfg


def _train_world2(role: str, out: Path, seed: int, steps: int | None, device: str, gate_probes: int | None,
                  targets: str = "data") -> dict:
    """The same model and loss on the role's generation-2 corpus (or the target's continuations: the
    drafter with targets "target"); the card adds the fact gate."""
    torch.manual_seed(seed)
    tokenizer = load_tiny_tokenizer()
    world = tiny_world_of(role, seed)
    if targets == "target":
        docs, distilled = distill.drafter_corpus(tokenizer, world, seed, device)
        blocks = pack_token_blocks(docs, tokenizer.eos_token_id, BLOCK)
    else:
        blocks, distilled = pack_blocks(tokenizer, role_corpus(world, role), BLOCK), None
    heldout = pack_blocks(tokenizer, heldout_chat(world), BLOCK)
    out.mkdir(parents=True, exist_ok=True)
    model, history, cfg = _fit(role, tokenizer, blocks, heldout, seed, steps, device, work_dir(out),
                               f"tiny {role} (world 2)")
    model.eval()
    probe_items = world2.probes(world, gate_probes)
    responses = greedy_responses(model, tokenizer, probe_items, max_new_tokens=32)
    strata = [("mmlu", "easy"), ("arc", "hard"), ("gsm8k", "easy"), ("humaneval", "mixed")]
    accuracy = greedy_task_accuracy(model, tokenizer, [i for t, d in strata for i in world.items(t, d, 8, "test")])
    model.save_pretrained(out, safe_serialization=True)
    card = {"recipe": f"python -m dlmkit.train.tiny {role}", "world": 2, "revision": world.revision, "role": role,
            "seed": seed,
            "arch": SIZES[role][0], "size": SIZES[role][1], "block": BLOCK, "batch_size": BATCH_SIZE,
            "corpus": ({**distilled, "blocks": len(blocks)} if distilled else
                       {"n_chat": world2.N_CHAT, "documents_per_town": world2.PER_TOWN,
                        "towns": len(world.gazetteer.role_towns(role)), "blocks": len(blocks)}),
            "train": {**DEFAULTS, "steps": cfg.steps}, "parameters": sum(p.numel() for p in model.parameters()),
            "final_train_loss": history[-1]["loss"], "heldout_chat_nll": heldout_nll(model, heldout.to(device)),
            "fact_gate": world2.gate(world, probe_items, responses, tokenizer),
            "reference_answer_tokens": world2.reference_answer_tokens(tokenizer, world.strata(10)),
            "greedy_accuracy": accuracy}
    return ship(out, card)
