"""Export a saved tlcore model to TorchScript (for C++ / LibTorch) or ONNX (for other runtimes).

Both are traced from tlcore's own C++ model, so they compute exactly what tlcore computes.
Metadata (architecture, class names, preprocessing) travels with the file: inside the
TorchScript archive as ``tlcore.json``, beside the ONNX file as ``<name>.json``.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Dict, Tuple, Union

import torch

from .classifier import Classifier, load
from .files import atomic_write_bytes

PathLike = Union[str, os.PathLike]
FORMATS = ("torchscript", "onnx")


class _Traceable(torch.nn.Module):
    """Lets the tracer see the C++ model's ops; its weights become the graph's constants."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward(x)


EXPORT_FORMAT = "tlcore-export/2"


def metadata(classifier: Classifier) -> Dict[str, object]:
    """What a runtime needs beside the graph: the model's spec (classes, the eval pipeline op by
    op with its mean/std, "unknown" rule, temperature) and what goes in and out."""
    return {"format": EXPORT_FORMAT, "spec": json.loads(classifier.spec.to_json()),
            "input": "N x C x H x W float32: spec.pipeline's ops, then (x / 255 - mean) / std",
            "output": "logits (divide by spec.temperature before the softmax); \"unknown\" when the top "
                      "probability < spec.threshold or logsumexp(logits) < spec.min_energy (when set)"}


def _traceable(classifier: Classifier) -> Tuple[_Traceable, torch.Tensor]:
    model = classifier.model
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)  # the tracer stores weights as constants, which cannot need grad
    example = torch.zeros(1, classifier.pipeline.channels, *classifier.pipeline.size)
    return _Traceable(model), example


def _clamp_as_relus(g, x, min_val, max_val):
    """clamp(x, a, b) = a + relu(x - a) - relu(x - b): opset-13 Clip takes its bounds as inputs,
    which OpenCV's DNN importer (4.6) rejects; Relu, Add and Sub run everywhere."""
    from torch.onnx import symbolic_helper

    lo = symbolic_helper._maybe_get_const(min_val, "f")
    hi = symbolic_helper._maybe_get_const(max_val, "f")
    const = lambda v: g.op("Constant", value_t=torch.tensor(v, dtype=torch.float32))  # noqa: E731
    upper = g.op("Relu", g.op("Sub", x, const(hi)))
    lower = g.op("Relu", g.op("Sub", x, const(lo)))
    return g.op("Add", const(lo), g.op("Sub", lower, upper))


def _addmm_as_matmul(g, bias, mat1, mat2, beta, alpha):
    """A linear layer as MatMul + Add: OpenCV's DNN importer (4.6) misreads the Gemm it becomes."""
    from torch.onnx import symbolic_helper

    if any(symbolic_helper._maybe_get_const(v, "f") != 1 for v in (beta, alpha)):
        return symbolic_helper._unimplemented("addmm", "alpha or beta other than 1")
    out = g.op("Add", g.op("MatMul", mat1, mat2), bias)
    # Later symbolics (a ReLU in an MLP head) read the dtype of their input from its type.
    out.setType(mat1.type().with_sizes([None, None]))
    return out


_SYMBOLICS = {"aten::hardtanh": _clamp_as_relus, "aten::addmm": _addmm_as_matmul}


def export(model: Union[PathLike, Classifier], path: PathLike, format: str = "torchscript",
           opset: int = 13) -> Path:
    """Writes ``model`` as TorchScript or ONNX (dynamic batch size); returns the path.

    Usage: ``tlcore.export("flowers.tlc", "flowers.onnx", format="onnx")``
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if format == "onnx" and opset < 13:
        raise ValueError(f"ONNX opset must be >= 13, got {opset}")
    classifier = model if isinstance(model, Classifier) else load(model)
    module, example = _traceable(classifier)
    meta = json.dumps(metadata(classifier), indent=1)
    path = Path(path)
    buffer = io.BytesIO()
    if format == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(module, example, check_trace=False)
        torch.jit.save(traced, buffer, _extra_files={"tlcore.json": meta})
        atomic_write_bytes(path, buffer.getvalue())
        return path
    for name, symbolic in _SYMBOLICS.items():
        torch.onnx.register_custom_op_symbolic(name, symbolic, opset)
    try:
        # The exporter traces the module itself: a traced ScriptModule loses the dtypes
        # that some symbolics (batch_norm without affine weights) need.
        torch.onnx.export(module, example, buffer, opset_version=opset, input_names=["input"],
                          output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    finally:
        for name in _SYMBOLICS:
            torch.onnx.unregister_custom_op_symbolic(name, opset)
    atomic_write_bytes(path, buffer.getvalue())
    atomic_write_bytes(path.with_suffix(".json"), meta.encode())
    return path
