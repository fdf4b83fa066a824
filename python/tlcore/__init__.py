"""tlcore: transfer learning for image classification with a fast C++ core.

Usage::

    import tlcore
    data = tlcore.ImageData("flowers/train", val_split=0.2, seed=42, image_size=224)
    learner = tlcore.Learner("mobilenet_v2", data, weights="imagenet")
    learner.fit_head(5, lr=1e-3)
    learner.fine_tune(5, lr=1e-4, unfreeze=3)
    print(learner.evaluate().to_markdown())
"""
from __future__ import annotations

import torch  # noqa: F401  (loads libtorch before the extension that links it)

from . import _core, calibration, distributed, precision, transforms
from ._core import (
    Dataset,
    Pipeline,
    Subset,
    available_cores,
    create_model,
    model_names,
    num_threads,
    per_class_subset,
    set_num_threads,
    stratified_split,
)
from .distributed import DistributedError
from .data import DataLoader, fashion_mnist, open_dataset, open_shards, open_tfrecords
from .exporter import export
from .sharding import write_shards
from .budget import BudgetError, train_budget
from .classifier import Classifier, load
from .learner import ImageData, Learner, fit_options
from .predictor import Overloaded, Predictor
from .precision import quantize
from .report import Report

__version__ = _core.__version__

__all__ = [
    "__version__",
    "BudgetError",
    "Classifier",
    "DataLoader",
    "Dataset",
    "DistributedError",
    "ImageData",
    "Learner",
    "Overloaded",
    "Predictor",
    "Report",
    "Pipeline",
    "Subset",
    "available_cores",
    "calibration",
    "create_model",
    "distributed",
    "export",
    "fashion_mnist",
    "fit_options",
    "load",
    "model_names",
    "num_threads",
    "open_dataset",
    "open_shards",
    "open_tfrecords",
    "write_shards",
    "per_class_subset",
    "precision",
    "quantize",
    "set_num_threads",
    "stratified_split",
    "train_budget",
    "transforms",
]
