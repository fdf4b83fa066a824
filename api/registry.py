"""The models a service answers for: one ``tlcore.Predictor`` per saved model in a folder."""
from __future__ import annotations

import asyncio
import functools
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, TypeVar

import anyio
import anyio.to_thread

import tlcore

log = logging.getLogger(__name__)

# What Learner.save and `tlcore train` write.
MODEL_SUFFIX = ".tlc"


@dataclass(frozen=True)
class BatchOptions:
    """The Predictor's dynamic-batching and safety limits, the same for every model."""

    max_batch: int = 16
    max_delay_ms: float = 5.0
    max_queue: int = 256
    max_pixels: int = 40_000_000
    # The "unknown" rule for every model (tlcore.Predictor's threshold and min_energy); both
    # None keep each model's own.
    threshold: Optional[float] = None
    min_energy: Optional[float] = None
    # "fp32", "bf16", "int8" (calibrated models) or "auto": tlcore.precision.
    precision: str = "fp32"


@dataclass(frozen=True)
class Rejected:
    """A model file the service does not serve, and why, in words safe to show clients."""

    file: str
    reason: str


class UnknownModel(LookupError):
    """No model of that name is served."""


class NoModel(LookupError):
    """The model a request needs is not loaded: its file was rejected, or none loaded at all."""


T = TypeVar("T")

# Images over this many pixels (about 1600 x 1200) decode in a narrow lane, a few at a time: a
# 35 KB PNG may declare 36 million pixels, which take a core for most of a second and 150 MB
# to decode, so a client sending those back to back would otherwise starve ordinary photos.
# Under it, a decoder's buffers stay small wherever glibc keeps them (see Lane).
LARGE_IMAGE_PIXELS = 2_000_000


def image_pixels(data: bytes) -> Optional[int]:
    """Width x height from a JPEG, PNG, BMP or WebP header (tlcore's own reader), else None."""
    width, height = tlcore.data.image_dimensions(data)
    return width * height if width and height else None


