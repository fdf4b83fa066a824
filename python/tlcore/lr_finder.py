"""fastai's learning-rate finder (Leslie Smith's LR range test): train a few hundred batches
while the rate grows exponentially from ``start_lr`` to ``end_lr``, record the loss of each
batch, and suggest a rate a decade below where the smoothed loss was lowest. The model's
weights, history and recipe are as they were afterwards.

Usage::

    learner.model.freeze_backbone()              # what the next phase will train
    found = learner.lr_find()                    # or tlcore lr-find --data ... --weights ...
    found.plot("lr_find.png"); learner.fit_head(5, lr=found.suggestion)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, List, Union

import torch

if TYPE_CHECKING:
    from .learner import Learner

# The smoothing of fastai's recorder (an exponential moving average, debiased).
SMOOTHING = 0.98
# The sweep stops once the smoothed loss is this many times its minimum: it has diverged.
DIVERGED = 4.0


@dataclass
class LRFinderResult:
    """Each batch's rate and loss, the smoothed loss, and the suggested rate."""

    lrs: List[float] = field(default_factory=list)
    losses: List[float] = field(default_factory=list)
    smoothed: List[float] = field(default_factory=list)
    suggestion: float = float("nan")
    lowest_loss_lr: float = float("nan")

    def plot(self, path: Union[str, Path]) -> Path:
        """The loss curve against the rate (log scale), the suggestion marked, as a PNG."""
        from . import plots

        return plots.lr_find(self, Path(path))


def smooth(losses: List[float], beta: float = SMOOTHING) -> List[float]:
    """fastai's debiased exponential moving average of the losses."""
    out, average = [], 0.0
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta ** i))
    return out


def suggest(lrs: List[float], smoothed: List[float]) -> LRFinderResult:
    """A tenth of the rate at the smoothed loss's minimum (Smith's rule; fastai's ``lr_min``),
    ignoring what comes after the loss diverged."""
    finite = [(s, lr) for s, lr in zip(smoothed, lrs) if math.isfinite(s)]
    if not finite:
        raise ValueError("lr_find: every loss was infinite or NaN; lower start_lr")
    best, best_lr = min(finite)
    return LRFinderResult(lrs=list(lrs), smoothed=list(smoothed), suggestion=best_lr / 10, lowest_loss_lr=best_lr)


def lr_find(learner: "Learner", start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 100,
            **options: object) -> LRFinderResult:
    """The range test on what ``learner`` trains now; see the module's docstring.

    ``options`` are training options for the sweep (e.g. ``cache_features=True`` after
    ``freeze_backbone()``); the schedule and early stopping are the finder's own.
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"lr_find: need 0 < start_lr < end_lr, got {start_lr} and {end_lr}")
    steps = len(learner.data.loader("train"))
    epochs = max(1, round(num_iter / steps))
    total = epochs * steps
    # One "step" of the step schedule per batch: the rate grows by gamma every batch.
    schedule = {"schedule": "step", "step_epochs": 0.999999 / steps,
                "gamma": (end_lr / start_lr) ** (1 / max(total - 1, 1))}
    means: List[float] = []  # the trainer reports each epoch's running mean loss after each batch
    losses: List[float] = []

    def on_batch(b: int, n: int, mean: float) -> None:
        if b == 1:
            means.clear()
        means.append(mean)
        losses.append(b * mean - (b - 1) * means[-2] if b > 1 else mean)

    def go_on(_stats) -> bool:
        smoothed = smooth(losses)
        finite = [s for s in smoothed if math.isfinite(s)]
        return bool(finite) and math.isfinite(smoothed[-1]) and smoothed[-1] < DIVERGED * min(finite)

    saved = {k: v.clone() for k, v in learner.model.state_dict().items()}
    history, recipe, loader_epochs = len(learner.history), len(learner.recipe), learner._loader_epochs
    try:
        learner.fit(epochs, lr=start_lr, phase="lr_find", on_epoch=go_on, on_batch=on_batch, patience=0,
                    restore_best=False, **{**options, **schedule})
    finally:
        learner.model.load_state_dict(saved)
        del learner.history[history:], learner.recipe[recipe:]
        learner._loader_epochs = loader_epochs
    lrs = [start_lr * schedule["gamma"] ** i for i in range(len(losses))]
    result = suggest(lrs, smooth(losses))
    result.losses = losses
    return result
