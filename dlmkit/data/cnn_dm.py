"""CNN/DailyMail news articles, a SpecDiff prompt set (paper preset).

`datasets.load_dataset("abisee/cnn_dailymail", "3.0.0", split="test")`: columns article,
highlights, id. SpecDiff measures decoding speed on continuations, so a prompt is the
first tokens of an article; the highlights (the summarisation target) are not used.
Offline, without the cached dataset, loading ends with one line naming the fix.
"""

from __future__ import annotations

from dlmkit.data.owt import offline_error
from dlmkit.errors import UserError

DATASET_NAME = "abisee/cnn_dailymail"
DATASET_CONFIG = "3.0.0"
SPLIT = "test"


def load_articles(n: int, *, split: str = SPLIT, cache_dir=None) -> list[dict]:
    """The first n articles of `split` as {"id", "article"} dicts, in the dataset's order."""
    if n < 1:
        raise UserError(f"asked for {n} CNN/DailyMail articles; pass a positive --subset")
    try:
        import datasets
    except ImportError as exc:
        raise offline_error("the `datasets` package (CNN/DailyMail)", exc) from None
    try:
        data = datasets.load_dataset(DATASET_NAME, DATASET_CONFIG, split=split, cache_dir=cache_dir)
    except Exception as exc:  # offline, no cache, hub refused
        raise offline_error(f"CNN/DailyMail ({DATASET_NAME!r} {DATASET_CONFIG}, split {split})", exc) from None
    if len(data) < n:
        raise UserError(f"CNN/DailyMail {split} has only {len(data)} articles; lower --subset to {len(data)}")
    rows = data.select(range(n))
    return [{"id": row["id"], "article": row["article"]} for row in rows]
