"""The `tlcore` command end to end, small: train -> files, evaluate, predict, export, compare."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import tlcore


def tlcore_cli(*args, timeout=300):
    out = subprocess.run([sys.executable, "-m", "tlcore.cli", *map(str, args)], capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory):
    """A labelled folder of Fashion-MNIST test images as PNG (class folders by name)."""
    try:
        test = tlcore.fashion_mnist(train=False)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    root = tmp_path_factory.mktemp("fashion_png")
    for i in range(40):
        if "/" in test.classes[test.label(i)]:
            continue  # "T-shirt/top" cannot be a folder name
        folder = root / test.classes[test.label(i)]
        folder.mkdir(exist_ok=True)
        Image.fromarray(test.image(i, channels=1).squeeze(-1)).save(folder / f"{i:03d}.png")
    return root


@pytest.mark.slow
def test_train_writes_every_artifact_then_evaluate_predict_export(fashion_folder, tmp_path):
    out = tmp_path / "runs"
    result = tlcore_cli("train", "--limit", 300, "--epochs", 2, "--lr", 3e-3, "--batch-size", 32,
                        "--out", out)
    stem = "simple_cnn__fashion-mnist__img28__bs32__ep2"
    for suffix in (".tlc", "_history.json", "_report.json", "_report.md", "_curves.png",
                   "_confusion.png", "_predictions.png", "_top_losses.png"):
        assert (out / f"{stem}{suffix}").is_file(), suffix
    report = json.loads((out / f"{stem}_report.json").read_text())
    assert 0.3 < report["accuracy"] <= 1.0  # 2 epochs on 300 images: well above chance (0.1)
    assert "| accuracy |" in result.stdout or "accuracy" in result.stdout
    model = out / f"{stem}.tlc"

    evaluated = tlcore_cli("evaluate", "--model", model, "--data", fashion_folder, "--out", tmp_path / "ev")
    metrics = json.loads(next((tmp_path / "ev").glob("*.json")).read_text())
    assert metrics["accuracy"] > 0.3 and "accuracy" in evaluated.stdout
    image = next(fashion_folder.rglob("*.png"))
    predicted = json.loads(tlcore_cli("predict", "--model", model, image).stdout.splitlines()[0])
    assert predicted["prediction"] in tlcore.load(model).classes
    tlcore_cli("export", "--model", model, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").stat().st_size > 1000 and (tmp_path / "m.json").is_file()


@pytest.mark.slow
def test_compare_writes_table_and_chart(tmp_path):
    try:
        tlcore.fashion_mnist(train=True)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    out = tmp_path / "compare"
    result = tlcore_cli("compare", "--backbones", "simple_cnn,mlp", "--limit", 200, "--epochs", 1,
                        "--out", out)
    stem = "compare__fashion-mnist__img28__bs64__ep1"
    rows = json.loads((out / f"{stem}.json").read_text())
    assert [r["backbone"] for r in rows] == ["simple_cnn", "mlp"]
    for r in rows:
        assert r["acc_per_mparam"] == pytest.approx(r["accuracy"] / (r["parameters"] / 1e6))
        assert r["inference_img_s"] > 0 and r["train_s"] > 0
    assert (out / f"{stem}.png").is_file() and "| simple_cnn |" in result.stdout


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "compare", "export", "serve"])
def test_every_subcommand_has_help(command):
    assert "usage: tlcore" in tlcore_cli(command, "--help", timeout=60).stdout
