"""SpecDiff's tiny drafters learn the target's own text (sequence-level knowledge distillation).

A drafter is worth the drafts the target accepts, and at temperature 0 a draft is accepted
when it equals the target's greedy token. A drafter trained on the world's text learns the
world's distribution; the target's greedy continuation is one path through it, and a
drafter that guesses several tokens at once (the MDLM: one call, independent positions)
matches it only where the world's most likely token at every position happens to lie on
that path. Trained on the target's continuations instead, the drafter learns the path
itself (Kim & Rush 2016, sequence-level KD; DistillSpec, Zhou et al. 2024, for drafters).

The corpus (`target_corpus`): prompts of the kinds `specdiff_bench.py` asks about, from the
world's training split only (the first PROMPT_TOKENS tokens of training documents; chat
user turns about training towns with the generation prompt), each continued greedily by
the target for NEW_TOKENS tokens (the bench's 64 new tokens plus the largest draft). No EOS
stops a continuation, as none stops the bench's. Greedy, because temperature 0 is where
SpecDiff's speed is claimed and where an accepted draft is exactly the target's argmax; in a
trial, a half-sampled corpus (temperature 1 every other prompt) taught the MDLM drafter less of
the greedy path (3.25 against 3.87 drafts accepted in a row at gamma 8 halfway through training).
At temperature 1 both drafters are then sharper than the target: still lossless, fewer
acceptances. Both drafters, AR and MDLM, train on this same corpus, so standard speculative
decoding gets the same help as SpecDiff; `--targets data` rebuilds either on the world's
text (the control).

The corpus is a function of the target's weights and the seed: retrain the drafters after
the target. Each drafter's card records the target's sha256.
"""

from __future__ import annotations

import torch

from dlmkit.errors import UserError
from dlmkit.models.cache import cache_kwargs
from dlmkit.seeds import indexed_seed

TARGETS = ("target", "data")  # what the SpecDiff drafters learn: the target's continuations, or the world's text
N_PROMPTS = 24000  # half documents, half chat
PROMPT_TOKENS = (4, 8, 12, 16)  # document prompt lengths, in turn (the bench's is 12)
NEW_TOKENS = 80
TEMPERATURE = 0.0  # greedy continuations (the module docstring says why)
BATCH = 500


@torch.no_grad()
def continue_batch(model, prompts: torch.Tensor, new_tokens: int, temperature: float,
                   generator: torch.Generator | None) -> torch.Tensor:
    """(B, new_tokens) continuations of equal-length prompts (B, L): greedy at temperature 0, else
    drawn from softmax(logits / temperature) (no top-k or top-p). One KV cache, no padding."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    ids, out = prompts, []
    for _ in range(new_tokens):
        logits = model(input_ids=ids, use_cache=True, **cache_kwargs(cache)).logits[:, -1].float()
        if temperature == 0:
            token = logits.argmax(-1)
        else:
            token = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)[:, 0]
        out.append(token)
        ids = token[:, None]
    return torch.stack(out, 1)


def training_prompts(world, tokenizer, n: int) -> list[list[int]]:
    """n prompts of the bench's two kinds from the training split, without the leading EOS (the
    wrapping adds it): documents cut to PROMPT_TOKENS lengths in turn, and chat turns."""
    from dlmkit.tokenizer import render_prompt

    docs = world.documents(n - n // 2, "train")
    chats = world.chat_examples(n // 2, "train")
    doc_ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    prompts = [ids[:PROMPT_TOKENS[i % len(PROMPT_TOKENS)]] for i, ids in enumerate(doc_ids)]
    texts = [render_prompt(item) for item in chats]
    return prompts + tokenizer(texts, add_special_tokens=False)["input_ids"]


def target_corpus(target, tokenizer, world, *, n: int = N_PROMPTS, new_tokens: int = NEW_TOKENS,
                  temperature: float = TEMPERATURE, seed: int = 0) -> list[list[int]]:
    """Token ids of n prompt + continuation documents (no EOS), in prompt order; prompts of one
    length go through the target together (`continue_batch`)."""
    eos = tokenizer.eos_token_id
    device = next(target.parameters()).device
    prompts = training_prompts(world, tokenizer, n)
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts):
        groups.setdefault(len(ids), []).append(i)
    out: list[list[int] | None] = [None] * len(prompts)
    for length, members in sorted(groups.items()):
        for start in range(0, len(members), BATCH):
            chunk = members[start:start + BATCH]
            batch = torch.tensor([[eos] + prompts[i] for i in chunk], dtype=torch.long, device=device)
            generator = torch.Generator(device=device).manual_seed(indexed_seed(seed, length * 100_000 + start))
            tails = continue_batch(target, batch, new_tokens, temperature, generator).tolist()
            for i, tail in zip(chunk, tails):
                out[i] = prompts[i] + tail
    return out


def check_targets(targets: str) -> str:
    if targets not in TARGETS:
        raise UserError(f"unknown drafter targets {targets!r}; choose from {', '.join(TARGETS)}")
    return targets


def drafter_corpus(tokenizer, world, seed: int, device: str) -> tuple[list[list[int]], dict]:
    """The shipped tiny target's corpus for the drafters, and what the card records about it."""
    from dlmkit.models.ar import load_ar
    from dlmkit.presets import TINY, TINY_ROOT
    from dlmkit.results import file_sha256

    source = TINY_ROOT / TINY["target"]
    target, _ = load_ar(source, device=device, with_tokenizer=False)
    docs = target_corpus(target, tokenizer, world, seed=seed)
    card = {"targets": "target", "corpus": "the SpecDiff target's continuations of training-split prompts "
                                            "(dlmkit/train/recipes/distill.py)",
            "prompts": len(docs), "prompt_tokens_documents": list(PROMPT_TOKENS), "new_tokens": NEW_TOKENS,
            "temperature": TEMPERATURE, "tokens": sum(map(len, docs)),
            "target": TINY["target"], "target_sha256": file_sha256(source / "model.safetensors")}
    return docs, card