def _lower_priority() -> None:
    """This thread yields the CPU to the others (Linux: a nice value is per thread): a large
    decode takes whatever ordinary photos leave, not the half of the cores it may hold."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 10)
    except (AttributeError, OSError):  # no per-thread priorities here: the lane's width still bounds it
        pass


class Lane:
    """At most ``width`` large images decoding at once, over all models, on the lane's own threads.

    Own threads, kept: the buffers a large decode frees stay with the thread's malloc arena
    (tlcore tells glibc never to give memory back), and the next large decode on that thread
    reuses them. Spread over fresh threads, they filled every arena in turn: a stream of
    36-megapixel PNGs grew the server by ~100 MB every 15 s.

    Usage: ``result = await lane.run(functools.partial(predictor.predict, data))``
    """

    def __init__(self, width: int) -> None:
        self.width = width
        self._limiter: Optional[anyio.CapacityLimiter] = None
        self._threads: Optional[ThreadPoolExecutor] = None

    async def run(self, call: Callable[[], T]) -> T:
        if self._limiter is None:  # created on first use: a limiter belongs to the running event loop
            self._limiter = anyio.CapacityLimiter(self.width)
        async with self._limiter:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self.width, thread_name_prefix="tlcore-large",
                                                   initializer=_lower_priority)
            return await asyncio.get_running_loop().run_in_executor(self._threads, call)

    def close(self) -> None:
        if self._threads is not None:
            self._threads.shutdown(wait=False)  # calls still running finish and answer
            self._threads = None


class ServedModel:
    """A Predictor and the worker threads allowed to wait on it."""

    def __init__(self, predictor: "tlcore.Predictor", options: BatchOptions, large: Optional[Lane] = None) -> None:
        self.predictor = predictor
        self.large = large or Lane(1)
        # One blocked thread per queued request plus one running batch: more threads would only
        # form an unbounded queue in front of the Predictor's bounded one.
        self.max_waiting = options.max_queue + options.max_batch
        self._limiter: Optional[anyio.CapacityLimiter] = None

    @property
    def name(self) -> str:
        return self.predictor.name

    def info(self) -> Dict[str, object]:
        p = self.predictor
        return {"name": p.name, "arch": p.arch, "classes": list(p.classes), "num_classes": len(p.classes),
                "input_size": p.input_size, "threshold": p.threshold, "min_energy": p.min_energy,
                "precision": p.precision}

    async def predict(self, image: bytes, top_k: int, source: str) -> Dict[str, object]:
        """Waits in a worker thread for the batch that carries ``image`` (so requests batch up).

        ``source`` names the image in error messages (the upload's file name).
        """
        if self._limiter is None:  # created on first use: a limiter belongs to the running event loop
            self._limiter = anyio.CapacityLimiter(self.max_waiting)
        if self._limiter.borrowed_tokens >= self._limiter.total_tokens:
            raise tlcore.Overloaded(f"{self.name}: {self.max_waiting} requests are already waiting")
        call = functools.partial(self.predictor.predict, image, top_k, source)
        pixels = image_pixels(image)
        # No size (not a header the decoder reads either: it fails before decoding pixels) goes
        # the ordinary way.
        if pixels is None or pixels <= LARGE_IMAGE_PIXELS:
            return await anyio.to_thread.run_sync(call, limiter=self._limiter)
        async with self._limiter:
            with anyio.CancelScope(shield=True):  # the token is held until the thread is done, as to_thread does
                return await self.large.run(call)


class ModelRegistry:
    """Every ``*.tlc`` file of ``folder``, served by its stem.

    Model files are untrusted input: one that fails to load, whatever it makes the reader
    raise, is logged and listed in ``rejected``, and the others are served. With none
    loaded the service still runs, and requests get ``NoModel``. ``default`` names the
    model used when a request names none (else the first by name); it is None when the
    requested default's file was rejected, rather than silently another model.

    Usage::

        registry = ModelRegistry(Path("models"), BatchOptions())
        registry.load()
        registry.get("flowers").predictor.predict(jpeg_bytes)
    """

    def __init__(self, folder: Path, options: BatchOptions, default: Optional[str] = None) -> None:
        self.folder, self.options, self.requested_default = Path(folder), options, default
        self.models: Dict[str, ServedModel] = {}
        self.rejected: List[Rejected] = []
        self.default: Optional[str] = None
        # Large images may keep at most half the cores busy; the rest stay for ordinary photos.
        self.large = Lane(max(1, tlcore.available_cores() // 2))

    def load(self) -> None:
        """Creates the Predictors (blocking: each loads and prepares its model).

        Raises only for the configuration: a missing folder, or a default model with no file.
        """
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: models folder not found")
        for path in sorted(self.folder.glob(f"*{MODEL_SUFFIX}")):
            try:
                predictor = self._open(path)
            except Exception as e:  # whatever one untrusted file makes the reader raise refuses that file only
                self._reject(path, e)
                continue
            self.models[predictor.name] = ServedModel(predictor, self.options, self.large)
            log.info("%s: serving %s (%s, %d classes, %d px)", path, predictor.name, predictor.arch,
                     len(predictor.classes), predictor.input_size)
        wanted = self.requested_default
        if wanted is not None and wanted not in self.models and self._rejection(wanted) is None:
            self.close()
            raise UnknownModel(f"default model {wanted!r} is not in {self.folder} "
                               f"(models: {', '.join(self.models) or 'none'})")
        if not self.models:
            log.error("%s: no model loaded (%d file(s) rejected); every prediction will be refused",
                      self.folder, len(self.rejected))
        if wanted is None:
            self.default = next(iter(self.models), None)
        else:
            self.default = wanted if wanted in self.models else None

    def _open(self, path: Path) -> "tlcore.Predictor":
        # Only regular files: opening a FIFO that someone left in the folder would block startup.
        if not path.is_file():
            raise ValueError(f"{path}: not a regular file")
        return tlcore.Predictor(path, **asdict(self.options))

    def _reject(self, path: Path, error: Exception) -> None:
        """Logs why ``path`` is not served and lists it with a reason clients may read.

        tlcore's own errors (ValueError, OSError) describe the file, not the server: they are
        shown with the folder left out. Anything else is an internal failure, told only to the log.
        """
        if isinstance(error, (ValueError, OSError)):
            log.error("%s: not served: %s", path, error)
            reason = str(error).replace(str(path), path.name)
            reason = reason if reason.startswith(path.name) else f"{path.name}: {reason}"
        else:
            log.error("%s: not served", path, exc_info=error)
            reason = f"{path.name}: could not be loaded (an internal error; the server log has the details)"
        self.rejected.append(Rejected(path.name, reason))

    def _rejection(self, name: str) -> Optional[Rejected]:
        return next((r for r in self.rejected if r.file == name + MODEL_SUFFIX), None)

    def get(self, name: Optional[str]) -> ServedModel:
        """The model called ``name``, or the default one for None.

        Raises ``UnknownModel`` for a name the folder never held, ``NoModel`` when the model
        asked for (or the default) is not loaded.
        """
        key = self.default if name is None else name
        if key is not None and key in self.models:
            return self.models[key]
        if not self.models:
            raise NoModel(f"no model loaded: {len(self.rejected)} model file(s) rejected, "
                          "none served (GET /models lists them with the reasons)")
        asked = self.requested_default if name is None else name
        rejected = self._rejection(asked) if asked is not None else None
        if rejected is not None:
            raise NoModel(f"model {asked!r} is not loaded: {rejected.reason}")
        raise UnknownModel(f"no model named {name!r} (models: {', '.join(self.models)})")

    def names(self) -> List[str]:
        return list(self.models)

    def close(self) -> None:
        for served in self.models.values():
            served.predictor.close()
        self.models.clear()
        self.large.close()
