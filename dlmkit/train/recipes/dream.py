"""Train the tiny Dream: a small Qwen2-architecture DLM, masked-diffusion SFT on the tiny world.

Each training row has the layout generation will see: the chat prompt (left padded in
the batch), then a response region of `gen_len` positions holding the reference answer,
`<|im_end|>` and `<|endoftext|>` padding (the full 128-position canvas in 30% of the
batches, else a region just past the batch's longest answer). Per row, t ~ U(eps, 1); each response-region
position is masked with probability t; the loss is the cross-entropy of Dream's shifted
logits on masked positions weighted by 1/t, averaged over the response region (the
masked-diffusion ELBO that Dream and LLaDA fine-tune with).

    python -m dlmkit.train.tiny dlm            # rebuilds dlmkit/assets/tiny/dream
    python -m dlmkit.train.tiny dlm --world 2 --out DIR   # generation 2: SIZE_WORLD2 from scratch, on chat
                                                          # pairs plus every town's documents (rows with an
                                                          # empty prompt); see dlmkit/train/recipes/world2.py
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from dlmkit.data.tiny_corpus import batch_sampler, chat_pairs, load_tiny_tokenizer
from dlmkit.data.tinyworld import STRATA, TinyWorld
from dlmkit.decoding.diffusion import diffusion_generate
from dlmkit.errors import UserError
from dlmkit.metrics.answers import check_answer
from dlmkit.models.dream import dream_config, random_dream, save_dream
from dlmkit.presets import TINY_ROOT
from dlmkit.tokenizer import render_chat
from dlmkit.train.loop import TrainConfig, train
from dlmkit.train.recipes.ship import ship, work_dir

GEN_LEN = 128  # the canvas the tiny preset generates into
# The geometry of the tiny ar_medium Qwen2, which the tiny Dream starts from (as Dream-7B
# started from Qwen2.5-7B).
SIZE = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, rope_theta=10000.0)
INIT_FROM = TINY_ROOT / "ar_medium"
# Generation 2: clearly larger than ar_small (0.42 M), about 2.1 M parameters, trained from scratch
# (no generation-2 AR knows every fact at this size; --init-from can name one).
SIZE_WORLD2 = dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=1024, rope_theta=10000.0)
DEFAULTS = dict(steps=1000, lr=3e-3, warmup_steps=100, min_lr_ratio=0.05, weight_decay=0.01, grad_clip=1.0,
                log_every=25, eval_every=250, checkpoint_every=100)
BATCH_SIZE = 32
N_TRAIN = 24000


def region_length(pairs, indices, step: int, seed: int, full_share: float = 0.3) -> int:
    """Response-region length of a batch: the full canvas for `full_share` of the steps,
    else just past the batch's longest answer (the rest of the canvas is only more
    `<|endoftext|>`, and skipping it makes a CPU step several times cheaper)."""
    g = torch.Generator().manual_seed(seed * 7919 + step)
    if torch.rand(1, generator=g).item() < full_share:
        return GEN_LEN
    longest = max(len(pairs[i][1]) for i in indices.tolist())
    return min(GEN_LEN, longest + int(torch.randint(1, 25, (1,), generator=g)))


def diffusion_batch(pairs, indices, *, pad_id: int, eos_id: int, gen_len: int = GEN_LEN):
    """input_ids, attention_mask, position_ids, response-region mask for a list of rows."""
    rows = [pairs[i] for i in indices.tolist()]
    prompt_len = max(len(p) for p, _ in rows)
    ids, attn = [], []
    for prompt, response in rows:
        response = (response + [eos_id] * gen_len)[:gen_len]
        pad = prompt_len - len(prompt)
        ids.append([pad_id] * pad + prompt + response)
        attn.append([0] * pad + [1] * (len(prompt) + gen_len))
    input_ids, attention_mask = torch.tensor(ids), torch.tensor(attn)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    region = torch.zeros_like(input_ids, dtype=torch.bool)
    region[:, prompt_len:] = True
    return input_ids, attention_mask, position_ids, region


def masked_diffusion_loss(model, batch, *, eps: float = 1e-3, generator=None):
    """The 1/t-weighted masked-token cross-entropy over the response region."""
    input_ids, attention_mask, position_ids, region = batch
    b = input_ids.shape[0]
    t = eps + (1 - eps) * torch.rand(b, 1, generator=generator)
    masked = region & (torch.rand(input_ids.shape, generator=generator) < t)
    noisy = input_ids.masked_fill(masked, model.mask_token_id)
    logits = model(noisy, attention_mask=attention_mask, position_ids=position_ids)
    ce = F.cross_entropy(logits[masked].float(), input_ids[masked], reduction="none")
    weights = (1.0 / t).expand_as(input_ids)[masked]
    loss = (ce * weights).sum() / region.sum()
    return loss, {"masked_ce": ce.mean().detach() if ce.numel() else torch.tensor(0.0)}


@torch.no_grad()
def greedy_responses(model, tokenizer, items, *, gen_len: int = GEN_LEN, steps: int = GEN_LEN,
                     batch_size: int = 16) -> list[str]:
    """Answers of greedy `steps`-step entropy-order generation into a `gen_len` canvas."""
    texts = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        prompts = [render_chat(i["messages"][:1], add_generation_prompt=True) for i in chunk]
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
        out = diffusion_generate(model, enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device),
                                 max_new_tokens=gen_len, steps=steps, alg="entropy", temperature=0.0)
        texts += [tokenizer.decode(gen, skip_special_tokens=True) for gen in out.generated]
    return texts


def greedy_accuracy(model, tokenizer, items, *, steps: int = GEN_LEN, batch_size: int = 16) -> dict:
    """Per-task accuracy of greedy `steps`-step entropy-order generation."""
    correct: dict[str, list[bool]] = {}
    for item, text in zip(items, greedy_responses(model, tokenizer, items, steps=steps, batch_size=batch_size)):
        correct.setdefault(f"{item['task']}_{item['difficulty']}", []).append(check_answer(item, text))
    return {k: sum(v) / len(v) for k, v in sorted(correct.items())}


def init_from_ar(model, ar_dir: Path) -> None:
    """Copy an AR Qwen2 checkpoint of the same geometry into the Dream, as Dream-7B was
    initialised from Qwen2.5-7B: Dream keeps the AR alignment (the hidden state at i-1
    predicts token i), so the AR head starts out as a sensible denoiser. A tied AR head
    becomes Dream's separate lm_head, initialised from the embedding."""

    state = load_file(str(Path(ar_dir) / "model.safetensors"))
    if "lm_head.weight" not in state:
        state["lm_head.weight"] = state["model.embed_tokens.weight"].clone()
    expected = model.lm.state_dict()
    bad = {k for k, v in state.items() if k not in expected or expected[k].shape != v.shape}
    missing = set(expected) - set(state)
    if bad or missing:
        raise UserError(f"{ar_dir} does not match the tiny Dream's geometry (e.g. {sorted(bad or missing)[0]}); "
                        "rebuild it with `python -m dlmkit.train.tiny ar_medium`")
    model.lm.load_state_dict(state)


