"""Helpers shared by the benchmark scripts."""
from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """../shared (or $TLCORE_SHARED); exits with a clear message when absent."""
    root = Path(os.environ.get("TLCORE_SHARED", REPO.parent / "shared"))
    if not root.is_dir():
        sys.exit(f"benchmark needs the shared data folder, not found at {root} (set TLCORE_SHARED)")
    return root


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` runs."""
    return median_times({"fn": fn}, repeats)["fn"]


def median_times(fns: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, float]:
    """Median wall time of each of ``fns`` over ``repeats`` rounds, the functions taking turns
    within each round: a machine that slows down for a while (other tenants of a virtual
    machine) then slows them all alike, and the ratios hold."""
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
