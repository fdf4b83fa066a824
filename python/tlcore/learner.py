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

import io
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from . import _core, distributed
from .data import DataLoader, PathLike, open_dataset
from .report import Report, atomic_write_bytes

log = logging.getLogger(__name__)

MODEL_FORMAT = "tlcore-model/1"


class ImageData:
    """A labelled image source with a stratified train/validation split and its pipelines.

    ``source`` is anything ``tlcore.open_dataset`` opens, or a ``Dataset``. ``valid``
    gives a separate validation source instead of a split.

    Usage: ``data = tlcore.ImageData("flowers/train", val_split=0.2, seed=42, image_size=224)``
    """

    def __init__(self, source: Union[PathLike, "_core.Dataset"], val_split: float = 0.2,
                 seed: int = 42, image_size: int = 224, batch_size: int = 32,
                 train_transform: Union[str, "_core.Pipeline"] = "imagenet-train",
                 eval_transform: Union[str, "_core.Pipeline"] = "imagenet-eval",
                 channels: int = 3, valid: Union[PathLike, "_core.Dataset", None] = None,
                 per_class: Optional[int] = None, num_workers: int = 0) -> None:
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
        self.classes: List[str] = list(full.classes)
        self.image_size, self.batch_size, self.seed = image_size, batch_size, seed
        self.channels, self.num_workers = channels, num_workers
        self.train_pipeline = _pipeline(train_transform, image_size, channels)
        self.eval_pipeline = _pipeline(eval_transform, image_size, channels)

    def loader(self, split: str = "train", augment: bool = True, shuffle: Optional[bool] = None,
               batch_size: Optional[int] = None, rank: int = 0, world_size: int = 1,
               for_gpu: bool = False) -> DataLoader:
        """A loader over ``split`` ("train" or "val"); eval pipeline unless training with augment.

        ``rank``/``world_size`` give this rank's shard; ``for_gpu`` yields uint8 batches in
        pinned memory, normalised on the GPU.
        """
        ds = self.train if split == "train" else self.val
        if ds is None:
            raise ValueError("this ImageData has no validation split (val_split=0 and no valid=)")
        pipeline = self.train_pipeline if split == "train" and augment else self.eval_pipeline
        return DataLoader(ds, pipeline, batch_size=batch_size or self.batch_size,
                          shuffle=(split == "train") if shuffle is None else shuffle,
                          seed=self.seed, num_workers=self.num_workers, rank=rank,
                          world_size=world_size, uint8_output=for_gpu, pin_memory=for_gpu)

    def __repr__(self) -> str:
        val = len(self.val) if self.val is not None else 0
        return (f"ImageData({len(self.train)} train / {val} val images, {len(self.classes)} classes, "
                f"{self.image_size}px)")


def _pipeline(transform: Union[str, "_core.Pipeline"], size: int, channels: int) -> "_core.Pipeline":
    return _core.Pipeline.preset(transform, size, channels) if isinstance(transform, str) else transform


class _Progress:
    """tqdm bars fed by the C++ trainer's callbacks."""

    def __init__(self, phase: str, epochs: int, verbose: bool) -> None:
        self.phase, self.epochs, self.verbose, self.bar = phase, epochs, verbose, None
        self.epoch = 0

    def on_batch(self, b: int, n: int, loss: float) -> None:
        if not self.verbose:
            return
        if self.bar is None:
            self.bar = tqdm(total=n, desc=f"{self.phase} {self.epoch + 1}/{self.epochs}", unit="batch",
                            leave=False)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.4f}")

    def on_epoch(self, s: "_core.EpochStats") -> bool:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.epoch += 1
        val = (f" val_loss {s.val_loss:.4f} val_acc {s.val_accuracy:.4f} val_f1 {s.val_f1:.4f}"
               if s.has_val else "")
        log.info("%s epoch %d/%d: loss %.4f acc %.4f%s lr %.2e %.1fs (%.0f img/s)", s.phase,
                 s.epoch + 1, self.epochs, s.train_loss, s.train_accuracy, val, s.lr, s.seconds,
                 s.images_per_second)
        return True


