"""The model spec and the model file: one definition from training to serving.

Each eval pipeline (every preset, and a custom one) survives save -> load op by op:
the same input tensor bit for bit, and the same probabilities from tlcore.load, the
Predictor, tlcore-predict (C++ alone) and what the ONNX export's metadata describes.
"""
import io
import json
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tlcore
from tlcore import _core

REPO = Path(__file__).resolve().parents[2]
PREDICT_EXE = REPO / "build" / "tlcore-predict"


@pytest.fixture(scope="module")
def fashion():
    try:
        ds = tlcore.fashion_mnist(train=True)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return _core.Subset(ds, _core.per_class_subset(ds.labels(), 2, 0))


def custom_pipeline() -> "_core.Pipeline":
    ops = [_core.Resize(44), _core.CenterCrop(36)]
    return _core.Pipeline(ops, 36, [0.5, 0.4, 0.3], [0.2, 0.25, 0.3], 3)


# (eval transform, image size, channels): every preset, grey and colour, other sizes.
CASES = {
    "imagenet-eval-64": ("imagenet-eval", 64, 3),
    "imagenet-eval-48-grey": ("imagenet-eval", 48, 1),
    "cifar-eval-32": ("cifar-eval", 32, 3),
    "cifar-eval-28-grey": ("cifar-eval", 28, 1),
    "custom": (custom_pipeline, 36, 3),
}


