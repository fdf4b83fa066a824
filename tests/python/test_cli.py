"""The `tlcore` command end to end, small: train -> files, evaluate, predict, export, compare;
then what people and scripts meet: one-line errors and statuses, predict's table and JSON,
info's model card and the models table, each against the library or PyTorch as the oracle."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import tlcore


def tlcore_cli(*args, timeout=300):
    out = subprocess.run([sys.executable, "-m", "tlcore.cli", *map(str, args)], capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory, fashion_test):
    """A labelled folder of Fashion-MNIST test images as PNG (class folders by name)."""
    test = fashion_test
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
    predicted = json.loads(tlcore_cli("predict", "--json", "--model", model, image).stdout.splitlines()[0])
    assert predicted["prediction"] in tlcore.load(model).classes
    tlcore_cli("export", "--model", model, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").stat().st_size > 1000 and (tmp_path / "m.json").is_file()


@pytest.mark.slow
def test_compare_writes_table_and_chart(tmp_path, fashion_test):
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


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "compare", "export", "serve", "info",
                                     "models"])
def test_every_subcommand_has_help(command):
    assert "usage: tlcore" in tlcore_cli(command, "--help", timeout=60).stdout


# -- errors for people, predict/info/models for people and scripts ---------------------------------------

NOT_AN_IMAGE = "not an image (not JPEG, PNG, BMP or WEBP data)"


def run_cli(*args, env=None, timeout=300):
    """The command's CompletedProcess, whatever its status."""
    return subprocess.run([sys.executable, "-m", "tlcore.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=None if env is None else {**os.environ, **env})


def assert_user_error(result, line):
    """Exactly one line on stderr, status 2, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [f"tlcore: error: {line}"]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, fashion_data):
    """simple_cnn after one epoch on 100 Fashion-MNIST images: quick, and unsure (confidences < 1)."""
    data = fashion_data(10)
    learner = tlcore.Learner("simple_cnn", data, verbose=False)
    learner.fit(1, lr=3e-3)
    return learner.save(tmp_path_factory.mktemp("model") / "fashion.tlc")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """70 PNGs in nested folders (a/: 40, b/c/: 30), b/broken.png between them, and a note.

    Sorted, broken.png is the 41st of 71 images: inside the first batch of 64, so that one
    bad image among good ones and a second batch are both exercised.
    """
    try:
        test = tlcore.fashion_mnist(train=False)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    root = tmp_path_factory.mktemp("photos")
    for i in range(70):
        folder = root / "a" if i < 40 else root / "b" / "c"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.image(i, channels=1).squeeze(-1)).save(folder / f"{i:03d}.png")
    (root / "b" / "broken.png").write_bytes(b"this is no image")
    (root / "a" / "notes.txt").write_text("not an image, and not named like one")
    return root


def good_images(root):
    return sorted(p for p in root.rglob("*.png") if p.name != "broken.png")


def test_predict_answers_every_good_image_and_reports_the_bad_one(small_model, photos):
    result = run_cli("predict", "--json", "--model", small_model, photos)
    assert result.returncode == 2
    assert f"tlcore: error: {photos / 'b' / 'broken.png'}: {NOT_AN_IMAGE}" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    good = good_images(photos)
    assert [line["image"] for line in lines] == [str(p) for p in good]
    clf = tlcore.load(small_model)  # the oracle: the library, one image at a time
    for line, path in zip(lines, good):
        expected = clf.predict(str(path))
        assert set(line) == {"image", "prediction", "confidence", "energy", "unknown", "top_k"}
        assert line["prediction"] == expected["prediction"] and line["unknown"] == expected["unknown"]
        assert line["confidence"] == pytest.approx(expected["confidence"], abs=1e-6)
        assert line["energy"] == pytest.approx(expected["energy"], abs=1e-5)
        assert [t["label"] for t in line["top_k"]] == [t["label"] for t in expected["top_k"]]


def test_predict_table_is_aligned_and_matches_the_library(small_model, photos):
    images = good_images(photos)[:3]
    result = run_cli("predict", "--model", small_model, *images)
    assert result.returncode == 0 and result.stderr == ""
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["image", "prediction", "confidence"]
    assert len({len(row) for row in [header, *rows]}) == 1  # right-aligned confidences: equal widths
    clf = tlcore.load(small_model)
    for row, path in zip(rows, images):
        image, label, confidence = row.split()
        expected = clf.predict(str(path))
        assert (image, label, confidence) == (str(path), expected["prediction"], f"{expected['confidence']:.3f}")


def test_predict_expands_quoted_globs_itself(small_model, photos):
    result = run_cli("predict", "--json", "--model", small_model, f"{photos}/**/0[0-4]*.png")
    assert result.returncode == 0, result.stderr
    expected = sorted(str(p) for p in photos.rglob("0[0-4]*.png"))
    assert [json.loads(line)["image"] for line in result.stdout.splitlines()] == expected
    assert len(expected) == 50


def test_threshold_one_makes_every_answer_unknown(small_model, photos):
    images = good_images(photos)[:5]
    result = run_cli("predict", "--json", "--threshold", "1.0", "--model", small_model, *images)
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0 and len(answers) == 5
    assert all(a["unknown"] and a["prediction"] == "unknown" for a in answers)
    table = run_cli("predict", "--threshold", "1", "--model", small_model, *images).stdout.splitlines()[1:]
    best = [a["top_k"][0]["label"] for a in answers]
    assert [row.split()[1:3] for row in table] == [["unknown", f"({label}?)"] for label in best]


def test_min_energy_calls_unknown_exactly_the_images_below_it(small_model, photos):
    images = good_images(photos)[:5]
    plain = [json.loads(line) for line in run_cli("predict", "--json", "--model", small_model, *images).stdout.splitlines()]
    energies = sorted(a["energy"] for a in plain)
    floor = (energies[1] + energies[2]) / 2  # two images fall below it
    result = run_cli("predict", "--json", "--min-energy", floor, "--model", small_model, *images)
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["unknown"] for a in answers] == [a["energy"] < floor for a in plain]
    assert sum(a["unknown"] for a in answers) == 2


def test_tta_averages_the_image_and_its_mirror(small_model, photos, tmp_path):
    image = good_images(photos)[0]
    mirror = tmp_path / "mirror.png"
    Image.open(image).transpose(Image.FLIP_LEFT_RIGHT).save(mirror)
    clf = tlcore.load(small_model)
    expected = (clf.predict_proba([str(image)]) + clf.predict_proba([str(mirror)]))[0] / 2
    result = run_cli("predict", "--json", "--tta", "--top-k", 10, "--model", small_model, image)
    answer = json.loads(result.stdout)
    got = {t["label"]: t["probability"] for t in answer["top_k"]}
    assert [got[c] for c in clf.classes] == pytest.approx(expected.tolist(), abs=1e-6)


@pytest.mark.parametrize("case", ["missing model", "folder as model", "junk model", "state dict as model",
                                  "missing image", "corrupt image", "empty folder", "glob matching nothing"])
def test_each_user_error_is_one_line_and_status_2(case, small_model, photos, tmp_path):
    image = good_images(photos)[0]
    junk = tmp_path / "junk.tlc"
    junk.write_text("hello")
    state_dict = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, state_dict)
    (tmp_path / "empty").mkdir()
    model, images, line = {
        "missing model": (tmp_path / "no.tlc", [image], f"{tmp_path / 'no.tlc'}: no such checkpoint file"),
        "folder as model": (photos, [image], f"{photos}: a folder, not a tlcore model file"),
        "junk model": (junk, [image], f"{junk}: not a PyTorch checkpoint (neither a zip archive nor a pickle)"),
        "state dict as model": (state_dict, [image], f'{state_dict}: not a tlcore model file (no "format" entry; '
                                                     "a plain state dict loads as weights= of a Learner)"),
        "missing image": (small_model, [tmp_path / "no.jpg"], f"{tmp_path / 'no.jpg'}: no such file or folder"),
        "corrupt image": (small_model, [photos / "b" / "broken.png"], f"{photos / 'b' / 'broken.png'}: {NOT_AN_IMAGE}"),
        "empty folder": (small_model, [tmp_path / "empty"],
                         f"{tmp_path / 'empty'}: no images in this folder (.jpg .jpeg .png .bmp .webp)"),
        "glob matching nothing": (small_model, [tmp_path / "*.jpg"], f"{tmp_path / '*.jpg'}: no images match"),
    }[case]
    result = run_cli("predict", "--model", model, *images)
    assert_user_error(result, line)
    assert result.stdout == ""


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_image_is_a_user_error(small_model, tmp_path):
    image = tmp_path / "locked.png"
    Image.new("L", (28, 28)).save(image)
    image.chmod(0)
    assert_user_error(run_cli("predict", "--model", small_model, image), f"{image}: Permission denied")


def test_evaluate_errors_name_the_file(small_model, fashion_folder, tmp_path):
    missing = tmp_path / "test"
    assert_user_error(run_cli("evaluate", "--model", small_model, "--data", missing),
                      f"{missing}: no such file or folder")
    assert_user_error(run_cli("info", tmp_path / "no.tlc"), f"{tmp_path / 'no.tlc'}: no such checkpoint file")
    assert_user_error(run_cli("models", "resnet5"),
                      "resnet5: not an architecture tlcore knows (`tlcore models` lists them)")


@pytest.mark.parametrize("option", [["--threshold", "2"], ["--threshold", "x"], ["--top-k", "0"],
                                    ["--min-energy", "inf"], ["--min-energy", "nan"]])
def test_bad_option_values_are_argparse_errors(option, small_model, photos):
    result = run_cli("predict", *option, "--model", small_model, photos)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith(f"tlcore predict: error: argument {option[0]}: '{option[1]}'")


@pytest.fixture()
def labelled_with_corrupt(fashion_folder, tmp_path):
    root = tmp_path / "labelled"
    shutil.copytree(fashion_folder, root)
    corrupt = next(p for p in root.iterdir() if p.is_dir()) / "zz_broken.png"
    corrupt.write_bytes(b"this is no image")
    return root, corrupt


def test_evaluate_stops_at_a_corrupt_image_unless_told_to_skip_it(small_model, fashion_folder,
                                                                    labelled_with_corrupt, tmp_path):
    root, corrupt = labelled_with_corrupt
    assert_user_error(run_cli("evaluate", "--model", small_model, "--data", root), f"{corrupt}: {NOT_AN_IMAGE}")
    result = run_cli("evaluate", "--skip-corrupt", "--model", small_model, "--data", root, "--out", tmp_path / "ev")
    assert result.returncode == 0, result.stderr
    assert f"tlcore: warning: {corrupt}: skipped, not a readable image" in result.stderr.splitlines()
    assert "skipped 1 corrupt image(s)" in result.stderr
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    clean = tlcore.load(small_model).evaluate(fashion_folder)  # the same images, none corrupt
    assert report["num_samples"] == clean.num_samples == len(list(fashion_folder.rglob("*.png")))
    assert report["accuracy"] == pytest.approx(clean.accuracy)
    assert report["skipped_corrupt"] == [str(corrupt)]


def test_internal_errors_are_one_line_and_a_hint(monkeypatch, capsys, small_model, photos):
    from tlcore import cli

    def broken(path):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(tlcore, "load", broken)
    monkeypatch.delenv("TLCORE_DEBUG", raising=False)
    assert cli.main(["predict", "--model", str(small_model), str(photos)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "tlcore: internal error: RuntimeError: boom second line",
        "tlcore: re-run with --debug (or TLCORE_DEBUG=1) to see the traceback"]
    monkeypatch.setenv("TLCORE_DEBUG", "1")
    assert cli.main(["predict", "--model", str(small_model), str(photos)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "in broken" in err and err.rstrip().endswith("second line")


def test_debug_shows_the_traceback_and_keeps_the_status(tmp_path):
    result = run_cli("--debug", "info", tmp_path / "no.tlc")
    assert result.returncode == 2
    assert result.stderr.startswith("Traceback") and "FileNotFoundError" in result.stderr
    result = run_cli("info", tmp_path / "no.tlc", env={"TLCORE_DEBUG": "1"})
    assert result.returncode == 2 and "Traceback" in result.stderr
    result = run_cli("info", tmp_path / "no.tlc", "--debug")  # where people add it, after the command
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_info_shows_classes_preprocessing_and_provenance(small_model):
    card = run_cli("info", small_model)
    assert card.returncode == 0, card.stderr
    text = card.stdout
    classes = tlcore.fashion_mnist(train=False).classes
    assert f"classes       10: {', '.join(classes)}" in text.splitlines()
    preset = json.loads(tlcore.transforms.Pipeline.preset("cifar-eval", 28, 1).to_json())  # what the fixture used
    steps = [line.strip() for line in text.splitlines() if line.startswith("  ") and ". " in line]
    assert [s.split()[1] for s in steps] == [op["op"] for op in preset["ops"]] + ["normalize"]
    assert "architecture  simple_cnn" in text and "fit: epochs=1 lr=0.003" in text
    assert f"tlcore {tlcore.__version__}, created " in text and "100 images" in text
    assert "int8          not calibrated (`tlcore quantize MODEL --data DIR`)" in text.splitlines()
    assert "unknown       never (no rule: calibration sets one)" in text.splitlines()
    # --json is the spec the file holds, read here by plain PyTorch.
    stored = json.loads(torch.load(small_model, weights_only=True)["spec"])
    assert json.loads(run_cli("info", "--json", small_model).stdout) == stored


def test_models_counts_parameters_as_torchvision_does():
    result = run_cli("models", "resnet50", "mobilenet_v2")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [["architecture", "parameters", "input", "weights"],
                    ["resnet50", "25,557,032", "224", "imagenet"],
                    ["mobilenet_v2", "3,504,872", "224", "imagenet"]]
    row = json.loads(run_cli("models", "--json", "resnet50").stdout)
    assert row == {"arch": "resnet50", "parameters": 25_557_032, "input_size": 224, "weights": ["imagenet"]}


@pytest.mark.slow
def test_models_lists_every_architecture():
    result = run_cli("models", "--json", timeout=600)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["arch"] for r in rows] == tlcore.model_names()
    assert {r["arch"]: r["parameters"] for r in rows}["vgg16"] == 138_357_544  # torchvision's count
