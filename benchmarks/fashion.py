"""Fashion-MNIST with the simple CNN from scratch: test-set accuracy and time.

Data: Debian's dataset-fashion-mnist (60,000 training images; the 10,000 test images are
only evaluated on, never trained on). Model: tlcore's simple CNN (3 conv-BN-ReLU blocks of
32/64/128 channels with max pooling, global average pooling, dropout + linear head), random
init; ``--depths 1,2,2`` adds a second convolution to the last two blocks. Training: AdamW
with a one-cycle schedule; no augmentation by default (``--transform cifar-train`` adds random
crop and flip, which left this small model underfitting: 90.3%).

Prints one JSON line: test accuracy per epoch, macro F1, seconds.

Usage: .venv/bin/python benchmarks/fashion.py [--epochs 15] [--lr 3e-3] [--depths 1,2,2]
"""
from __future__ import annotations

import argparse
import json
import logging
import time

import tlcore


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--widths", default="32,64,128", help="channels of the conv blocks")
    p.add_argument("--depths", default="1,1,1", help="convolutions per block")
    p.add_argument("--transform", default="cifar-eval", help="training preset (cifar-eval: none)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    data = tlcore.ImageData(tlcore.fashion_mnist(train=True), valid=tlcore.fashion_mnist(train=False), seed=0,
                            image_size=28, batch_size=args.batch, channels=1, train_transform=args.transform,
                            eval_transform="cifar-eval")
    widths = [int(w) for w in args.widths.split(",")]
    depths = [int(d) for d in args.depths.split(",")]
    learner = tlcore.Learner("simple_cnn", data, seed=0, widths=widths, depths=depths)
    start = time.perf_counter()
    rows = learner.fit(args.epochs, lr=args.lr, optimizer="adamw", weight_decay=args.weight_decay,
                       schedule="onecycle", restore_best=False)
    seconds = time.perf_counter() - start
    report = learner.evaluate()
    print(json.dumps({
        "benchmark": "fashion-mnist", "model": "simple_cnn", "widths": widths, "depths": depths, "transform": args.transform, "params": learner.model.parameter_count,
        "train_images": len(data.train), "test_images": len(data.val), "epochs": args.epochs,
        "test_accuracy_per_epoch": [round(r["val_accuracy"], 4) for r in rows],
        "seconds_per_epoch": round(seconds / max(1, args.epochs), 1), "train_seconds": round(seconds, 1),
        "test_accuracy": round(report.accuracy, 4), "test_macro_f1": round(report.macro["f1"], 4),
    }))


if __name__ == "__main__":
    main()