def _history_row(s: "_core.EpochStats", global_epoch: int) -> Dict[str, object]:
    row: Dict[str, object] = {
        "epoch": global_epoch, "phase": s.phase, "train_loss": s.train_loss,
        "train_accuracy": s.train_accuracy, "lr": s.lr, "seconds": s.seconds,
        "images_per_second": s.images_per_second,
    }
    if s.has_val:
        row.update(val_loss=s.val_loss, val_accuracy=s.val_accuracy, val_f1=s.val_f1)
    return row


class Learner:
    """A model, its data and the training recipe: ``fit_head`` then ``fine_tune``.

    ``weights`` is None (random init), "imagenet" (torchvision's checkpoint from the torch
    hub cache, downloaded if needed) or a path to a state dict. ``device`` is "cpu",
    "cuda" or "auto"; ``amp`` ("off", "bf16", "fp16") trains in mixed precision.

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
        self.model = _core.create_model(arch, len(data.classes), in_channels=data.channels,
                                        **model_options)
        if weights is not None:
            path = _weights_path(arch, weights)
            dropped = self.model.load_checkpoint(str(path), strict=True, drop_head=True)
            log.info("loaded %s (%s)%s", path, arch, " without its head" if dropped else "")
        self.head = {"kind": head, "dropout": dropout, "hidden": list(hidden)}
        if head != "linear" or hidden:
            torch.manual_seed(data.seed if seed is None else seed)
            self.model.set_head(len(data.classes), head, dropout, list(hidden))
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.history: List[Dict[str, object]] = []
        self._loader_epochs = 0

    # -- training ---------------------------------------------------------------------------
    def fit(self, epochs: int, lr: float = 1e-3, phase: str = "fit", augment: bool = True,
            cache_features: bool = False, cache_flip: bool = False, compile_frozen: bool = True,
            optimizer: str = "adam", weight_decay: float = 0.0, momentum: float = 0.9,
            nesterov: bool = False, schedule: str = "constant", warmup_epochs: float = 0.0,
            layer_decay: float = 1.0, clip_grad_norm: float = 0.0,
            label_smoothing: float = 0.0, class_weights: Union[None, str, Sequence[float]] = None,
            patience: int = 0, monitor: str = "val_accuracy", restore_best: bool = True,
            sync_batchnorm: bool = True, seed: Optional[int] = None) -> List[Dict[str, object]]:
        """Trains whatever is trainable now for ``epochs``; returns this phase's history.

        ``cache_features`` computes once what the frozen part hands the trainable part (no
        augmentation then); ``cache_flip`` also caches the mirrored images, and every epoch each
        image trains on its mirror with probability 0.5 (an exact random horizontal flip).
        ``sync_batchnorm``: in a distributed run, BatchNorm layers that train normalise with
        the statistics of all ranks' batches (torch.nn.SyncBatchNorm).
        ``compile_frozen`` runs the leading frozen blocks as a compiled inference graph and
        only the trainable tail under autograd (same result up to float rounding, ~2x faster).
        """
        o = _core.FitOptions()
        o.epochs, o.phase = epochs, phase
        o.optimizer.name, o.optimizer.lr, o.optimizer.weight_decay = optimizer, lr, weight_decay
        o.optimizer.momentum, o.optimizer.nesterov, o.optimizer.layer_decay = momentum, nesterov, layer_decay
        o.schedule.name, o.schedule.warmup_epochs = schedule, warmup_epochs
        o.clip_grad_norm, o.label_smoothing = clip_grad_norm, label_smoothing
        if class_weights == "balanced":
            o.class_weights = _core.balanced_class_weights(self.data.train.labels().tolist(),
                                                           len(self.data.classes))
        elif class_weights is not None:
            o.class_weights = list(class_weights)
        o.patience, o.monitor, o.restore_best = patience, monitor, restore_best
        o.sync_batchnorm = sync_batchnorm
        o.cache_features, o.cache_flip, o.compile_frozen = cache_features, cache_flip, compile_frozen
        o.seed = self.data.seed if seed is None else seed
        o.epoch_offset = self._loader_epochs
        if self.checkpoint_dir is not None:
            o.checkpoint = str(self.checkpoint_dir / f"{phase}.ckpt")
        o.device, o.amp = self.device, self.amp
        rank, world = (self.group.rank, self.group.world_size) if self.group else (0, 1)
        gpu = self.device == "cuda"
        train = self.data.loader("train", augment=augment and not cache_features, rank=rank,
                                 world_size=world, for_gpu=gpu)
        val = (self.data.loader("val", rank=rank, world_size=world, for_gpu=gpu)
               if self.data.val is not None else None)
        trainer = _core.Trainer(self.model, train._loader, val._loader if val else None, self.group)
        progress = _Progress(phase, epochs, self.verbose)
        result = trainer.fit(o, progress.on_epoch, progress.on_batch)
        start = len(self.history)
        rows = [_history_row(s, start + i) for i, s in enumerate(result.history)]
        self.history.extend(rows)
        self._loader_epochs += epochs
        if result.stopped_early:
            log.info("%s: stopped early; best epoch %d restored", phase, result.best_epoch + 1)
        return rows

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
    def predictions(self, split: str = "val", tta: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(probabilities, labels, dataset_indices)`` over a split, in dataset order."""
        loader = self.data.loader(split, augment=False, shuffle=False, for_gpu=self.device == "cuda")
        logits, labels, indices, _ = _core.predict(self.model, loader._loader, True, tta, amp=self.amp)
        return torch.softmax(logits, 1), labels, indices

    def evaluate(self, split: str = "val", tta: bool = False) -> Report:
        """Accuracy, top-k, per-class precision/recall/F1 and the confusion matrix on ``split``."""
        probs, labels, _ = self.predictions(split, tta)
        report = Report.from_predictions(labels.tolist(), probs, self.data.classes)
        train_acc = [h["train_accuracy"] for h in self.history]
        if split == "val" and train_acc:
            train_probs, train_labels, _ = self.predictions("train")
            report.train_accuracy = float((train_probs.argmax(1) == train_labels).float().mean())
        return report

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: PathLike) -> Path:
        """One file with weights, architecture, class names and preprocessing (written atomically).

        In a distributed run only rank 0 writes; the others return the path.
        """
        if self.group is not None and self.group.rank != 0:
            return Path(path)
        payload = _payload(self.arch, self.model, self.data.classes, self.head, self.data.eval_pipeline)
        payload["history"] = self.history
        return _write_model(path, payload)

    def write_report(self, out_dir: PathLike, stem: Optional[str] = None) -> Dict[str, Path]:
        """The report, its plots and the history in ``out_dir``; see ``tlcore.reporting.write_report``."""
        from .reporting import write_report

        return write_report(self, out_dir, stem)


