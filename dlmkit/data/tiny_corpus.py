"""Token tensors for training the tiny checkpoints on the tiny world.

Two shapes of data:
- chat pairs (prompt ids, response ids) for instruction tuning: the prompt is the chat
  template with one user turn and the generation prompt, the response is the reference
  answer followed by `<|im_end|>`;
- a packed stream of documents, chat transcripts and math chain-of-thought, each ended
  by `<|endoftext|>` and cut into fixed blocks (OpenWebText's wrapping), for
  language-model pretraining.
"""

from __future__ import annotations

import torch

from dlmkit.data.tinyworld import TinyWorld
from dlmkit.presets import TINY_TOKENIZER
from dlmkit.seeds import indexed_seed
from dlmkit.tokenizer import IM_END, render_chat, render_prompt


def load_tiny_tokenizer(path=None):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path or TINY_TOKENIZER)


def chat_pairs(tokenizer, items: list[dict]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) per item, tokenized exactly as generation will see them."""
    pairs = []
    for item in items:
        prompt = render_prompt(item)
        pairs.append((tokenizer(prompt)["input_ids"], tokenizer(item["target"] + IM_END)["input_ids"]))
    return pairs


def text_stream(world: TinyWorld, n_chat: int, n_docs: int, n_math: int, split: str = "train") -> list[str]:
    """The pretraining mix as texts, in a fixed interleaved order."""
    chats = [render_chat(item["messages"]) for item in world.chat_examples(n_chat, split)]
    docs = world.documents(n_docs, split)
    math = [render_chat(r["messages"]) for r in world.math_cot(n_math, split)]
    texts = chats + docs + math
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(world.seed))
    return [texts[i] for i in order]


def pack_blocks(tokenizer, texts: list[str], block_len: int) -> torch.Tensor:
    """Join texts with `<|endoftext|>` and cut the stream into [N, block_len] blocks."""
    return pack_token_blocks(tokenizer(texts)["input_ids"], tokenizer.eos_token_id, block_len)


def pack_token_blocks(docs: list[list[int]], eos: int, block_len: int) -> torch.Tensor:
    """`pack_blocks` for documents already tokenized."""
    stream: list[int] = []
    for ids in docs:
        stream += list(ids) + [eos]
    n = len(stream) // block_len
    return torch.tensor(stream[: n * block_len], dtype=torch.long).view(n, block_len)


def batch_sampler(n_rows: int, batch_size: int, seed: int):
    """Row indices for a step, a pure function of (seed, step) so resumed runs match."""

    def indices(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(indexed_seed(seed, step))
        return torch.randint(0, n_rows, (batch_size,), generator=g)

    return indices
