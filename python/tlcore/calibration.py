"""Calibrated confidence: temperature scaling, calibration error and the "unknown" threshold.

Usage::

    from tlcore import calibration
    t = calibration.fit_temperature(val_logits, val_labels)          # Guo et al. 2017
    probs = torch.softmax(test_logits / t, 1)
    calibration.expected_calibration_error(probs, test_labels)      # 15 equal-width bins
    threshold = calibration.unknown_threshold(probs, labels, keep=0.95)
"""
from __future__ import annotations

import math
from typing import Dict

import torch

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


def unknown_threshold(probs: torch.Tensor, labels: torch.Tensor, keep: float = 0.95) -> float:
    """The highest threshold that keeps at least ``keep`` of the correctly classified images:
    those with confidence >= threshold are answered, the others are "unknown"."""
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    confidence, predicted = probs.max(1)
    correct = confidence[predicted == labels].sort().values
    if correct.numel() == 0:
        return 0.0
    kept = math.ceil(keep * correct.numel())
    return float(correct[correct.numel() - kept])


def unknown_scores(probs: torch.Tensor, labels: torch.Tensor, threshold: float) -> Dict[str, float]:
    """The share called "unknown" at ``threshold`` and the accuracy on the images answered."""
    confidence, predicted = probs.max(1)
    answered = confidence >= threshold
    accuracy = (predicted[answered] == labels[answered]).double().mean() if answered.any() else float("nan")
    return {"threshold": float(threshold), "unknown_share": float((~answered).double().mean()),
            "accuracy_answered": float(accuracy)}


def calibrate(logits: torch.Tensor, labels: torch.Tensor, keep: float = 0.95) -> Dict[str, float]:
    """Temperature and "unknown" threshold fitted on these logits, with the ECE before and after."""
    temperature = fit_temperature(logits, labels)
    probs = torch.softmax(logits / temperature, 1)
    return {"temperature": temperature, "threshold": unknown_threshold(probs, labels, keep),
            "ece_before": expected_calibration_error(torch.softmax(logits, 1), labels),
            "ece_after": expected_calibration_error(probs, labels)}
