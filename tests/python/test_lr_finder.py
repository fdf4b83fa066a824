"""fastai's learning-rate finder: the suggested rate trains the flowers head with the shared
ImageNet MobileNetV2 (loss falls, accuracy far above chance), the weights are left untouched,
and the smoothing matches fastai's definition."""
from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch

import tlcore
from tlcore import lr_finder


@pytest.fixture(scope="module")
def flowers(shared_dir):
    weights = shared_dir / "weights" / "mobilenet_v2-imagenet-dequantized.pth"
    folder = shared_dir / "data" / "flowers" / "train"
    if not weights.is_file() or not folder.is_dir():
        pytest.skip("needs the shared flowers and MobileNetV2")
    data = tlcore.ImageData(folder, val_split=0.25, seed=0, image_size=128, batch_size=16, per_class=24)
    return data, weights


def test_smoothing_is_fastais_debiased_moving_average():
    losses = [3.0, 2.0, 4.0, 1.0]
    avg, expected = 0.0, []
    for i, loss in enumerate(losses, 1):
        avg = 0.98 * avg + 0.02 * loss
        expected.append(avg / (1 - 0.98 ** i))
    assert lr_finder.smooth(losses) == pytest.approx(expected)
    assert lr_finder.smooth([5.0])[0] == pytest.approx(5.0)  # debiased: the first value is itself


def test_suggestion_is_a_tenth_of_the_lowest_smoothed_loss_rate():
    lrs = [1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    result = lr_finder.suggest(lrs, [2.0, 1.9, 1.2, 0.8, 3.0, float("nan")])
    assert result.lowest_loss_lr == 1e-2 and result.suggestion == pytest.approx(1e-3)


@pytest.mark.slow
def test_suggested_rate_trains_the_flowers_head(flowers, tmp_path):
    data, weights = flowers
    learner = tlcore.Learner("mobilenet_v2", data, weights=weights, verbose=False, seed=0)
    learner.model.freeze_backbone()
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    found = learner.lr_find(num_iter=100, cache_features=True)
    after = learner.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "lr_find changed the weights"
    assert learner.history == [] and learner.recipe == []
    assert len(found.losses) >= 90 and 1e-5 < found.suggestion < 1.0, found.suggestion
    assert found.plot(tmp_path / "lr.png").stat().st_size > 10_000
    # The range test's claim: at the suggestion the head trains. 5 classes: chance is 20%.
    rows = learner.fit_head(4, lr=found.suggestion)
    assert rows[-1]["train_loss"] < 0.7 * rows[0]["train_loss"] and rows[-1]["val_accuracy"] > 0.7, rows
    print(f"suggested {found.suggestion:.2e}: train loss {rows[0]['train_loss']:.3f} -> "
          f"{rows[-1]['train_loss']:.3f}, val accuracy {rows[-1]['val_accuracy']:.3f}")


@pytest.mark.slow
def test_cli_lr_find_prints_a_rate_and_writes_the_plot(tmp_path, fashion_test):
    out = subprocess.run([sys.executable, "-m", "tlcore.cli", "lr-find", "--limit", "200", "--num-iter", "40",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("suggested learning rate: "))
    assert math.isfinite(float(line.split()[3]))
    assert next(tmp_path.glob("*lr_find.png")).stat().st_size > 10_000
