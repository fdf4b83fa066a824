"""Which score tells a flowers model's "unknown" images apart: the evidence for the default rule.

The flowers model of ``benchmarks/budget.py`` (``tlcore.train_budget``, the shared MobileNetV2,
10 minutes) is scored five ways: the calibrated top probability, the top probability at
temperature 1, the energy score (logsumexp of the logits, Liu et al. 2020: tlcore's rule), the
top logit, the cosine similarity of the image's embedding to its 10th nearest training
embedding (Sun et al. 2022: a score from the features, not the outputs), and the energy of the
logits of the embedding clipped at the 90th or 95th percentile of the training embeddings'
activations (ReAct, Sun et al. 2021: the clipped logits also classify, and
"clipped_test_accuracy" says what that costs), and the energy and the kNN cosine together (an
image is answered when it clears both floors, chosen by ``joint_floors``). For each, and for
several ``keep`` targets, the floor is chosen on the selection half of the validation split
(``keep`` of its correctly classified images at or above it), then applied to the untouched
half, to 1,000 CIFAR-10 images (no flowers among them: a stand-in for what users send that is
not a flower, used to compare the scores) and to ../shared/data/photos (the issue's check:
seven photos, none of them a flower).

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
from typing import Callable, Dict, List, Sequence, Tuple

import torch

import tlcore

from _common import shared_dir

KEEPS = (0.95, 0.97, 0.98)


# A set's (embeddings, logits, labels), all in dataset order.
Outputs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def clipped_logits(classifier: Tuple[torch.Tensor, torch.Tensor], train_embeddings: torch.Tensor,
                   percentile: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The linear head's logits of embeddings clipped at ``percentile`` of the training activations."""
    weight, bias = classifier
    clip = float(torch.quantile(train_embeddings.flatten()[::7], percentile / 100))  # a sample: quantile's limit
    return lambda e: e.clamp(max=clip) @ weight.T + bias


def score_functions(temperature: float, train_embeddings: torch.Tensor,
                    clipped: Dict[int, Callable[[torch.Tensor], torch.Tensor]],
                    k: int = 10) -> Dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]:
    """Higher means "more likely one of the classes"; each takes (embeddings, logits).
    ``clipped``: ReAct's logits by percentile (``clipped_logits``)."""
    train = torch.nn.functional.normalize(train_embeddings, dim=1)

    def knn(embeddings: torch.Tensor) -> torch.Tensor:
        similarity = torch.nn.functional.normalize(embeddings, dim=1) @ train.T
        return similarity.topk(k, dim=1).values[:, -1]

    return {
        "top_probability_calibrated": lambda e, lo: torch.softmax(lo / temperature, 1).max(1).values,
        "top_probability": lambda e, lo: torch.softmax(lo, 1).max(1).values,
        "energy": lambda e, lo: torch.logsumexp(lo, 1),
        "top_logit": lambda e, lo: lo.max(1).values,
        f"knn{k}_cosine": lambda e, lo: knn(e),
        f"energy_and_knn{k}": lambda e, lo: (torch.logsumexp(lo, 1), knn(e)),
        **{f"react{p}_energy": (lambda e, lo, f=f: torch.logsumexp(f(e), 1)) for p, f in clipped.items()},
    }


def linear_head(learner: "tlcore.Learner") -> Tuple[torch.Tensor, torch.Tensor]:
    """The classifier's weight and bias (the last layer of a linear head)."""
    state = learner.model.state_dict()
    name = [k for k, v in state.items() if k.endswith(".weight") and v.dim() == 2][-1]
    return state[name].float(), state[name[:-len("weight")] + "bias"].float()


def outputs(learner: "tlcore.Learner", dataset) -> Outputs:
    size = learner.data.image_size
    embed, classify = (learner.model.compile_for_inference(size, output=o) for o in ("embedding", "logits"))
    loader = tlcore.DataLoader(dataset, learner.data.eval_pipeline, batch_size=32, shuffle=False)
    parts = [(embed(x), classify(x), y) for x, y in loader]
    return tuple(torch.cat([p[i] for p in parts]) for i in range(3))


