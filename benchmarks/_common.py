"""Helpers shared by the benchmark scripts."""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """../shared (or $TLCORE_SHARED); exits with a clear message when absent."""
    root = Path(os.environ.get("TLCORE_SHARED", REPO.parent / "shared"))
    if not root.is_dir():
        sys.exit(f"benchmark needs the shared data folder, not found at {root} (set TLCORE_SHARED)")
    return root


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs."""
    times: List[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