def learner_for(fashion, transform, size, channels) -> tlcore.Learner:
    transform = transform() if callable(transform) else transform
    data = tlcore.ImageData(fashion, val_split=0, seed=0, image_size=size, channels=channels,
                            train_transform=transform, eval_transform=transform)
    return tlcore.Learner("simple_cnn", data, verbose=False)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image.squeeze()).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_keeps_pipeline_and_probabilities(fashion, tmp_path, case):
    transform, size, channels = CASES[case]
    learner = learner_for(fashion, transform, size, channels)
    path = learner.save(tmp_path / "m.tlc")
    clf = tlcore.load(path)
    eval_pipeline = learner.data.eval_pipeline
    assert json.loads(clf.pipeline.to_json()) == json.loads(eval_pipeline.to_json())
    assert repr(clf.pipeline) == repr(eval_pipeline)

    image = fashion.image(3, channels=channels)
    if not eval_pipeline.ops:  # cifar-eval at 32 takes 32 x 32 images as they are
        image = _core.Resize((size, size))(image)
    expected_x = eval_pipeline.normalize(eval_pipeline(image))
    np.testing.assert_array_equal(clf.pipeline.normalize(clf.pipeline(image)), expected_x)

    # Oracle: the trained model's own eager forward on the Learner's input tensor.
    learner.model.eval()
    with torch.no_grad():
        expected = torch.softmax(learner.model(torch.from_numpy(expected_x)[None]), 1)[0]
    encoded = png_bytes(image)
    from_load = clf.predict_proba([encoded])[0]
    torch.testing.assert_close(from_load, expected, atol=1e-5, rtol=1e-4)
    from_predictor = torch.from_numpy(tlcore.Predictor(path, device="cpu").probabilities(encoded))
    torch.testing.assert_close(from_predictor, from_load, atol=1e-6, rtol=0)

    image_file = tmp_path / "image.png"
    image_file.write_bytes(encoded)
    if PREDICT_EXE.exists():
        out = subprocess.run([str(PREDICT_EXE), str(path), str(image_file)], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        _, label, probability = out.stdout.strip().split("\t")
        assert label == clf.classes[int(from_load.argmax())]
        assert float(probability) == pytest.approx(float(from_load.max()), rel=1e-4)

    onnx = tlcore.export(path, tmp_path / "m.onnx", format="onnx")
    meta = json.loads(onnx.with_suffix(".json").read_text())
    described = _core.Pipeline.from_json(json.dumps(meta["spec"]["pipeline"]))
    np.testing.assert_array_equal(described.normalize(described(image)), expected_x)
    assert meta["spec"]["classes"] == clf.classes


def test_model_file_is_plain_data_for_pytorch(fashion, tmp_path):
    learner = learner_for(fashion, "cifar-eval", 28, 1)
    path = learner.save(tmp_path / "m.tlc")
    payload = torch.load(str(path), weights_only=True)  # no pickled objects, only data and tensors
    assert payload["format"] == _core.MODEL_FORMAT == "tlcore-model/2"
    spec = json.loads(payload["spec"])
    assert spec["arch"] == "simple_cnn" and spec["classes"] == learner.data.classes
    assert spec["pipeline"]["ops"] == [{"op": "resize", "height": 28, "width": 28}]
    assert spec["temperature"] == 1.0 and spec["provenance"]["tlcore_version"] == tlcore.__version__
    assert spec["provenance"]["data_size"] == len(learner.data.train)
    assert set(payload["state_dict"]) == set(learner.model.state_dict())
    assert spec["min_energy"] is None  # not calibrated: no energy floor
    learner.min_energy = 4.25
    assert tlcore.load(learner.save(tmp_path / "floored.tlc")).min_energy == 4.25


def test_spec_records_recipe_and_history(fashion, tmp_path):
    learner = learner_for(fashion, "cifar-eval", 28, 1)
    learner.fit(1, lr=1e-3)
    clf = tlcore.load(learner.save(tmp_path / "m.tlc"))
    recipe = json.loads(clf.spec.recipe)
    assert [(r["phase"], r["epochs"], r["lr"]) for r in recipe] == [("fit", 1, 1e-3)]
    assert clf.history == learner.history


def test_a_deeper_cnn_reloads_with_its_depths(fashion, tmp_path):
    data = tlcore.ImageData(fashion, val_split=0, seed=0, image_size=28, channels=1)
    learner = tlcore.Learner("simple_cnn", data, verbose=False, widths=[8, 16], depths=[2, 1])
    path = learner.save(tmp_path / "deep.tlc")
    assert json.loads(torch.load(str(path), weights_only=True)["spec"])["options"]["depths"] == [2, 1]
    x = torch.rand(2, 1, 28, 28)
    learner.model.eval()
    with torch.no_grad():
        assert torch.equal(tlcore.load(path).model(x), learner.model(x))
    # A file from before depths existed holds a one-deep model.
    shallow = tlcore.Learner("simple_cnn", data, verbose=False, widths=[8, 16])
    payload = torch.load(str(shallow.save(tmp_path / "shallow.tlc")), weights_only=True)
    spec = json.loads(payload["spec"])
    del spec["options"]["depths"]
    torch.save(dict(payload, spec=json.dumps(spec)), tmp_path / "old.tlc")
    assert list(tlcore.load(tmp_path / "old.tlc").model.state_dict()) == list(shallow.model.state_dict())


def test_format_1_files_still_load(fashion, tmp_path):
    """tlcore 0.1 wrote the preset's name and the statistics, not the ops."""
    learner = learner_for(fashion, "cifar-eval", 32, 3)
    old = {"format": "tlcore-model/1", "arch": "simple_cnn", "classes": learner.data.classes,
           "in_channels": 3, "head": {"kind": "linear", "dropout": 0.2, "hidden": []},
           "preprocess": {"image_size": 32, "transform": "cifar-eval", "mean": [0.5, 0.5, 0.5],
                          "std": [0.25, 0.25, 0.25], "channels": 3},
           "threshold": 0.3, "history": [{"epoch": 0}],
           "state_dict": learner.model.state_dict()}
    torch.save(old, tmp_path / "old.tlc")
    clf = tlcore.load(tmp_path / "old.tlc")
    expected = _core.Pipeline(_core.Pipeline.preset("cifar-eval", 32).ops, 32, [0.5] * 3, [0.25] * 3)
    assert clf.pipeline.to_json() == expected.to_json()
    assert clf.threshold == pytest.approx(0.3) and clf.history == [{"epoch": 0}]


def test_bad_model_files_name_the_file_and_problem(fashion, tmp_path):
    learner = learner_for(fashion, "cifar-eval", 28, 1)
    good = torch.load(str(learner.save(tmp_path / "m.tlc")), weights_only=True)
    spec = json.loads(good["spec"])
    cases = {
        "newer.tlc": (dict(good, format="tlcore-model/9"), "newer than this tlcore"),
        "other.tlc": (dict(good, format="something"), "not a tlcore model file"),
        "nospec.tlc": ({k: v for k, v in good.items() if k != "spec"}, "without its spec"),
        "noclasses.tlc": (dict(good, spec=json.dumps({k: v for k, v in spec.items() if k != "classes"})),
                          "classes"),
        "badop.tlc": (dict(good, spec=json.dumps(dict(spec, pipeline=dict(
            spec["pipeline"], ops=[{"op": "sharpen"}])))), "unknown preprocessing op 'sharpen'"),
        "floatspec.tlc": (dict(good, spec=spec), "without its spec"),
        "statedict.tlc": (good["state_dict"], "not a tlcore model file"),
    }
    for name, (payload, message) in cases.items():
        torch.save(payload, tmp_path / name)
        with pytest.raises(ValueError, match=message) as info:
            tlcore.load(tmp_path / name)
        assert name in str(info.value)
    (tmp_path / "text.tlc").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="text.tlc"):
        tlcore.load(tmp_path / "text.tlc")
    with pytest.raises(FileNotFoundError, match="missing.tlc"):
        tlcore.load(tmp_path / "missing.tlc")


