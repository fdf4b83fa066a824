"""Writing tlcore's model file: the spec (defined in C++, ``_core.ModelSpec``) as JSON text
beside the weights, so that ``torch.load(path, weights_only=True)`` reads it in plain PyTorch.

Reading is C++'s (``_core.load_model``), through a pickle reader that runs no code.
"""
from __future__ import annotations

import datetime
import io
from pathlib import Path
from typing import Dict, Sequence

import torch

from . import _core
from .data import PathLike
from .files import atomic_write_bytes


def model_options(in_channels: int = 3, input_size: int = 0, widths: Sequence[int] = (),
                  depths: Sequence[int] = (), dropout: float = -1.0) -> "_core.ModelOptions":
    o = _core.ModelOptions()
    o.in_channels, o.input_size, o.dropout = in_channels, input_size, dropout
    o.widths, o.depths = list(widths), list(depths)
    return o


def make_spec(arch: str, classes: Sequence[str], head: Dict[str, object], pipeline: "_core.Pipeline",
          options: "_core.ModelOptions") -> "_core.ModelSpec":
    spec = _core.ModelSpec()
    spec.arch, spec.classes, spec.pipeline, spec.options = arch, list(classes), pipeline, options
    spec.head.kind, spec.head.dropout, spec.head.hidden = head["kind"], head["dropout"], head["hidden"]
    return spec


def provenance(source: str, size: int) -> "_core.Provenance":
    p = _core.Provenance()
    p.tlcore_version = _core.__version__
    p.created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    p.data_source, p.data_size = source, size
    return p


def write_model(path: PathLike, spec: "_core.ModelSpec", model: "_core.Model") -> Path:
    """torch.save of strings and tensors only, so ``torch.load(weights_only=True)`` reads it.

    The spec is JSON text: torch 1.13's weights-only unpickler refuses pickled floats.
    """
    path = Path(path)
    payload = {
        "format": _core.MODEL_FORMAT,
        "spec": spec.to_json(),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return path
