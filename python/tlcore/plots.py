"""matplotlib plots for training runs and reports; every function writes a PNG.

Usage: ``tlcore.plots.curves(learner.history, "runs/curves.png")``
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .files import atomic_write_bytes  # noqa: E402


def _save(fig: "plt.Figure", path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def curves(history: Sequence[Dict[str, float]], path: Path) -> Path:
    """Loss, accuracy and macro F1 per epoch, train vs validation, with phase boundaries."""
    epochs = [h["epoch"] + 1 for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key, title in zip(axes, ("loss", "accuracy", "f1"), ("Loss", "Accuracy", "Macro F1")):
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [h.get(f"{split}_{key}") for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, [np.nan if v is None else v for v in values], style, label=split)
        phases = [h.get("phase") for h in history]
        for i in range(1, len(phases)):
            if phases[i] != phases[i - 1]:
                ax.axvline(epochs[i] - 0.5, color="gray", linestyle="--", linewidth=1)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def confusion_matrix(matrix: np.ndarray, classes: Sequence[str], path: Path) -> Path:
    """Counts and row-normalised (recall) confusion matrices side by side."""
    matrix = np.asarray(matrix)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    k = len(classes)
    size = max(5.0, 0.45 * k + 2)
    # constrained layout keeps each colour bar clear of the next panel; the panels share their
    # rows, so the class names and "true" are written once, on the left.
    fig, axes = plt.subplots(1, 2, figsize=(2 * size + 1, size), layout="constrained")
    for ax, data, title, fmt in ((axes[0], matrix, "Counts", "d"), (axes[1], normalised, "Normalised by true class", ".2f")):
        im = ax.imshow(data, cmap="Blues")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
        ax.set_xticks(range(k), classes, rotation=90 if k > 6 else 45, ha="right" if k <= 6 else "center")
        ax.set_yticks(range(k), classes if ax is axes[0] else [])
        ax.set_xlabel("predicted")
        if ax is axes[0]:
            ax.set_ylabel("true")
        ax.set_title(title)
        if k <= 20:
            threshold = data.max() / 2 if data.size else 0
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, format(data[i, j], fmt), ha="center", va="center", fontsize=8,
                            color="white" if data[i, j] > threshold else "black")
    return _save(fig, path)


def prediction_grid(images: Sequence[np.ndarray], true: Sequence[int], predicted: Sequence[int],
                    confidence: Sequence[float], classes: Sequence[str], path: Path,
                    title: Optional[str] = None, columns: int = 6) -> Path:
    """Images (uint8 HxWxC) titled "predicted (confidence) / true"; mistakes in red."""
    n = len(images)
    rows = max(1, (n + columns - 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, t, p, c in zip(axes.flat, images, true, predicted, confidence):
        ax.imshow(image.squeeze(), cmap="gray" if image.ndim == 2 or image.shape[-1] == 1 else None)
        ax.set_title(f"{classes[p]} ({c:.0%})\ntrue: {classes[t]}", fontsize=8,
                     color="black" if p == t else "red")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def top_losses(images: Sequence[np.ndarray], probabilities: np.ndarray, labels: Sequence[int],
               classes: Sequence[str], path: Path, k: int = 12, columns: int = 6) -> Path:
    """The k images with the largest loss (lowest probability of the true class), as fastai shows
    them: "predicted / true / loss / probability of the true class"."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    labels = np.asarray(labels)
    true_p = probabilities[np.arange(len(labels)), labels]
    losses = -np.log(np.clip(true_p, 1e-12, 1.0))
    order = np.argsort(-losses, kind="stable")[:k]
    rows = max(1, (len(order) + columns - 1) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.7 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order):
        image = images[i]
        ax.imshow(image.squeeze(), cmap="gray" if image.ndim == 2 or image.shape[-1] == 1 else None)
        predicted = int(probabilities[i].argmax())
        ax.set_title(f"{classes[predicted]} / {classes[labels[i]]}\n{losses[i]:.2f} / {true_p[i]:.2f}",
                     fontsize=8, color="black" if predicted == labels[i] else "red")
    fig.suptitle("Top losses: predicted / true, loss / probability of true class")
    return _save(fig, path)


def comparison(rows: List[Dict[str, float]], path: Path) -> Path:
    """Bar charts of accuracy, accuracy per million parameters and inference speed per backbone."""
    names = [r["backbone"] for r in rows]
    keys = [("accuracy", "Validation accuracy"), ("acc_per_mparam", "Accuracy per million parameters"),
            ("inference_img_s", "Inference images/s")]
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4))
    for ax, (key, title) in zip(axes, keys):
        ax.bar(names, [r[key] for r in rows], color="tab:blue")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def lr_find(result, path: Path) -> Path:
    """The LR range test: raw and smoothed loss against the rate (log scale), the suggestion marked."""
    fig, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
    n = len(result.smoothed)
    ax.plot(result.lrs[:n], result.losses[:n], color="#c8d3e6", linewidth=1, label="loss of each batch")
    ax.plot(result.lrs[:n], result.smoothed, color="#2f6fde", linewidth=2, label="smoothed")
    ax.axvline(result.suggestion, color="#b3261e", linestyle="--",
               label=f"suggested {result.suggestion:.1e} (a tenth of the lowest loss's rate)")
    finite = [s for s in result.smoothed if np.isfinite(s)]
    if finite:  # the divergence at the end would flatten the interesting part
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 4 * min(finite)) * 1.05)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    return _save(fig, path)

