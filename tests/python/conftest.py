"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The real data folder: $TLCORE_SHARED, else <repo>/../shared; skips when absent."""
    path = Path(os.environ.get("TLCORE_SHARED") or REPO.parent / "shared")
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} not found (set TLCORE_SHARED to its location)")
    return path
