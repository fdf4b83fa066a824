"""Images/s of tlcore's C++ loader vs torchvision ImageFolder + DataLoader (PIL).

Same transforms, batch size and number of cores, side by side in one run:
flowers (imagenet-train, 224 px, batch 64) and the CIFAR-10 archive (cifar-train).
Prints one JSON line; "ratio" (flowers, tlcore / torchvision) last.

Usage: .venv/bin/python benchmarks/loader.py [--repeats 3] [--cifar-limit 20000]
"""
from __future__ import annotations

import argparse
import io
import json
import tarfile

import torch
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets import ImageFolder

import tlcore

from _common import median_time, shared_dir

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
CIFAR = ([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616])


class TarImages(Dataset):
    """ImageFolder layout inside a tar archive, decoded with PIL (torchvision has no such class)."""

    def __init__(self, path: str, transform, limit: int) -> None:
        self.samples, classes = [], {}
        with tarfile.open(path) as tar:
            for m in tar:
                if m.isfile() and m.name.lower().endswith(".jpg"):
                    cls = m.name.split("/")[-2]
                    classes.setdefault(cls, len(classes))
                    self.samples.append((tar.extractfile(m).read(), classes[cls]))
        self.samples = self.samples[:limit]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i):
        data, label = self.samples[i]
        return self.transform(Image.open(io.BytesIO(data)).convert("RGB")), label


def drain(loader) -> int:
    n = 0
    for images, _ in loader:
        n += images.shape[0]
    return n


def compare(name, tv_dataset, tl_dataset, preset, size, batch, cores, repeats):
    tv_loader = DataLoader(tv_dataset, batch_size=batch, shuffle=True, num_workers=cores)
    tl_loader = tlcore.DataLoader(tl_dataset, preset, image_size=size, batch_size=batch,
                                  shuffle=True, num_workers=cores, seed=0)
    n = len(tv_dataset)
    assert drain(tl_loader) == n == len(tl_dataset)
    tv = n / median_time(lambda: drain(tv_loader), repeats)
    tl = n / median_time(lambda: drain(tl_loader), repeats)
    return {"images": n, "tlcore_img_s": round(tl, 1), "torchvision_img_s": round(tv, 1),
            "ratio": round(tl / tv, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cifar-limit", type=int, default=20000,
                        help="images of the CIFAR archive per epoch (both loaders)")
    args = parser.parse_args()
    shared = shared_dir()
    cores = tlcore.available_cores()
    torch.set_num_threads(cores)

    flowers = shared / "data" / "flowers" / "train"
    tv_flowers = ImageFolder(str(flowers), T.Compose([
        T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(*IMAGENET)]))
    result = {"cores": cores}
    result["flowers"] = compare("flowers", tv_flowers, tlcore.open_dataset(flowers),
                                "imagenet-train", 224, 64, cores, args.repeats)

    archive = shared / "data" / "cifar10" / "train.tar.gz"
    tv_cifar = TarImages(str(archive), T.Compose([
        T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(*CIFAR)]),
        args.cifar_limit)
    tl_cifar = tlcore.Subset(tlcore.open_dataset(archive), list(range(len(tv_cifar))))
    result["cifar10"] = compare("cifar10", tv_cifar, tl_cifar, "cifar-train", 32, 256, cores,
                                args.repeats)
    result["ratio"] = result["flowers"]["ratio"]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
