"""Epoch time of tlcore's trainer vs a plain PyTorch loop, and a head epoch with vs without feature caching.

The recipe of the workshops' second phase: ImageNet-pretrained mobilenet_v2, a new 5-class head,
the last 3 blocks and the head fine-tuned with Adam on ../shared/data/flowers/train at 160 px with
augmentation (RandomResizedCrop + flip), the other blocks frozen (their BatchNorm in eval mode).

- plain: torchvision ImageFolder + DataLoader (PIL, 2 workers) + torchvision's model in eager mode.
- tlcore: the C++ loader and trainer (channels_last; the frozen blocks run as a compiled inference
  graph and only the tail under autograd).
Both see the same training images and the same threads, and are scored on the same held-out
validation images. Then a head-only epoch (backbone frozen, no augmentation) with and without
feature caching, and a cached-tail fine-tuning epoch (the last 3 or 7 blocks + head on cached
features) in fp32 and in bf16 (autocast, a bf16 compiled prefix and a bf16 cache; "bf16_speedup"),
the two taking turns. Prints one JSON line; "ratio" (tlcore epoch time / plain epoch time) last.

Usage: .venv/bin/python benchmarks/train.py [--train-images 640] [--size 160]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torchvision
import torchvision.transforms as T
from torch.utils.data import DataLoader, Subset

import tlcore

from _common import shared_dir

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def plain_loop(root, train_idx, val_idx, weights, size, batch, lr, classes) -> dict:
    torch.manual_seed(0)
    train_tf = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(MEAN, STD)])
    eval_tf = T.Compose([T.Resize(size * 256 // 224), T.CenterCrop(size), T.ToTensor(),
                         T.Normalize(MEAN, STD)])
    train = DataLoader(Subset(torchvision.datasets.ImageFolder(root, train_tf), train_idx),
                       batch_size=batch, shuffle=True, num_workers=2, drop_last=False)
    val = DataLoader(Subset(torchvision.datasets.ImageFolder(root, eval_tf), val_idx),
                     batch_size=64, num_workers=2)
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.classifier[1] = torch.nn.Linear(model.last_channel, classes)
    for p in model.parameters():
        p.requires_grad = False
    trainable = list(model.features[16:].parameters()) + list(model.classifier.parameters())
    for p in trainable:
        p.requires_grad = True
    opt = torch.optim.Adam(trainable, lr=lr)
    model.train()
    model.features[:16].eval()  # frozen BatchNorm keeps its running statistics (Keras' recipe)
    start = time.perf_counter()
    seen = 0
    for x, y in train:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(y)
    seconds = time.perf_counter() - start
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in val:
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    return {"epoch_s": round(seconds, 2), "images_per_s": round(seen / seconds, 1),
            "val_accuracy": round(correct / total, 4)}


def tlcore_finetune(data, weights, lr) -> dict:
    learner = tlcore.Learner("mobilenet_v2", data, weights=weights, verbose=False, seed=0)
    learner.model.unfreeze_last(3)
    val, data.val = data.val, None  # time the training pass alone, as in the plain loop
    try:
        row = learner.fit(1, lr=lr, phase="finetune")[0]
    finally:
        data.val = val
    report = learner.evaluate()
    return {"epoch_s": round(row["seconds"], 2), "images_per_s": round(row["images_per_second"], 1),
            "val_accuracy": round(report.accuracy, 4)}


def head_epochs(data, weights, epochs) -> dict:
    learner = tlcore.Learner("mobilenet_v2", data, weights=weights, verbose=False, seed=0)
    learner.model.freeze_backbone()
    start = time.perf_counter()
    slow = learner.fit(1, lr=1e-3, phase="head", augment=False, cache_features=False)[0]
    slow_call = time.perf_counter() - start
    learner = tlcore.Learner("mobilenet_v2", data, weights=weights, verbose=False, seed=0)
    learner.model.freeze_backbone()
    start = time.perf_counter()
    cached = learner.fit(epochs, lr=1e-3, phase="head", cache_features=True)
    cached_call = time.perf_counter() - start
    cached_epoch = sorted(r["seconds"] for r in cached)[len(cached) // 2]
    return {"uncached_epoch_s": round(slow["seconds"], 3), "uncached_call_s": round(slow_call, 2),
            "cached_epoch_s": round(cached_epoch, 4), "cached_call_s": round(cached_call, 2),
            "cached_epochs": epochs, "feature_pass_s": round(cached_call - sum(r["seconds"] for r in cached), 2),
            "speedup": round(slow["seconds"] / cached_epoch, 1)}


def cached_tail_epochs(data, weights, epochs, blocks, rounds) -> dict:
    """Fine-tuning the last ``blocks`` blocks and the head on cached features of the frozen prefix,
    in fp32 and in bf16. The two take turns, ``epochs`` epochs a round (each fit caches again), so
    that a machine slowing down for a while slows both; the median epoch of each."""
    learners = {amp: tlcore.Learner("mobilenet_v2", data, weights=weights, verbose=False, seed=0, amp=amp)
                for amp in ("off", "bf16")}
    for learner in learners.values():
        learner.model.unfreeze_last(blocks)
    seconds = {amp: [] for amp in learners}
    for _ in range(rounds):
        for amp, learner in learners.items():
            rows = learner.fit(epochs, lr=1e-3, phase="finetune", augment=False, cache_features=True)
            seconds[amp] += [r["seconds"] for r in rows]
    runs = {amp: {"epoch_s": round(statistics.median(seconds[amp]), 3),
                  "val_accuracy": round(learner.evaluate().accuracy, 4)} for amp, learner in learners.items()}
    runs["bf16_speedup"] = round(runs["off"]["epoch_s"] / runs["bf16"]["epoch_s"], 2)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=640)
    parser.add_argument("--val-images", type=int, default=320)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="turns of fp32 and bf16 cached-tail training")
    args = parser.parse_args()

    shared = shared_dir()
    root = shared / "data" / "flowers" / "train"
    weights = shared / "weights" / "mobilenet_v2-imagenet-dequantized.pth"
    tlcore.set_num_threads(0)
    torch.set_num_threads(tlcore.num_threads())

    full = tlcore.open_dataset(root)
    train_idx, val_idx = tlcore.stratified_split(full.labels(), 0.2, 0)
    train_idx, val_idx = list(train_idx[: args.train_images]), list(val_idx[: args.val_images])
    data = tlcore.ImageData(full, image_size=args.size, batch_size=args.batch, seed=0,
                            valid=tlcore.Subset(full, val_idx))
    data.train = tlcore.Subset(full, train_idx)

    plain = plain_loop(str(root), train_idx, val_idx, str(weights), args.size, args.batch, args.lr,
                       len(full.classes))
    ours = tlcore_finetune(data, weights, args.lr)
    head = head_epochs(data, weights, args.head_epochs)
    tail = {}
    for blocks in (3, 7):  # the workshop's tail, and the budget planner's (40% of the blocks)
        tail[f"{blocks}_blocks"] = cached_tail_epochs(data, weights, args.head_epochs, blocks, args.rounds)
    print(json.dumps({
        "train_images": len(train_idx), "val_images": len(val_idx), "image_size": args.size,
        "threads": torch.get_num_threads(), "plain": plain, "tlcore": ours, "head": head,
        "head_cache_speedup": head["speedup"], "cached_tail": tail,
        "ratio": round(ours["epoch_s"] / plain["epoch_s"], 3),
    }))


if __name__ == "__main__":
    main()
