"""CIFAR-10 with the ImageNet MobileNetV2 under a 30-minute budget: the budget mode's plan.

A thin caller of ``tlcore.train_budget`` (see benchmarks/budget.py, which runs every dataset):
../shared/data/cifar10/train.tar.gz, the shared weights, 10% stratified validation split of
which half is held out for the reported figure. Prints one JSON line.

Usage: .venv/bin/python benchmarks/cifar10.py [--budget 30m]
"""
from __future__ import annotations

import argparse
import json
import logging

import budget


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", default=budget.BUDGETS["cifar10"])
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(budget.run("cifar10", args.budget)))


if __name__ == "__main__":
    main()
