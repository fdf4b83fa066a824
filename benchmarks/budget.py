"""Budgeted training on real data: accuracy on images no choice saw, within the time budget.

One command per dataset, as a user runs it (``tlcore.train_budget``, the library's planner):
- flowers: ../shared/data/flowers/train, the shared ImageNet MobileNetV2, 10 minutes;
- cifar10: ../shared/data/cifar10/train.tar.gz, the same weights, 30 minutes;
- fashion: Debian's Fashion-MNIST, the simple CNN from scratch, 10 minutes; its official test
  set is the untouched split (``test=``).
Without a separate test set, half of the stratified validation split (seed 42) is held out:
epochs, TTA, temperature and the "unknown" rule are chosen on the other half, never on it.

Prints one JSON line per dataset: budget, wall time, accuracy on the untouched split with and
without flip TTA, calibration (ECE before/after temperature scaling, the energy floor, the share
of the split called unknown) and the plan. For flowers also how many of ../shared/data/photos
(none of them a flower) the saved model calls "unknown".

Usage: .venv/bin/python benchmarks/budget.py [--data flowers cifar10 fashion] [--budget 10m]
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import tlcore

from _common import shared_dir

BUDGETS = {"flowers": "10m", "cifar10": "30m", "fashion": "10m"}


def _photos_unknown(model_path: Path, photos: Path) -> dict:
    clf = tlcore.load(model_path)
    answers = [clf.predict(str(p)) for p in sorted(photos.glob("*.jpg"))]
    return {"photos": len(answers), "photos_unknown": sum(a["unknown"] for a in answers),
            "photo_answers": [f"{a['prediction']} {a['confidence']:.2f} energy {a['energy']:.2f}" for a in answers]}


def _keep_table(result, model_path: Path, photos: Path) -> list:
    """For other ``keep`` targets: the energy floor validation gives, the share of the untouched
    split still answered, and the photos (no flowers among them) called unknown."""
    learner, calibration = result.learner, tlcore.calibration
    (val_logits, val_labels, _), (test_logits, test_labels, _) = learner.logits("val"), learner.logits("test")
    val_probs, val_energy = calibration.scores(val_logits, learner.temperature)
    test_probs, test_energy = calibration.scores(test_logits, learner.temperature)
    _, photo_energy = tlcore.load(model_path).predict_scores([str(p) for p in sorted(photos.glob("*.jpg"))])
    rows = []
    for keep in (0.9, 0.95, 0.98, 0.99):
        floor = calibration.keep_floor(val_energy, val_probs.argmax(1) == val_labels, keep)
        scores = calibration.unknown_scores(test_probs, test_energy, test_labels, 0.0, floor)
        rows.append({"keep": keep, "min_energy": round(floor, 4), "test_answered": round(1 - scores["unknown_share"], 4),
                     "test_accuracy_answered": round(scores["accuracy_answered"], 4),
                     "photos_unknown": int((photo_energy < floor).sum())})
    return rows


def run(name: str, budget: Optional[str] = None) -> dict:
    """Trains ``name`` under its budget and returns the benchmark's JSON row."""
    shared = shared_dir()
    weights = shared / "weights" / "mobilenet_v2-imagenet-dequantized.pth"
    budget = budget or BUDGETS[name]
    start = time.perf_counter()
    if name == "flowers":
        result = tlcore.train_budget(shared / "data/flowers/train", budget, weights=weights)
    elif name == "cifar10":
        result = tlcore.train_budget(shared / "data/cifar10/train.tar.gz", budget, weights=weights, val_split=0.1)
    else:
        result = tlcore.train_budget(tlcore.fashion_mnist(train=True), budget, arch="simple_cnn",
                                     test=tlcore.fashion_mnist(train=False), val_split=0.1, channels=1)
    wall = time.perf_counter() - start
    row = {"benchmark": "budget", "data": name, "budget_s": result.plan.budget_s, "wall_s": round(wall, 1),
           "within_budget": wall <= max(result.plan.budget_s * 1.05, result.plan.budget_s + 30),
           "test_images": result.test.num_samples, "test_accuracy": round(result.test.accuracy, 4),
           "test_accuracy_tta": round(result.test_tta.accuracy, 4) if result.test_tta else None, "tta_chosen": result.tta, "eval_size": result.eval_size,
           "accuracy": round(result.accuracy, 4),
           "calibration": {k: round(v, 4) if isinstance(v, float) else v for k, v in result.calibration.items()},
           "test_unknown_share": round(result.test.extra["unknown_share"], 4),
           "test_accuracy_answered": round(result.test.extra["accuracy_answered"], 4),
           "splits": result.splits,
           "plan": {k: v for k, v in result.to_dict()["plan"].items() if k != "estimate_s"},
           "epochs_run": len(result.learner.history)}
    if name == "flowers":
        with tempfile.TemporaryDirectory() as tmp:
            path = result.learner.save(Path(tmp) / "flowers.tlc")
            row.update(_photos_unknown(path, shared / "data/photos"))
            row["keep_table"] = _keep_table(result, path, shared / "data/photos")
    return row


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=list(BUDGETS), choices=list(BUDGETS))
    p.add_argument("--budget", default=None, help="override every dataset's budget (e.g. 2m for a smoke run)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in args.data:
        print(json.dumps(run(name, args.budget)), flush=True)


if __name__ == "__main__":
    main()
