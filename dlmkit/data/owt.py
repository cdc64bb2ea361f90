"""OpenWebText as MDLM trains and validates on it, and the tiny world's stand-in.

Paper preset (kuleshov-group/mdlm, `dataloader.py`, data config `openwebtext-split`):

- `datasets.load_dataset("openwebtext")` has one split; MDLM trains on
  `train[:-100000]` and validates on `train[-100000:]` (the last 100k documents).
- GPT-2 tokenizer, `add_special_tokens=False`; every document gets `<|endoftext|>`
  (EOS) appended.
- Wrapping (`_group_texts`): the documents of one `datasets.map(batched=True)` batch
  (1000 documents, the map default) are concatenated, the concatenation is cut to a
  multiple of 1022 tokens (the remainder of each batch is dropped), and each 1022-token
  chunk becomes `[BOS] + chunk + [EOS]` = 1024 tokens. For GPT-2, BOS = EOS =
  `<|endoftext|>` (id 50256), so a block reads
  `EOS doc1 EOS doc2-fragment EOS` and the next `EOS doc2-fragment EOS doc3 EOS`.
  A document cut by a chunk boundary continues in the next block with no overlap.
- MDLM maps with `num_proc` = its CPU count; `datasets` splits the data into that many
  contiguous shards first, so the 1000-document batches restart at every shard
  boundary. `wrap_token_lists(..., num_shards=n)` reproduces that for a given n.
- Attention masks are all ones (packed blocks, no padding); the train loader shuffles
  blocks, the validation loader does not.

Tiny preset: generation 2 of the tiny world (`dlmkit/data/tinyworld2.py`): the "mdlm" role's
corpus (chat transcripts and documents about every town, whose three-token names constrain
each other: 64 of the HEAD x MID x TAIL combinations are towns) for train, held-out documents
and chat about the held-out towns for validation (`heldout_stream`), with the tiny tokenizer,
wrapped the same way into 128-token blocks (126 + BOS/EOS; the tiny tokenizer, like GPT-2,
uses `<|endoftext|>` for both).
"""

from __future__ import annotations

from typing import Sequence

import torch

from dlmkit.data.tiny_corpus import load_tiny_tokenizer
from dlmkit.data.tinyworld2 import TinyWorld2, heldout_stream, role_corpus
from dlmkit.errors import UserError, unavailable

DATASET_NAME = "openwebtext"
TOKENIZER_NAME = "gpt2"
VALID_DOCS = 100_000
SPLITS = {"train": f"train[:-{VALID_DOCS}]", "validation": f"train[-{VALID_DOCS}:]"}
BLOCK_LEN = 1024  # mdlm-owt's model length
MAP_BATCH = 1000  # datasets.map(batched=True)'s default batch size: MDLM's wrapping group

TINY_BLOCK_LEN = 128
TINY_ROLE = "mdlm"  # whose generation-2 corpus the tiny blocks are


# --------------------------------------------------------------------------- wrapping


def group_blocks(token_lists: Sequence[Sequence[int]], block_len: int, bos_id: int, eos_id: int) -> list[list[int]]:
    """MDLM's `_group_texts` on one group: concatenate (each list already ends in EOS),
    drop the tail that does not fill a chunk, and frame chunks of block_len - 2 with BOS/EOS."""
    if block_len < 3:
        raise UserError(f"block length must be >= 3 (BOS, one token, EOS), got {block_len}")
    body = block_len - 2
    stream = [tok for ids in token_lists for tok in ids]
    usable = len(stream) // body * body
    return [[bos_id, *stream[start:start + body], eos_id] for start in range(0, usable, body)]


def _shard_bounds(n: int, num_shards: int) -> list[tuple[int, int]]:
    """Contiguous shards as `datasets.Dataset.shard(contiguous=True)` cuts them."""
    div, mod = divmod(n, num_shards)
    bounds, start = [], 0
    for index in range(num_shards):
        end = start + div + (1 if index < mod else 0)
        bounds.append((start, end))
        start = end
    return bounds


def wrap_token_lists(
    docs: Sequence[Sequence[int]],
    block_len: int,
    bos_id: int,
    eos_id: int,
    *,
    group_size: int | None = MAP_BATCH,
    num_shards: int = 1,
) -> torch.Tensor:
    """Token ids of documents (no EOS yet) -> (N, block_len) blocks, wrapped as MDLM does.

    group_size None concatenates the whole stream (one remainder dropped in all);
    num_shards > 1 mimics MDLM's `num_proc` sharding before the map batches.
    """
    if group_size is not None and group_size < 1:
        raise UserError(f"group_size must be >= 1 or None, got {group_size}")
    if num_shards < 1:
        raise UserError(f"num_shards must be >= 1, got {num_shards}")
    with_eos = [list(ids) + [eos_id] for ids in docs]
    blocks: list[list[int]] = []
    for shard_start, shard_end in _shard_bounds(len(with_eos), num_shards):
        step = group_size or max(1, shard_end - shard_start)
        for start in range(shard_start, shard_end, step):
            blocks += group_blocks(with_eos[start:min(start + step, shard_end)], block_len, bos_id, eos_id)
    return torch.tensor(blocks, dtype=torch.long).reshape(len(blocks), block_len)


