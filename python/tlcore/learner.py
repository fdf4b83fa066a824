"""The transfer-learning recipe in a few calls.

Usage::

    data = tlcore.ImageData("flowers/train", val_split=0.2, seed=42, image_size=224)
    learner = tlcore.Learner("mobilenet_v2", data, weights="imagenet")
    learner.fit_head(5, lr=1e-3)
    learner.fine_tune(5, lr=1e-4, unfreeze=3)
    report = learner.evaluate()
    learner.save("flowers.tlc")
    tlcore.load("flowers.tlc").predict("rose.jpg")
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from tqdm import tqdm

from . import _core, calibration, distributed, lr_finder, model_file, transforms
from .data import DataLoader, PathLike, open_dataset
from .report import Report
from .weights import fetch

log = logging.getLogger(__name__)

class ImageData:
    """A labelled image source with a stratified train/validation split and its pipelines.

    ``source`` is anything ``tlcore.open_dataset`` opens, or a ``Dataset``. ``valid``
    gives a separate validation source instead of a split. ``test`` (a source, opened only
    when first used) or ``test_split`` (a stratified share of the validation split) is the
    set the final figure is reported on: no epoch, threshold or TTA choice ever sees it.

    ``name`` names the data on the model card (default: the source's file or folder name).
    ``train_transform`` is a preset, a ``Pipeline``, or Keras-style augmentations on top of
    the eval pipeline, e.g. ``"flip,rotate=0.2,zoom=0.2,contrast=0.1"`` (see
    ``tlcore.transforms.augmentation``).

    Usage: ``data = tlcore.ImageData("flowers/train", val_split=0.2, seed=42, image_size=224)``
    """

    def __init__(self, source: Union[PathLike, "_core.Dataset"], val_split: float = 0.2,
                 seed: int = 42, image_size: int = 224, batch_size: int = 32,
                 train_transform: Union[str, "_core.Pipeline"] = "imagenet-train",
                 eval_transform: Union[str, "_core.Pipeline"] = "imagenet-eval",
                 channels: int = 3, valid: Union[PathLike, "_core.Dataset", None] = None,
                 per_class: Optional[int] = None, num_workers: int = 0,
                 test: Union[PathLike, "_core.Dataset", None] = None, test_split: float = 0.0,
                 name: Optional[str] = None) -> None:
        full = source if isinstance(source, _core.Dataset) else open_dataset(source)
        if per_class is not None:
            full = _core.Subset(full, _core.per_class_subset(full.labels(), per_class, seed))
        if valid is not None:
            self.train, self.val = full, valid if isinstance(valid, _core.Dataset) else open_dataset(valid)
        elif val_split > 0:
            train_idx, val_idx = _core.stratified_split(full.labels(), val_split, seed)
            self.train, self.val = _core.Subset(full, train_idx), _core.Subset(full, val_idx)
        else:
            self.train, self.val = full, None
        if test is not None and test_split > 0:
            raise ValueError("give either test (a separate source) or test_split, not both")
        self._test_source, self._test = test, None
        if test_split > 0:
            if self.val is None:
                raise ValueError("test_split splits the validation set: give val_split or valid too")
            select, report = _core.stratified_split(self.val.labels(), test_split, seed + 1)
            self.val, self._test = _core.Subset(self.val, select), _core.Subset(self.val, report)
        self.classes: List[str] = list(full.classes)
        # The data's name for the model card: the folder or file, without its extensions.
        self.name = source_name(source) if name is None else name
        self.image_size, self.batch_size, self.seed = image_size, batch_size, seed
        self.channels, self.num_workers = channels, num_workers
        self.eval_pipeline = _pipeline(eval_transform, image_size, channels)
        self.train_pipeline = (transforms.augmentation(train_transform, self.eval_pipeline)
                               if isinstance(train_transform, str) and transforms.is_augmentation(train_transform)
                               else _pipeline(train_transform, image_size, channels))

    @property
    def test(self) -> Optional["_core.Dataset"]:
        """The test set, or None; a ``test`` source is opened here, on first use."""
        if self._test is None and self._test_source is not None:
            src = self._test_source
            self._test = src if isinstance(src, _core.Dataset) else open_dataset(src)
            if list(self._test.classes) != self.classes:
                raise ValueError(f"{src}: its classes {list(self._test.classes)} differ from the "
                                 f"training data's {self.classes}")
        return self._test

    def describe_splits(self) -> Dict[str, str]:
        """Which images each split holds, in words, for reports."""
        val = len(self.val) if self.val is not None else 0
        out = {"train": f"{len(self.train)} images", "val": f"{val} images (model selection)"}
        if self._test_source is not None:
            src = self._test_source
            name = f"{len(src)} images" if isinstance(src, _core.Dataset) else str(src)
            out["test"] = f"{name} (a separate set, evaluated once at the end)"
        elif self._test is not None:
            out["test"] = (f"{len(self._test)} images held out of the validation split "
                           "(never used for any choice)")
        return out

    def loader(self, split: str = "train", augment: bool = True, shuffle: Optional[bool] = None,
               batch_size: Optional[int] = None, rank: int = 0, world_size: int = 1,
               for_gpu: bool = False) -> DataLoader:
        """A loader over ``split`` ("train", "val" or "test"); eval pipeline unless training with augment.

        ``rank``/``world_size`` give this rank's shard; ``for_gpu`` yields uint8 batches in
        pinned memory, normalised on the GPU.
        """
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {split!r}")
        ds = getattr(self, split)  # the test set is opened only when asked for
        if ds is None:
            raise ValueError(f"this ImageData has no {split} set")
        pipeline = self.train_pipeline if split == "train" and augment else self.eval_pipeline
        return DataLoader(ds, pipeline, batch_size=batch_size or self.batch_size,
                          shuffle=(split == "train") if shuffle is None else shuffle,
                          seed=self.seed, num_workers=self.num_workers, rank=rank,
                          world_size=world_size, uint8_output=for_gpu, pin_memory=for_gpu)

    def __repr__(self) -> str:
        val = len(self.val) if self.val is not None else 0
        test = f" / {len(self._test)} test" if self._test is not None else ""
        return (f"ImageData({len(self.train)} train / {val} val{test} images, {len(self.classes)} classes, "
                f"{self.image_size}px)")


def source_name(source: Union[PathLike, "_core.Dataset"]) -> str:
    """The data's name for model cards and file names: the folder or file without its
    extensions ("" for a Dataset object)."""
    return "" if isinstance(source, _core.Dataset) else Path(str(source).rstrip("/")).name.split(".")[0]


def _pipeline(transform: Union[str, "_core.Pipeline"], size: int, channels: int) -> "_core.Pipeline":
    return _core.Pipeline.preset(transform, size, channels) if isinstance(transform, str) else transform


class _Progress:
    """tqdm bars fed by the C++ trainer's callbacks."""

    def __init__(self, phase: str, epochs: int, verbose: bool,
                 go_on: Optional[Callable[["_core.EpochStats"], bool]] = None,
                 batch_done: Optional[Callable[[int, int, float], None]] = None) -> None:
        self.phase, self.epochs, self.verbose, self.bar = phase, epochs, verbose, None
        self.epoch, self.go_on, self.batch_done = 0, go_on, batch_done

    def on_batch(self, b: int, n: int, loss: float) -> None:
        if self.batch_done is not None:
            self.batch_done(b, n, loss)
        if not self.verbose:
            return
        if self.bar is None:
            self.bar = tqdm(total=n, desc=f"{self.phase} {self.epoch + 1}/{self.epochs}", unit="batch",
                            leave=False)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}")

    def on_epoch(self, s: "_core.EpochStats") -> bool:
        self.report(s)
        return self.go_on(s) if self.go_on is not None else True

    def report(self, s: "_core.EpochStats") -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.epoch += 1
        self.epochs = s.epochs  # a time limit sets them from the pace
        val = (f" val_loss {s.val_loss:.4f} val_acc {s.val_accuracy:.4f} val_f1 {s.val_f1:.4f}"
               if s.has_val else "")
        log.info("%s epoch %d/%d: loss %.4f acc %.4f%s lr %.2e %.1fs (%.0f img/s)", s.phase,
                 s.epoch + 1, s.epochs, s.train_loss, s.train_accuracy, val, s.lr, s.seconds,
                 s.images_per_second)


