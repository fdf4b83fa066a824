"""Evaluation reports: JSON, Markdown and matplotlib plots.

Usage::

    report = tlcore.Report.from_predictions(y_true, probs, classes)
    report.save("runs/flowers")            # report.json, report.md, confusion.png
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from . import _core
from .files import atomic_write_bytes  # noqa: F401  (learner.py and exporter.py import it from here; issue 15)

log = logging.getLogger(__name__)


@dataclass
class Report:
    """Metrics of a classifier on a labelled set (scikit-learn's definitions)."""

    classes: List[str]
    accuracy: float
    top_k: Dict[int, float]
    per_class: List[Dict[str, float]]
    macro: Dict[str, float]
    weighted: Dict[str, float]
    confusion: np.ndarray
    num_samples: int
    train_accuracy: Optional[float] = None
    extra: Dict[str, object] = field(default_factory=dict)

    @classmethod
    def from_predictions(cls, y_true: Sequence[int], scores: torch.Tensor, classes: Sequence[str],
                         top_k: Sequence[int] = (1, 5)) -> "Report":
        """Builds a report from true labels and per-class scores (logits or probabilities)."""
        y_true = [int(y) for y in y_true]
        y_pred = scores.argmax(1).tolist()
        r = _core.classification_report(y_true, y_pred, len(classes))
        ks = {k: _core.top_k_accuracy(scores, y_true, k) for k in top_k if k < len(classes)}
        return cls(list(classes), r["accuracy"], ks, r["per_class"], r["macro"], r["weighted"],
                   r["confusion"].numpy(), r["num_samples"])

    @property
    def overfitting_gap(self) -> Optional[float]:
        """Train accuracy minus this (validation) accuracy, when the train accuracy is known."""
        return None if self.train_accuracy is None else self.train_accuracy - self.accuracy

    def to_dict(self) -> Dict[str, object]:
        return {
            "num_samples": self.num_samples,
            "accuracy": self.accuracy,
            "top_k_accuracy": {str(k): v for k, v in self.top_k.items()},
            "macro": self.macro,
            "weighted": self.weighted,
            "per_class": {c: s for c, s in zip(self.classes, self.per_class)},
            "confusion_matrix": self.confusion.tolist(),
            "classes": self.classes,
            "train_accuracy": self.train_accuracy,
            "overfitting_gap": self.overfitting_gap,
            **self.extra,
        }

    def to_markdown(self) -> str:
        """scikit-learn's classification_report as a Markdown table, plus the headline figures."""
        lines = [f"**Accuracy** {self.accuracy:.4f} on {self.num_samples} images"]
        if "images" in self.extra:
            lines.append(f"**Images** {self.extra['images']}")
        if "unknown_share" in self.extra:
            lines.append(f"**Unknown** {self.extra['unknown_share']:.1%} of the images "
                         f"({self.extra['unknown_rule']}); accuracy on the rest "
                         f"{self.extra['accuracy_answered']:.4f}")
        lines += [f"**Top-{k} accuracy** {v:.4f}" for k, v in self.top_k.items() if k != 1]
        if self.overfitting_gap is not None:
            lines.append(f"**Overfitting gap** (train − validation accuracy) {self.overfitting_gap:+.4f}")
        lines += ["", "| class | precision | recall | f1-score | support |", "| --- | ---: | ---: | ---: | ---: |"]
        rows = list(zip(self.classes, self.per_class)) + [("macro avg", self.macro), ("weighted avg", self.weighted)]
        for name, s in rows:
            lines.append(f"| {name} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['support']} |")
        return "\n".join(lines) + "\n"

    def save(self, folder: os.PathLike, prefix: str = "") -> Dict[str, Path]:
        """Writes ``{prefix}report.json``, ``{prefix}report.md`` and confusion-matrix plots."""
        from . import plots  # matplotlib loads only when a report is saved

        folder = Path(folder)
        paths = {"json": folder / f"{prefix}report.json", "markdown": folder / f"{prefix}report.md",
                 "confusion": folder / f"{prefix}confusion.png"}
        atomic_write_bytes(paths["json"], json.dumps(self.to_dict(), indent=2).encode())
        atomic_write_bytes(paths["markdown"], self.to_markdown().encode())
        plots.confusion_matrix(self.confusion, self.classes, paths["confusion"])
        return paths
