"""CLSD's `embed` phase: math chain-of-thought as verifier-embedding chunks on disk.

Transcripts (NuminaMath-CoT `messages`, or the tiny world's `math_cot`) are rendered with
the verifier's chat template, tokenized with its tokenizer, joined into one stream (each
ended by EOS) and cut into windows of `prefix_len + block_len` tokens, one every
`block_len`. With targets "verifier" (self-distillation, as speculative drafters are usually
trained) each chunk is replaced by the verifier's greedy continuation of its prefix
(`verifier_chunks`): the tokens the guillotine accepts, a function of the prefix where the
transcripts' own chunks are a distribution over them. Per window the shards hold:

    prefix_ids   (N, P)      the context before the chunk (the verifier reads it in stage C)
    chunk_ids    (N, L)      the chunk's tokens (the transcript's or the verifier's)
    chunk_embeds (N, L, H)   their rows of the frozen embedding matrix (the flow's data)
    cond         (N, H)      C: the verifier's final hidden state at the last prefix position

as safetensors shards `<split>-00000.safetensors`, ... beside a `meta.json`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from dlmkit.data.numina import load_numina
from dlmkit.errors import UserError

KEYS = ("prefix_ids", "chunk_ids", "chunk_embeds", "cond")


def transcripts(preset: str, split: str, n: int, *, seed: int = 0, data_dir=None) -> list[list[dict]]:
    """Chat messages of n math chain-of-thought records."""
    if preset == "tiny":
        from dlmkit.data.tinyworld import TinyWorld

        return [r["messages"] for r in TinyWorld(seed).math_cot(n, split="train" if split == "train" else "test")]

    # NuminaMath-CoT has train and test splits; validation windows come from its test split.
    data = load_numina("train" if split == "train" else "test", n=n, data_dir=data_dir)
    return list(data["messages"])


def token_stream(tokenizer, conversations: list[list[dict]]) -> list[int]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UserError("the verifier's tokenizer has no EOS token; CLSD packs transcripts with one")
    texts = [tokenizer.apply_chat_template(messages, tokenize=False) for messages in conversations]
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream += ids + [eos]
    return stream


def windows(stream: list[int], prefix_len: int, block_len: int, max_windows: int | None = None):
    """(prefix_ids, chunk_ids): windows of the stream, one every block_len tokens."""
    starts = list(range(prefix_len, len(stream) - block_len + 1, block_len))[:max_windows]
    if not starts:
        raise UserError(f"the data gives no window of {prefix_len} + {block_len} tokens; use more records "
                        "(--embed-records) or shorter --prefix-len / --block-len")
    data = torch.tensor(stream, dtype=torch.long)
    prefix = torch.stack([data[s - prefix_len:s] for s in starts])
    chunk = torch.stack([data[s:s + block_len] for s in starts])
    return prefix, chunk


@torch.no_grad()
def verifier_chunks(verifier, prefix_ids: torch.Tensor, block_len: int, batch_size: int = 64,
                    desc: str = "greedy") -> torch.Tensor:
    """(N, block_len): the verifier's greedy continuation of each prefix, with its cache (one call
    per token for a batch of prefixes; end tokens are continued like any other)."""
    from dlmkit.decoding.clsd import verifier_step

    device = verifier.get_input_embeddings().weight.device
    out = []
    for start in tqdm(range(0, len(prefix_ids), batch_size), desc=desc, unit="batch"):
        cache, _, logits = verifier_step(verifier, prefix_ids[start:start + batch_size].to(device))
        tokens = []
        for j in range(block_len):
            tokens.append(logits[:, -1].float().argmax(-1))
            if j < block_len - 1:
                cache, _, logits = verifier_step(verifier, tokens[-1][:, None], cache)
        out.append(torch.stack(tokens, dim=1).cpu())
    return torch.cat(out)


@torch.no_grad()
def encode_windows(verifier, prefix_ids: torch.Tensor, chunk_ids: torch.Tensor, batch_size: int = 64,
                   store_dtype=torch.float32, desc: str = "embed") -> dict[str, torch.Tensor]:
    device = verifier.get_input_embeddings().weight.device
    embed = verifier.get_input_embeddings()
    conds, embeds = [], []
    for start in tqdm(range(0, len(prefix_ids), batch_size), desc=desc, unit="batch"):
        prefix = prefix_ids[start:start + batch_size].to(device)
        hidden = verifier.model(input_ids=prefix).last_hidden_state[:, -1]
        conds.append(hidden.to(store_dtype).cpu())
        embeds.append(embed(chunk_ids[start:start + batch_size].to(device)).to(store_dtype).cpu())
    return {"prefix_ids": prefix_ids, "chunk_ids": chunk_ids, "chunk_embeds": torch.cat(embeds),
            "cond": torch.cat(conds)}


def write_shards(directory: Path, split: str, tensors: dict[str, torch.Tensor], shard_size: int) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    names = []
    n = len(tensors["chunk_ids"])
    for index, start in enumerate(range(0, n, shard_size)):
        name = f"{split}-{index:05d}.safetensors"
        tmp = directory / (name + ".tmp")
        save_file({k: v[start:start + shard_size].contiguous() for k, v in tensors.items()}, str(tmp))
        tmp.replace(directory / name)
        names.append(name)
    return names


def read_meta(directory: Path) -> dict:
    path = Path(directory) / "meta.json"
    if not path.exists():
        raise UserError(f"no embedding shards at {directory}; run the embed phase first (or pass the same --ckpt-dir)")
    return json.loads(path.read_text())


class Shards:
    """Rows of a split read lazily from its safetensors shards (the paper's data does not fit
    in memory): `shards.rows(indices)` gathers a batch."""

    def __init__(self, directory: Path, split: str):
        meta = read_meta(directory)
        self.files = [safe_open(str(Path(directory) / name), framework="pt") for name in meta["shards"][split]]
        self.sizes = [f.get_slice("chunk_ids").get_shape()[0] for f in self.files]
        self.offsets = [sum(self.sizes[:i]) for i in range(len(self.sizes))]

    def __len__(self) -> int:
        return sum(self.sizes)

    def rows(self, indices, device: str = "cpu", dtype=torch.float32) -> dict[str, torch.Tensor]:
        import bisect

        picked = {k: [] for k in KEYS}
        for index in [int(i) for i in indices]:
            shard = bisect.bisect_right(self.offsets, index) - 1
            row = index - self.offsets[shard]
            for key in KEYS:
                picked[key].append(self.files[shard].get_slice(key)[row:row + 1])
        out = {k: torch.cat(v) for k, v in picked.items()}
        out["chunk_embeds"] = out["chunk_embeds"].to(dtype)
        out["cond"] = out["cond"].to(dtype)
        return {k: v.to(device) for k, v in out.items()}
