"""Export: ONNX checked in OpenCV's DNN runtime, TorchScript in LibTorch, plain PyTorch loading."""
import json
import os
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import tlcore
from tlcore import _core

REPO = Path(__file__).resolve().parents[2]
PHOTOS = {"dog.jpg": "malamute", "eagle.jpg": "kite", "giraffe.jpg": "zebra"}


@pytest.fixture(scope="module")
def imagenet(shared_dir, tmp_path_factory):
    weights = shared_dir / "weights" / "mobilenet_v2-imagenet-dequantized.pth"
    if not weights.exists():
        pytest.skip(f"{weights} not found")
    path = tlcore.Classifier.pretrained("mobilenet_v2", weights).save(
        tmp_path_factory.mktemp("models") / "imagenet.tlc")
    ref = torchvision.models.mobilenet_v2()
    ref.load_state_dict(torch.load(str(weights)))
    return path, ref.eval(), shared_dir / "data" / "photos"


def batch_of(classifier, photos):
    return torch.stack([torch.from_numpy(classifier.pipeline.normalize(classifier.pipeline(
        _core.read_image(str(photos / name))))) for name in PHOTOS])


def test_onnx_runs_the_same_in_opencv_dnn(imagenet, tmp_path):
    cv2 = pytest.importorskip("cv2", reason="python3-opencv is not installed")
    path, ref, photos = imagenet
    onnx = tlcore.export(path, tmp_path / "imagenet.onnx", format="onnx")
    meta = json.loads(onnx.with_suffix(".json").read_text())
    assert meta["spec"]["classes"][249] == "malamute" and meta["spec"]["pipeline"]["height"] == 224
    x = batch_of(tlcore.load(path), photos)
    with torch.no_grad():
        expected = torch.softmax(ref(x), 1).numpy()
    net = cv2.dnn.readNetFromONNX(str(onnx))
    net.setInput(x.numpy())  # dynamic batch: all three photos at once
    logits = net.forward()
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    assert [meta["spec"]["classes"][i] for i in probs.argmax(1)] == list(PHOTOS.values())
    np.testing.assert_allclose(probs, expected, atol=1e-4)


def test_torchscript_export_carries_metadata_and_matches(imagenet, tmp_path):
    path, ref, photos = imagenet
    ts = tlcore.export(path, tmp_path / "imagenet.pt")
    extra = {"tlcore.json": ""}
    module = torch.jit.load(str(ts), _extra_files=extra)
    meta = json.loads(extra["tlcore.json"])
    assert meta["spec"]["arch"] == "mobilenet_v2" and len(meta["spec"]["classes"]) == 1000
    x = batch_of(tlcore.load(path), photos)
    with torch.no_grad():
        torch.testing.assert_close(module(x), ref(x), atol=1e-4, rtol=1e-4)
        assert module(x[:1]).shape == (1, 1000)


def test_tlcore_predict_cli_runs_without_python(imagenet, tmp_path):
    exe = REPO / "build" / "tlcore-predict"
    if not exe.exists():
        pytest.skip(f"{exe} not built")
    path, _, photos = imagenet
    ts = tlcore.export(path, tmp_path / "imagenet.pt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run([str(exe), str(ts)] + [str(photos / n) for n in PHOTOS], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert [line.split("\t")[1] for line in lines] == list(PHOTOS.values())
    assert all(0.0 < float(line.split("\t")[2]) <= 1.0 for line in lines)
    bad = subprocess.run([str(exe), str(ts), str(tmp_path / "missing.jpg")], env=env,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "missing.jpg" in bad.stderr


def test_saved_model_loads_in_plain_pytorch(imagenet):
    """The README's recipe: torch.load + torchvision, no tlcore involved."""
    path, ref, _ = imagenet
    payload = torch.load(str(path), map_location="cpu", weights_only=True)
    spec = json.loads(payload["spec"])
    model = getattr(torchvision.models, spec["arch"])(num_classes=len(spec["classes"]))
    model.load_state_dict(payload["state_dict"])
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), ref(x))


def test_export_rejects_bad_arguments(imagenet, tmp_path):
    path, _, _ = imagenet
    with pytest.raises(ValueError, match="format must be"):
        tlcore.export(path, tmp_path / "x.bin", format="tflite")
    with pytest.raises(ValueError, match="opset"):
        tlcore.export(path, tmp_path / "x.onnx", format="onnx", opset=9)
    with pytest.raises(FileNotFoundError):
        tlcore.export(tmp_path / "none.tlc", tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
