"""Every seed derived from a run's --seed, named, in one place.

A derived seed gives one stream of randomness its own generator, so a prompt's sample, a
training step's batch or a sample row's noise does not depend on what ran before it (and a
resumed run draws what it would have drawn). The values are part of the results: changing
one changes the tables.
"""

from __future__ import annotations

import hashlib

STRIDE = 1_000_003  # a prime: seed * STRIDE + index keeps the streams of nearby seeds apart
REFERENCE_TEXT_INDEX = 999_983  # the held-out real-text reference rows of the self-spec baseline
CALIBRATION_OFFSET = 500_009  # self-spec dtau calibration rows (never evaluated)


def item_seed(seed: int, key: str) -> int:
    """A seed per named item (a prompt id, or 'id/steps=N', 'id/random_token'), from a hash of the key."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:8], "big") % 2**63


def indexed_seed(seed: int, index: int) -> int:
    """The index-th stream of a run: a training step, a sample row, a batch's first row, a prompt index."""
    return seed * STRIDE + index


def budget_row_seed(seed: int, budget: int, row: int) -> int:
    """A self-speculative sample row at an NFE budget."""
    return indexed_seed(seed, 7_919 * budget + row)


def flow_batch_seed(seed: int, step: int, salt: int = 0) -> int:
    """CLSD's training batch (rows, noise, t) at a step."""
    return indexed_seed(seed, step * 7 + salt)


def reference_text_seed(seed: int) -> int:
    """The self-spec baseline's reference rows (random tokens, held-out text)."""
    return indexed_seed(seed, REFERENCE_TEXT_INDEX)


def validation_seed(seed: int) -> int:
    """Held-out validation draws: the self-spec training phase's masks, CLSD's validation batch."""
    return seed + 1


def stage_c_seed(seed: int) -> int:
    """CLSD stage C's training batches (stage A's use the run seed itself)."""
    return seed + 2


def calibration_seed(seed: int) -> int:
    """The rows on which self-speculation's dtau is calibrated to each NFE budget."""
    return seed + CALIBRATION_OFFSET
