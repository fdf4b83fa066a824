"""The CUDA path: tlcore's loader -> GPU pipeline and fine-tuning epochs vs torchvision.

In one process, on one GPU, over the same folder of JPEGs (default: ../shared's flowers):

- loader: images/s delivered to the GPU as normalised float batches (RandomResizedCrop 224 +
  flip). tlcore: C++ loader, uint8 batches in pinned memory, copied asynchronously and
  normalised on the GPU. torchvision: ImageFolder + DataLoader (PIL, ``--workers`` processes,
  pin_memory), normalised on the CPU.
- fine-tuning: the median of ``--epochs`` epochs (after a warm-up epoch, also reported) of
  mobilenet_v2 and resnet50 at 224 px, every layer trained with Adam, AMP off and on (bf16
  autocast), channels_last for tlcore. The plain loop runs torchvision's model eagerly on the
  DataLoader above, with torch.autocast for AMP.

Prints one JSON line; "ratio" (the minimum over the fine-tuning runs of tlcore images/s /
torchvision images/s) last.

Usage: python benchmarks/gpu.py [--data DIR] [--batch-size 64] [--workers 8]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch
import torchvision
from torchvision import transforms

import tlcore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO  # noqa: E402

log = logging.getLogger("gpu")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_loader(root: Path, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    tf = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                             transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    ds = torchvision.datasets.ImageFolder(str(root), tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                                       pin_memory=True, drop_last=True, persistent_workers=True)


def tlcore_data(root: Path, batch_size: int, workers: int) -> tlcore.ImageData:
    return tlcore.ImageData(root, val_split=0, image_size=224, batch_size=batch_size, num_workers=workers)


def loader_rate_tlcore(data: tlcore.ImageData) -> float:
    loader = data.loader("train", for_gpu=True)
    mean = torch.tensor(MEAN, device="cuda").view(1, 3, 1, 1)
    std = torch.tensor(STD, device="cuda").view(1, 3, 1, 1)
    for images, _ in loader:  # warm-up epoch
        images.cuda(non_blocking=True)
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 0
    for images, _ in loader:
        x = images.cuda(non_blocking=True).float().div_(255).sub_(mean).div_(std)
        n += x.shape[0]
    torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def loader_rate_torchvision(loader) -> float:
    for images, _ in loader:
        images.cuda(non_blocking=True)
    torch.cuda.synchronize()
    start, n = time.perf_counter(), 0
    for images, _ in loader:
        x = images.cuda(non_blocking=True)
        n += x.shape[0]
    torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def _summary(first_seconds: float, seconds: List[float], images: int) -> Dict[str, float]:
    median = statistics.median(seconds)
    return {"images_per_s": round(images / median, 1), "seconds": round(median, 3),
            "first_epoch_seconds": round(first_seconds, 2)}


def epoch_tlcore(arch: str, data: tlcore.ImageData, amp: bool, epochs: int) -> Dict[str, float]:
    learner = tlcore.Learner(arch, data, device="cuda", amp="bf16" if amp else "off", verbose=False)
    start = time.perf_counter()
    learner.fit(1, lr=1e-4)  # warm-up: cuDNN picks its algorithms
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    rows = learner.fit(epochs, lr=1e-4)
    images = round(rows[-1]["images_per_second"] * rows[-1]["seconds"])
    return _summary(first, [r["seconds"] for r in rows], images)


def epoch_torchvision(arch: str, loader, classes: int, amp: bool, epochs: int) -> Dict[str, float]:
    model = getattr(torchvision.models, arch)(num_classes=classes).cuda().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def epoch() -> None:
        for images, labels in loader:
            images, labels = images.cuda(non_blocking=True), labels.cuda(non_blocking=True)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                loss = torch.nn.functional.cross_entropy(model(images), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def timed() -> float:
        start = time.perf_counter()
        epoch()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    first = timed()
    images = len(loader) * loader.batch_size  # drop_last: every batch is full
    return _summary(first, [timed() for _ in range(epochs)], images)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(REPO.parent / "shared/data/flowers/train"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--archs", default="mobilenet_v2,resnet50")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up (median)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA device (torch.cuda.is_available() is False)")
    root = Path(args.data)
    torch.backends.cudnn.benchmark = True
    tv_loader = torchvision_loader(root, args.batch_size, args.workers)
    data = tlcore_data(root, args.batch_size, args.workers)
    result: Dict[str, object] = {
        "benchmark": "gpu", "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "images": len(data.train), "batch_size": args.batch_size, "workers": args.workers,
        "cpu_cores": os.cpu_count(),
    }
    loader = {"tlcore": round(loader_rate_tlcore(data), 1), "torchvision": round(loader_rate_torchvision(tv_loader), 1)}
    loader["ratio"] = round(loader["tlcore"] / loader["torchvision"], 2)
    result["loader_to_gpu_images_per_s"] = loader
    log.info("loader -> GPU: %s", loader)
    ratios = []
    runs = {}
    for arch in args.archs.split(","):
        for amp in (False, True):
            key = f"{arch}_{'bf16' if amp else 'fp32'}"
            ours = epoch_tlcore(arch, data, amp, args.epochs)
            theirs = epoch_torchvision(arch, tv_loader, len(data.classes), amp, args.epochs)
            ratio = ours["images_per_s"] / theirs["images_per_s"]
            ratios.append(ratio)
            runs[key] = {"tlcore": ours, "torchvision": theirs, "ratio": round(ratio, 2)}
            log.info("%s: %s", key, runs[key])
    result["finetune_epoch"] = runs
    result["ratio"] = round(min(ratios), 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