def photo_outputs(learner: "tlcore.Learner", photos: Path) -> Outputs:
    """The photos, which lie loose in their folder, as a one-class folder dataset."""
    with tempfile.TemporaryDirectory(prefix="tlcore-unknown-") as tmp:
        (Path(tmp) / "photos").mkdir()
        for p in sorted(photos.glob("*.jpg")):
            os.symlink(p, Path(tmp) / "photos" / p.name)
        return outputs(learner, tlcore.open_dataset(tmp))


def auroc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(a positive scores above a negative), ties counted half."""
    diff = positive[:, None] - negative[None, :]
    return float((diff > 0).double().mean() + 0.5 * (diff == 0).double().mean())


def clears(scores: Sequence[torch.Tensor], floors: Sequence[float]) -> torch.Tensor:
    """Whether each image is answered: at or above every floor."""
    return torch.stack([s >= f for s, f in zip(scores, floors)]).all(0)


def joint_floors(val_scores: Sequence[torch.Tensor], correct: torch.Tensor, keep: float) -> List[float]:
    """One floor per score, each keeping the same share of the correct images, that share the
    smallest whose floors together (an image is answered when it clears every floor) still keep
    ``keep`` of them: a bisection on the per-score share. One score: its ``keep_floor``."""
    def floors(share: float) -> List[float]:
        return [tlcore.calibration.keep_floor(s, correct, share) for s in val_scores]

    def kept(share: float) -> float:
        return float(clears(val_scores, floors(share))[correct].double().mean())

    if kept(keep) >= keep:
        return floors(keep)
    low, high = keep, 1.0
    for _ in range(30):
        middle = (low + high) / 2
        low, high = (low, middle) if kept(middle) >= keep else (middle, high)
    return floors(high)


def compare(score, val: Outputs, test: Outputs, cifar: Outputs, photos: Outputs) -> dict:
    """``score`` gives one tensor, or a tuple of them for a rule of several floors (``joint_floors``)."""
    def as_tuple(s):
        return s if isinstance(s, tuple) else (s,)

    val_score, test_score, cifar_score, photo_score = (as_tuple(score(s[0], s[1])) for s in (val, test, cifar, photos))
    correct = val[1].argmax(1) == val[2]
    row = {"auroc_vs_cifar10": round(auroc(val_score[0][correct], cifar_score[0]), 4)} if len(val_score) == 1 else {}
    for keep in KEEPS:
        floors = joint_floors(val_score, correct, keep)
        answered = clears(test_score, floors)
        right = (test[1].argmax(1) == test[2]) & answered
        row[f"keep_{keep}"] = {
            "test_answered": round(float(answered.double().mean()), 4),
            "test_accuracy_answered": round(float(right.sum() / max(1, int(answered.sum()))), 4),
            "cifar10_unknown": round(float((~clears(cifar_score, floors)).double().mean()), 4),
            "photos_unknown": f"{int((~clears(photo_score, floors)).sum())}/{len(photo_score[0])}"}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="10m")
    args = parser.parse_args()
    shared = shared_dir()
    result = tlcore.train_budget(shared / "data/flowers/train", args.budget,
                                 weights=shared / "weights/mobilenet_v2-imagenet-dequantized.pth", verbose=False)
    learner, data = result.learner, result.learner.data
    train, val, test = (outputs(learner, ds) for ds in (data.train, data.val, data.test))
    cifar10 = tlcore.open_dataset(shared / "data/cifar10/train.tar.gz")
    cifar = outputs(learner, tlcore.Subset(cifar10, list(range(0, len(cifar10), len(cifar10) // 1000))))
    photos = photo_outputs(learner, shared / "data/photos")
    clipped = {p: clipped_logits(linear_head(learner), train[0], p) for p in (90, 95)}
    scores = score_functions(result.calibration["temperature"], train[0], clipped)
    clipped_accuracy = {f"react{p}": round(float((f(test[0]).argmax(1) == test[2]).double().mean()), 4)
                        for p, f in clipped.items()}
    print(json.dumps({"benchmark": "unknown", "test_images": len(test[2]), "test_accuracy": round(result.accuracy, 4),
                      "temperature": round(result.calibration["temperature"], 4), "cifar10_images": len(cifar[2]),
                      "clipped_test_accuracy": clipped_accuracy,
                      "scores": {name: compare(f, val, test, cifar, photos) for name, f in scores.items()}}))


if __name__ == "__main__":
    main()
