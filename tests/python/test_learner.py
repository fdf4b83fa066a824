"""Training engine end to end on real data (Fashion-MNIST from Debian), small and fast."""
import json
import logging
import subprocess
import sys
import textwrap

import pytest
import torch

import tlcore
from tlcore import _core


@pytest.fixture(scope="module")
def fashion():
    try:
        return tlcore.fashion_mnist(train=True)
    except FileNotFoundError as e:
        pytest.skip(str(e))


def small_data(fashion, per_class, val_split=0.0, **kw):
    subset = _core.Subset(fashion, _core.per_class_subset(fashion.labels(), per_class, 0))
    return tlcore.ImageData(subset, val_split=val_split, seed=0, image_size=28, batch_size=16, channels=1,
                            train_transform="cifar-eval", eval_transform="cifar-eval", **kw)


def test_overfits_a_tiny_subset(fashion):
    data = small_data(fashion, 4)  # 40 images... keep 32 of them
    data.train = _core.Subset(data.train, list(range(32)))
    learner = tlcore.Learner("simple_cnn", data, verbose=False)
    learner.fit(40, lr=3e-3)
    report = learner.evaluate("train")
    assert report.accuracy == 1.0
    assert learner.history[-1]["train_loss"] < learner.history[0]["train_loss"] / 10


def test_two_phases_history_and_report(fashion, tmp_path):
    data = small_data(fashion, 30, val_split=0.25)
    learner = tlcore.Learner("simple_cnn", data, verbose=False)
    learner.fit_head(2, lr=1e-2)
    learner.fine_tune(2, lr=1e-3, unfreeze="all")
    assert [h["phase"] for h in learner.history] == ["head", "head", "finetune", "finetune"]
    assert all("val_accuracy" in h for h in learner.history)
    report = learner.evaluate()
    assert report.num_samples == len(data.val)
    assert report.overfitting_gap is not None
    paths = report.save(tmp_path)
    assert json.loads(paths["json"].read_text())["accuracy"] == pytest.approx(report.accuracy)


def test_save_load_predict_matches_learner(fashion, tmp_path):
    data = small_data(fashion, 10, val_split=0.2)
    learner = tlcore.Learner("simple_cnn", data, verbose=False)
    learner.fit(1, lr=1e-3)
    path = learner.save(tmp_path / "m.tlc")
    clf = tlcore.load(path)
    probs, _, indices = learner.predictions("val")
    image = data.val.image(int(indices[0]), channels=1)
    torch.testing.assert_close(clf.predict_proba([image])[0], probs[0], atol=1e-5, rtol=1e-4)
    assert clf.predict(image)["prediction"] in data.classes
    with pytest.raises(ValueError):
        (tmp_path / "bad.tlc").write_bytes(b"not a model")
        tlcore.load(tmp_path / "bad.tlc")


def test_frozen_training_changes_only_the_head(fashion):
    data = small_data(fashion, 5)
    learner = tlcore.Learner("simple_cnn", data, verbose=False)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    learner.fit_head(1, lr=1e-2, cache_features=False)
    after = learner.model.state_dict()
    head = learner.model.head_name
    for name, value in before.items():
        changed = not torch.equal(value, after[name])
        assert changed == (name.startswith(head + ".") and "weight" in name or
                           name.startswith(head + ".") and "bias" in name), name


def test_feature_cache_equals_the_slow_path(fashion):
    """Head training on cached embeddings gives the same weights as running the frozen backbone."""
    def run(cache):
        data = small_data(fashion, 6)
        learner = tlcore.Learner("simple_cnn", data, verbose=False)
        key = [k for k in learner.model.state_dict() if k.startswith(learner.model.head_name + ".")][-2]
        before = learner.model.state_dict()[key].clone()
        learner.fit_head(2, lr=1e-2, cache_features=cache, augment=False, seed=1)
        after = learner.model.state_dict()[key]
        assert not torch.equal(before, after)
        return after

    torch.testing.assert_close(run(True), run(False), atol=1e-4, rtol=1e-3)


