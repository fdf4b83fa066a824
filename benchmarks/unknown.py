"""Which score tells a flowers model's "unknown" images apart: the evidence for the default rule.

The flowers model of ``benchmarks/budget.py`` (``tlcore.train_budget``, the shared MobileNetV2,
10 minutes) is scored four ways: the calibrated top probability (the rule tlcore applies), the
top probability at temperature 1, the energy score (logsumexp of the logits, Liu et al. 2020)
and the top logit. For each, and for several ``keep`` targets, the threshold is chosen on the
selection half of the validation split (``keep`` of its correctly classified images at or
above it), then applied to the untouched half, to 1,000 CIFAR-10 images (no flowers among
them: a stand-in for what users send that is not a flower, used to compare the scores) and to
../shared/data/photos (the issue's check: seven photos, none of them a flower).

Prints one JSON line: per score, the AUROC of correct validation images against the CIFAR-10
images, and per keep the share of the untouched half answered, its accuracy there, the share
of CIFAR-10 images and the number of photos called unknown.

Usage: .venv/bin/python benchmarks/unknown.py [--budget 10m]
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Callable, Dict

import torch

import tlcore

from _common import shared_dir

KEEPS = (0.95, 0.97, 0.98)


def score_functions(temperature: float) -> Dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """Higher means "more likely one of the classes"."""
    return {
        "top_probability_calibrated": lambda lo: torch.softmax(lo / temperature, 1).max(1).values,
        "top_probability": lambda lo: torch.softmax(lo, 1).max(1).values,
        "energy": lambda lo: torch.logsumexp(lo, 1),
        "top_logit": lambda lo: lo.max(1).values,
    }


def folder_logits(learner: "tlcore.Learner", dataset) -> torch.Tensor:
    engine = learner.model.compile_for_inference(learner.data.image_size)
    loader = tlcore.DataLoader(dataset, learner.data.eval_pipeline, batch_size=32, shuffle=False)
    return torch.cat([engine(x) for x, _ in loader])


def photo_logits(learner: "tlcore.Learner", photos: Path) -> torch.Tensor:
    """The photos, which lie loose in their folder, as a one-class folder dataset."""
    with tempfile.TemporaryDirectory(prefix="tlcore-unknown-") as tmp:
        (Path(tmp) / "photos").mkdir()
        for p in sorted(photos.glob("*.jpg")):
            os.symlink(p, Path(tmp) / "photos" / p.name)
        return folder_logits(learner, tlcore.open_dataset(tmp))


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(a positive scores above a negative), ties counted half."""
    diff = positive[:, None] - negative[None, :]
    return float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())


def compare(score, val, test, cifar: torch.Tensor, photos: torch.Tensor) -> dict:
    (val_logits, val_labels), (test_logits, test_labels) = val, test
    val_score, test_score, cifar_score, photo_score = (score(x) for x in (val_logits, test_logits, cifar, photos))
    correct = val_logits.argmax(1) == val_labels
    row = {"auroc_vs_cifar10": round(auroc(val_score[correct], cifar_score), 4)}
    for keep in KEEPS:
        threshold = tlcore.calibration.keep_floor(val_score, correct, keep)
        answered = test_score >= threshold
        right = (test_logits.argmax(1) == test_labels) & answered
        row[f"keep_{keep}"] = {
            "test_answered": round(float(answered.double().mean()), 4),
            "test_accuracy_answered": round(float(right.sum() / max(1, int(answered.sum()))), 4),
            "cifar10_unknown": round(float((cifar_score < threshold).double().mean()), 4),
            "photos_unknown": f"{int((photo_score < threshold).sum())}/{len(photos)}"}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="10m")
    args = parser.parse_args()
    shared = shared_dir()
    result = tlcore.train_budget(shared / "data/flowers/train", args.budget,
                                 weights=shared / "weights/mobilenet_v2-imagenet-dequantized.pth", verbose=False)
    learner = result.learner
    val, test = (learner.logits(split)[:2] for split in ("val", "test"))
    cifar10 = tlcore.open_dataset(shared / "data/cifar10/train.tar.gz")
    cifar = folder_logits(learner, tlcore.Subset(cifar10, list(range(0, len(cifar10), len(cifar10) // 1000))))
    photos = photo_logits(learner, shared / "data/photos")
    scores = score_functions(result.calibration["temperature"])
    print(json.dumps({"benchmark": "unknown", "test_images": len(test[1]), "test_accuracy": round(result.accuracy, 4),
                      "temperature": round(result.calibration["temperature"], 4), "cifar10_images": len(cifar),
                      "scores": {name: compare(f, val, test, cifar, photos) for name, f in scores.items()}}))


if __name__ == "__main__":
    main()
