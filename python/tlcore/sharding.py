"""Writing any dataset as tar shards: big data prepared once, then read in place.

Usage::

    paths = tlcore.write_shards("flowers/train", "flowers-shards", shard_size="1GB")
    ds = tlcore.open_shards("flowers-shards")
"""
from __future__ import annotations

import contextlib
import io
import logging
import tarfile
import time
from pathlib import Path
from typing import BinaryIO, List, Optional, Union

import numpy as np
from PIL import Image
from tqdm import tqdm

from . import _core
from .data import PathLike, open_dataset, open_shards
from .files import atomic_write_bytes, atomic_writer

log = logging.getLogger(__name__)

CLASSES_FILE = "classes.txt"
def _png(pixels: np.ndarray) -> bytes:
    """Lossless bytes for sources that store pixels (CIFAR, IDX)."""
    buf = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buf, "PNG")
    return buf.getvalue()


def _sample(ds: "_core.Dataset", index: int, channels: int) -> bytes:
    data = ds.encoded(index)
    return data if data else _png(ds.image(index, channels=channels))


def _member(name: str, data: bytes) -> bytes:
    """One tar member: pax header (long names and all), data, zero padding to 512 bytes."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + data + bytes(-len(data) % 512)


# Two zero blocks end a tar file (tarfile's own writer would pad it to 10 KiB on top).
_END = bytes(1024)


class _ShardWriter:
    """Shards of at most ``limit`` bytes, each written through ``atomic_writer`` (a temporary
    file renamed when the shard is whole)."""

    def __init__(self, out: Path, limit: int) -> None:
        self.out, self.limit, self.paths = out, limit, []
        self._file: Optional[contextlib.AbstractContextManager] = None
        self._stream: Optional[BinaryIO] = None
        self._bytes = 0

    def add(self, key: str, image: bytes, ext: str, label: int) -> None:
        data = _member(f"{key}.{ext}", image) + _member(f"{key}.cls", str(label).encode())
        if self._stream is None or (self._bytes + len(data) + len(_END) > self.limit and self._bytes > 0):
            self.close()
            self._open()
        self._stream.write(data)
        self._bytes += len(data)

    def _open(self) -> None:
        self.paths.append(self.out / f"shard-{len(self.paths):06d}.tar")
        self._file = atomic_writer(self.paths[-1])
        self._stream = self._file.__enter__()
        self._bytes = 0

    def close(self, error: Optional[BaseException] = None) -> None:
        """Finishes the open shard; with ``error`` drops it instead."""
        if self._stream is None:
            return
        if error is None:
            self._stream.write(_END)
            self._file.__exit__(None, None, None)
        else:
            self._file.__exit__(type(error), error, error.__traceback__)
        self._stream = None


def write_shards(source: Union[PathLike, "_core.Dataset"], out: PathLike,
                 shard_size: Union[int, str] = "1GB", channels: int = 3,
                 progress: bool = True) -> List[Path]:
    """Writes every sample of ``source`` as WebDataset tar shards in folder ``out``.

    ``source`` is anything ``open_dataset`` opens (folder, archive, CIFAR, IDX, TFRecords,
    shards) or a ``Dataset``. Each sample becomes ``KEY.EXT`` (its image file as stored;
    CIFAR and IDX pixels as lossless PNG with ``channels`` channels) and ``KEY.cls`` (its
    class index); the class names go to ``out/classes.txt``, which ``open_shards`` reads.
    Shards hold at most ``shard_size`` bytes ("1GB", "256MiB" or a number) and each is
    indexed beside itself (``SHARD.tar.tlcidx``), so opening them costs no scan.
    Returns the shard paths.

    Usage: ``tlcore.write_shards("cifar-10-batches-bin", "cifar-shards", shard_size="64MB")``
    """
    ds = source if isinstance(source, _core.Dataset) else open_dataset(source)
    limit = _core.parse_byte_size(str(shard_size), "shard_size")
    if limit < 1024:
        raise ValueError(f"shard_size: {shard_size} is too small for a shard")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("shard-*.tar")):
        raise FileExistsError(f"{out}: already holds shards; write to an empty folder")
    writer = _ShardWriter(out, limit)
    width = max(6, len(str(len(ds) - 1)))
    try:
        for i in tqdm(range(len(ds)), desc="shards", unit="img", disable=not progress):
            image = _sample(ds, i, channels)
            ext = _core.image_extension(image)
            if not ext:
                raise ValueError(f"{ds.source(i)}: not a JPEG, PNG, BMP or WebP image")
            writer.add(f"{i:0{width}d}", image, ext, ds.label(i))
    except BaseException as e:
        writer.close(e)
        raise
    writer.close()
    atomic_write_bytes(out / CLASSES_FILE, "".join(f"{name}\n" for name in ds.classes).encode())
    # Indexed now, beside the shards, with the class names checked on the way.
    open_shards(out, index_beside=True)
    log.info("%d samples in %d shards under %s", len(ds), len(writer.paths), out)
    return writer.paths
