"""The writer test_hostile_files SIGKILLs: forked children that save to one path until killed.

The parent imports tlcore once and answers commands on stdin, so a round costs a fork, not a
fresh interpreter (seconds on a busy machine). Commands, one a line:

    model START        a child saves versions START, START+1, ... with Learner.save to DIR/model.tlc
    checkpoint EPOCHS  a child trains phase "fit" to EPOCHS, EPOCHS+1, ... epochs, resuming from
                       and checkpointing to DIR/fit.ckpt (the C++ trainer's writer)

A child prints "saved K" after each save returns (K: the version, or the epochs trained);
the parent prints "child PID" once it has forked and "reaped PID" once that child is dead.

Usage: python _save_worker.py DIR
"""
from __future__ import annotations

import itertools
import os
import sys
import traceback
from pathlib import Path
from typing import List

import torch

import tlcore

# Versions cycle through this many models, so a file can be told from the one before it.
VERSIONS = 3
MODEL_NAME = "model.tlc"
PHASE = "fit"


def say(line: str) -> None:
    """One line to stdout in one write: a child killed mid-line must not glue it to the next."""
    os.write(sys.stdout.fileno(), f"{line}\n".encode())


def small_data(train: "tlcore.Dataset") -> "tlcore.ImageData":
    """Two Fashion-MNIST images per class at 28 px, no validation split: milliseconds an epoch."""
    subset = tlcore.Subset(train, tlcore.per_class_subset(train.labels(), 2, 0))
    return tlcore.ImageData(subset, val_split=0, seed=0, image_size=28, channels=1,
                            train_transform="cifar-eval", eval_transform="cifar-eval")


def version_learners(data: "tlcore.ImageData") -> List["tlcore.Learner"]:
    """Version k of the model file is ``version_learners(data)[k % VERSIONS].save(...)``."""
    return [tlcore.Learner("simple_cnn", data, verbose=False, seed=k) for k in range(VERSIONS)]


def _save_models(folder: Path, data: "tlcore.ImageData", start: int) -> None:
    learners = version_learners(data)
    for k in itertools.count(start):
        learners[k % VERSIONS].save(folder / MODEL_NAME)
        say(f"saved {k}")


def _save_checkpoints(folder: Path, data: "tlcore.ImageData", start: int) -> None:
    learner = tlcore.Learner("simple_cnn", data, verbose=False, seed=0, checkpoint_dir=folder)
    for epochs in itertools.count(start):
        learner.fit(epochs, lr=1e-3, phase=PHASE)
        say(f"saved {epochs}")


def main(folder: Path) -> None:
    train = tlcore.fashion_mnist(train=True)
    say("ready")
    for line in sys.stdin:
        mode, start = line.split()
        pid = os.fork()
        if pid == 0:
            # One thread: thread pools the parent might have started do not survive a fork.
            torch.set_num_threads(1)
            tlcore.set_num_threads(1)
            writer = _save_models if mode == "model" else _save_checkpoints
            try:
                writer(folder, small_data(train), int(start))
            except BaseException:
                traceback.print_exc()
            os._exit(1)  # the writers only end by failing; never back into the parent's loop
        say(f"child {pid}")
        os.waitpid(pid, 0)
        say(f"reaped {pid}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
