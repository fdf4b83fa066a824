"""Image augmentation ops (C++, OpenCV) and the pipelines made of them.

Each op works on a uint8 HxWxC array; ``op(image, seed, epoch, index)`` draws its random
parameters from ``Rng(seed, epoch, index)``, so any augmentation can be replayed exactly,
and the random ops' ``sample`` returns the parameters a draw would use.
A ``Pipeline`` chains ops to a fixed output size and normalises with per-channel mean/std.

Usage::

    from tlcore import transforms as T
    eval_tf = T.Pipeline.preset("imagenet-eval", 224)
    train_tf = T.Pipeline([T.RandomResizedCrop(224), T.RandomHorizontalFlip(0.5),
                           T.ColorJitter(brightness=0.2, contrast=0.2)], 224, eval_tf.mean, eval_tf.std)
    data = tlcore.ImageData("flowers/train", train_transform=train_tf, eval_transform=eval_tf)
    augmented = train_tf(T.read_image("rose.jpg"), seed=0, epoch=3, index=7)
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from ._core import (
    CenterCrop,
    ColorJitter,
    Grayscale3,
    Op,
    PadRandomCrop,
    Pipeline,
    RandomGrayscale,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotation,
    RandomZoom,
    Resize,
    Rng,
    decode_image,
    read_image,
)

__all__ = [
    "CenterCrop",
    "ColorJitter",
    "Grayscale3",
    "Op",
    "PadRandomCrop",
    "Pipeline",
    "RandomGrayscale",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomRotation",
    "RandomZoom",
    "Resize",
    "Rng",
    "augmentation",
    "decode_image",
    "is_augmentation",
    "read_image",
]

# Keras' preprocessing layers by name, with the value a bare name means.
AUGMENTATIONS: Dict[str, float] = {"flip": 0.5, "rotate": 0.1, "zoom": 0.1, "contrast": 0.1, "translate": 0.1}


def _parse(text: str) -> List[Tuple[str, float]]:
    """``"flip,rotate=0.2"`` -> [("flip", 0.5), ("rotate", 0.2)]; ValueError naming the bad part."""
    parts = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in AUGMENTATIONS:
            raise ValueError(f"augmentation '{name}': expected one of {', '.join(AUGMENTATIONS)} "
                             "(or a preset: imagenet-train, cifar-train)")
        try:
            amount = float(value) if value else AUGMENTATIONS[name]
        except ValueError:
            raise ValueError(f"augmentation '{item}': '{value}' is not a number") from None
        if not 0 <= amount <= 1:
            raise ValueError(f"augmentation '{item}': the factor must be from 0 to 1")
        parts.append((name, amount))
    return parts


def is_augmentation(text: str) -> bool:
    """True when ``text`` names augmentations (``"flip,zoom=0.2"``) rather than a preset."""
    first = text.split(",")[0].partition("=")[0].strip()
    return first in AUGMENTATIONS


def augmentation(text: str, base: Pipeline) -> Pipeline:
    """A training pipeline: ``base`` (an eval pipeline: resize, crop, mean/std) then the
    augmentations ``text`` names, with Keras' meanings.

    - ``flip`` (``flip=p``): RandomFlip("horizontal"), mirrored with probability p (0.5).
    - ``rotate=f``: RandomRotation(f), an angle uniform in ±f × 2π (f × 360 degrees).
    - ``zoom=f``: RandomZoom(f), one scale uniform in [1 - f, 1 + f] for both axes.
    - ``contrast=f``: RandomContrast(f), a factor uniform in [1 - f, 1 + f]. The pixels are
      blended with the image's grey mean, as torchvision does; Keras uses each channel's mean.
    - ``translate=f``: RandomTranslation(f, f, fill_mode="constant"), a shift of up to
      f × the side along each axis, in whole pixels, the uncovered border black.

    Usage: ``augmentation("flip,rotate=0.2,zoom=0.2,contrast=0.1", Pipeline.preset("imagenet-eval", 224))``
    """
    # A preset for small images (cifar-eval) takes them at their size: resize here instead.
    ops: List[Op] = list(base.ops) or [Resize(base.size)]
    for name, amount in _parse(text):
        if name == "flip":
            ops.append(RandomHorizontalFlip(amount))
        elif name == "rotate":
            ops.append(RandomRotation(amount * 360.0))
        elif name == "zoom":
            ops.append(RandomZoom(amount))
        elif name == "translate":
            height, width = base.size if isinstance(base.size, tuple) else (base.size, base.size)
            if height != width:
                raise ValueError(f"augmentation 'translate': needs a square image size, got {height}x{width}")
            ops.append(PadRandomCrop(height, round(amount * height)))
        else:
            ops.append(ColorJitter(contrast=amount))
    return Pipeline(ops, base.size, base.mean, base.std, base.channels)
