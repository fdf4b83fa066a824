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
    "decode_image",
    "read_image",
]
