"""The models a service answers for: one ``tlcore.Predictor`` per saved model in a folder."""
from __future__ import annotations

import functools
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional

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


class UnknownModel(LookupError):
    """No model of that name is served."""


class ServedModel:
    """A Predictor and the worker threads allowed to wait on it."""

    def __init__(self, predictor: "tlcore.Predictor", options: BatchOptions) -> None:
        self.predictor = predictor
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
                "input_size": p.input_size, "threshold": p.threshold}

    async def predict(self, image: bytes, top_k: int, source: str) -> Dict[str, object]:
        """Waits in a worker thread for the batch that carries ``image`` (so requests batch up).

        ``source`` names the image in error messages (the upload's file name).
        """
        if self._limiter is None:  # created on first use: a limiter belongs to the running event loop
            self._limiter = anyio.CapacityLimiter(self.max_waiting)
        if self._limiter.borrowed_tokens >= self._limiter.total_tokens:
            raise tlcore.Overloaded(f"{self.name}: {self.max_waiting} requests are already waiting")
        call = functools.partial(self.predictor.predict, image, top_k, source)
        return await anyio.to_thread.run_sync(call, limiter=self._limiter)


class ModelRegistry:
    """Every ``*.tlc`` file of ``folder``, served by its stem.

    A file that fails to load is logged and listed in ``failed``; the others are served.
    ``default`` names the model used when a request names none (else the first by name).
    """

    def __init__(self, folder: Path, options: BatchOptions, default: Optional[str] = None) -> None:
        self.folder, self.options, self.requested_default = Path(folder), options, default
        self.models: Dict[str, ServedModel] = {}
        self.failed: Dict[str, str] = {}
        self.default: Optional[str] = None

    def load(self) -> None:
        """Creates the Predictors (blocking: each loads and prepares its model)."""
        if not self.folder.is_dir():
            raise FileNotFoundError(f"{self.folder}: models folder not found")
        for path in sorted(self.folder.glob(f"*{MODEL_SUFFIX}")):
            try:
                predictor = tlcore.Predictor(path, **asdict(self.options))
            except (OSError, ValueError, RuntimeError) as e:
                log.error("%s: not served: %s", path, e)
                self.failed[path.name] = str(e)
                continue
            self.models[predictor.name] = ServedModel(predictor, self.options)
            log.info("%s: serving %s (%s, %d classes, %d px)", path, predictor.name, predictor.arch,
                     len(predictor.classes), predictor.input_size)
        if not self.models:
            self.close()
            raise FileNotFoundError(f"{self.folder}: no loadable model files (*{MODEL_SUFFIX})"
                                    + (f"; failed: {self.failed}" if self.failed else ""))
        if self.requested_default is not None and self.requested_default not in self.models:
            self.close()
            raise UnknownModel(f"default model {self.requested_default!r} is not in {self.folder} "
                               f"(models: {', '.join(self.models)})")
        self.default = self.requested_default or next(iter(self.models))

    def get(self, name: Optional[str]) -> ServedModel:
        """The model called ``name``, or the default one for None."""
        key = self.default if name is None else name
        if key not in self.models:
            raise UnknownModel(f"no model named {name!r} (models: {', '.join(self.models)})")
        return self.models[key]

    def names(self) -> List[str]:
        return list(self.models)

    def close(self) -> None:
        for served in self.models.values():
            served.predictor.close()
        self.models.clear()
