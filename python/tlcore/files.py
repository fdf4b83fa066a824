"""Writing files whole or not at all, with the permissions a plain ``open(path, "w")`` gives.

Usage: ``tlcore.files.atomic_write_bytes("runs/report.json", data)``
"""
from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Iterator, Tuple, Union

PathLike = Union[str, "os.PathLike[str]"]

# What open() asks for; the kernel takes the process umask (or a default ACL) away from it.
FILE_MODE = 0o666
_TEMP_TRIES = 100


def atomic_write_bytes(path: PathLike, data: bytes) -> Path:
    """Writes ``data`` to ``path`` through ``atomic_writer``; returns the path."""
    with atomic_writer(path) as f:
        f.write(data)
    return Path(path)


@contextlib.contextmanager
def atomic_writer(path: PathLike) -> Iterator[BinaryIO]:
    """A binary file that becomes ``path`` when the block ends, or vanishes if it raises.

    It is a temp file beside ``path``, synced then renamed over it: a reader sees the old
    file or the new one, never a part. The file ends up with mode ``0o666 & ~umask``, as
    ``open()`` would make it (a model saved by one user can be served by another): the temp
    file is created by ``os.open(..., 0o666)``, so the kernel applies the umask itself.
    Nothing reads or sets the umask, which ``os.umask`` could only do by changing it for
    every thread for a moment.

    Usage::

        with atomic_writer("weights.pth") as f:
            f.write(chunk)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)


def _create_beside(path: Path) -> Tuple[int, Path]:
    """A new, hidden file ``.<name>.<random>.tmp`` in ``path``'s folder, opened for writing."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_TEMP_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"{path.parent}: no free temporary name for {path.name} after {_TEMP_TRIES} tries")


def _sync_dir(folder: Path) -> None:
    """Makes the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
