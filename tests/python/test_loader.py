"""The C++ loader seen from Python: coverage, determinism, GIL release, real data."""
import os
import threading
import time

import numpy as np
import pytest
import torch

import tlcore
from tlcore import _core


@pytest.fixture(scope="module")
def fashion(fashion_test):
    """The session's Fashion-MNIST test set (conftest; skips when it is absent)."""
    return fashion_test


def test_epoch_covers_every_index_once(fashion):
    ds = _core.Subset(fashion, list(range(1000)))
    loader = tlcore.DataLoader(ds, "cifar-eval", image_size=28, channels=1, batch_size=64, seed=3)
    assert len(loader) == 16
    seen = torch.cat([idx for _, _, idx in loader.batches()])
    assert sorted(seen.tolist()) == list(range(1000))


def test_batches_match_the_dataset(fashion):
    ds = _core.Subset(fashion, list(range(300)))
    loader = tlcore.DataLoader(ds, "cifar-eval", image_size=28, channels=1, batch_size=50,
                               uint8_output=True, seed=1)
    for images, labels, idx in loader.batches():
        assert images.dtype == torch.uint8 and images.shape[1:] == (1, 28, 28)
        for k in (0, len(idx) - 1):
            i = int(idx[k])
            np.testing.assert_array_equal(images[k, 0].numpy(), ds.image(i, channels=1)[:, :, 0])
            assert int(labels[k]) == ds.label(i)


def test_same_seed_same_epoch_same_batches(fashion):
    ds = _core.Subset(fashion, list(range(256)))

    def epoch(seed, workers, which):
        loader = tlcore.DataLoader(ds, "cifar-train", image_size=28, channels=1, batch_size=32,
                                   seed=seed, num_workers=workers)
        loader.set_epoch(which)
        return torch.cat([x for x, _ in loader])

    a = epoch(5, 1, 2)
    assert torch.equal(a, epoch(5, 2, 2))
    assert not torch.equal(a, epoch(5, 2, 3))
    assert not torch.equal(a, epoch(6, 2, 2))


def test_waiting_releases_the_gil(fashion):
    """A Python thread keeps running while the main thread waits on C++ workers."""
    loader = tlcore.DataLoader(fashion, "cifar-train", image_size=96, channels=1, batch_size=500)
    ticks = []
    done = threading.Event()

    def ticker():
        while not done.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    for _ in loader:
        pass
    done.set()
    t.join()
    assert len(ticks) > 20


def test_defaults_use_all_cores():
    if "TLCORE_NUM_THREADS" in os.environ:
        pytest.skip("TLCORE_NUM_THREADS overrides the default")
    assert tlcore.num_threads() == tlcore.available_cores() == len(os.sched_getaffinity(0))
    assert torch.get_num_threads() == tlcore.num_threads()
