"""Reduced precision: bf16 and int8 inference against fp32 (the oracle), the CPU
detector's fallback, and int8 calibration saved with the model."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tlcore
from tlcore import _core

# Tolerances, from the published behaviour of these formats: bf16 keeps 8 bits of
# mantissa (relative error ~0.4% per op); int8 post-training quantization of an
# ImageNet CNN moves probabilities by a few points (Krishnamoorthi 2018).
BF16_PROBABILITY_TOLERANCE = 0.05
INT8_PROBABILITY_TOLERANCE = 0.15

needs_bf16 = pytest.mark.skipif("avx512_bf16" not in _core.cpu_features() and "amx_bf16" not in _core.cpu_features(),
                                reason="this CPU has no bf16 instructions")
needs_vnni = pytest.mark.skipif("vnni" not in _core.cpu_features(), reason="this CPU has no VNNI instructions")
# In this process (not kept off AMX), int8 runs only on a CPU with VNNI and without AMX.
INT8_HERE = "vnni" in _core.cpu_features() and "amx_int8" not in _core.cpu_features()
needs_int8 = pytest.mark.skipif(not INT8_HERE, reason="int8 does not run in this process: no VNNI, or AMX "
                                                      "(tlcore.precision.run_int8_without_amx)")
needs_amx = pytest.mark.skipif("amx_int8" not in _core.cpu_features(), reason="this CPU has no AMX")


@pytest.fixture(scope="module")
def imagenet(shared_dir):
    """The real ImageNet MobileNetV2, calibrated for int8 on 64 flower photos where int8 runs."""
    clf = tlcore.Classifier.pretrained("mobilenet_v2", shared_dir / "weights" / "mobilenet_v2-imagenet-dequantized.pth")
    if INT8_HERE:
        tlcore.quantize(clf, shared_dir / "data" / "flowers" / "train", images=64)
    return clf


@pytest.fixture(scope="module")
def photos(shared_dir):
    return sorted((shared_dir / "data" / "photos").glob("*.jpg"))


def _probabilities(clf, precision, images):
    clf.precision = precision
    return clf.predict_proba(images)


@needs_bf16
def test_bf16_agrees_with_fp32_on_real_photos(imagenet, photos):
    fp32 = _probabilities(imagenet, "fp32", photos)
    bf16 = _probabilities(imagenet, "bf16", photos)
    assert imagenet.engine(precision="bf16").precision == "bf16"
    confident = fp32.max(1).values > 0.5  # ImageNet's 1000 classes: an unsure photo may flip
    assert confident.sum() >= 3
    assert torch.equal(bf16.argmax(1)[confident], fp32.argmax(1)[confident])
    assert (bf16 - fp32).abs().max() < BF16_PROBABILITY_TOLERANCE


@needs_bf16
def test_bf16_computes_the_classifier_in_fp32():
    """Logits near 1000 in bf16 would come in steps of 4 and tie; the classifier runs in fp32,
    so they keep the differences fp32 gives them, up to bf16's error in the embedding."""
    torch.manual_seed(0)
    model = tlcore.create_model("resnet18", 3)
    state = model.state_dict()
    state["fc.bias"] = torch.full_like(state["fc.bias"], 1000.0)
    model.load_state_dict(state)
    x = torch.randn(4, 3, 64, 64)
    engines = {p: model.compile_for_inference(64, precision=p) for p in ("fp32", "bf16")}
    assert engines["bf16"].precision == "bf16"  # not a silent fall back to fp32
    fp32, bf16 = (engine(x) for engine in engines.values())
    spread = (fp32 - 1000).abs().max()
    assert spread > 0.05
    assert (bf16 - fp32).abs().max() < 0.1 * spread
    assert torch.equal(bf16.argmax(1), fp32.argmax(1))


@needs_int8
def test_int8_agrees_with_fp32_on_real_photos(imagenet, photos):
    fp32 = _probabilities(imagenet, "fp32", photos)
    int8 = _probabilities(imagenet, "int8", photos)
    assert imagenet.engine(precision="int8").precision == "int8"
    confident = fp32.max(1).values > 0.5  # the photos the float model is sure of keep their label
    assert confident.sum() >= 3
    assert torch.equal(int8.argmax(1)[confident], fp32.argmax(1)[confident])
    assert (int8 - fp32).abs().max() < INT8_PROBABILITY_TOLERANCE
    assert 0.0 <= imagenet.spec.int8.agreement <= 1.0


@needs_int8
def test_a_quantized_model_saved_and_loaded_gives_identical_outputs(imagenet, photos, tmp_path):
    before = _probabilities(imagenet, "int8", photos)
    imagenet.save(tmp_path / "int8.tlc")
    again = tlcore.load(tmp_path / "int8.tlc", precision="int8")
    assert list(again.spec.int8.scales) == list(imagenet.spec.int8.scales)
    assert torch.equal(again.predict_proba(photos), before)


