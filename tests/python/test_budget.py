"""Budgeted training: the plan fits the budget, impossible budgets say so, the test set waits."""
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

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


def test_a_budget_without_flip_trains_and_reports_without_mirror_images(monkeypatch):
    tta_calls = []
    real_logits = tlcore.Learner.logits

    def logits_recording(self, split="val", tta=False, **k):
        tta_calls.append(tta)
        return real_logits(self, split, tta=tta, **k)

    monkeypatch.setattr(tlcore.Learner, "logits", logits_recording)
    result = tlcore.train_budget(_fashion(True, 60), "20s", arch="simple_cnn", test=_fashion(False, 10),
                                 channels=1, flip=False, verbose=False)
    assert not result.plan.flip and not result.plan.augmented and not result.tta
    assert result.test_tta is None and result.to_dict()["test_accuracy_tta"] is None
    assert tta_calls and not any(tta_calls)
    assert "no flip TTA" in result.summary()


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


def test_the_planner_tries_fp32_before_bf16_and_a_deeper_cnn_before_the_default(monkeypatch):
    deep = budget._DEEPER_CNN
    assert budget._candidates("off", "mobilenet_v2", True) == [("off", {})]  # asked for: used
    assert budget._candidates("bf16", "simple_cnn", False) == [("bf16", {}), ("bf16", deep)]
    assert budget._candidates("off", "mlp", False) == [("off", {})]
    monkeypatch.setenv("TLCORE_CPU_FEATURES", "avx512_bf16 avx512_vnni")
    assert budget._candidates("auto", "mobilenet_v2", True) == [("off", {}), ("bf16", {})]
    assert budget._candidates("auto", "simple_cnn", False) == [("bf16", {}), ("bf16", deep)]
    monkeypatch.setenv("TLCORE_CPU_FEATURES", "none")
    if tlcore._core.resolve_device("auto") == "cpu":
        assert budget._candidates("auto", "mobilenet_v2", True) == [("off", {})]
        assert budget._candidates("auto", "simple_cnn", False) == [("off", {}), ("off", deep)]


