"""examples/: each workshop's configuration runs end to end in a tiny form (a few images,
one epoch, 32 px, random initial weights), on small files in the official formats."""
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from test_tfrecord import write_shards

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TINY = ["--weights", "", "--limit", 20, "--epochs", 1, "--img-size", 32, "--batch-size", 8]


def run_cli(*args, timeout=600):
    out = subprocess.run([sys.executable, "-m", "tlcore.cli", *map(str, args)], capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def cifar_records(rng, labels, label_bytes):
    """Records of the CIFAR binary version: label byte(s), then 3 x 32 x 32 planes."""
    return b"".join(bytes([0] * (label_bytes - 1) + [label]) + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes()
                    for label in labels)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Tiny copies of each workshop's data, in its official layout."""
    root = tmp_path_factory.mktemp("examples_data")
    rng = np.random.default_rng(0)
    cifar10 = root / "cifar-10-batches-bin"
    cifar10.mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (cifar10 / name).write_bytes(cifar_records(rng, [k % 10 for k in range(20)], 1))
    cifar100 = root / "cifar-100-binary"
    cifar100.mkdir()
    for name in ("train.bin", "test.bin"):  # coarse label byte, then the fine label (5 of the 100 used)
        (cifar100 / name).write_bytes(cifar_records(rng, [k % 5 for k in range(40)], 2))
    flowers = root / "flowers"
    for c, name in enumerate(("daisy", "roses", "tulips")):
        (flowers / name).mkdir(parents=True)
        for k in range(8):
            pixels = np.clip(rng.normal(60 + 60 * c, 30, (40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(flowers / name / f"{k}.png")
    for part, count in (("train", 3), ("val", 1)):
        write_shards(root / "tfrecords-jpeg-224x224" / part, [[k % 4 for k in range(12)]] * count)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("example, source, extra", [
    ("cifar10_vgg16", "cifar-10-batches-bin", []),
    ("cifar100_resnet50", "cifar-100-binary", []),
    ("flowers_resnet50", "flowers", ["--finetune-epochs", 1]),
    ("cifar10_efficientnet_b0", "cifar-10-batches-bin", ["--finetune-epochs", 1]),
    ("flowers104_efficientnet_b0", "tfrecords-jpeg-224x224/train/*.tfrec",
     ["--valid", "tfrecords-jpeg-224x224/val/*.tfrec", "--finetune-epochs", 1]),
])
def test_train_example_runs_tiny(data, tmp_path, example, source, extra):
    config = EXAMPLES / f"{example}.yaml"
    written = yaml.safe_load(config.read_text())
    extra = [str(data / e) if str(e).startswith("tfrecords") else e for e in extra]
    run_cli("train", "--config", config, "--data", data / source, *TINY, *extra, "--out", tmp_path)
    effective = yaml.safe_load(next(tmp_path.glob("*.yaml")).read_text())
    # Everything the example set and the tiny run did not override is what ran.
    for key, value in written.items():
        if key not in ("data", "weights", "img_size", "batch_size", "epochs", "finetune_epochs", "valid", "out"):
            assert effective[{"early_stopping": "patience"}.get(key, key)] == value, key
    assert next(tmp_path.glob("*.tlc")).stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("example", ["scratch_vs_transfer", "nine_architectures", "mnist_mlp_vs_resnet18"])
def test_compare_example_runs_tiny(data, tmp_path, example):
    config = EXAMPLES / f"{example}.yaml"
    backbones = yaml.safe_load(config.read_text())["backbones"].split(",")
    source = [] if example.startswith("mnist") else ["--data", data / "flowers"]
    run_cli("compare", "--config", config, *source, *TINY, "--finetune-epochs", 0, "--out", tmp_path)
    table = next(tmp_path.glob("*.md")).read_text()
    assert all(f"| {b} |" in table for b in backbones), table


def test_every_example_is_tested():
    tested = {"cifar10_vgg16", "cifar100_resnet50", "flowers_resnet50", "cifar10_efficientnet_b0",
              "flowers104_efficientnet_b0", "scratch_vs_transfer", "nine_architectures", "mnist_mlp_vs_resnet18"}
    assert {p.stem for p in EXAMPLES.glob("*.yaml")} == tested
