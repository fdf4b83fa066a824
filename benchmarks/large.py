"""Data larger than memory: tar shards read in place against the same images as a folder.

Writes a synthetic set of real JPEGs (class-coloured noise, --size px) to a temporary
folder twice, as WebDataset tar shards (key.jpg + key.cls) and as class folders. Then,
each in a fresh process so that its peak resident memory is its own:
- the shards: first open (indexing); a second open once indexed, the first batch and an
  epoch of loading; --train-steps training steps of a small CNN (tlcore's trainer);
- the folder: open and an epoch of loading, with the same pipeline and batch size.
Loading epochs alternate (folder, shards, folder, shards) and each keeps its best, so
the page cache favours neither. Prints one JSON line ending with "peak_rss_mb" (the
largest of the shard processes: indexing, loading, training) and "ratio" (shard / folder
images per second of loading).

With --compress gz (or zst) the shards are compressed whole (.tar.gz, .tar.zst) and
stream front to back instead of being read in place.

Usage: .venv/bin/python benchmarks/large.py [--images 200000] [--shards 1000] [--compress gz]
       .venv/bin/python benchmarks/large.py --images 1000000 --shards 100   # 1 M, ~27 MB shards
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = 10


def jpeg(rng: np.random.Generator, label: int, size: int) -> bytes:
    """A real JPEG: class-coloured smooth noise, so a CNN has something to learn."""
    base = np.array([(label * 25) % 256, (label * 70) % 256, (255 - label * 25) % 256])
    noise = rng.integers(-60, 60, (size // 8, size // 8, 3))
    tile = np.kron(noise, np.ones((8, 8, 1)))[:size, :size]
    pixels = np.clip(base + tile + rng.integers(-20, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_data(root: Path, images: int, shards: int, size: int) -> int:
    """The same images as shards (root/shards) and class folders (root/folder); bytes written."""
    rng = np.random.default_rng(0)
    (root / "shards").mkdir()
    for c in range(CLASSES):
        (root / "folder" / f"class{c}").mkdir(parents=True)
    per_shard = -(-images // shards)
    total = 0
    for s in range(shards):
        with tarfile.open(root / "shards" / f"train-{s:06d}.tar", "w") as tar:
            for k in range(s * per_shard, min(images, (s + 1) * per_shard)):
                label = int(rng.integers(CLASSES))
                data = jpeg(rng, label, size)
                add(tar, f"{k:09d}.jpg", data)
                add(tar, f"{k:09d}.cls", str(label).encode())
                (root / "folder" / f"class{label}" / f"{k:09d}.jpg").write_bytes(data)
                total += len(data)
    return total


def compress_shards(folder: Path, kind: str) -> None:
    """Replaces each shard with its compressed self (train-N.tar.gz or .tar.zst)."""
    for shard in sorted(folder.glob("*.tar")):
        if kind == "gz":
            shard.with_name(shard.name + ".gz").write_bytes(gzip.compress(shard.read_bytes(), 6))
        else:
            subprocess.run(["zstd", "-q", "--rm", str(shard)], check=True)
        shard.unlink(missing_ok=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_epoch(ds, size: int, batch: int) -> float:
    """Images per second of one epoch of loading (decode, eval pipeline, batches)."""
    import tlcore

    loader = tlcore.DataLoader(ds, tlcore.Pipeline.preset("cifar-eval", size, 3), batch_size=batch)
    start, n = time.perf_counter(), 0
    for images, _ in loader:
        n += len(images)
    return n / (time.perf_counter() - start)


def phase_index(args) -> dict:
    import tlcore

    start = time.perf_counter()
    ds = tlcore.open_shards(args.data / "shards", index_dir=args.data / "index")
    return {"index_s": time.perf_counter() - start, "indexed": ds.stats["indexed"],
            "peak_rss_mb": peak_rss_mb()}


def phase_shards(args) -> dict:
    import tlcore

    start = time.perf_counter()
    ds = tlcore.open_shards(args.data / "shards", index_dir=args.data / "index")
    opened = time.perf_counter() - start
    loader = tlcore.DataLoader(ds, tlcore.Pipeline.preset("cifar-train", args.size, 3),
                               batch_size=args.batch)
    next(iter(loader))
    first_batch = time.perf_counter() - start
    return {"open_s": opened, "first_batch_s": first_batch, "reindexed": ds.stats["indexed"],
            "img_s": load_epoch(ds, args.size, args.batch), "peak_rss_mb": peak_rss_mb()}


def phase_train(args) -> dict:
    """--train-steps steps of a small CNN (tlcore's trainer): one epoch over a per-class
    sample of the shards (read shard by shard like the whole set)."""
    import tlcore

    ds = tlcore.open_shards(args.data / "shards", index_dir=args.data / "index")
    per_class = -(-args.train_steps * args.train_batch // CLASSES)
    data = tlcore.ImageData(ds, val_split=0, image_size=args.size, batch_size=args.train_batch,
                            per_class=per_class,
                            train_transform="cifar-train", eval_transform="cifar-eval")
    learner = tlcore.Learner("simple_cnn", data, verbose=False)
    steps = []
    start = time.perf_counter()
    learner.fit(1, lr=1e-3, on_batch=lambda b, n, loss: steps.append(loss))
    elapsed = time.perf_counter() - start
    return {"train_steps": len(steps), "train_img_s": len(steps) * args.train_batch / elapsed,
            "train_loss_first": steps[0] if steps else None,
            "train_loss_last": steps[-1] if steps else None, "peak_rss_mb": peak_rss_mb()}


def phase_folder(args) -> dict:
    import tlcore

    start = time.perf_counter()
    ds = tlcore.open_dataset(args.data / "folder")
    return {"open_s": time.perf_counter() - start, "img_s": load_epoch(ds, args.size, args.batch),
            "peak_rss_mb": peak_rss_mb()}


def run_phase(name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--phase", name, "--data", str(args.data), "--size", str(args.size),
           "--batch", str(args.batch), "--train-batch", str(args.train_batch),
           "--train-steps", str(args.train_steps)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", type=int, default=200_000)
    p.add_argument("--shards", type=int, default=1000)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--train-batch", type=int, default=64)
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--compress", choices=["none", "gz", "zst"], default="none",
                   help="compress each shard whole: streamed, not read in place")
    p.add_argument("--keep", type=Path, default=None, help="write the data here and keep it")
    p.add_argument("--phase", choices=["index", "shards", "train", "folder"], help=argparse.SUPPRESS)
    p.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.phase:
        phases = {"index": phase_index, "shards": phase_shards, "train": phase_train,
                  "folder": phase_folder}
        print(json.dumps(phases[args.phase](args)))
        return

    args.data = args.keep or Path(tempfile.mkdtemp(prefix="tlcore-large-"))
    try:
        start = time.perf_counter()
        written = write_data(args.data, args.images, args.shards, args.size)
        if args.compress != "none":
            compress_shards(args.data / "shards", args.compress)
        write_s = time.perf_counter() - start
        index = run_phase("index", args)
        folder = [run_phase("folder", args)]
        shards = [run_phase("shards", args)]
        folder.append(run_phase("folder", args))
        shards.append(run_phase("shards", args))
        trained = run_phase("train", args)
        shard_img_s = max(r["img_s"] for r in shards)
        folder_img_s = max(r["img_s"] for r in folder)
        result = {
            "images": args.images, "shards": args.shards, "size_px": args.size,
            "compress": args.compress,
            "shard_mb": round(sum(f.stat().st_size for f in (args.data / "shards").iterdir()) / 2**20, 1),
            "data_mb": round(written / 2**20, 1), "write_s": round(write_s, 1),
            "index_s": round(index["index_s"], 3),
            "open_s": round(min(r["open_s"] for r in shards), 3),
            "first_batch_s": round(min(r["first_batch_s"] for r in shards), 3),
            "folder_open_s": round(min(r["open_s"] for r in folder), 3),
            "train_steps": trained["train_steps"], "train_img_s": round(trained["train_img_s"], 1),
            "train_loss_first": round(trained["train_loss_first"], 3),
            "train_loss_last": round(trained["train_loss_last"], 3),
            "train_peak_rss_mb": round(trained["peak_rss_mb"], 1),
            "load_peak_rss_mb": round(max(r["peak_rss_mb"] for r in shards), 1),
            "shard_img_s": round(shard_img_s, 1), "folder_img_s": round(folder_img_s, 1),
            "folder_peak_rss_mb": round(max(r["peak_rss_mb"] for r in folder), 1),
            "peak_rss_mb": round(max([index["peak_rss_mb"], trained["peak_rss_mb"]] +
                                     [r["peak_rss_mb"] for r in shards]), 1),
            "ratio": round(shard_img_s / folder_img_s, 3),
        }
        print(json.dumps(result))
    finally:
        if args.keep is None:
            shutil.rmtree(args.data, ignore_errors=True)


if __name__ == "__main__":
    main()