def _head_on_cache(fashion, caplog, seed=3, **options):
    """simple_cnn's head trained 2 epochs on cached embeddings: (head weights, val losses, the
    cache's report)."""
    data = small_data(fashion, 8, val_split=0.25)
    learner = tlcore.Learner("simple_cnn", data, verbose=False, seed=seed)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tlcore"):
        rows = learner.fit_head(2, lr=1e-2, augment=False, seed=1, **options)
    reports = [r.getMessage() for r in caplog.records if "feature cache" in r.getMessage()]
    head = learner.model.head_name + "."
    weights = {k: v.clone() for k, v in learner.model.state_dict().items() if k.startswith(head)}
    return weights, [r["val_loss"] for r in rows], reports[-1]


def test_feature_cache_above_its_memory_cap_trains_like_the_one_in_memory(fashion, tmp_path, caplog):
    """Rows over cache_memory go to a memory-mapped file: the same training, exactly; a second
    fit reuses the file; other frozen weights make it stale (deleted and made again)."""
    in_memory, losses, report = _head_on_cache(fashion, caplog)
    assert report.endswith("train: memory; val: memory")
    spilled, spilled_losses, report = _head_on_cache(fashion, caplog, cache_memory="1KB",
                                                     cache_dir=tmp_path)
    assert "train: computed into" in report and "val: computed into" in report
    assert len(list(tmp_path.glob("rows-train-*.tlcrows"))) == 1
    for k in in_memory:
        assert torch.equal(spilled[k], in_memory[k]), k
    assert spilled_losses == losses

    (train_file,) = tmp_path.glob("rows-train-*.tlcrows")
    stamp = train_file.stat().st_mtime_ns
    reused, reused_losses, report = _head_on_cache(fashion, caplog, cache_memory="1KB",
                                                   cache_dir=tmp_path)
    assert f"train: reused {train_file}" in report and train_file.stat().st_mtime_ns == stamp
    assert all(torch.equal(reused[k], in_memory[k]) for k in in_memory) and reused_losses == losses

    other, _, _ = _head_on_cache(fashion, caplog, seed=4)  # other frozen weights, in memory
    stale, _, report = _head_on_cache(fashion, caplog, seed=4, cache_memory="1KB", cache_dir=tmp_path)
    assert f"{train_file} was stale (made by another model, data, pipeline or options)" in report
    assert "and was deleted; computed into" in report and train_file.stat().st_mtime_ns != stamp
    assert all(torch.equal(stale[k], other[k]) for k in other)


def test_half_precision_feature_rows(fashion, tmp_path, caplog):
    """bfloat16 rows take less room (half, but for the file's fixed header) and train nearly the
    same head."""
    full, losses, _ = _head_on_cache(fashion, caplog, cache_memory="1KB", cache_dir=tmp_path / "f32")
    half, half_losses, _ = _head_on_cache(fashion, caplog, cache_memory="1KB", cache_dtype="bfloat16",
                                          cache_dir=tmp_path / "bf16")
    size = lambda d: sum(f.stat().st_size for f in d.glob("rows-train-*"))
    assert size(tmp_path / "bf16") < size(tmp_path / "f32")
    for k in full:
        torch.testing.assert_close(half[k], full[k], atol=2e-2, rtol=5e-2)
    assert half_losses == pytest.approx(losses, rel=0.02)
    with pytest.raises(ValueError, match="cache_memory: expected a size"):
        _head_on_cache(fashion, caplog, cache_memory="lots")


def _fine_tune_resnet18_tail(fashion, val_split, epochs, **fit_options):
    """resnet18 with its last 2 blocks unfrozen, SGD on a Fashion-MNIST subset: (weights, history)."""
    subset = _core.Subset(fashion, _core.per_class_subset(fashion.labels(), 4, 0))
    data = tlcore.ImageData(subset, val_split=val_split, seed=0, image_size=32, batch_size=16, channels=3,
                            train_transform="imagenet-eval", eval_transform="imagenet-eval")
    learner = tlcore.Learner("resnet18", data, verbose=False, seed=3)
    learner.model.unfreeze_last(2)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    rows = learner.fit(epochs, lr=1e-2, optimizer="sgd", augment=False, seed=1, **fit_options)
    after = learner.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("layer3.", "layer4.", "fc.")) for k in changed)
    return after, rows


