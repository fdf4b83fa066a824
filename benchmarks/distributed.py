"""Data-parallel scaling: epoch time of 1 rank vs 2 ranks (torch.distributed, Gloo), 1 thread each.

The workload is the fine-tuning step of the transfer recipe: the ImageNet MobileNetV2 from
../shared with its last 3 blocks and a new head trained on flower photos at 160 px (Adam,
augmentation, the frozen prefix compiled), the same global batch of 32 for both: 1 rank x 32,
or 2 ranks x 16. Each run trains 2 epochs; the second epoch's time is reported.

Prints one JSON line; "efficiency" (2-rank images/s divided by twice the 1-rank images/s) last.

Usage: python benchmarks/distributed.py [--images 2000] [--size 160]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, shared_dir  # noqa: E402

log = logging.getLogger("distributed")
WEIGHTS = "weights/mobilenet_v2-imagenet-dequantized.pth"


def worker(args: argparse.Namespace) -> None:
    """One rank (or the single process): fine-tune, write the history (rank 0)."""
    import tlcore

    root = shared_dir()
    data = tlcore.ImageData(root / "data/flowers/train", val_split=0, seed=0, image_size=args.size,
                            batch_size=args.batch_size, per_class=args.images // 5)
    learner = tlcore.Learner("mobilenet_v2", data, weights=root / WEIGHTS, verbose=False)
    learner.model.batchnorm_eval = True
    learner.model.unfreeze_last(3)
    rows = learner.fit(2, lr=1e-3, phase="finetune")
    if tlcore.distributed.is_main_process():
        Path(args.result).write_text(json.dumps(rows))


def run(nproc: int, args: argparse.Namespace, tmp: Path) -> dict:
    import tlcore

    result = tmp / f"ranks{nproc}.json"
    global_batch = args.batch_size
    argv = [sys.executable, __file__, "--worker", "--result", str(result), "--images", str(args.images),
            "--size", str(args.size), "--batch-size", str(global_batch // nproc)]
    env = dict(os.environ, TLCORE_NUM_THREADS="1", OMP_NUM_THREADS="1")
    if nproc == 1:
        import subprocess

        subprocess.run(argv, env=env, check=True)
    else:
        tlcore.distributed.launch(argv, nproc=nproc, threads_per_rank=1, env=env)
    rows = json.loads(result.read_text())
    last = rows[-1]
    return {"epoch_s": round(last["seconds"], 2), "images_per_s": round(last["images_per_second"], 2),
            "train_loss": round(last["train_loss"], 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=32, help="global batch (split across ranks)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shared_dir()
    with tempfile.TemporaryDirectory() as tmp:
        one = run(1, args, Path(tmp))
        log.info("1 rank:  %s", one)
        two = run(2, args, Path(tmp))
        log.info("2 ranks: %s", two)
    out = {"benchmark": "distributed", "backend": "gloo", "threads_per_rank": 1, "images": args.images,
           "image_size": args.size, "global_batch": args.batch_size, "one_rank": one, "two_ranks": two,
           "speedup": round(two["images_per_s"] / one["images_per_s"], 3),
           "efficiency": round(two["images_per_s"] / (2 * one["images_per_s"]), 3)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
