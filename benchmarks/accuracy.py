"""Flowers with the ImageNet MobileNetV2 under a 10-minute budget: the budget mode's plan.

A thin caller of ``tlcore.train_budget`` (see benchmarks/budget.py, which runs every dataset):
../shared/data/flowers/train, the shared weights, 20% stratified validation split of which half
is held out for the reported figure; also how many of ../shared/data/photos come out "unknown".
Prints one JSON line.

Usage: .venv/bin/python benchmarks/accuracy.py [--budget 10m]
"""
from __future__ import annotations

import argparse
import json
import logging

import budget


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", default=budget.BUDGETS["flowers"])
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(json.dumps(budget.run("flowers", args.budget)))


if __name__ == "__main__":
    main()