def test_compiled_frozen_prefix_trains_like_eager(fashion):
    """Fine-tuning the last blocks over a compiled frozen prefix gives the eager run's weights."""
    def run(compiled):
        # SGD: Adam's normalised step would turn rounding in near-zero gradients into lr-sized moves.
        return _fine_tune_resnet18_tail(fashion, 0.0, epochs=1, compile_frozen=compiled)[0]

    fast, slow = run(True), run(False)
    for key in slow:
        torch.testing.assert_close(fast[key], slow[key], atol=2e-5, rtol=1e-4)


def test_cached_prefix_features_train_the_tail_like_the_slow_path(fashion):
    """Fine-tuning the last blocks on cached feature maps of the frozen prefix: the same weights."""
    def run(cache):
        return _fine_tune_resnet18_tail(fashion, 0.25, epochs=2, cache_features=cache, restore_best=False)

    (fast, fast_rows), (slow, slow_rows) = run(True), run(False)
    for key in slow:
        torch.testing.assert_close(fast[key], slow[key], atol=5e-5, rtol=1e-4)
    assert fast_rows[-1]["val_accuracy"] == pytest.approx(slow_rows[-1]["val_accuracy"], abs=1e-9)


def test_cached_mirrors_train_like_a_random_flip(fashion):
    """cache_flip equals the slow path whose pipeline ends in RandomHorizontalFlip(0.5)."""
    plain = tlcore.Pipeline.preset("imagenet-eval", 32, 3)
    flipping = tlcore.Pipeline(plain.ops + [_core.RandomHorizontalFlip(0.5)], 32, plain.mean, plain.std)

    def run(cache, train_transform, **fit_options):
        subset = _core.Subset(fashion, _core.per_class_subset(fashion.labels(), 4, 0))
        data = tlcore.ImageData(subset, val_split=0.25, seed=0, image_size=32, batch_size=16, channels=3,
                                train_transform=train_transform, eval_transform=plain)
        learner = tlcore.Learner("resnet18", data, verbose=False, seed=3)
        learner.model.unfreeze_last(2)
        rows = learner.fit(2, lr=1e-2, optimizer="sgd", seed=1, cache_features=cache, restore_best=False,
                           **fit_options)
        return learner.model.state_dict(), rows

    (fast, fast_rows), (slow, slow_rows) = run(True, plain, cache_flip=True), run(False, flipping)
    for key in slow:
        torch.testing.assert_close(fast[key], slow[key], atol=5e-5, rtol=1e-4)
    assert fast_rows[-1]["val_accuracy"] == pytest.approx(slow_rows[-1]["val_accuracy"], abs=1e-9)
    unflipped, _ = run(True, plain)
    assert (unflipped["fc.weight"] - slow["fc.weight"]).abs().max() > 1e-3  # the mirrors mattered
    with pytest.raises(ValueError, match="cache_flip needs cache_features"):
        run(False, plain, cache_flip=True)


def test_cached_shifts_move_feature_maps_only(fashion):
    """cache_shift changes training on cached maps; a cache of embeddings has no map to move."""
    def run(unfreeze, **fit_options):
        subset = _core.Subset(fashion, _core.per_class_subset(fashion.labels(), 4, 0))
        data = tlcore.ImageData(subset, val_split=0.25, seed=0, image_size=32, batch_size=16, channels=3)
        learner = tlcore.Learner("resnet18", data, verbose=False, seed=3)
        learner.model.unfreeze_last(unfreeze)  # 0: only the head trains
        learner.fit(2, lr=1e-2, optimizer="sgd", seed=1, cache_features=True, restore_best=False,
                    **fit_options)
        return learner.model.state_dict()

    plain, shifted = run(2), run(2, cache_shift=1)
    assert (plain["fc.weight"] - shifted["fc.weight"]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="cache_shift needs cached feature maps"):
        run(0, cache_shift=1)


def test_feature_cache_needs_a_frozen_leading_part(fashion):
    data = small_data(fashion, 2)
    learner = tlcore.Learner("simple_cnn", data, verbose=False)
    learner.model.unfreeze_all()
    with pytest.raises(ValueError, match="cache_features needs the backbone"):
        learner.fit(1, cache_features=True)


