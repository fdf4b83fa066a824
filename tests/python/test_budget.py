"""Budgeted training: the plan fits the budget, impossible budgets say so, the test set waits."""
import time
from pathlib import Path

import pytest

import tlcore
from tlcore import budget


def _fashion(train: bool, per_class: int):
    try:
        full = tlcore.fashion_mnist(train=train)
    except (FileNotFoundError, OSError, RuntimeError):
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    return tlcore.Subset(full, tlcore.per_class_subset(full.labels(), per_class, 0))


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("2h", 7200), ("1h30m", 5400),
                                           ("0.5m", 30), (45, 45.0)])
def test_parse_budget(text, seconds):
    assert budget.parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "10", "ten minutes", "0m", "-5s", "5d"])
def test_parse_budget_refuses(text):
    with pytest.raises(ValueError, match="budget"):
        budget.parse_budget(text)


def test_a_20_second_budget_is_kept():
    train, test = _fashion(True, 80), _fashion(False, 30)
    start = time.perf_counter()
    result = tlcore.train_budget(train, "20s", arch="simple_cnn", test=test, channels=1, verbose=False)
    wall = time.perf_counter() - start
    assert wall <= 20 * 1.05, result.plan.describe()
    assert result.plan.epochs >= 1
    assert len(result.learner.history) >= 1
    # Ten classes: a trained model beats chance by far even in seconds.
    assert result.test.accuracy > 0.5
    assert result.test.num_samples == len(test)


def test_an_impossible_budget_names_the_minimum():
    train = _fashion(True, 120)
    with pytest.raises(tlcore.BudgetError, match=r"the minimum is about \d+"):
        tlcore.train_budget(train, "1s", arch="simple_cnn", channels=1, verbose=False)


def _as_folder(dataset, folder: Path) -> Path:
    """The images as PNGs in class folders c0..c9, so that a folder keeps the label order."""
    import cv2

    for i in range(len(dataset)):
        d = folder / f"c{dataset.label(i)}"
        d.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(d / f"{i}.png"), dataset.image(i))
    return folder


def test_the_test_set_is_opened_only_after_every_choice(monkeypatch, tmp_path: Path):
    """The test set is a folder; nothing reads it before training, TTA and calibration are done."""
    train = _as_folder(_fashion(True, 60), tmp_path / "train")
    test = _fashion(False, 6)
    folder = _as_folder(test, tmp_path / "test")
    events = []
    real_open, real_fit, real_logits = budget.open_dataset, tlcore.Learner.fit, tlcore.Learner.logits
    import tlcore.learner as learner_module

    def open_recording(path, *a, **k):
        events.append(("open", str(path)))
        return real_open(path, *a, **k)

    def fit_recording(self, *a, **k):
        events.append(("fit", None))
        return real_fit(self, *a, **k)

    def logits_recording(self, split="val", tta=False):
        events.append(("logits", split))
        return real_logits(self, split, tta)

    monkeypatch.setattr(learner_module, "open_dataset", open_recording)
    monkeypatch.setattr(tlcore.Learner, "fit", fit_recording)
    monkeypatch.setattr(tlcore.Learner, "logits", logits_recording)
    result = tlcore.train_budget(train, "40s", arch="simple_cnn", test=folder, channels=1, verbose=False)
    first_test = events.index(("open", str(folder)))
    assert all(kind != "fit" for kind, _ in events[first_test:])
    assert all(split != "val" for kind, split in events[first_test:] if kind == "logits")
    assert sum(1 for e in events if e == ("open", str(folder))) == 1
    assert result.test.num_samples == len(test)
    assert "separate set" in result.splits["test"]


def test_without_a_test_set_half_the_validation_split_is_held_out():
    train = _fashion(True, 100)
    result = tlcore.train_budget(train, "25s", arch="simple_cnn", channels=1, verbose=False, val_split=0.2)
    data = result.learner.data
    assert len(data.val) + len(data.test) == 200
    assert abs(len(data.val) - len(data.test)) <= 10
    val_sources = {data.val.source(i) for i in range(len(data.val))}
    test_sources = {data.test.source(i) for i in range(len(data.test))}
    train_sources = {data.train.source(i) for i in range(len(data.train))}
    assert not val_sources & test_sources and not train_sources & test_sources
    # The "unknown" rule is an energy floor; it and the temperature are the model's.
    assert result.learner.temperature != 1.0 and result.learner.min_energy is not None


def test_train_budget_from_the_command_line(tmp_path: Path, capsys):
    """`tlcore train --budget`: the model file carries the calibration, the report names its images."""
    from tlcore import cli

    folder = _as_folder(_fashion(True, 40), tmp_path / "data")
    out = tmp_path / "run"
    assert cli.main(["train", "--data", str(folder), "--backbone", "simple_cnn", "--budget", "40s",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "held out of the validation split" in printed
    model = next(out.glob("*.tlc"))
    clf = tlcore.load(model)
    assert clf.temperature != 1.0 and clf.min_energy is not None and clf.threshold == 0
    report = next(out.glob("*_report.md")).read_text()
    assert "never used for any choice" in report and "**Unknown**" in report


def test_the_planner_tries_fp32_before_bf16_and_a_wider_cnn_before_the_default(monkeypatch):
    wide = budget._WIDE_CNN
    assert budget._candidates("off", "mobilenet_v2", True) == [("off", None)]  # asked for: used
    assert budget._candidates("bf16", "simple_cnn", False) == [("bf16", wide), ("bf16", None)]
    assert budget._candidates("off", "mlp", False) == [("off", None)]
    monkeypatch.setenv("TLCORE_CPU_FEATURES", "avx512_bf16 avx512_vnni")
    assert budget._candidates("auto", "mobilenet_v2", True) == [("off", None), ("bf16", None)]
    assert budget._candidates("auto", "simple_cnn", False) == [("bf16", wide), ("bf16", None)]
    monkeypatch.setenv("TLCORE_CPU_FEATURES", "none")
    if tlcore._core.resolve_device("auto") == "cpu":
        assert budget._candidates("auto", "mobilenet_v2", True) == [("off", None)]
        assert budget._candidates("auto", "simple_cnn", False) == [("off", wide), ("off", None)]