class _Plant:
    """Unpickling this runs os.system: what a malicious model file does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_without_running(fashion, tmp_path):
    learner = learner_for(fashion, "cifar-eval", 28, 1)
    good = torch.load(str(learner.save(tmp_path / "m.tlc")), weights_only=True)
    marker = tmp_path / "pwned"
    for name, payload in {"evil.tlc": dict(good, format=_Plant(marker)),
                          "evil_spec.tlc": dict(good, spec=_Plant(marker)),
                          "evil_v1.tlc": {"format": "tlcore-model/1", "arch": _Plant(marker)}}.items():
        torch.save(payload, tmp_path / name, pickle_module=pickle)
        with pytest.raises(ValueError, match=name):
            tlcore.load(tmp_path / name)
    assert not marker.exists()


def test_pipeline_json_round_trip_of_every_op():
    ops = [_core.Resize(40), _core.Resize((30, 20)), _core.CenterCrop((24, 20)),
           _core.RandomResizedCrop(24, scale=(0.3, 0.9), ratio=(0.5, 2.0)),
           _core.PadRandomCrop(24, padding=3, padding_mode="reflect"), _core.RandomHorizontalFlip(0.3),
           _core.RandomRotation((-10.0, 25.0)), _core.RandomZoom((0.8, 1.3)),
           _core.ColorJitter(0.1, 0.2, 0.3), _core.Grayscale3(), _core.RandomGrayscale(0.2)]
    pipeline = _core.Pipeline(ops + [_core.CenterCrop(24)], 24, [0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    again = _core.Pipeline.from_json(pipeline.to_json())
    assert [repr(op) for op in again.ops] == [repr(op) for op in pipeline.ops]
    image = np.random.default_rng(0).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    for seed in range(5):
        np.testing.assert_array_equal(again(image, seed=seed), pipeline(image, seed=seed))
    with pytest.raises(ValueError, match="unknown preprocessing op 'blur'"):
        _core.Pipeline.from_json(json.dumps(dict(json.loads(pipeline.to_json()), ops=[{"op": "blur"}])))
    with pytest.raises(ValueError, match="not JSON"):
        _core.Pipeline.from_json("{")
