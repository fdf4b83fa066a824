"""Everything a training run leaves to read: the report, its plots and the history.

Usage::

    learner.fit_head(5)
    paths = learner.write_report("runs/flowers", stem="mobilenet_v2__flowers")
    print(paths["markdown"].read_text())
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Dict, List, Optional, Union

from .files import atomic_write_bytes

if TYPE_CHECKING:
    from .learner import Learner

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
GRID_IMAGES = 18  # images in the predictions grid
TOP_LOSSES = 12


class _Images(Sequence):
    """The images of ``indices`` in ``dataset``, decoded when one is asked for (the plots
    show a few of a set that may not fit in memory)."""

    def __init__(self, dataset, indices: List[int], channels: int) -> None:
        self.dataset, self.indices, self.channels = dataset, [int(i) for i in indices], channels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        return self.dataset.image(self.indices[int(i)], channels=self.channels)


def report_paths(out_dir: PathLike, stem: Optional[str] = None) -> Dict[str, Path]:
    """Where ``write_report`` puts each file: ``<out_dir>/<stem>_<what>`` (no stem: ``<what>``)."""
    out = Path(out_dir)
    prefix = f"{stem}_" if stem else ""
    names = {"json": "report.json", "markdown": "report.md", "confusion": "confusion.png",
             "curves": "curves.png", "history": "history.json", "predictions": "predictions.png",
             "top_losses": "top_losses.png"}
    return {key: out / f"{prefix}{name}" for key, name in names.items()}


def write_report(learner: "Learner", out_dir: PathLike, stem: Optional[str] = None,
                 split: str = "val") -> Dict[str, Path]:
    """Evaluates ``learner`` on ``split`` ("val" or "test") and writes what a run leaves to read.

    ``json``/``markdown``: the ``Report`` (accuracy, top-k, per-class precision/recall/F1,
    overfitting gap); ``confusion``: the confusion matrices; ``curves``: loss, accuracy and
    F1 per epoch; ``history``: the epochs as JSON; ``predictions``: a grid of validation
    images with their predictions; ``top_losses``: the worst-predicted images. The report
    names the images it was computed on.
    Returns those paths by name. In a distributed run only rank 0 evaluates and writes;
    the other ranks return the paths.
    """
    from . import plots  # matplotlib loads only when a report is written

    paths = report_paths(out_dir, stem)
    if learner.group is not None and learner.group.rank != 0:
        return paths
    data = learner.data
    report = learner.evaluate(split)
    report.extra["images"] = data.describe_splits().get(split, split)
    paths.update(report.save(paths["json"].parent, prefix=f"{stem}_" if stem else ""))
    plots.curves(learner.history, paths["curves"])
    atomic_write_bytes(paths["history"], json.dumps(learner.history, indent=2).encode())

    probs, labels, indices = learner.predictions(split)
    images = _Images(data.test if split == "test" else data.val, indices.tolist(), data.channels)
    confidence, predicted = probs.max(1)
    pick = list(range(min(GRID_IMAGES, len(images))))
    plots.prediction_grid(images[: len(pick)], labels[pick].tolist(), predicted[pick].tolist(),
                          confidence[pick].tolist(), data.classes, paths["predictions"])
    plots.top_losses(images, probs.numpy(), labels.tolist(), data.classes, paths["top_losses"], k=TOP_LOSSES)
    log.info("report %s, %s\nplots %s, %s, %s, %s", paths["json"], paths["markdown"], paths["curves"],
             paths["confusion"], paths["predictions"], paths["top_losses"])
    return paths
