"""NuminaMath-CoT (`AI-MO/NuminaMath-CoT`): the math chain-of-thought CLSD trains its DiT on.

Records have `problem`, `solution` and `messages` (a user turn and the assistant's
solution). CLSD renders `messages` with the verifier's chat template, tokenizes with the
verifier's tokenizer, packs the transcripts into one stream (each ended by EOS) and cuts
it into windows (see dlmkit.experiments.clsd.data). The tiny preset uses the tiny world's
`math_cot` records, which have the same fields.

Offline, loading fails with one line naming the fixes: pre-download the dataset where the
hub is reachable (then HF_DATASETS_OFFLINE=1 reads the cache), or pass --data-dir with a
local copy (a `save_to_disk` folder or the dataset's parquet files).
"""

from __future__ import annotations

from pathlib import Path

from dlmkit.errors import UserError, unavailable

DATASET_NAME = "AI-MO/NuminaMath-CoT"
FIELDS = ("problem", "solution", "messages")


def _offline_error(exc: Exception) -> UserError:
    return unavailable(f"NuminaMath-CoT ({DATASET_NAME})", exc,
                       f"pre-download it where the hub is reachable (python -c \"import datasets; "
                       f"datasets.load_dataset('{DATASET_NAME}')\") and rerun with HF_DATASETS_OFFLINE=1, "
                       "pass --data-dir DIR with a local copy, or pass --preset tiny")


def load_numina(split: str = "train", *, n: int | None = None, data_dir: Path | None = None):
    """The first n records of a split as a `datasets.Dataset` (all of it when n is None)."""
    try:
        import datasets
    except ImportError as exc:
        raise _offline_error(exc) from None
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise UserError(f"--data-dir {data_dir} is not a directory; pass the folder holding NuminaMath-CoT")
        try:
            if (data_dir / "dataset_info.json").exists() or (data_dir / "dataset_dict.json").exists():
                data = datasets.load_from_disk(str(data_dir))
                data = data[split] if isinstance(data, datasets.DatasetDict) else data
            else:
                files = sorted(str(p) for p in data_dir.rglob("*.parquet") if split in p.name or split in p.parent.name)
                files = files or sorted(str(p) for p in data_dir.rglob("*.parquet"))
                if not files:
                    raise UserError(f"--data-dir {data_dir} holds neither a save_to_disk dataset nor parquet files; "
                                    "pass the folder of a NuminaMath-CoT copy")
                data = datasets.load_dataset("parquet", data_files=files, split="train")
        except UserError:
            raise
        except Exception as exc:
            raise _offline_error(exc) from None
    else:
        try:
            data = datasets.load_dataset(DATASET_NAME, split=split)
        except Exception as exc:  # offline, no cache, hub refused
            raise _offline_error(exc) from None
    missing = [f for f in FIELDS if f not in data.column_names]
    if missing:
        raise UserError(f"the NuminaMath-CoT copy lacks the fields {missing}; pass an unmodified copy")
    if n is not None:
        data = data.select(range(min(n, len(data))))
    return data