def test_a_cpu_without_the_instructions_falls_back_to_fp32_with_a_log_line(monkeypatch, caplog):
    monkeypatch.setenv("TLCORE_CPU_FEATURES", "none")
    assert tlcore.precision.cpu_features() == "none"
    with caplog.at_level(logging.WARNING):
        assert tlcore.precision.resolve("bf16") == "fp32"
    assert "no bf16 instructions" in caplog.text and "running in fp32" in caplog.text
    assert tlcore.precision.resolve("auto") == "fp32"
    model = tlcore.create_model("resnet18", 3)
    clf = tlcore.Classifier(_spec(model), model, precision="bf16")
    with caplog.at_level(logging.WARNING):
        assert clf.engine().precision == "fp32"
    assert caplog.text.count("running in fp32") == 2


@needs_amx
def test_with_amx_int8_falls_back_to_bf16_unless_onednn_is_kept_off_amx(caplog):
    """torch 1.13's oneDNN corrupts memory in AMX int8 convolutions (mobilenet_v2 at 96 px crashed):
    int8 falls back with the remedy in one line, and the remedy, in a fresh process, runs it."""
    calibrated = _core.Int8Calibration()
    calibrated.scales, calibrated.zero_points, calibrated.image_size = [0.1], [0], 96
    with caplog.at_level(logging.WARNING):
        assert tlcore.precision.resolve("int8", calibrated) == "bf16"
    assert "AMX" in caplog.text and _core.INT8_WITHOUT_AMX in caplog.text and "running in bf16" in caplog.text
    model = tlcore.create_model("mobilenet_v2", 5)
    with pytest.raises(RuntimeError, match="int8 cannot run here: this CPU has AMX"):
        _core.calibrate_int8(model, 96, [torch.zeros(2, 3, 96, 96)])
    script = ("import torch, tlcore; assert tlcore.precision.run_int8_without_amx(); "
              "m = tlcore.create_model('mobilenet_v2', 5); m.eval(); "
              "c = tlcore._core.calibrate_int8(m, 96, [torch.randn(8, 3, 96, 96)]); "
              "print(m.compile_for_inference(96, precision='int8', int8=c)(torch.randn(2, 3, 96, 96)).shape)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "torch.Size([2, 5])" in done.stdout


# A calibration saved before the first convolution stayed in float32: its file has no
# "float_first_conv", and its first scale is the image's (here [-4, 4] in 255 steps).
_OLD_CALIBRATION_SCRIPT = """
import json, torch, tlcore
from tlcore import _core
from tlcore.model_file import make_spec, model_options
assert tlcore.precision.run_int8_without_amx()
torch.manual_seed(0)
m = tlcore.create_model("resnet18", 3); m.eval()
x = torch.randn(16, 3, 64, 64)
new = _core.calibrate_int8(m, 64, [x])
spec = make_spec("resnet18", ["a", "b", "c"], {"kind": "linear", "dropout": 0.2, "hidden": []},
                 _core.Pipeline.preset("imagenet-eval", 64, 3), model_options())
spec.int8 = new
saved = json.loads(spec.to_json())
old = {k: v for k, v in saved["int8"].items() if k != "float_first_conv"}
old.update(scales=[8 / 255] + old["scales"], zero_points=[128] + old["zero_points"])
def read(entry):
    saved["int8"] = entry
    return _core.ModelSpec.from_json(json.dumps(saved), "old.tlc").int8
fp32 = m.compile_for_inference(64)(x)
out = {"new_flag": new.float_first_conv, "old_flag": read(old).float_first_conv, "spread": float(fp32.std())}
for name, c in (("old", read(old)), ("new", new)):
    out[name + "_gap"] = float((m.compile_for_inference(64, precision="int8", int8=c)(x) - fp32).abs().max())
try:
    m.compile_for_inference(64, precision="int8", int8=read(dict(old, scales=old["scales"][1:],
                                                                 zero_points=old["zero_points"][1:])))
except ValueError as e:
    out["without_the_image_scale"] = str(e)
print(json.dumps(out))
"""


@needs_vnni
def test_int8_keeps_the_first_convolution_in_float_and_old_calibrations_run_as_made():
    """New calibrations leave the first convolution in float32 (one scale fewer); a file saved
    before that says nothing, and runs the graph it was calibrated for: within int8's error of fp32."""
    done = subprocess.run([sys.executable, "-c", _OLD_CALIBRATION_SCRIPT], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["new_flag"] is True and out["old_flag"] is False
    assert out["new_gap"] < 0.25 * out["spread"] and out["old_gap"] < 0.25 * out["spread"]
    assert "calibrate it again" in out["without_the_image_scale"]


# In a fresh process: a bf16 model runs first (oneDNN starts with AMX), then int8 is asked for.
_LATE_CAP_SCRIPT = """
import torch, tlcore
from tlcore import _core
m = tlcore.create_model("mobilenet_v2", 5); m.eval()
m.compile_for_inference(64, precision="bf16")(torch.randn(2, 3, 64, 64))
can_run = tlcore.precision.run_int8_without_amx()
c = _core.Int8Calibration(); c.scales, c.zero_points, c.image_size = [0.1], [0], 64
shared_onednn = "libdnnl.so" in open("/proc/self/maps").read()
print(shared_onednn, can_run, tlcore.precision.resolve("int8", c), tlcore.precision.cpu_features())
"""


@needs_amx
def test_int8_asked_for_after_a_model_ran_on_amx_falls_back_instead_of_running_there():
    """oneDNN keeps the instruction set it started with, so a cap set after a model ran comes too
    late: run_int8_without_amx says int8 cannot run, and int8 falls back to bf16, not onto AMX.
    (oneDNN itself is asked, where its C API is a shared library, as with Debian's torch.)"""
    done = subprocess.run([sys.executable, "-c", _LATE_CAP_SCRIPT], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    shared_onednn, can_run, precision, features = done.stdout.split()[:4]
    if shared_onednn != "True":
        pytest.skip("oneDNN is linked statically here: its instruction set cannot be asked")
    assert (can_run, precision) == ("False", "bf16")
    assert "amx_int8" in done.stdout


@needs_amx
def test_the_service_asked_for_int8_keeps_onednn_off_amx(tmp_path):
    """`uvicorn api.app:app` with TLCORE_PRECISION=int8: the app keeps oneDNN off AMX before any
    model loads, so int8 runs instead of falling back."""
    script = ("import tlcore; from api.app import create_app; "
              f"create_app({str(tmp_path)!r}, precision='int8'); print(tlcore.precision.cpu_features())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert "amx_int8" not in done.stdout and "vnni" in done.stdout


def test_int8_needs_a_calibrated_model(caplog):
    model = tlcore.create_model("resnet18", 3)
    clf = tlcore.Classifier(_spec(model), model, precision="int8")
    with caplog.at_level(logging.WARNING):
        engine = clf.engine()
    assert engine.precision == "fp32"
    assert "not calibrated" in caplog.text or "no VNNI" in caplog.text


def test_a_precision_is_checked_by_name():
    model = tlcore.create_model("resnet18", 3)
    with pytest.raises(ValueError, match="precision must be one of"):
        tlcore.Classifier(_spec(model), model, precision="fp16")
    with pytest.raises(ValueError, match="precision must be 'fp32', 'bf16', 'int8' or 'auto', got 'int4'"):
        model.compile_for_inference(64, precision="int4")


def test_a_calibration_that_does_not_fit_the_model_is_refused():
    model = tlcore.create_model("resnet18", 3)
    int8 = _core.Int8Calibration()
    int8.scales, int8.zero_points, int8.image_size = [0.1] * 3, [0] * 3, 64
    with pytest.raises(ValueError, match="activation scales"):
        model.compile_for_inference(64, precision="int8", int8=int8)


def test_a_spec_with_bad_int8_entries_is_a_format_error():
    model = tlcore.create_model("resnet18", 3)
    spec = _spec(model)
    text = spec.to_json().replace('"int8":null', '"int8":{"image_size":64,"scales":[0.1,-1],"zero_points":[0,0]}')
    with pytest.raises(ValueError, match="out of range"):
        _core.ModelSpec.from_json(text, "bad.tlc")


@needs_int8
def test_the_output_offset_is_the_mean_gap_to_fp32_on_the_calibration_images(shared_dir):
    """Bias correction at the output: int8 returns its logits plus the mean of fp32's minus
    its own logits on the calibration batches, the definition computed here from both."""
    model = tlcore.Classifier.pretrained("mobilenet_v2",
                                         shared_dir / "weights" / "mobilenet_v2-imagenet-dequantized.pth").model
    pipeline = _core.Pipeline.preset("imagenet-eval", 96, 3)
    flowers = tlcore.open_dataset(shared_dir / "data" / "flowers" / "train")
    batches = [x for x, _ in tlcore.DataLoader(_core.Subset(flowers, list(range(0, 400, 10))), pipeline,
                                                batch_size=16, shuffle=False)]
    int8 = _core.calibrate_int8(model, 96, batches)
    assert len(int8.output_offset) == 1000
    bare = _core.Int8Calibration()
    bare.scales, bare.zero_points, bare.image_size = int8.scales, int8.zero_points, int8.image_size
    fp32 = model.compile_for_inference(96, precision="fp32")
    quantized, without = (model.compile_for_inference(96, precision="int8", int8=c) for c in (int8, bare))
    x = torch.cat(batches)
    gap = (fp32(x) - without(x)).double().mean(0)
    np.testing.assert_allclose(int8.output_offset, gap.numpy(), atol=1e-4)
    np.testing.assert_allclose((quantized(x) - without(x)).numpy(), np.broadcast_to(int8.output_offset, (len(x), 1000)),
                               atol=1e-4)


def test_an_output_offset_that_does_not_match_the_classes_is_a_format_error():
    spec = _spec(tlcore.create_model("resnet18", 3))
    text = spec.to_json().replace('"int8":null', '"int8":{"image_size":64,"scales":[0.1],"zero_points":[0],'
                                                 '"output_offset":[0.5,0.5]}')
    with pytest.raises(ValueError, match=r"bad\.tlc: int8 calibration: 2 output offsets for 3 classes"):
        _core.ModelSpec.from_json(text, "bad.tlc")


def _spec(model):
    from tlcore.model_file import make_spec, model_options

    head = {"kind": "linear", "dropout": 0.2, "hidden": []}
    return make_spec("resnet18", ["a", "b", "c"], head, _core.Pipeline.preset("imagenet-eval", 64, 3), model_options())


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "tlcore.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=None if env is None else {**os.environ, **env})


@needs_vnni
def test_cli_quantize_then_predict_and_evaluate_in_int8(shared_dir, tmp_path):
    model = tlcore.Classifier.pretrained("mobilenet_v2", shared_dir / "weights" / "mobilenet_v2-imagenet-dequantized.pth")
    path = model.save(tmp_path / "imagenet.tlc")
    flowers = shared_dir / "data" / "flowers" / "train"
    done = _cli("quantize", path, "--data", flowers, "--images", 32)
    assert done.returncode == 0, done.stderr
    assert "calibrated for int8" in done.stdout
    assert not tlcore.load(path).spec.int8.empty
    card = _cli("info", path).stdout
    agreement = tlcore.load(path).spec.int8.agreement
    assert "int8          calibrated at 224 px" in card and f"{100 * agreement:.1f}%" in card
    dog = shared_dir / "data" / "photos" / "dog.jpg"
    answers = [json.loads(_cli("predict", "--model", path, "--precision", p, "--json", dog).stdout) for p in ("fp32", "int8")]
    assert answers[0]["prediction"] == answers[1]["prediction"] == "malamute"


def test_cli_precision_falls_back_with_one_warning_line(tmp_path, fashion_data):
    data = fashion_data(4)
    learner = tlcore.Learner("simple_cnn", data, verbose=False, seed=0)
    path = learner.save(tmp_path / "small.tlc")
    image = tmp_path / "one.png"
    from PIL import Image

    Image.fromarray(data.train.image(0, 1)[:, :, 0]).save(image)
    done = _cli("predict", "--model", path, "--precision", "bf16", image, env={"TLCORE_CPU_FEATURES": "none"})
    assert done.returncode == 0, done.stderr
    assert "no bf16 instructions" in done.stderr and "Traceback" not in done.stderr
    bad = _cli("predict", "--model", path, "--precision", "fp16", image)
    assert bad.returncode == 2 and "invalid choice: 'fp16'" in bad.stderr


@needs_int8
def test_tlcore_predict_runs_a_calibrated_model_in_int8(imagenet, photos, tmp_path):
    from pathlib import Path

    exe = Path(__file__).resolve().parents[2] / "build" / "tlcore-predict"
    if not exe.exists():
        pytest.skip("tlcore-predict is not built")
    path = imagenet.save(tmp_path / "int8.tlc")
    lines = {}
    for precision in ("fp32", "int8"):
        out = subprocess.run([str(exe), str(path), str(photos[0])], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "TLCORE_PRECISION": precision})
        assert out.returncode == 0 and out.stderr == "", out.stderr
        lines[precision] = out.stdout.split("\t")
    assert lines["int8"][1] == lines["fp32"][1]  # the same label
    imagenet.precision = "int8"
    assert float(lines["int8"][2]) == pytest.approx(float(imagenet.predict_proba(photos[:1]).max()), abs=1e-5)
    old = subprocess.run([str(exe), str(path), str(photos[0])], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TLCORE_PRECISION": "bf16", "TLCORE_CPU_FEATURES": "none"})
    assert old.returncode == 0 and "no bf16 instructions" in old.stderr
