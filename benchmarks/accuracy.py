"""Real transfer on real data: validation accuracy and time of the two-phase recipe.

flowers: ../shared/data/flowers/train (5 classes), stratified 80/20 split (seed 0, the validation
images are never trained on), ImageNet-pretrained mobilenet_v2 from
../shared/weights/mobilenet_v2-imagenet-dequantized.pth. Phase 1 trains the head on cached
embeddings (backbone frozen); phase 2 fine-tunes the last blocks with augmentation.
Prints one JSON line with the accuracy after each phase and the seconds each took.

Usage: .venv/bin/python benchmarks/accuracy.py [--size 224] [--head-epochs 20] [--finetune-epochs 5]
"""
from __future__ import annotations

import argparse
import json
import time

import tlcore

from _common import shared_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--head-epochs", type=int, default=20)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--unfreeze", type=int, default=3)
    args = parser.parse_args()

    shared = shared_dir()
    weights = shared / "weights" / "mobilenet_v2-imagenet-dequantized.pth"
    data = tlcore.ImageData(shared / "data" / "flowers" / "train", val_split=0.2, seed=0,
                            image_size=args.size, batch_size=args.batch)
    learner = tlcore.Learner("mobilenet_v2", data, weights=weights, verbose=False, seed=0)
    start = time.perf_counter()
    learner.fit_head(args.head_epochs, lr=args.head_lr)
    head_s = time.perf_counter() - start
    frozen = learner.evaluate()
    start = time.perf_counter()
    learner.fine_tune(args.finetune_epochs, lr=args.finetune_lr, unfreeze=args.unfreeze,
                      schedule="cosine")
    finetune_s = time.perf_counter() - start
    tuned = learner.evaluate()
    print(json.dumps({
        "data": "flowers", "train_images": len(data.train), "val_images": len(data.val),
        "image_size": args.size, "threads": tlcore.num_threads(),
        "recipe": {"head_epochs": args.head_epochs, "head_lr": args.head_lr,
                   "finetune_epochs": args.finetune_epochs, "finetune_lr": args.finetune_lr,
                   "unfreeze": args.unfreeze},
        "head_s": round(head_s, 1), "frozen_val_accuracy": round(frozen.accuracy, 4),
        "finetune_s": round(finetune_s, 1), "finetuned_val_accuracy": round(tuned.accuracy, 4),
        "finetuned_macro_f1": round(tuned.macro["f1"], 4),
    }))


if __name__ == "__main__":
    main()
