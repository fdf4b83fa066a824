"""Calibrated confidence: temperature scaling, calibration error and the "unknown" rule.

A prediction is "unknown" when its calibrated confidence is below the model's ``threshold``
or its energy (logsumexp of the raw logits, Liu et al. 2020) below its ``min_energy``;
calibration sets the energy floor, which tells images unlike the training data apart far
better than the confidence (benchmarks/unknown.py).

Usage::

    from tlcore import calibration
    t = calibration.fit_temperature(val_logits, val_labels)          # Guo et al. 2017
    probs, energy = calibration.scores(test_logits, t)
    calibration.expected_calibration_error(probs, test_labels)      # 15 equal-width bins
    floor = calibration.keep_floor(energy, correct, keep=0.98)
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch

from . import _core

# The share of correctly classified validation images the default "unknown" rule keeps.
# 0.98, not 0.95: at 95% accuracy a 0.95 keep answers only about 90% of the images. With the
# energy floor, 0.98 called 7, 6, 3, 3 and 6 of 7 non-flower photos unknown on five flowers
# models (benchmarks/unknown.py): most, not all.
DEFAULT_KEEP = 0.98

# Far outside what a trained classifier needs; keeps a degenerate fit (all correct) finite.
_LOG_T_RANGE = (math.log(0.05), math.log(20.0))


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature ``T`` that minimises the NLL of ``softmax(logits / T)`` on these labels.

    One parameter, fitted by L-BFGS on ``log T`` (so ``T`` stays positive); argmax is unchanged.
    """
    # Clones: the logits may be inference tensors, which autograd cannot save.
    logits, labels = logits.detach().clone().double(), labels.clone().long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.5, max_iter=100, line_search_fn="strong_wolfe")

    def nll() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(nll)
    return float(math.exp(min(max(log_t.item(), _LOG_T_RANGE[0]), _LOG_T_RANGE[1])))


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE: the mean over equal-width confidence bins of |accuracy - confidence|, weighted by
    the share of images in each bin (Naeini et al. 2015; 15 bins as in Guo et al.)."""
    confidence, predicted = probs.max(1)
    correct = (predicted == labels).double()
    # Bin b holds confidences in (b/bins, (b+1)/bins]; a confidence of exactly 0 joins bin 0.
    index = (confidence.double() * bins).ceil().long().clamp(1, bins) - 1
    ece = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            gap = correct[members].mean() - confidence[members].double().mean()
            ece += float(members.double().mean() * gap.abs())
    return ece


def scores(logits: torch.Tensor, temperature: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities, energies)`` of raw logits: ``softmax(logits / temperature)`` and
    ``logsumexp(logits)``, as every tlcore prediction computes them."""
    return _core.scores(logits, float(temperature))


def keep_floor(score: torch.Tensor, correct: torch.Tensor, keep: float = DEFAULT_KEEP) -> float:
    """The highest floor that keeps at least ``keep`` of the correctly classified images:
    those whose ``score`` is >= the floor are answered, the others are "unknown"."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    kept_scores = score[correct].sort().values
    if kept_scores.numel() == 0:
        return float("-inf")
    kept = math.ceil(keep * kept_scores.numel())
    return float(kept_scores[kept_scores.numel() - kept])


def is_unknown(probs: torch.Tensor, energy: torch.Tensor, threshold: float,
               min_energy: Optional[float]) -> torch.Tensor:
    """The "unknown" rule (defined once, in C++) over many images: a bool per row of ``probs``."""
    return _core.is_unknown(probs.max(1).values, energy, float(threshold), min_energy)


def has_rule(threshold: float, min_energy: Optional[float]) -> bool:
    """Whether the rule can call anything "unknown"."""
    return threshold > 0 or min_energy is not None


def describe_rule(threshold: float, min_energy: Optional[float]) -> str:
    """The rule in words, e.g. ``"energy < 7.412"``; ``"never"`` when nothing is unknown."""
    parts = ([f"confidence < {threshold:.3f}"] if threshold > 0 else []) + \
        ([f"energy < {min_energy:.3f}"] if min_energy is not None else [])
    return " or ".join(parts) or "never"


def unknown_scores(probs: torch.Tensor, energy: torch.Tensor, labels: torch.Tensor, threshold: float,
                   min_energy: Optional[float]) -> Dict[str, object]:
    """The share called "unknown" by the rule and the accuracy on the images answered."""
    answered = ~is_unknown(probs, energy, threshold, min_energy)
    predicted = probs.argmax(1)
    accuracy = (predicted[answered] == labels[answered]).double().mean() if answered.any() else float("nan")
    return {"threshold": float(threshold), "min_energy": min_energy,
            "unknown_rule": describe_rule(threshold, min_energy),
            "unknown_share": float((~answered).double().mean()), "accuracy_answered": float(accuracy)}


def calibrate(logits: torch.Tensor, labels: torch.Tensor, keep: float = DEFAULT_KEEP) -> Dict[str, Optional[float]]:
    """The temperature and the "unknown" rule fitted on these logits, with the ECE before and after.

    The rule is an energy floor that keeps ``keep`` of the correctly classified images
    (``threshold`` 0: the confidence alone calls nothing unknown).
    """
    temperature = fit_temperature(logits, labels)
    probs, energy = scores(logits, temperature)
    correct = probs.argmax(1) == labels
    floor = keep_floor(energy, correct, keep)
    return {"temperature": temperature, "threshold": 0.0,
            "min_energy": floor if math.isfinite(floor) else None,
            "ece_before": expected_calibration_error(torch.softmax(logits, 1), labels),
            "ece_after": expected_calibration_error(probs, labels)}
