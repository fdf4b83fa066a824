"""Datasets and the C++ batch loader.

Usage::

    ds = tlcore.open_dataset("flowers/train")
    for images, labels in tlcore.DataLoader(ds, "imagenet-train", image_size=224, batch_size=64):
        ...
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import torch

from . import _core

PathLike = Union[str, "os.PathLike[str]"]

# The image folders' rule (C++): .jpg .jpeg .png .bmp .webp in any case.
has_image_extension = _core.has_image_extension
# (width, height) read from an image's header, as the decoder's pixel limit reads it.
image_dimensions = _core.image_dimensions

_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
_SHARD_SUFFIXES = tuple(_core.TAR_SHARD_EXTENSIONS)
_TFRECORD_SUFFIXES = (".tfrec", ".tfrecord", ".tfrecords")
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


def open_dataset(path: PathLike, train: bool = True) -> "_core.Dataset":
    """Opens a labelled image source, recognised by its layout.

    A folder of class folders; tar shards (a ``.tar`` file, a folder of plain or compressed
    tars, a glob or brace range such as ``train-{000..099}.tar.gz``, or a ``.txt`` list of
    them; see ``open_shards``); one compressed tar archive of class folders (read in memory); a
    CIFAR-10/100 binary folder or ``.bin`` file; an MNIST-style IDX images file (its labels
    file beside it); or TFRecords: a ``.tfrec``/``.tfrecord`` file, a glob of shards or a
    folder of them (features "image" and "class"; see ``open_tfrecords`` for other names).

    Usage: ``ds = tlcore.open_dataset("flowers/train")``
    """
    p = Path(path)
    if not p.exists() and any(c in str(path) for c in "*?[{"):
        return _open_pattern(str(path), str(path))
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    name = p.name.lower()
    if p.is_file() and name.endswith(".txt"):
        return _open_pattern(str(p), _first_listed(p))
    if p.is_file() and name.endswith(_TFRECORD_SUFFIXES) or _is_shard_dir(p, _TFRECORD_SUFFIXES):
        return open_tfrecords(p)
    if p.is_file() and name.endswith(".tar") or _is_shard_dir(p, _SHARD_SUFFIXES):
        return open_shards(p)
    if p.is_file() and name.endswith(_ARCHIVE_SUFFIXES):
        return _core.open_image_archive(str(p))
    if p.is_file() and name.endswith(".bin") or _is_cifar_dir(p):
        return _core.open_cifar(str(p), train)
    if p.is_file() and "idx3" in name:
        labels = p.with_name(p.name.replace("images-idx3", "labels-idx1"))
        return _core.open_idx(str(p), str(labels), [])
    if p.is_dir():
        return _core.open_image_folder(str(p))
    raise ValueError(f"{p}: not a recognised dataset (folder of class folders, tar shards or "
                     "archive, CIFAR binary, IDX file or TFRecords)")


def open_shards(pattern: PathLike, classes: Optional[Sequence[str]] = None,
                index_dir: Optional[PathLike] = None, skip_corrupt: bool = False,
                index_beside: bool = False,
                stream_memory: Union[int, str] = "512MiB") -> "_core.Dataset":
    """Tar shards, never loaded whole: data far larger than memory.

    ``pattern`` is a ``.tar`` file, a brace range (``"train-{000000..000999}.tar"``), a glob,
    a folder of shards or a ``.txt`` list of them. Plain tars are read in place; compressed
    ones (``.tar.gz``, ``.tar.zst``, ``.tar.xz``, ``.tar.bz2``) stream front to back, the
    images a stream passed kept in ``stream_memory`` for the loader's shuffle buffer (a
    random-access read of a compressed shard decompresses it again, so read them through a
    ``DataLoader``, or ``tlcore shard`` them to plain tars). Inside, either WebDataset's layout
    (``key.jpg`` beside ``key.cls`` holding a class index or name, or ``key.json`` with
    ``"label"``) or class folders (``<class>/<image>``). Each shard is indexed once and the
    index kept in ``index_dir`` (default ``~/.cache/tlcore``), so opening again takes
    milliseconds (``index_beside`` keeps them beside the shards instead, for data shared by
    many users). ``classes`` names classes 0..K-1 (or orders named ones); by default they
    come from a ``classes.txt`` beside the shards (one name per line, as ``write_shards``
    writes it).
    ``skip_corrupt`` leaves out (and counts, in ``.stats``) images without a label, labels
    that do not parse and the rest of a truncated shard; otherwise each raises ValueError
    naming shard and member. Loaders read such data shard by shard (``shuffle_buffer``).

    Usage: ``ds = tlcore.open_shards("data/train-{000000..000099}.tar")``
    """
    if classes is None:
        classes = _classes_beside(Path(pattern))
    return _core.open_shards(str(pattern), list(classes or []), str(index_dir or ""),
                             skip_corrupt, index_beside=index_beside,
                             stream_memory=_core.parse_byte_size(str(stream_memory),
                                                                 "stream_memory"))


def _classes_beside(pattern: Path) -> Optional[List[str]]:
    """The names in classes.txt in the shards' folder, if there is one."""
    names = (pattern if pattern.is_dir() else pattern.parent) / "classes.txt"
    if not names.is_file():
        return None
    return [line.strip() for line in names.read_text().splitlines() if line.strip()]


