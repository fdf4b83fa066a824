"""Serving-side predictions: many threads, one model, batches formed on the fly."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core
from .classifier import Classifier, Image, decide, load, scores

Overloaded = _core.Overloaded


class Predictor:
    """Batched, thread-safe inference for one saved tlcore model.

    Concurrent ``predict`` calls queue up in C++ and run as one batch when ``max_batch``
    are waiting or the first has waited ``max_delay_ms``; the GIL is released meanwhile.
    It runs the same engine as ``Classifier.predict``: the model's own pipeline,
    temperature and "unknown" rule (``threshold`` and ``min_energy`` replace the model's, as in
    ``Classifier.unknown_rule``). ``precision``:
    "fp32", "bf16", "int8" (a model calibrated by ``tlcore.quantize``) or "auto" on the CPU.

    Usage: ``Predictor("flowers.tlc").predict(open("rose.jpg", "rb").read())``
    """

    def __init__(self, model: Union[str, os.PathLike, Classifier], *, max_batch: int = 16,
                 max_delay_ms: float = 5.0, max_queue: int = 256, max_pixels: int = 40_000_000,
                 threshold: Optional[float] = None, min_energy: Optional[float] = None,
                 device: str = "auto", precision: str = "fp32") -> None:
        classifier = model if isinstance(model, Classifier) else load(model, precision)
        self.name: str = Path(classifier.source).stem if classifier.source else classifier.arch
        self.arch: str = classifier.arch
        self.classes: List[str] = classifier.classes
        self.input_size: int = classifier.pipeline.size[0]
        self.threshold, self.min_energy = classifier.unknown_rule(threshold, min_energy)
        self._predictor: Optional[_core.Predictor] = classifier.engine(
            max_batch=max_batch, max_delay_ms=max_delay_ms, max_queue=max_queue,
            max_pixels=max_pixels, device=device, precision=precision)
        self.precision: str = self._predictor.precision

    def probabilities(self, image: Image, source: Optional[str] = None) -> np.ndarray:
        """Class probabilities for encoded bytes, a file path or an HxWxC uint8 array."""
        return self._scores(image, source)[0].numpy()

    def predict(self, image: Image, top_k: int = 5, source: Optional[str] = None) -> Dict[str, object]:
        """``{"prediction", "confidence", "energy", "unknown", "top_k": [{"label", "probability"}, ...]}``.

        The prediction is "unknown" when the top probability is below ``threshold`` or the
        energy below ``min_energy``.
        """
        probs, energy = self._scores(image, source)
        return decide(probs, float(energy), self.classes, top_k, (self.threshold, self.min_energy))

    def predict_many(self, images: Sequence[Image], top_k: int = 5) -> List[Dict[str, object]]:
        """``predict`` for each image, submitted together in one call so that they share batches."""
        probs, energy = scores(self._engine(), images)
        rule = (self.threshold, self.min_energy)
        return [decide(row, float(e), self.classes, top_k, rule) for row, e in zip(probs, energy)]

    def stats(self) -> Dict[str, object]:
        """Requests, batches, the batch-size histogram and the queue depth so far."""
        return self._engine().stats()

    def close(self) -> None:
        """Answers what is queued, then stops the batching thread."""
        self._predictor = None

    def _scores(self, image: Image, source: Optional[str]) -> Tuple["torch.Tensor", "torch.Tensor"]:
        predictor = self._engine()
        if isinstance(image, (bytes, bytearray)):
            return predictor.predict_bytes(bytes(image), source or "image")
        if isinstance(image, np.ndarray):
            return predictor.predict_array(image, source or "array")
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file")
        return predictor.predict_bytes(path.read_bytes(), source or str(path))

    def _engine(self) -> "_core.Predictor":
        if self._predictor is None:
            raise RuntimeError(f"{self.name}: predictor is closed")
        return self._predictor

    def __repr__(self) -> str:
        return f"Predictor({self.name!r}, arch={self.arch!r}, classes={len(self.classes)})"
