"""Reduced precision on the CPU: what runs here, and int8 calibration of a saved model.

bf16 needs the CPU's bf16 instructions (avx512_bf16 or amx_bf16); int8 needs VNNI and a
model calibrated once on a few hundred of its training images. A precision the CPU
cannot run fast falls back to fp32 with one log line. On a CPU with AMX, int8 also needs
oneDNN kept off AMX for the whole process (torch 1.13's oneDNN corrupts memory in some AMX
int8 convolutions): ``run_int8_without_amx()`` first thing, as `tlcore quantize` and
``--precision int8`` do; otherwise int8 falls back to bf16 with one log line.

Usage::

    clf = tlcore.quantize(tlcore.load("flowers.tlc"), "flowers/train")
    clf.save("flowers.tlc")                         # the calibration is saved with the model
    tlcore.Predictor("flowers.tlc", precision="auto")
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Optional, Union

import torch

from . import _core
from .data import DataLoader, PathLike, open_dataset

if TYPE_CHECKING:
    from .classifier import Classifier

log = logging.getLogger(__name__)

PRECISIONS = _core.PRECISIONS  # ("fp32", "bf16", "int8", "auto"): the names C++ reads
# "auto" takes int8 only when its top-1 agreement with fp32 is at least this.
MIN_AGREEMENT = _core.INT8_MIN_AGREEMENT


def resolve(requested: str, int8: Optional["_core.Int8Calibration"] = None) -> str:
    """What ``requested`` runs in on this CPU ("fp32", "bf16" or "int8"), logging any fallback.

    Usage: ``tlcore.precision.resolve("auto", clf.spec.int8)``
    """
    name, note = _core.resolve_precision(requested, int8 or _core.Int8Calibration())
    if note:
        log.warning("%s", note)
    return name


def cpu_features() -> str:
    """The reduced-precision instructions this CPU has, e.g. "avx512_bf16 avx512_vnni", or "none"."""
    return _core.cpu_features()


def run_int8_without_amx() -> bool:
    """Keeps oneDNN off AMX in this process where the CPU has AMX (``ONEDNN_MAX_CPU_ISA``, unless
    the environment already sets it), so that int8 can run; bf16 then runs without AMX, slower.
    Call it before any model runs: oneDNN keeps the instruction set it started with, so after a
    model ran it returns False and int8 falls back to bf16. Returns whether int8 can run.

    Usage: ``tlcore.precision.run_int8_without_amx()`` at the top of an int8 serving script
    """
    return _core.run_int8_without_amx()


def calibrate_int8(model: "_core.Model", data: Union[PathLike, "_core.Dataset"], pipeline: "_core.Pipeline",
                   images: int = 512, seed: int = 0, batch_size: int = 32) -> "_core.Int8Calibration":
    """The int8 calibration of ``model`` on ``images`` of ``data``, through its eval ``pipeline``.

    A seeded sample of ``images`` is split in two: the first half chooses the activation
    scales, the second measures the top-1 agreement of int8 with fp32 (``.agreement``;
    "auto" uses int8 only at ``MIN_AGREEMENT`` or more).

    Usage: ``int8 = tlcore.precision.calibrate_int8(model, "flowers/train", pipeline)``
    """
    ds = data if isinstance(data, _core.Dataset) else open_dataset(data)
    if len(ds) < 2:
        raise ValueError(f"{data}: int8 calibration needs at least 2 images, found {len(ds)}")
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:images].tolist()
    half = max(1, len(order) // 2)
    calibrate, check = _core.Subset(ds, order[:half]), _core.Subset(ds, order[half:])
    batches = [x for x, _ in DataLoader(calibrate, pipeline, batch_size=batch_size, shuffle=False)]
    int8 = _core.calibrate_int8(model, pipeline.size[0], batches)
    loader = DataLoader(check, pipeline, batch_size=batch_size, shuffle=False)
    reference = _core.predict(model, loader._loader, True)[0].argmax(1)
    quantized = _core.predict(model, loader._loader, True, precision="int8", int8=int8)[0].argmax(1)
    int8.agreement = float((reference == quantized).float().mean())
    log.info("int8: %d activation scales from %d images; top-1 agreement with fp32 %.2f%% on %d others",
             len(int8.scales), len(calibrate), 100 * int8.agreement, len(check))
    return int8


def quantize(classifier: "Classifier", data: Union[PathLike, "_core.Dataset"], images: int = 512,
             seed: int = 0, batch_size: int = 32) -> "Classifier":
    """Calibrates ``classifier`` for int8 on ``images`` of ``data`` (its training images);
    the calibration goes in its spec, and so into the file it saves (see ``calibrate_int8``).

    Usage: ``tlcore.quantize(tlcore.load("flowers.tlc"), "flowers/train").save("flowers.tlc")``
    """
    classifier.spec.int8 = calibrate_int8(classifier.model, data, classifier.pipeline, images, seed, batch_size)
    classifier.reset_engine()
    return classifier