def _history_row(s: "_core.EpochStats", global_epoch: int) -> Dict[str, object]:
    row: Dict[str, object] = {
        "epoch": global_epoch, "phase": s.phase, "train_loss": s.train_loss,
        "train_accuracy": s.train_accuracy, "lr": s.lr, "seconds": s.seconds,
        "images_per_second": s.images_per_second,
    }
    if s.has_val:
        row.update(val_loss=s.val_loss, val_accuracy=s.val_accuracy, val_f1=s.val_f1)
    return row


# Training options that belong to the Learner (or its data) rather than to one fit call.
_LEARNER_OWNED = ("device", "amp", "checkpoint", "epoch_offset")


def fit_options() -> List[Tuple[str, str, str]]:
    """``(name, type, help)`` of every training option ``Learner.fit`` takes.

    Usage: ``for name, kind, help in tlcore.fit_options(): print(name, kind, help)``
    """
    return _core.fit_option_fields()


class Learner:
    """A model, its data and the training recipe: ``fit_head`` then ``fine_tune``.

    ``weights`` is None (random init), "imagenet" (torchvision's checkpoint from the torch
    hub cache, downloaded if needed) or a path to a state dict. ``device`` is "cpu",
    "cuda" or "auto"; ``amp`` ("off", "bf16", "fp16") trains in mixed precision.
    ``model_options`` are the architecture's own knobs: ``widths`` (simple_cnn's channels per
    block, mlp's hidden sizes) and ``depths`` (simple_cnn's convolutions per block).

    Usage: ``learner = tlcore.Learner("mobilenet_v2", data, weights="imagenet")``
    """

    def __init__(self, arch: str, data: ImageData, weights: Optional[PathLike] = None,
                 head: str = "linear", dropout: float = 0.2, hidden: Sequence[int] = (),
                 checkpoint_dir: Optional[PathLike] = None, verbose: bool = True,
                 seed: Optional[int] = None, device: str = "auto", amp: str = "off",
                 **model_options) -> None:
        self.arch, self.data = arch, data
        self.device, self.amp = _core.resolve_device(device), amp
        # In a distributed run (see tlcore.distributed) every rank trains; rank 0 reports and writes.
        self.group = distributed.process_group(self.device)
        self.verbose = verbose and (self.group is None or self.group.rank == 0)
        # The new layers' initial weights come from torch's global generator.
        torch.manual_seed(data.seed if seed is None else seed)
        if arch in ("simple_cnn", "mlp"):
            model_options.setdefault("input_size", data.image_size)  # the baselines fix their input size
        self.model_options = model_file.model_options(in_channels=data.channels, **model_options)
        self.model = _core.create_model(arch, len(data.classes), in_channels=data.channels,
                                        **model_options)
        self.weights = "" if weights is None else str(weights) if str(weights) == "imagenet" \
            else Path(weights).name
        if weights is not None:
            path = fetch(arch, weights)
            dropped = self.model.load_checkpoint(str(path), strict=True, drop_head=True)
            log.info("loaded %s (%s)%s", path, arch, " without its head" if dropped else "")
        self.head = {"kind": head, "dropout": dropout, "hidden": list(hidden)}
        if head != "linear" or hidden:
            torch.manual_seed(data.seed if seed is None else seed)
            self.model.set_head(len(data.classes), head, dropout, list(hidden))
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.history: List[Dict[str, object]] = []
        # Each fit call's options, saved with the model as its training recipe.
        self.recipe: List[Dict[str, object]] = []
        # The "unknown" rule (Classifier.unknown_rule) and the temperature, set by calibrate.
        self.threshold, self.min_energy, self.temperature = 0.0, None, 1.0
        # Figures worth keeping in the model card (e.g. the budget run's test accuracy).
        self.metrics: Dict[str, object] = {}
        self._loader_epochs = 0

    # -- training ---------------------------------------------------------------------------
    def fit(self, epochs: int, lr: float = 1e-3, phase: str = "fit", augment: bool = True,
            class_weights: Union[None, str, Sequence[float]] = None,
            on_epoch: Optional[Callable[["_core.EpochStats"], bool]] = None,
            on_batch: Optional[Callable[[int, int, float], None]] = None,
            **options: object) -> List[Dict[str, object]]:
        """Trains whatever is trainable now for ``epochs``; returns this phase's history.

        ``augment`` trains on the data's train pipeline (else its eval pipeline);
        ``class_weights`` is "balanced" (scikit-learn's rule on the training labels) or one
        weight per class. ``on_epoch(stats)`` is called after every epoch; returning False
        ends the phase there (the best weights are still restored). ``on_batch(b, n, loss)``
        is called after batch b of n with the epoch's mean loss so far. ``options`` are the training options of ``tlcore.fit_options()``,
        one list defined in C++ (optimizer, schedule, label_smoothing, patience,
        cache_features, cache_flip, ...); an unknown name is a ValueError listing them.
        The device, mixed precision and checkpoints are the Learner's.

        Usage: ``learner.fit(5, lr=1e-3, schedule="cosine", label_smoothing=0.1)``
        """
        for owned in _LEARNER_OWNED:
            if owned in options:
                raise ValueError(f"{owned} is set on the Learner, not per fit call")
        values = {"epochs": epochs, "lr": lr, "phase": phase, "seed": self.data.seed,
                  **{k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in options.items()}}
        if class_weights == "balanced":
            values["class_weights"] = _core.balanced_class_weights(
                self.data.train.labels().tolist(), len(self.data.classes))
        elif class_weights is not None:
            values["class_weights"] = [float(w) for w in class_weights]
        o = _core.FitOptions()
        _core.set_fit_options(o, json.dumps(values))
        self.recipe.append({**json.loads(_core.fit_options_to_json(o)), "augment": augment,
                            "trainable_parameters": self.model.trainable_parameter_count})
        o.epoch_offset = self._loader_epochs
        if self.checkpoint_dir is not None:
            o.checkpoint = str(self.checkpoint_dir / f"{phase}.ckpt")
        o.device, o.amp = self.device, self.amp
        rank, world = (self.group.rank, self.group.world_size) if self.group else (0, 1)
        gpu = self.device == "cuda"
        train = self.data.loader("train", augment=augment and not o.cache_features, rank=rank,
                                 world_size=world, for_gpu=gpu)
        val = (self.data.loader("val", rank=rank, world_size=world, for_gpu=gpu)
               if self.data.val is not None else None)
        trainer = _core.Trainer(self.model, train._loader, val._loader if val else None, self.group)
        progress = _Progress(phase, epochs, self.verbose, on_epoch, on_batch)
        result = trainer.fit(o, progress.on_epoch, progress.on_batch)
        start = len(self.history)
        rows = [_history_row(s, start + i) for i, s in enumerate(result.history)]
        self.history.extend(rows)
        self._loader_epochs += epochs
        if result.feature_cache:
            log.info("%s: feature cache: %s", phase, result.feature_cache)
        if result.stopped_early:
            log.info("%s: stopped early; best epoch %d restored", phase, result.best_epoch + 1)
        return rows

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_iter: int = 100,
                **options: object) -> "lr_finder.LRFinderResult":
        """fastai's learning-rate finder on what trains now; the weights are left as they were.

        Usage: ``learner.model.freeze_backbone(); print(learner.lr_find().suggestion)``
        """
        return lr_finder.lr_find(self, start_lr, end_lr, num_iter, **options)

    def fit_head(self, epochs: int, lr: float = 1e-3, cache_features: bool = True, **kwargs):
        """Phase 1: the backbone frozen, only the head trains.

        With ``cache_features`` (default) the embeddings are computed once and the head
        trains on them: no augmentation, but later epochs cost almost nothing.
        """
        self.model.freeze_backbone()
        return self.fit(epochs, lr=lr, phase="head", cache_features=cache_features, **kwargs)

    def fine_tune(self, epochs: int, lr: float = 1e-4, unfreeze: Union[int, str] = 3,
                  batchnorm_eval: bool = True, progressive: bool = False, **kwargs):
        """Phase 2: the last ``unfreeze`` blocks (or "all") train with the head.

        ``batchnorm_eval`` keeps every BatchNorm layer in inference mode (Keras' rule): the
        pretrained running statistics are used and kept while scale and shift train.
        ``progressive`` unfreezes gradually (ULMFiT): epoch ``e`` of ``epochs`` trains the last
        ``ceil((e + 1) * unfreeze / epochs)`` blocks, each epoch as its own phase
        ("finetune.1", "finetune.2", ...) with a fresh optimizer.
        """
        self.model.batchnorm_eval = batchnorm_eval
        blocks = len(self.model.blocks) if unfreeze == "all" else int(unfreeze)
        if not progressive:
            self.model.unfreeze_last(blocks)
            log.info("fine-tuning %s: %d of %d parameters trainable", self.arch,
                     self.model.trainable_parameter_count, self.model.parameter_count)
            return self.fit(epochs, lr=lr, phase="finetune", **kwargs)
        rows: List[Dict[str, object]] = []
        for e in range(epochs):
            self.model.unfreeze_last(-(-(e + 1) * blocks // epochs))
            log.info("fine-tuning %s, epoch %d: %d of %d parameters trainable", self.arch, e + 1,
                     self.model.trainable_parameter_count, self.model.parameter_count)
            rows += self.fit(1, lr=lr, phase=f"finetune.{e + 1}", **kwargs)
        return rows

    # -- evaluation ---------------------------------------------------------------------------
    def logits(self, split: str = "val", tta: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, labels, dataset_indices)`` over a split, before the temperature.

        With ``tta`` the "logits" are the log of the mean probability of the image and its mirror.
        """
        loader = self.data.loader(split, augment=False, shuffle=False, for_gpu=self.device == "cuda")
        logits, labels, indices, _ = _core.predict(self.model, loader._loader, True, tta, amp=self.amp)
        return logits, labels, indices

    def predictions(self, split: str = "val", tta: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(probabilities, labels, dataset_indices)`` over a split, in dataset order, calibrated
        by the learner's temperature."""
        logits, labels, indices = self.logits(split, tta)
        return torch.softmax(logits / self.temperature, 1), labels, indices

    def calibrate(self, split: str = "val", keep: float = calibration.DEFAULT_KEEP) -> Dict[str, Optional[float]]:
        """Fits the temperature and the "unknown" rule on ``split``; both are saved.

        The temperature minimises the negative log-likelihood (Guo et al. 2017); the rule is
        an energy floor (``min_energy``) that keeps ``keep`` of the correctly classified
        images. Returns the expected calibration error before and after, the temperature
        and the rule.

        Usage: ``learner.calibrate("val", keep=0.98)``
        """
        logits, labels, _ = self.logits(split)
        return self.use_calibration(calibration.calibrate(logits, labels, keep))

    def use_calibration(self, result: Dict[str, Optional[float]]) -> Dict[str, Optional[float]]:
        """Takes the temperature and the "unknown" rule of ``calibration.calibrate``'s result;
        returns it. Usage: ``learner.use_calibration(calibration.calibrate(logits, labels))``"""
        self.temperature, self.threshold = result["temperature"], result["threshold"]
        self.min_energy = result["min_energy"]
        return result

    def evaluate(self, split: str = "val", tta: bool = False) -> Report:
        """Accuracy, top-k, per-class precision/recall/F1 and the confusion matrix on ``split``.

        With an "unknown" rule set, ``report.extra`` also holds the share of images called
        "unknown" and the accuracy on the others.
        """
        logits, labels, _ = self.logits(split, tta)
        probs = torch.softmax(logits / self.temperature, 1)
        report = Report.from_predictions(labels.tolist(), probs, self.data.classes)
        report.extra["expected_calibration_error"] = calibration.expected_calibration_error(probs, labels)
        if calibration.has_rule(self.threshold, self.min_energy):  # as served: one view
            served = calibration.scores(self.logits(split)[0] if tta else logits, self.temperature)
            report.extra.update(calibration.unknown_scores(*served, labels, self.threshold, self.min_energy))
        train_acc = [h["train_accuracy"] for h in self.history]
        if split == "val" and train_acc:
            train_probs, train_labels, _ = self.predictions("train")
            report.train_accuracy = float((train_probs.argmax(1) == train_labels).float().mean())
        return report

    # -- persistence --------------------------------------------------------------------------
    def spec(self) -> "_core.ModelSpec":
        """What ``save`` writes beside the weights: architecture, classes, head, the eval
        pipeline op by op, threshold, temperature, recipe, history and provenance."""
        spec = model_file.make_spec(self.arch, self.data.classes, self.head, self.data.eval_pipeline,
                     self.model_options)
        spec.weights, spec.threshold, spec.temperature = self.weights, self.threshold, self.temperature
        spec.min_energy = self.min_energy
        spec.recipe, spec.history = json.dumps(self.recipe), json.dumps(self.history)
        spec.metrics = json.dumps(self.metrics)
        size = len(self.data.train) + (len(self.data.val) if self.data.val is not None else 0)
        spec.provenance = model_file.provenance(getattr(self.data, "name", ""), size)
        return spec

    def save(self, path: PathLike) -> Path:
        """One file with weights, architecture, class names and preprocessing (written atomically).

        In a distributed run only rank 0 writes; the others return the path.
        """
        if self.group is not None and self.group.rank != 0:
            return Path(path)
        return model_file.write_model(path, self.spec(), self.model)

    def write_report(self, out_dir: PathLike, stem: Optional[str] = None,
                     split: str = "val") -> Dict[str, Path]:
        """The report on ``split``, its plots and the history in ``out_dir``; see
        ``tlcore.reporting.write_report``."""
        from .reporting import write_report

        return write_report(self, out_dir, stem, split)
