"""Shared pytest fixtures."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The real data folder: $TLCORE_SHARED, else <repo>/../shared; skips when absent."""
    path = Path(os.environ.get("TLCORE_SHARED") or REPO.parent / "shared")
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} not found (set TLCORE_SHARED to its location)")
    return path


@pytest.fixture(scope="session")
def fashion_test():
    """Debian's Fashion-MNIST test set (10,000 images); skips when dataset-fashion-mnist is absent."""
    import tlcore

    try:
        return tlcore.fashion_mnist(train=False)
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="session")
def fashion_data():
    """A maker of small grey Fashion-MNIST ``ImageData`` (``per_class`` images of each class,
    28 px, no augmentation); skips when Debian's dataset-fashion-mnist is absent.

    Usage: ``data = fashion_data(10, val_split=0.25, batch_size=16)``
    """
    import tlcore

    try:
        train = tlcore.fashion_mnist(train=True)
    except FileNotFoundError as e:
        pytest.skip(str(e))

    def make(per_class: int, val_split: float = 0.0, batch_size: int = 25):
        subset = tlcore.Subset(train, tlcore.per_class_subset(train.labels(), per_class, 0))
        return tlcore.ImageData(subset, val_split=val_split, seed=0, image_size=28, batch_size=batch_size,
                                channels=1, train_transform="cifar-eval", eval_transform="cifar-eval")

    return make


@pytest.fixture(scope="session", autouse=True)
def index_cache(tmp_path_factory) -> Path:
    """Shard indexes go to a folder of the test session's own, not the user's cache."""
    folder = tmp_path_factory.mktemp("tlcore-cache")
    previous = os.environ.get("TLCORE_CACHE_DIR")
    os.environ["TLCORE_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("TLCORE_CACHE_DIR", None)
    else:
        os.environ["TLCORE_CACHE_DIR"] = previous
