"""Phase embed of train_clsd.py: math chain-of-thought (NuminaMath-CoT; the tiny world's math_cot
for --preset tiny) tokenized with the verifier's tokenizer, cut into (prefix, chunk) windows
(with --targets verifier each chunk is the verifier's greedy continuation of its prefix);
chunk embeddings from the frozen embedding matrix and C (the verifier's final hidden state
after the prefix) written as safetensors shards under CKPT_DIR/embed (`data.py`)."""

from __future__ import annotations

import json

import torch

from dlmkit.experiments.clsd.data import (encode_windows, token_stream, transcripts, verifier_chunks, windows,
                                         write_shards)
from dlmkit.models.clsd import embedding_scale
from dlmkit.results import atomic_write_json, echo


def phase_embed(run, ctx) -> None:
    cfg = ctx.settings
    ctx.claim_ckpt_dir()
    directory = cfg.ckpt_dir / "embed"
    meta_path = directory / "meta.json"
    wanted = {k: getattr(cfg, k) for k in ("block_len", "prefix_len", "train_records", "val_records", "targets")} | \
        {"verifier": ctx.verifier_label}
    if ctx.job.resume and meta_path.exists() and json.loads(meta_path.read_text())["settings"] == wanted:
        meta = json.loads(meta_path.read_text())
        echo("embed: shards already written, skipped (--resume)")
    else:
        store = torch.float32 if ctx.preset == "tiny" else torch.bfloat16
        meta = {"settings": wanted, "hidden_size": ctx.verifier.config.hidden_size,
                "embed_scale": embedding_scale(ctx.verifier), "shards": {}, "counts": {}}
        for split, records in (("train", cfg.train_records), ("val", cfg.val_records)):
            conversations = transcripts(ctx.preset, split, records, seed=cfg.seed, data_dir=cfg.data_dir)
            stream = token_stream(ctx.tokenizer, conversations)
            prefix, chunk = windows(stream, cfg.prefix_len, cfg.block_len)
            data_chunk = chunk
            if cfg.targets == "verifier":
                chunk = verifier_chunks(ctx.verifier, prefix, cfg.block_len, desc=f"greedy {split}")
            tensors = encode_windows(ctx.verifier, prefix, chunk, store_dtype=store, desc=f"embed {split}")
            meta["shards"][split] = write_shards(directory, split, tensors, shard_size=4096)
            meta["counts"][split] = {"records": len(conversations), "stream_tokens": len(stream),
                                     "windows": len(chunk),
                                     # how often the drafted targets are the transcript's own tokens
                                     "targets_equal_data": float((chunk == data_chunk).float().mean())}
        atomic_write_json(meta_path, meta)
    rows = [{"split": split, **counts, "targets": cfg.targets, "block_len": cfg.block_len,
             "prefix_len": cfg.prefix_len, "hidden_size": meta["hidden_size"], "embed_scale": meta["embed_scale"]}
            for split, counts in meta["counts"].items()]
    run.add_table("embed", rows)
