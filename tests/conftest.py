import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DLMKIT_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"


@pytest.fixture
def fixtures_dir():
    """../shared/fixtures, or skip when this checkout has none beside it."""
    if not FIXTURES.is_dir():
        pytest.skip(f"no parity fixtures at {FIXTURES}")
    return FIXTURES