def _payload(arch: str, model: "_core.Model", classes: Sequence[str], head: Dict[str, object],
             pipeline: "_core.Pipeline", threshold: float = 0.0) -> Dict[str, object]:
    """The saved-model dict: everything needed to predict, with torchvision's parameter names."""
    return {
        "format": MODEL_FORMAT,
        "arch": arch,
        "classes": list(classes),
        "in_channels": pipeline.channels,
        "head": head,
        "preprocess": {"image_size": pipeline.size[0], "transform": "imagenet-eval"
                       if pipeline.size[0] >= 64 else "cifar-eval",
                       "mean": list(pipeline.mean), "std": list(pipeline.std),
                       "channels": pipeline.channels},
        "threshold": threshold,
        "history": [],
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    }


def _write_model(path: PathLike, payload: Dict[str, object]) -> Path:
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _weights_path(arch: str, weights: PathLike) -> Path:
    if str(weights) == "imagenet":
        from .weights import fetch

        return Path(fetch(arch, "imagenet"))
    path = Path(weights)
    if not path.exists():
        raise FileNotFoundError(f"{path}: weights file not found")
    return path


class Classifier:
    """A saved tlcore model ready to predict on images.

    Usage: ``tlcore.load("flowers.tlc").predict("rose.jpg")``
    """

    def __init__(self, payload: Dict[str, object], source: str = "") -> None:
        if payload.get("format") != MODEL_FORMAT:
            raise ValueError(f"{source}: not a tlcore model file (format {payload.get('format')!r})")
        self.source = source
        self.arch: str = payload["arch"]
        self.classes: List[str] = list(payload["classes"])
        self.threshold: float = float(payload.get("threshold", 0.0))
        self.history = payload.get("history", [])
        pre = payload["preprocess"]
        self.model = _core.create_model(self.arch, len(self.classes), in_channels=payload["in_channels"])
        head = payload["head"]
        if head["kind"] != "linear" or head["hidden"]:
            self.model.set_head(len(self.classes), head["kind"], head["dropout"], head["hidden"])
        self.model.load_state_dict(payload["state_dict"], strict=True)
        self.model.eval()
        self.pipeline = _core.Pipeline.preset(pre["transform"], pre["image_size"], pre["channels"])
        self._payload = payload
        self._compiled: Optional["_core.InferenceModel"] = None

    @classmethod
    def pretrained(cls, arch: str, weights: PathLike = "imagenet",
                   image_size: Optional[int] = None) -> "Classifier":
        """The 1,000-category ImageNet classifier of pretrained weights, ready to predict or save.

        Usage: ``tlcore.Classifier.pretrained("mobilenet_v2").save("models/imagenet.tlc")``
        """
        from .weights import imagenet_classes

        model = _core.create_model(arch, 1000)
        model.load_checkpoint(str(_weights_path(arch, weights)), strict=True)
        size = image_size or model.preprocess["input_size"]
        pipeline = _core.Pipeline.preset("imagenet-eval", size, 3)
        head = {"kind": "linear", "dropout": 0.2, "hidden": []}
        return cls(_payload(arch, model, imagenet_classes(), head, pipeline), f"{arch}-imagenet")

    def save(self, path: PathLike) -> Path:
        """Writes this model as one tlcore file (atomically)."""
        return _write_model(path, self._payload)

    def _tensor(self, image: Union[PathLike, bytes, np.ndarray]) -> torch.Tensor:
        channels = self.pipeline.channels
        if isinstance(image, (bytes, bytearray)):
            array = _core.decode_image(bytes(image), channels=channels)
        elif isinstance(image, np.ndarray):
            array = image
        else:
            array = _core.read_image(str(image), channels=channels)
        return torch.from_numpy(self.pipeline.normalize(self.pipeline(array)))

    def predict_proba(self, images: Sequence[Union[PathLike, bytes, np.ndarray]]) -> torch.Tensor:
        """Class probabilities, one row per image."""
        batch = torch.stack([self._tensor(i) for i in images])
        if self._compiled is None:
            self._compiled = self.model.compile_for_inference(self.pipeline.size[0])
        with torch.inference_mode():
            return torch.softmax(self._compiled(batch), 1)

    def predict(self, image: Union[PathLike, bytes, np.ndarray], top_k: int = 5) -> Dict[str, object]:
        """``{"prediction", "confidence", "top_k": [(label, probability), ...]}`` for one image."""
        probs = self.predict_proba([image])[0]
        values, idx = probs.topk(min(top_k, len(self.classes)))
        top = [(self.classes[int(i)], float(v)) for v, i in zip(values, idx)]
        label, confidence = top[0]
        if confidence < self.threshold:
            label = "unknown"
        return {"prediction": label, "confidence": confidence, "top_k": top}


def load(path: PathLike) -> Classifier:
    """Loads a model saved by ``Learner.save``.

    Usage: ``clf = tlcore.load("flowers.tlc")``
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file")
    try:
        payload = torch.load(str(path), map_location="cpu")
    except Exception as e:  # torch raises many types for a non-checkpoint file
        raise ValueError(f"{path}: not a readable tlcore model ({e})") from e
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: not a tlcore model file")
    return Classifier(payload, str(path))
