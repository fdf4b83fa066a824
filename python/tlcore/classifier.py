"""A saved model ready to predict: ``tlcore.load`` and ``Classifier``.

Usage::

    clf = tlcore.load("flowers.tlc")
    clf.predict("rose.jpg")                # {"prediction", "confidence", "energy", "unknown", "top_k"}
    clf.evaluate("flowers/test").accuracy
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import _core, calibration
from .data import DataLoader, PathLike, open_dataset
from .model_file import make_spec, model_options, provenance, write_model
from .precision import PRECISIONS, resolve
from .report import Report
from .weights import fetch

Image = Union[PathLike, bytes, bytearray, np.ndarray]
log = logging.getLogger(__name__)


class Classifier:
    """A saved tlcore model ready to predict on images: its spec and its weights.

    Predictions run through the same C++ engine as ``tlcore.Predictor`` (one batched call
    for a list of images, the spec's pipeline and temperature, one "unknown" rule).
    ``precision`` ("fp32", "bf16", "int8" for a calibrated model, or "auto") is what
    predict and evaluate compute in; see ``tlcore.precision``.

    Usage: ``tlcore.load("flowers.tlc", precision="auto").predict("rose.jpg")``
    """

    def __init__(self, spec: "_core.ModelSpec", model: "_core.Model", source: str = "",
                 precision: str = "fp32") -> None:
        self.spec, self.model, self.source = spec, model, source
        self.model.eval()
        self.precision = precision
        self._engine: Optional["_core.Predictor"] = None

    @property
    def precision(self) -> str:
        """What predict and evaluate were asked to compute in."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        if value not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {value!r}")
        self._precision = value
        self.reset_engine()

    def reset_engine(self) -> None:
        """Drops the compiled engine, so that the next prediction compiles the model as it is now."""
        self._engine = None

    arch = property(lambda self: self.spec.arch, doc="The architecture's name.")
    classes = property(lambda self: list(self.spec.classes), doc="Class names, in label order.")
    pipeline = property(lambda self: self.spec.pipeline, doc="The eval pipeline, op by op.")
    temperature = property(lambda self: self.spec.temperature,
                           doc="Logits are divided by it before the softmax (1: uncalibrated).")
    history = property(lambda self: json.loads(self.spec.history), doc="Per-epoch training history.")

    @property
    def threshold(self) -> float:
        """Below this calibrated top probability a prediction is "unknown" (0: never)."""
        return self.spec.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.spec.threshold = float(value)

    @property
    def min_energy(self) -> Optional[float]:
        """Below this energy (logsumexp of the raw logits) a prediction is "unknown" (None: never)."""
        return self.spec.min_energy

    @min_energy.setter
    def min_energy(self, value: Optional[float]) -> None:
        self.spec.min_energy = None if value is None else float(value)

    def unknown_rule(self, threshold: Optional[float] = None,
                     min_energy: Optional[float] = None) -> Tuple[float, Optional[float]]:
        """``(threshold, min_energy)``: the model's own rule, or, when either is given, the rule
        of just what is given (``threshold=0.5`` alone: no energy floor)."""
        return unknown_rule((self.threshold, self.min_energy), threshold, min_energy)

    @classmethod
    def pretrained(cls, arch: str, weights: PathLike = "imagenet",
                   image_size: Optional[int] = None) -> "Classifier":
        """The 1,000-category ImageNet classifier of pretrained weights, ready to predict or save.

        Usage: ``tlcore.Classifier.pretrained("mobilenet_v2").save("models/imagenet.tlc")``
        """
        from .weights import imagenet_classes

        model = _core.create_model(arch, 1000)
        model.load_checkpoint(str(fetch(arch, weights)), strict=True)
        size = image_size or model.preprocess["input_size"]
        pipeline = _core.Pipeline.preset("imagenet-eval", size, 3)
        head = {"kind": "linear", "dropout": 0.2, "hidden": []}
        spec = make_spec(arch, imagenet_classes(), head, pipeline, model_options())
        spec.weights = str(weights) if str(weights) == "imagenet" else Path(weights).name
        spec.provenance = provenance("imagenet", 0)
        return cls(spec, model, f"{arch}-imagenet")

    def save(self, path: PathLike) -> Path:
        """Writes this model as one tlcore file (atomically)."""
        return write_model(path, self.spec, self.model)

    def engine(self, **options) -> "_core.Predictor":
        """A C++ Predictor over this model; ``options`` set PredictorOptions fields."""
        o = _core.PredictorOptions()
        o.max_delay_ms, o.device, o.precision = 0.0, "cpu", self.precision
        for name, value in options.items():
            setattr(o, name, value)
        engine = _core.Predictor(self.model, self.spec, o)
        if engine.precision_note:
            log.warning("%s: %s", self.source or self.arch, engine.precision_note)
        return engine

    def predict_proba(self, images: Sequence[Image], tta: bool = False) -> torch.Tensor:
        """Class probabilities, one row per image, computed in one batched call.

        ``tta``: the mean of the probabilities of each image and of its mirror image.
        """
        return self.predict_scores(images, tta)[0]

    def predict_scores(self, images: Sequence[Image], tta: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(probabilities, energies)``, a row and an energy per image, in one batched call.

        ``tta``: the probabilities are the mean over each image and its mirror image; the
        energy stays the image's own, as served.
        """
        if self._engine is None:
            self._engine = self.engine()
        if not tta:
            return scores(self._engine, images)
        decoded = [self._decoded(image) for image in images]
        mirrored = [np.ascontiguousarray(image[:, ::-1]) for image in decoded]
        probs, energy = scores(self._engine, decoded + mirrored)
        return (probs[:len(decoded)] + probs[len(decoded):]) / 2, energy[:len(decoded)]

    def predict(self, image: Image, top_k: int = 5, threshold: Optional[float] = None,
                tta: bool = False, min_energy: Optional[float] = None) -> Dict[str, object]:
        """``{"prediction", "confidence", "energy", "unknown", "top_k": [{"label", "probability"}, ...]}``.

        ``threshold``/``min_energy`` replace the model's "unknown" rule (``unknown_rule``).
        """
        return self.predict_many([image], top_k, threshold, tta, min_energy)[0]

    def predict_many(self, images: Sequence[Image], top_k: int = 5, threshold: Optional[float] = None,
                     tta: bool = False, min_energy: Optional[float] = None) -> List[Dict[str, object]]:
        """``predict`` for each image, in one batched call."""
        probs, energy = self.predict_scores(images, tta)
        rule = self.unknown_rule(threshold, min_energy)
        return [decide(row, float(e), self.spec.classes, top_k, rule) for row, e in zip(probs, energy)]

    def evaluate(self, data: Union[PathLike, "_core.Dataset"], batch_size: int = 64,
                 tta: bool = False, skip_corrupt: bool = False,
                 threshold: Optional[float] = None, min_energy: Optional[float] = None) -> Report:
        """Accuracy, per-class metrics and the confusion matrix on a labelled folder/archive.

        The data may hold a subset of the model's classes; they are matched by name. With an
        "unknown" rule (``unknown_rule``), ``report.extra`` holds the share of images called
        "unknown" and the accuracy on the others, as served: one view, even with ``tta``.
        ``skip_corrupt``: undecodable images are left out instead of raising, and
        ``report.extra["skipped_corrupt"]`` lists their sources.
        """
        ds = data if isinstance(data, _core.Dataset) else open_dataset(data)
        unknown = sorted(set(ds.classes) - set(self.classes))
        if unknown:
            raise ValueError(f"{data}: classes {unknown} are not among the model's {self.classes}")
        loader = DataLoader(ds, self.pipeline, batch_size=batch_size, shuffle=False, skip_corrupt=skip_corrupt)
        precision = resolve(self.precision, self.spec.int8)

        def logits_of(flip: bool) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            return _core.predict(self.model, loader._loader, True, flip, precision=precision,
                                 int8=self.spec.int8)[:3]

        logits, labels, indices = logits_of(tta)
        to_model = torch.tensor([self.classes.index(name) for name in ds.classes])
        probs = torch.softmax(logits / self.temperature, 1)
        report = Report.from_predictions(to_model[labels].tolist(), probs, self.classes)
        rule = self.unknown_rule(threshold, min_energy)
        if calibration.has_rule(*rule):
            served = calibration.scores(logits_of(False)[0] if tta else logits, self.temperature)
            report.extra.update(calibration.unknown_scores(*served, to_model[labels], *rule))
        if skip_corrupt:
            kept = set(indices.tolist())
            report.extra["skipped_corrupt"] = [ds.source(i) for i in range(len(ds)) if i not in kept]
        return report

    def _decoded(self, image: Image) -> np.ndarray:
        """``image`` decoded as the engine decodes it: the pipeline's channels and reduced-decode bound."""
        if isinstance(image, np.ndarray):
            return image
        data, source = _engine_input(image)
        return _core.decode_image(data, self.pipeline.channels, self.pipeline.min_decode_side, source)

    def __repr__(self) -> str:
        return f"Classifier({self.arch!r}, classes={len(self.classes)}, source={self.source!r})"


def scores(engine: "_core.Predictor", images: Sequence[Image]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(probabilities, energies)`` of ``images`` (paths, encoded bytes or uint8 arrays) from a
    C++ Predictor."""
    inputs = [_engine_input(image) for image in images]
    return engine.predict_many([i for i, _ in inputs], [s for _, s in inputs])


def _engine_input(image: Image) -> Tuple[Union[bytes, np.ndarray], str]:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image), "image"
    if isinstance(image, np.ndarray):
        return image, "array"
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such image file")
    return path.read_bytes(), str(path)


def unknown_rule(model_rule: Tuple[float, Optional[float]], threshold: Optional[float] = None,
                 min_energy: Optional[float] = None) -> Tuple[float, Optional[float]]:
    """``(threshold, min_energy)``: ``model_rule`` unless either is given, then just what is given."""
    if threshold is None and min_energy is None:
        return model_rule
    return (0.0 if threshold is None else float(threshold)), (None if min_energy is None else float(min_energy))


def decide(probs: torch.Tensor, energy: float, classes: Sequence[str], top_k: int,
           rule: Tuple[float, Optional[float]]) -> Dict[str, object]:
    """One image's answer by the C++ rule: top-k labels, and "unknown" by ``rule``
    (``(threshold, min_energy)``, see ``Classifier.unknown_rule``)."""
    p = _core.decide(probs, energy, list(classes), top_k, *rule)
    return {"prediction": p.label, "confidence": p.confidence, "energy": p.energy, "unknown": p.unknown,
            "top_k": [{"label": label, "probability": prob} for label, prob in p.top_k]}


def load(path: PathLike, precision: str = "fp32") -> Classifier:
    """Loads a model saved by ``Learner.save``, without running any code the file holds.

    ``precision``: what predict and evaluate compute in (``Classifier``).
    Usage: ``clf = tlcore.load("flowers.tlc")``
    """
    spec, model = _core.load_model(str(path))
    return Classifier(spec, model, str(path), precision)