def _diffusion_setup(tokenizer, pairs, size: dict, seed: int, device: str, init_from: Path | None):
    """A random tiny Dream of `size` (optionally initialised from an AR checkpoint), the batches of
    `pairs` for each step and the masked-diffusion loss: what both worlds' recipes train with."""
    eos = tokenizer.eos_token_id
    cfg = dream_config("tiny", vocab_size=len(tokenizer), mask_token_id=tokenizer.mask_token_id,
                       pad_token_id=eos, bos_token_id=eos, eos_token_id=eos, **size)
    model = random_dream(cfg, seed=seed, device=device, dtype=torch.float32)
    if init_from is not None:
        init_from_ar(model, init_from)
    sampler = batch_sampler(len(pairs), BATCH_SIZE, seed)
    loss_gen = torch.Generator().manual_seed(seed)

    def make_batch(step):
        rows = sampler(step)
        batch = diffusion_batch(pairs, rows, pad_id=eos, eos_id=eos, gen_len=region_length(pairs, rows, step, seed))
        return tuple(x.to(device) for x in batch)

    def loss_fn(m, batch):
        return masked_diffusion_loss(m, batch, generator=loss_gen)

    return model, make_batch, loss_fn


def train_tiny_dream(out: Path, seed: int = 0, steps: int | None = None, device: str = "cpu",
                     init_from: Path | None = INIT_FROM, world: int = 1, gate_probes: int | None = None) -> dict:
    if world == 2:
        return _train_world2(out, seed, steps, device, None if init_from == INIT_FROM else init_from, gate_probes)
    torch.manual_seed(seed)
    if init_from is not None and not (Path(init_from) / "model.safetensors").exists():
        raise UserError(f"the tiny Dream starts from the tiny AR model at {init_from}, which is missing; "
                        "build it first with `python -m dlmkit.train.tiny ar_medium`")
    tokenizer = load_tiny_tokenizer()
    world = TinyWorld(seed)
    pairs = chat_pairs(tokenizer, world.chat_examples(N_TRAIN, "train"))
    model, make_batch, loss_fn = _diffusion_setup(tokenizer, pairs, SIZE, seed, device, init_from)

    eval_items = [i for t in ("mmlu", "arc", "gsm8k") for i in world.items(t, "easy", 8, "test")]

    def eval_fn(m):
        return greedy_accuracy(m, tokenizer, eval_items)

    train_cfg = TrainConfig(**{**DEFAULTS, **({"steps": steps} if steps else {}), "seed": seed})
    work = work_dir(out)
    history = train(model, loss_fn, make_batch, train_cfg, work, eval_fn=eval_fn, device=device, desc="tiny dream")

    final = {f"test_{k}": v for k, v in greedy_accuracy(
        model, tokenizer, [i for task, levels in STRATA.items() for lv in levels
                           for i in world.items(task, lv, 24, "test")]).items()}
    save_dream(model, out)
    card = {"recipe": "python -m dlmkit.train.tiny dlm", "seed": seed,
            "init_from": str(Path(init_from).relative_to(TINY_ROOT.parent.parent)) if init_from else None, "size": SIZE, "gen_len": GEN_LEN,
            "batch_size": BATCH_SIZE, "train": {**DEFAULTS, "steps": train_cfg.steps},
            "parameters": model.num_parameters(), "final_train_loss": history[-1]["loss"],
            "greedy_128_step_accuracy": final, "chance_multiple_choice": 0.25}
    return ship(out, card)


