"""Learner.write_report / tlcore.reporting: what `tlcore train` writes, as a library call."""
from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

import tlcore
from tlcore import reporting

FILES = {"json": "report.json", "markdown": "report.md", "confusion": "confusion.png", "curves": "curves.png",
         "history": "history.json", "predictions": "predictions.png", "top_losses": "top_losses.png"}


@pytest.fixture(scope="module")
def learner(fashion_data):
    data = fashion_data(8, val_split=0.25, batch_size=16)
    learner = tlcore.Learner("simple_cnn", data, verbose=False, seed=0)
    learner.fit(2, lr=3e-3)
    return learner


def test_write_report_writes_every_file_named_by_the_stem(learner, tmp_path):
    paths = learner.write_report(tmp_path / "run", stem="cnn__fashion")
    assert set(paths) == set(FILES)
    for key, name in FILES.items():
        assert paths[key] == tmp_path / "run" / f"cnn__fashion_{name}" and paths[key].is_file(), key
        assert paths[key].stat().st_size > 0
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(f"cnn__fashion_{n}" for n in FILES.values())


def test_the_report_is_the_learners_evaluation(learner, tmp_path):
    paths = learner.write_report(tmp_path)
    assert paths == {key: tmp_path / name for key, name in FILES.items()}  # no stem: plain names
    expected = learner.evaluate()
    expected.extra["images"] = learner.data.describe_splits()["val"]  # the report names its images
    written = json.loads(paths["json"].read_text())
    assert written["accuracy"] == pytest.approx(expected.accuracy)
    assert written["num_samples"] == len(learner.data.val)
    assert written["train_accuracy"] == pytest.approx(expected.train_accuracy)
    assert paths["markdown"].read_text() == expected.to_markdown()
    assert json.loads(paths["history"].read_text()) == json.loads(json.dumps(learner.history))
    assert reporting.report_paths(tmp_path) == paths


def test_files_follow_the_umask(learner, tmp_path):
    old = os.umask(0o027)
    try:
        paths = learner.write_report(tmp_path)
    finally:
        os.umask(old)
    assert {stat.S_IMODE(p.stat().st_mode) for p in paths.values()} == {0o640}


def test_the_lazy_image_list_decodes_what_is_asked():
    ds = tlcore.fashion_mnist(train=False)
    images = reporting._Images(ds, [5, 3, 9], channels=1)
    assert len(images) == 3
    assert (images[1] == ds.image(3, channels=1)).all()
    assert [im.shape for im in images[:2]] == [(28, 28, 1)] * 2


def test_confusion_panels_do_not_overlap(tmp_path, monkeypatch):
    """The right panel's labels used to overlap the left panel's colour bar: every drawn box
    (panels, colour bars, tick labels) of one panel stays clear of the other's."""
    import matplotlib.pyplot as plt

    from tlcore import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
    plots.confusion_matrix(np.arange(100).reshape(10, 10), classes, tmp_path / "c.png")
    fig = figures[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    left, right, left_bar, right_bar = fig.axes  # the two panels, then their colour bars
    assert right.get_yticklabels() == [] or all(not t.get_text() for t in right.get_yticklabels())
    assert right.get_ylabel() == ""
    left_extent = max(left.get_tightbbox(renderer).x1, left_bar.get_tightbbox(renderer).x1)
    assert left_extent < right.get_tightbbox(renderer).x0
    plt.close(fig)
