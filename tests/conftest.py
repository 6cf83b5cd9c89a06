"""Shared test fixtures: the real public data committed in tests/data."""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
REAL_DATA = REPO_ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def real_data() -> pathlib.Path:
    """tests/data: GSM8K test split, GSM8K model solutions and MATH500 (see its README)."""
    return REAL_DATA