def test_random_crops_replace_the_flip_cache_only_where_enough_epochs_of_them_fit():
    # The probe's paces on the flowers (seconds an image): caching 4 ms, a cached epoch 8.9 ms,
    # a forward pass 4.8 ms; about 510 s left after the probe, 11 s for the final evaluation.
    timing = {"cache": 0.004, "epoch": 0.0089, "forward": 0.0048}
    epochs, epoch_s, final_s = budget._augmented_option(timing, 224, 224, 510.0, 11.0, 2347, 293, 20)
    # An epoch runs every image through the frozen blocks and the tail, and validates.
    assert epoch_s == pytest.approx((0.004 + 0.0089) * 2347 + 0.0048 * 293)
    # Validation runs again at the larger eval size, (8/7)^2 the pixels, and the test may run
    # there: 3 passes (one view, TTA's two) of 293 images at each.
    larger = (256 / 224) ** 2
    assert final_s == pytest.approx(11.0 + 0.0048 * 3 * (293 * larger + 293 * (larger - 1)))
    assert epochs == int((510.0 - final_s) // epoch_s) >= budget._AUGMENTED_EPOCHS
    # CIFAR-10's 45,000 images in 30 minutes: too few epochs of crops; the cache stays.
    assert budget._augmented_option(timing, 224, 224, 1700.0, 60.0, 45000, 2500, 20) is None
    # The cap holds when crops would fit more.
    assert budget._augmented_option(timing, 112, 224, 5000.0, 11.0, 2347, 293, 20)[0] == 20


def test_a_tail_on_a_large_set_trains_at_a_lower_rate():
    # Large: enough image-passes (300,000) in fewer than 10 epochs, so 33,334 images or more.
    assert budget._good_epochs(33_333) == 10 and budget._tail_lr(33_333) == pytest.approx(1e-3)
    assert budget._good_epochs(33_334) == 9 and budget._tail_lr(33_334) == pytest.approx(3e-4)
    assert budget._tail_lr(2_347) == pytest.approx(1e-3)  # the flowers
    assert budget._tail_lr(45_000) == pytest.approx(3e-4)  # CIFAR-10


def _plan(size: int = 224, augment: bool = True, unfreeze=8, native: int = 300) -> "budget.Plan":
    estimate = dict.fromkeys(("probe", "setup", "cache", "epoch", "final", "total"), 1.0)
    return budget.Plan(600.0, "mobilenet_v2", size, native, 16, unfreeze, 19, 1e-3, 64, augment=augment,
                       estimate_s=estimate)


def test_a_tail_on_random_crops_keeps_its_last_epoch_and_a_cached_tail_its_best():
    crops, cached = _plan().fit_options(), _plan(augment=False).fit_options()
    assert crops["restore_best"] is False and "patience" not in crops and not crops["cache_features"]
    assert cached["restore_best"] is True and cached["monitor"] == "val_loss" and cached["cache_features"]
    assert "last epoch" in _plan().describe() and "best epoch" in _plan(augment=False).describe()


def test_a_tail_on_random_crops_is_also_evaluated_8_7_as_wide():
    assert _plan(224).eval_sizes == [224, 256]
    assert _plan(160).eval_sizes == [160, 192]
    assert _plan(224, augment=False).eval_sizes == [224]  # trained on the eval crop itself
    assert _plan(28, augment=False, unfreeze=None).eval_sizes == [28]
    # Small images train on padded shifts of the whole image, and their eval pipeline is no crop.
    assert _plan(160, native=32).eval_sizes == [160]


class _SizedLearner:
    """A learner whose validation accuracy depends on its eval pipeline's size and on TTA."""

    def __init__(self, accuracy: dict) -> None:
        self.accuracy = accuracy  # (size, tta) -> share of the 100 images right
        self.data = SimpleNamespace(channels=3, eval_pipeline=tlcore.Pipeline.preset("imagenet-eval", 224, 3))

    def logits(self, split: str = "val", tta: bool = False):
        right = round(100 * self.accuracy[(self.data.eval_pipeline.size[0], tta)])
        labels = torch.zeros(100, dtype=torch.long)
        logits = torch.zeros(100, 2)
        logits[:right, 0], logits[right:, 1] = 1.0, 1.0
        return logits, labels, torch.arange(100)


@pytest.mark.parametrize("accuracy, chosen", [
    ({(224, False): 0.90, (224, True): 0.91, (256, False): 0.93, (256, True): 0.92}, (256, False)),
    ({(224, False): 0.90, (224, True): 0.92, (256, False): 0.91, (256, True): 0.92}, (224, True)),
    ({(224, False): 0.90, (224, True): 0.90, (256, False): 0.90, (256, True): 0.90}, (224, False)),
])
def test_validation_chooses_the_eval_size_and_tta_the_first_of_equals(accuracy, chosen):
    learner = _SizedLearner(accuracy)
    size, tta, logits, _, plain, flipped = budget._choose_views(learner, _plan())
    assert (size, tta) == chosen
    # The learner predicts at the chosen size from now on, and its logits are that size's.
    assert learner.data.eval_pipeline.size == (size, size)
    assert plain == accuracy[(size, False)] and flipped == accuracy[(size, True)]
    assert float((logits.argmax(1) == 0).double().mean()) == plain


def test_random_crops_are_drawn_from_the_train_pipeline_only():
    train, evaluate = budget._pipelines("mobilenet_v2", 96, 240, 3, True, augment=True)
    image = (np.arange(240 * 320 * 3) % 251).astype(np.uint8).reshape(240, 320, 3)
    crops = {train(image, seed=0, epoch=0, index=i).tobytes() for i in range(4)}
    assert len(crops) > 1 and train(image, seed=0, epoch=0, index=0).shape == (96, 96, 3)
    assert evaluate == "imagenet-eval"
    assert budget._pipelines("mobilenet_v2", 96, 240, 3, True)[0] == "imagenet-eval"
    small_train, small_eval = budget._pipelines("mobilenet_v2", 96, 32, 3, True, augment=True)
    assert small_train.mean == small_eval.mean  # ImageNet's statistics, as the weights expect
    tiny = image[:32, :32]
    assert len({small_train(tiny, seed=0, epoch=0, index=i).tobytes() for i in range(6)}) > 1
    assert len({small_eval(tiny, seed=0, epoch=0, index=i).tobytes() for i in range(6)}) == 1


def test_a_cnn_from_scratch_trains_on_the_images_and_their_mirror_images_only():
    train, evaluate = budget._pipelines("simple_cnn", 28, 28, 1, False)
    image = (np.arange(28 * 28) % 251).astype(np.uint8).reshape(28, 28, 1)
    views = {train(image, seed=0, epoch=0, index=i).tobytes() for i in range(16)}
    assert views == {image.tobytes(), np.ascontiguousarray(image[:, ::-1]).tobytes()}
    assert evaluate == "cifar-eval"
    assert train.mean == tlcore._core.Pipeline.preset("cifar-eval", 28, 1).mean


@pytest.mark.parametrize("arch, native, pretrained", [("simple_cnn", 28, False), ("mobilenet_v2", 240, True),
                                                     ("mobilenet_v2", 32, True)])
def test_without_flip_no_pipeline_mirrors_an_image(arch, native, pretrained):
    channels = 1 if arch == "simple_cnn" else 3
    train, _ = budget._pipelines(arch, 28, native, channels, pretrained, augment=True, flip=False)
    assert not any(isinstance(op, tlcore._core.RandomHorizontalFlip) for op in train.ops)
    assert any(isinstance(op, tlcore._core.RandomHorizontalFlip)
               for op in budget._pipelines(arch, 28, native, channels, pretrained, augment=True)[0].ops)


def test_without_flip_validation_never_chooses_tta_and_a_cached_tail_caches_no_mirrors():
    accuracy = {(224, False): 0.90, (224, True): 0.95, (256, False): 0.91, (256, True): 0.96}
    plan = _plan()
    plan.flip = False
    size, tta, _, _, plain, flipped = budget._choose_views(_SizedLearner(accuracy), plan)
    assert (size, tta, plain, flipped) == (256, False, 0.91, None)
    cached = _plan(augment=False)
    assert cached.fit_options()["cache_flip"]
    cached.flip = False
    assert cached.fit_options()["cache_features"] and not cached.fit_options()["cache_flip"]
    assert "no flip TTA" in cached.describe() and "mirror" not in cached.describe().split(";")[0]


def test_a_pretrained_model_keeps_fp32_where_bf16_buys_no_more(monkeypatch):
    """Neither precision reaches the largest size at the epoch cap: the one that buys more wins."""
    paces = {"off": 0.013, "bf16": 0.016}  # a training epoch's seconds an image: bf16 slower

    def probe(arch, weights, data, seed, amp, cnn=None):
        return {"setup": 0.0, "cache": 0.004, "epoch": paces[amp], "forward": 0.005, "blocks": 19}

    monkeypatch.setattr(budget, "_probe", probe)
    sizing = budget._Sizing(600.0, time.perf_counter(), (224, 192, 160, 128), 20, True, 2347, 293, 1761)
    candidates = [("off", {}), ("bf16", {})]
    amp, cnn, timing, probed = budget._probe_precisions("mobilenet_v2", "w.pth", None, 0, candidates, sizing)
    assert (amp, probed) == ("off", 2)
    paces["bf16"] = 0.008  # bf16 faster: it buys more epochs at 224 px
    assert budget._probe_precisions("mobilenet_v2", "w.pth", None, 0, candidates, sizing)[0] == "bf16"
    paces["off"] = 0.001  # fp32 alone reaches the cap: bf16 is never probed
    assert budget._probe_precisions("mobilenet_v2", "w.pth", None, 0, candidates, sizing)[::3] == ("off", 1)


def test_a_pretrained_plan_gives_reasons_about_precision_not_about_a_cnn(monkeypatch):
    paces = {"off": 0.013, "bf16": 0.007}  # fp32 cannot reach the cap: bf16 is probed and taken

    def probe(arch, weights, data, seed, amp, cnn=None):
        return {"setup": 0.0, "cache": 0.004, "epoch": paces[amp], "forward": 0.005, "blocks": 19}

    monkeypatch.setattr(budget, "_probe", probe)
    data = SimpleNamespace(train=[0] * 2347, val=[0] * 293, test=[0] * 294)
    plan = budget._plan("mobilenet_v2", "w.pth", lambda size, batch: data, 224, 600.0, time.perf_counter(), 42,
                        False, [("off", {}), ("bf16", {})])
    assert plan.amp == "bf16"
    assert not any("CNN" in r for r in plan.reasons), plan.reasons


@pytest.mark.parametrize("default_pace, deep_pace, chosen, probed", [
    (0.0015, 0.0025, "default", 1),  # 20 s: the default fits 11 epochs, the deeper is not probed
    (0.0008, 0.0012, "deep", 2),     # the default fits 21, the deeper 14
    (0.0008, 0.0025, "default", 2),  # the default fits 21, the deeper 6
])
def test_a_deeper_cnn_is_probed_where_the_default_fits_13_epochs_and_taken_where_it_fits_8(
        monkeypatch, default_pace, deep_pace, chosen, probed):
    def probe(arch, weights, data, seed, amp, cnn=None):
        pace = deep_pace if cnn else default_pace
        return {"setup": 0.0, "cache": 0.0, "epoch": pace, "forward": 0.0005, "blocks": 3}

    monkeypatch.setattr(budget, "_probe", probe)
    candidates = budget._candidates("bf16", "simple_cnn", False)
    sizing = budget._Sizing(20.0, time.perf_counter(), (28,), 40, False, 640, 80, 480)
    _, cnn, _, n = budget._probe_cnns("simple_cnn", None, None, 0, candidates, sizing)
    assert (cnn, n) == ({"default": {}, "deep": budget._DEEPER_CNN}[chosen], probed)