def _train_world2(out: Path | None, seed: int, steps: int | None, device: str, init_from: Path | None,
                  gate_probes: int | None) -> dict:
    """The same loss on generation 2: chat pairs (training towns) and every town's documents."""
    from dlmkit.data.tinyworld2 import TinyWorld2
    from dlmkit.train.recipes import world2

    out = world2.staging_dir("dlm", out)
    torch.manual_seed(seed)
    tokenizer = load_tiny_tokenizer()
    world = TinyWorld2(seed)
    pairs = world2.dream_pairs(tokenizer, world, "dlm")
    model, make_batch, loss_fn = _diffusion_setup(tokenizer, pairs, SIZE_WORLD2, seed, device, init_from)

    gate_items = world2.probes(world, 35)

    def eval_fn(m):
        return world2.gate(world, gate_items, greedy_responses(m, tokenizer, gate_items, gen_len=32, steps=32))

    train_cfg = TrainConfig(**{**DEFAULTS, **({"steps": steps} if steps else {}), "seed": seed})
    out.mkdir(parents=True, exist_ok=True)
    history = train(model, loss_fn, make_batch, train_cfg, work_dir(out), eval_fn=eval_fn, device=device,
                    desc="tiny dream (world 2)")
    model.eval()
    probe_items = world2.probes(world, gate_probes)
    # A 32-position canvas in 32 steps holds every probe answer (about 15 tokens) and is cheap.
    responses = greedy_responses(model, tokenizer, probe_items, gen_len=32, steps=32, batch_size=50)
    save_dream(model, out)
    card = {"recipe": "python -m dlmkit.train.tiny dlm --world 2", "world": 2, "seed": seed,
            "init_from": str(init_from) if init_from else None, "size": SIZE_WORLD2, "gen_len": GEN_LEN,
            "batch_size": BATCH_SIZE, "corpus": {"n_chat": world2.N_CHAT, "documents_per_town": world2.PER_TOWN,
                                                 "rows": len(pairs)},
            "train": {**DEFAULTS, "steps": train_cfg.steps}, "parameters": model.num_parameters(),
            "final_train_loss": history[-1]["loss"],
            "fact_gate": world2.gate(world, probe_items, responses, tokenizer),
            "reference_answer_tokens": world2.reference_answer_tokens(tokenizer, world.strata(10))}
    return ship(out, card)