def tokenize_documents(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Ids of each text without special tokens (MDLM adds EOS and BOS itself while wrapping)."""
    return tokenizer(list(texts), add_special_tokens=False, return_attention_mask=False)["input_ids"]


def bos_eos(tokenizer) -> tuple[int, int]:
    """(BOS, EOS) ids; a tokenizer without a BOS (the tiny one) uses EOS, as GPT-2's does."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the tokenizer has no EOS token; wrapping needs one (GPT-2's <|endoftext|>)")
    bos = tokenizer.bos_token_id
    return (eos if bos is None else bos), eos


# --------------------------------------------------------------------------- tiny preset


def tiny_blocks(split: str = "train", *, tokenizer=None, block_len: int = TINY_BLOCK_LEN, seed: int = 0,
                role: str = TINY_ROLE) -> torch.Tensor:
    """The tiny world's pretraining stream for `split` ("train": `role`'s corpus; "validation": the
    held-out stream), wrapped."""
    if split not in ("train", "validation"):
        raise UserError(f"unknown split {split!r}; choose train or validation")
    tokenizer = tokenizer or load_tiny_tokenizer()
    world = TinyWorld2(seed)
    texts = role_corpus(world, role) if split == "train" else heldout_stream(world)
    bos, eos = bos_eos(tokenizer)
    return wrap_token_lists(tokenize_documents(tokenizer, texts), block_len, bos, eos)


# --------------------------------------------------------------------------- paper preset


def offline_error(what: str, exc: Exception) -> UserError:
    return unavailable(what, exc, "pass --preset tiny, or run where the hub is reachable with "
                                  "`pip install 'dlmkit[paper]'`")


def load_owt_tokenizer(name: str = TOKENIZER_NAME):
    """GPT-2's tokenizer (MDLM's); a one-line error naming --preset tiny when it cannot be fetched."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # offline, no cache
        raise offline_error(f"the {name} tokenizer", exc) from None


def load_owt_documents(split: str, *, cache_dir=None, streaming: bool = False):
    """The raw OpenWebText documents of MDLM's `split` ("train" or "validation")."""
    if split not in SPLITS:
        raise UserError(f"unknown OpenWebText split {split!r}; choose train or validation")
    try:
        import datasets
    except ImportError as exc:
        raise offline_error("the `datasets` package (OpenWebText)", exc) from None
    try:
        return datasets.load_dataset(DATASET_NAME, split=SPLITS[split], cache_dir=cache_dir, streaming=streaming)
    except Exception as exc:  # offline, no cache, hub refused
        raise offline_error(f"OpenWebText ({DATASET_NAME!r}, split {SPLITS[split]})", exc) from None


def wrap_dataset(documents, tokenizer, *, block_len: int = BLOCK_LEN, num_proc: int | None = None):
    """A `datasets.Dataset` of documents (column "text") -> blocks (column "input_ids"), torch format.

    Runs the same two `map` calls as MDLM (tokenize + EOS, then group), so with MDLM's
    num_proc the blocks are the ones it trained on.
    """
    bos, eos = bos_eos(tokenizer)

    def tokenize(batch):
        return {"input_ids": [ids + [eos] for ids in tokenize_documents(tokenizer, batch["text"])]}

    def group(batch):
        blocks = group_blocks(batch["input_ids"], block_len, bos, eos)
        return {"input_ids": blocks, "attention_mask": [[1] * block_len for _ in blocks]}

    tokenized = documents.map(tokenize, batched=True, batch_size=MAP_BATCH, num_proc=num_proc,
                              remove_columns=documents.column_names, desc="Tokenizing")
    grouped = tokenized.map(group, batched=True, batch_size=MAP_BATCH, num_proc=num_proc, desc="Grouping")
    return grouped.with_format("torch")


def owt_blocks(split: str, *, tokenizer=None, block_len: int = BLOCK_LEN, cache_dir=None,
               num_proc: int | None = None):
    """MDLM's wrapped OpenWebText `split` as a torch-format `datasets.Dataset` of input_ids."""
    documents = load_owt_documents(split, cache_dir=cache_dir)
    return wrap_dataset(documents, tokenizer or load_owt_tokenizer(), block_len=block_len, num_proc=num_proc)


def heldout_blocks(preset: str, n: int, *, block_len: int | None = None, tokenizer=None, seed: int = 0) -> torch.Tensor:
    """The first n validation blocks of a preset (the real-text floor of generation metrics)."""
    if preset == "tiny":
        blocks = tiny_blocks("validation", tokenizer=tokenizer, block_len=block_len or TINY_BLOCK_LEN, seed=seed)
    elif preset == "paper":
        documents = load_owt_documents("validation")
        # Enough documents for n blocks: OWT documents average ~1.1k GPT-2 tokens.
        documents = documents.select(range(min(len(documents), max(MAP_BATCH, 2 * n))))
        blocks = wrap_dataset(documents, tokenizer or load_owt_tokenizer(), block_len=block_len or BLOCK_LEN)
    else:
        raise UserError(f"unknown preset {preset!r}; pass --preset tiny or --preset paper")
    if len(blocks) < n:
        raise UserError(f"the {preset} validation split has only {len(blocks)} blocks of {block_len}; lower --subset")
    return torch.as_tensor(blocks[:n] if preset == "tiny" else blocks[:n]["input_ids"])