def test_progressive_unfreezing_follows_its_schedule(fashion):
    """fine_tune(progressive=True) equals unfreezing one more block per epoch by hand."""
    def learner():
        subset = _core.Subset(fashion, _core.per_class_subset(fashion.labels(), 3, 0))
        data = tlcore.ImageData(subset, val_split=0.0, seed=0, image_size=32, batch_size=16, channels=3,
                                train_transform="imagenet-eval", eval_transform="imagenet-eval")
        return tlcore.Learner("resnet18", data, verbose=False, seed=3)

    auto = learner()
    rows = auto.fine_tune(2, lr=1e-2, unfreeze=2, progressive=True, optimizer="sgd", augment=False, seed=1)
    assert [r["phase"] for r in rows] == ["finetune.1", "finetune.2"]
    manual = learner()
    manual.model.batchnorm_eval = True
    first = {k: v.clone() for k, v in manual.model.state_dict().items()}
    manual.model.unfreeze_last(1)
    manual.fit(1, lr=1e-2, phase="finetune.1", optimizer="sgd", augment=False, seed=1)
    after_one = manual.model.state_dict()
    changed = {k for k in first if not torch.equal(first[k], after_one[k])}
    assert changed and all(k.startswith(("layer4.", "fc.")) for k in changed)
    manual.model.unfreeze_last(2)
    manual.fit(1, lr=1e-2, phase="finetune.2", optimizer="sgd", augment=False, seed=1)
    for key, value in manual.model.state_dict().items():
        torch.testing.assert_close(auto.model.state_dict()[key], value)


RESUME_SCRIPT = textwrap.dedent("""
    import os, signal, sys, torch, tlcore
    from tlcore import _core
    ds = tlcore.fashion_mnist(train=True)
    sub = _core.Subset(ds, _core.per_class_subset(ds.labels(), 8, 0))
    data = tlcore.ImageData(sub, val_split=0.25, seed=0, image_size=28, batch_size=16, channels=1,
                            train_transform="cifar-train", eval_transform="cifar-eval")
    learner = tlcore.Learner("simple_cnn", data, verbose=False, checkpoint_dir=sys.argv[1])
    kill_after = int(sys.argv[2])
    if kill_after >= 0:
        orig = tlcore.learner._Progress.on_epoch
        def on_epoch(self, s):
            if s.epoch == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
            return orig(self, s)
        tlcore.learner._Progress.on_epoch = on_epoch
    learner.fit(4, lr=1e-3, patience=10)
    torch.save(learner.model.state_dict(), sys.argv[3])
""")


@pytest.mark.slow
def test_resume_after_kill_gives_the_same_weights(fashion, tmp_path):
    script = tmp_path / "train.py"
    script.write_text(RESUME_SCRIPT)
    run = lambda *a: subprocess.run([sys.executable, str(script), *map(str, a)], capture_output=True, text=True)
    assert run(tmp_path / "a", -1, tmp_path / "a.pt").returncode == 0
    killed = run(tmp_path / "b", 2, tmp_path / "b.pt")
    assert killed.returncode != 0 and not (tmp_path / "b.pt").exists()
    resumed = run(tmp_path / "b", -1, tmp_path / "b.pt")
    assert resumed.returncode == 0, resumed.stderr
    a, b = torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b.pt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def test_onecycle_matches_torch():
    s = _core.ScheduleOptions()
    s.name = "onecycle"
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=50)
    for step in range(50):
        assert _core.lr_factor(s, step, 50, 10) * 0.1 == pytest.approx(opt.param_groups[0]["lr"], rel=1e-6)
        opt.step()
        sched.step()


def test_cosine_matches_torch():
    s = _core.ScheduleOptions()
    s.name = "cosine"
    params = [torch.nn.Parameter(torch.zeros(1))]
    opt = torch.optim.SGD(params, lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)
    for step in range(30):
        assert _core.lr_factor(s, step, 30, 10) * 0.1 == pytest.approx(opt.param_groups[0]["lr"], rel=1e-6, abs=1e-12)
        opt.step()
        sched.step()


def test_balanced_weights_match_sklearn():
    from sklearn.utils.class_weight import compute_class_weight
    import numpy as np

    y = np.array([0] * 10 + [1] * 30 + [2] * 5)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose(_core.balanced_class_weights(y.tolist(), 3), expected)