def open_tfrecords(pattern: PathLike, image_key: str = "image", label_key: str = "class",
                   classes: Optional[Sequence[str]] = None,
                   index_dir: Optional[PathLike] = None) -> "_core.Dataset":
    """TFRecords of ``tf.train.Example``: an encoded image in bytes feature ``image_key`` and
    the class index in int64 feature ``label_key`` (the Kaggle 104-flowers layout).

    ``pattern`` is a file, a glob or brace range of shards (read in sorted order), a folder
    of ``.tfrec``/``.tfrecord`` files or a ``.txt`` list of them. ``classes`` names classes
    0..K-1 (default "0".."max"). The first open scans the shards in parallel and caches
    each one's record index in ``index_dir`` (default ``~/.cache/tlcore``); opening again
    reads only the indexes. A corrupt record raises ValueError naming the file and offset.

    Usage: ``ds = tlcore.open_tfrecords("tfrecords-jpeg-224x224/train/*.tfrec", classes=FLOWERS)``
    """
    return _core.open_tfrecords(str(pattern), image_key, label_key, list(classes or []),
                                str(index_dir or ""))


def _open_pattern(pattern: str, example: str) -> "_core.Dataset":
    """Shards named by a pattern or list, of the kind ``example`` (one of them) names."""
    name = example.lower()
    if name.endswith(_TFRECORD_SUFFIXES):
        return open_tfrecords(pattern)
    if name.endswith(_SHARD_SUFFIXES):
        return open_shards(pattern)
    raise ValueError(f"{pattern}: names neither tar shards nor TFRecord files")


def _first_listed(list_file: Path) -> str:
    """The first shard a list file names."""
    for line in list_file.read_text(errors="replace").splitlines():
        if line.strip() and not line.strip().startswith("#"):
            return line.strip()
    raise ValueError(f"{list_file}: the shard list is empty")


def fashion_mnist(train: bool = True, root: PathLike = FASHION_MNIST_DIR) -> "_core.Dataset":
    """Fashion-MNIST from Debian's dataset-fashion-mnist package (no download).

    Usage: ``ds = tlcore.fashion_mnist(train=False)``
    """
    split = "train" if train else "t10k"
    root = Path(root)
    images, labels = root / f"{split}-images-idx3-ubyte.gz", root / f"{split}-labels-idx1-ubyte.gz"
    if not images.exists():
        raise FileNotFoundError(
            f"{images}: Fashion-MNIST is missing; install it with `apt-get install dataset-fashion-mnist`")
    return _core.open_idx(str(images), str(labels), FASHION_MNIST_CLASSES)


def _is_shard_dir(p: Path, suffixes: Tuple[str, ...]) -> bool:
    """A folder of shard files with one of ``suffixes``, and no class folders."""
    if not p.is_dir():
        return False
    children = [c for c in p.iterdir() if not c.name.startswith(".")]
    return (any(c.is_file() and c.name.lower().endswith(suffixes) for c in children)
            and not any(c.is_dir() for c in children))


def _is_cifar_dir(p: Path) -> bool:
    return p.is_dir() and any((p / f).exists() for f in ("data_batch_1.bin", "train.bin", "test_batch.bin"))


class DataLoader:
    """Batches of ``(images, labels)`` tensors made by C++ worker threads.

    ``transform`` is a preset name ("imagenet-train", "imagenet-eval", "cifar-train",
    "cifar-eval") or a ``tlcore.Pipeline``. Each epoch reshuffles from ``(seed, epoch)``;
    iterating again starts the next epoch, ``set_epoch`` picks one. Sharded data
    (``open_shards``, ``open_tfrecords``) is read shard by shard: shards shuffled whole,
    a contiguous run of them per rank, samples shuffled through a buffer of
    ``shuffle_buffer`` (0: one permutation of every sample, as for other data).

    Usage::

        loader = tlcore.DataLoader(ds, "imagenet-train", image_size=224, batch_size=64)
        for images, labels in loader: ...
    """

    def __init__(
        self,
        dataset: "_core.Dataset",
        transform: Union[str, "_core.Pipeline"] = "imagenet-eval",
        image_size: int = 224,
        batch_size: int = 32,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        num_workers: int = 0,
        prefetch: int = 2,
        channels: int = 3,
        uint8_output: bool = False,
        pin_memory: bool = False,
        skip_corrupt: bool = False,
        rank: int = 0,
        world_size: int = 1,
        shuffle_buffer: int = 10000,
    ) -> None:
        self.dataset = dataset
        self.pipeline = (
            _core.Pipeline.preset(transform, image_size, channels) if isinstance(transform, str) else transform
        )
        self._loader = _core.Loader(
            dataset, self.pipeline, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
            seed=seed, num_workers=num_workers, prefetch=prefetch, uint8_output=uint8_output,
            pin_memory=pin_memory, skip_corrupt=skip_corrupt, rank=rank, world_size=world_size,
            shuffle_buffer=shuffle_buffer,
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Makes the next iteration produce epoch ``epoch``."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self._loader)

    @property
    def num_samples(self) -> int:
        """Samples per epoch (of this rank)."""
        return self._loader.num_samples

    @property
    def skipped(self) -> int:
        """Corrupt samples skipped so far (``skip_corrupt=True``)."""
        return self._loader.skipped

    def batches(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Like iteration, but yields ``(images, labels, dataset_indices)``."""
        self._loader.start_epoch(self.epoch)
        self.epoch += 1
        while (batch := self._loader.next()) is not None:
            yield batch

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
        for images, labels, _ in self.batches():
            yield images, labels
