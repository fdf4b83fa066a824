"""`tlcore train` with the workshops' options, and its run configuration: the YAML written
beside the model re-runs to the same weights, and a bad file is one clear line."""
import subprocess
import sys

import pytest
import torch
import yaml
from PIL import Image

import tlcore


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tlcore.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, fashion_test):
    """Train, valid and test folders of Fashion-MNIST PNGs: three classes, a few images each."""
    test = fashion_test
    root = tmp_path_factory.mktemp("workshop")
    wanted = {"Trouser": 0, "Bag": 0, "Sneaker": 0}
    for i in range(600):
        name = test.classes[test.label(i)]
        if name not in wanted or wanted[name] >= 18:
            continue
        part = ("train", "train", "valid", "test", "train", "train")[wanted[name] % 6]
        wanted[name] += 1
        folder = root / part / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(test.image(i, channels=1).squeeze(-1)).convert("RGB").save(folder / f"{i:03d}.png")
    return root


WORKSHOP = ["--backbone", "simple_cnn", "--img-size", 28, "--epochs", 2, "--batch-size", 8, "--seed", 7,
            "--augment", "flip,rotate=0.2,zoom=0.2,contrast=0.1", "--head", "mlp", "--hidden", "16,8",
            "--dropout", 0.1, "--class-weights", "balanced", "--label-smoothing", 0.1, "--early-stopping", 3,
            "--optimizer", "adamw", "--schedule", "cosine"]
STEM = "simple_cnn__train__img28__bs8__ep2"


@pytest.mark.slow
def test_config_written_beside_the_model_reruns_to_the_same_weights(folders, tmp_path):
    first = run_cli("train", "--data", folders / "train", "--valid", folders / "valid", "--test", folders / "test",
                    *WORKSHOP, "--out", tmp_path / "a")
    assert first.returncode == 0, first.stderr[-2000:]
    config = tmp_path / "a" / f"{STEM}.yaml"
    written = yaml.safe_load(config.read_text())
    assert written["augment"] == "flip,rotate=0.2,zoom=0.2,contrast=0.1" and written["hidden"] == [16, 8]
    assert written["class_weights"] == "balanced" and written["patience"] == 3 and written["head"] == "mlp"
    assert written["valid"] == str(folders / "valid") and written["test"] == str(folders / "test")

    again = run_cli("train", "--config", config, "--out", tmp_path / "b")
    assert again.returncode == 0, again.stderr[-2000:]
    a = torch.load(tmp_path / "a" / f"{STEM}.tlc", weights_only=True)
    b = torch.load(tmp_path / "b" / f"{STEM}.tlc", weights_only=True)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    # The model carries the head and pipeline the options asked for.
    clf = tlcore.load(tmp_path / "a" / f"{STEM}.tlc")
    assert clf.spec.head.kind == "mlp" and clf.spec.head.hidden == [16, 8]


def test_the_command_line_overrides_the_config(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("epochs: 5\nlabel_smoothing: 0.2\nhead: dropout\nflip: false\n")
    parsed = {}

    def capture(args):
        parsed.update(vars(args))
        return 0

    from tlcore import cli
    original = cli._train
    cli._train = capture
    try:
        assert cli.main(["train", "--config", str(config), "--epochs", "1"]) == 0
    finally:
        cli._train = original
    assert parsed["epochs"] == 1 and parsed["fit_option_label_smoothing"] == 0.2 and parsed["head"] == "dropout"
    assert parsed["flip"] is False


@pytest.mark.parametrize("text, words", [
    ("bogus: 1\n", "unknown option 'bogus'"),
    ("no_flip: true\n", "unknown option 'no_flip'"),  # "flip: false" says it once
    ("[1, 2\n", "not YAML"),
    ("- epochs\n", "expected a mapping of option: value"),
])
def test_a_bad_config_is_one_line_and_status_2(tmp_path, text, words):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    out = run_cli("train", "--config", config)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tlcore: error: {config}: ") and words in lines[0], out.stderr


def test_a_missing_config_names_the_file(tmp_path):
    out = run_cli("train", "--config", tmp_path / "absent.yaml")
    assert out.returncode == 2 and str(tmp_path / "absent.yaml") in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("flag, value, words", [
    ("--augment", "flip,spin=0.2", "augmentation 'spin'"),
    ("--augment", "rotate=2", "from 0 to 1"),
    ("--hidden", "16,x", "whole numbers"),
])
def test_bad_workshop_options_are_one_line(flag, value, words):
    out = run_cli("train", flag, value, "--limit", 10, "--epochs", 1)
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr, out.stderr
