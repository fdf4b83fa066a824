"""The C++ data sources and decoder from Python: bad input gives a clear
exception naming the file; real data decodes like torchvision/PIL and opens
with the expected counts."""
from __future__ import annotations

import gzip
import io
import logging
import struct
import tarfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import tlcore  # noqa: F401  (loads torch before the extension)
from tlcore import _core

log = logging.getLogger(__name__)

FASHION = Path("/usr/share/datasets/fashion-mnist")
FLOWER_CLASSES = ["daisy", "dandelion", "roses", "sunflowers", "tulips"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]


def photo(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """A smooth, photo-like RGB image whose channels all differ."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(40 + 150 * x / width), (60 + seed * 37 + 100 * y / height) % 256,
                    (220 - 120 * (x + y) / (width + height))], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def mean_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ------------------------------------------------------------------ bad input


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.jpg: empty image data"):
        _core.read_image(str(path))


def test_truncated_jpeg(tmp_path):
    jpeg = encoded(photo(128, 96), "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(jpeg[: len(jpeg) // 2])
    with pytest.raises(ValueError, match=r"cut\.jpg: truncated or corrupt JPEG data \(Premature end"):
        _core.read_image(str(path))


def test_text_named_jpg_in_a_folder(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "notes.jpg").write_text("not pixels at all\n")
    ds = _core.open_image_folder(str(tmp_path))
    with pytest.raises(ValueError, match=r"cat/notes\.jpg: not an image"):
        ds.image(0)


def test_missing_files_are_file_not_found(tmp_path):
    for call in (lambda: _core.read_image(str(tmp_path / "nope.png")),
                 lambda: _core.open_image_folder(str(tmp_path / "nope")),
                 lambda: _core.open_image_archive(str(tmp_path / "nope.tar")),
                 lambda: _core.open_cifar(str(tmp_path / "nope")),
                 lambda: _core.open_idx(str(tmp_path / "a"), str(tmp_path / "b"))):
        with pytest.raises(FileNotFoundError, match="nope|/a"):
            call()


def _tar(path: Path, members: dict) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_tar_with_parent_entry(tmp_path):
    png = encoded(photo(8, 8), "PNG")
    path = tmp_path / "evil.tar.gz"
    _tar(path, {"train/cat/a.png": png, "../escape.png": png})
    with pytest.raises(ValueError, match=r"evil\.tar\.gz: member '\.\./escape\.png' has a '\.\.'"):
        _core.open_image_archive(str(path))


def test_truncated_archive(tmp_path):
    members = {f"train/c{i % 2}/{i}.png": encoded(photo(32, 32, i), "PNG") for i in range(8)}
    path = tmp_path / "cut.tar.gz"
    _tar(path, members)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.tar\.gz"):
        _core.open_image_archive(str(path))


def _idx(magic: int, dims: tuple, payload: bytes) -> bytes:
    return struct.pack(">I" + "I" * len(dims), magic, *dims) + payload


def test_idx_wrong_magic_and_short_data(tmp_path):
    images, labels = tmp_path / "images-idx3", tmp_path / "labels-idx1"
    labels.write_bytes(_idx(0x801, (2,), b"\x01\x02"))
    images.write_bytes(_idx(0x802, (2, 3, 3), bytes(18)))
    with pytest.raises(ValueError, match=r"images-idx3: wrong magic 0x00000802"):
        _core.open_idx(str(images), str(labels))
    images.write_bytes(gzip.compress(_idx(0x803, (2, 3, 3), bytes(17))))
    with pytest.raises(ValueError, match=r"images-idx3: header says 2 x 3 x 3 but the file holds 17"):
        _core.open_idx(str(images), str(labels))
    images.write_bytes(_idx(0x803, (3, 3, 3), bytes(27)))
    with pytest.raises(ValueError, match=r"holds 3 images but .*labels-idx1 holds 2 labels"):
        _core.open_idx(str(images), str(labels))


def test_cifar_file_of_wrong_length(tmp_path):
    path = tmp_path / "test_batch.bin"
    path.write_bytes(bytes(3073 * 2 + 100))
    with pytest.raises(ValueError, match=r"test_batch\.bin: length 6246 bytes is not a positive multiple"):
        _core.open_cifar(str(path))
    with pytest.raises(ValueError, match="'fine' or 'coarse'"):
        _core.open_cifar(str(path), label="medium")


def test_bad_options(tmp_path):
    png = encoded(photo(8, 8), "PNG")
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        _core.decode_image(png, channels=2)
    with pytest.raises(ValueError, match="min_side"):
        _core.decode_image(png, min_side=-3)


# ------------------------------------------------------------------ decoding against oracles


def test_png_variants_match_pil():
    rgb = photo(40, 30)
    rgba = rgb.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    cases = {
        "rgba": (rgba, 3, np.asarray(rgba.convert("RGB"))),
        "gray": (rgb.convert("L"), 1, np.asarray(rgb.convert("L"))[:, :, None]),
        "gray->rgb": (rgb.convert("L"), 3, np.asarray(rgb.convert("L").convert("RGB"))),
        "palette": (rgb.quantize(16), 3, np.asarray(rgb.quantize(16).convert("RGB"))),
    }
    for name, (image, channels, expected) in cases.items():
        got = _core.decode_image(encoded(image, "PNG"), channels=channels)
        assert got.dtype == np.uint8 and got.shape == expected.shape, name
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_decode_accepts_any_bytes_like():
    png = encoded(photo(8, 6), "PNG")
    expected = np.asarray(photo(8, 6))
    for data in (png, bytearray(png), memoryview(png), np.frombuffer(png, np.uint8)):
        np.testing.assert_array_equal(_core.decode_image(data), expected)


def test_real_photos_match_torchvision_and_pil(shared_dir):
    photos = sorted((shared_dir / "data" / "photos").glob("*.jpg"))
    assert photos, "no photos in shared/data/photos"
    for path in photos:
        ours = _core.read_image(str(path))
        tv = torchvision.io.read_image(str(path), torchvision.io.ImageReadMode.RGB)
        assert mean_diff(ours, tv.permute(1, 2, 0).numpy()) < 1.0, path.name
        with Image.open(path) as im:
            assert mean_diff(ours, np.asarray(im.convert("RGB"))) < 1.0, path.name
            gray = _core.read_image(str(path), channels=1)
            assert mean_diff(gray[:, :, 0], np.asarray(im.convert("L"))) < 1.5, path.name

        # Reduced decoding: the largest DCT scale keeping the short side >= min_side,
        # the same scaling PIL's draft mode uses.
        h, w = ours.shape[:2]
        min_side = min(h, w) // 5
        small = _core.read_image(str(path), min_side=min_side)
        scale = round(w / small.shape[1])
        assert scale in (2, 4, 8), path.name
        assert small.shape == (-(-h // scale), -(-w // scale), 3)
        assert min(small.shape[:2]) >= min_side
        assert scale == 8 or -(-min(h, w) // (2 * scale)) < min_side
        with Image.open(path) as im:
            im.draft("RGB", (w // scale, h // scale))
            reference = np.asarray(im.convert("RGB"))
        assert reference.shape == small.shape, path.name
        assert mean_diff(small, reference) < 1.0, path.name


@pytest.mark.parametrize("mode,channels", [("L", 1), ("RGB", 3), ("RGBA", 4)])
def test_png_decoding_reduces_like_pillow(mode, channels):
    """Formats without DCT scaling are reduced after decoding, by the factor a JPEG would
    be: Pillow's Image.reduce (a box filter) is the oracle, and the colour work is done on
    the small image (a grey picture at the pixel limit is never expanded to RGB whole)."""
    rng = np.random.default_rng(7)
    # Smooth content (the box filter's rounding is the only difference), 1600 x 1200.
    small = rng.integers(0, 256, (15, 20, channels), dtype=np.uint8)
    pixels = np.asarray(Image.fromarray(small.squeeze()).resize((1600, 1200), Image.BILINEAR))
    buf = io.BytesIO()
    Image.fromarray(pixels, mode).save(buf, "PNG")
    for min_side, factor in [(150, 8), (151, 4), (300, 4), (600, 2), (601, 1), (0, 1)]:
        out = _core.decode_image(buf.getvalue(), channels=3, min_side=min_side)
        # Alpha is dropped, as in a full-size decode: the colours are reduced as they are.
        reference = Image.fromarray(pixels, mode).convert("RGB").reduce(factor)
        assert out.shape == (1200 // factor, 1600 // factor, 3), min_side
        assert np.abs(out.astype(int) - np.asarray(reference, int)).max() <= 1, min_side


# ------------------------------------------------------------------ real data sets


def test_flowers_folder_matches_torchvision(shared_dir):
    root = shared_dir / "data" / "flowers" / "train"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    ds = _core.open_image_folder(str(root))
    assert len(ds) == 2934
    assert ds.classes == FLOWER_CLASSES
    assert ds.stats == {"hidden": 0, "non_image": 0, "outside_classes": 0}
    reference = torchvision.datasets.ImageFolder(str(root))
    assert ds.classes == reference.classes
    assert [(ds.source(i), ds.label(i)) for i in range(len(ds))] == reference.samples
    np.testing.assert_array_equal(ds.labels(), reference.targets)
    image = ds.image(100)
    assert image.ndim == 3 and image.shape[2] == 3
    with Image.open(reference.samples[100][0]) as im:
        assert mean_diff(image, np.asarray(im.convert("RGB"))) < 1.0


def test_cifar10_archive(shared_dir):
    path = shared_dir / "data" / "cifar10" / "train.tar.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    start = time.perf_counter()
    ds = _core.open_image_archive(str(path))
    seconds = time.perf_counter() - start
    log.info("opened %s in %.2f s", path, seconds)
    assert seconds < 5.0
    assert len(ds) == 50000
    assert ds.classes == CIFAR10_CLASSES
    assert Counter(ds.labels().tolist()) == {c: 5000 for c in range(10)}
    assert ds.source(0) == f"{path}:train/airplane/0000.jpg"
    # One member against Python's tarfile + PIL.
    index = 5000 * 3 + 17
    member = ds.source(index).split(":", 1)[1]
    assert member.startswith("train/cat/")
    with tarfile.open(path) as tar:
        data = tar.extractfile(member).read()
    ours = ds.image(index)
    assert ours.shape == (32, 32, 3)
    assert mean_diff(ours, np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))) < 1.0


def _fashion(split: str):
    images = FASHION / f"{split}-images-idx3-ubyte.gz"
    if not images.is_file():
        pytest.skip(f"{images} not found (apt-get install dataset-fashion-mnist)")
    return images, FASHION / f"{split}-labels-idx1-ubyte.gz"


def test_fashion_mnist_matches_numpy():
    images, labels = _fashion("train")
    ds = _core.open_idx(str(images), str(labels))
    assert len(ds) == 60000
    assert ds.classes == [str(c) for c in range(10)]
    with gzip.open(labels) as f:
        expected_labels = np.frombuffer(f.read(), np.uint8, offset=8)
    np.testing.assert_array_equal(ds.labels(), expected_labels)
    with gzip.open(images) as f:
        pixels = np.frombuffer(f.read(), np.uint8, offset=16).reshape(60000, 28, 28)
    for i in (0, 12345, 59999):
        np.testing.assert_array_equal(ds.image(i, channels=1)[:, :, 0], pixels[i])
        np.testing.assert_array_equal(ds.image(i), np.repeat(pixels[i][:, :, None], 3, axis=2))
    assert ds.source(7) == f"{images}#7"


# ------------------------------------------------------------------ splits and views


def test_stratified_split_proportions():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(4), [500, 120, 9, 2]))
    train, val = _core.stratified_split(labels.tolist(), 0.2, 42)
    assert train.dtype == np.int64 and val.dtype == np.int64
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert not set(train) & set(val)
    assert len(train) + len(val) == len(labels)
    assert Counter(labels[val].tolist()) == {0: 100, 1: 24, 2: 2, 3: 1}
    again = _core.stratified_split(labels.tolist(), 0.2, 42)
    np.testing.assert_array_equal(again[1], val)
    assert not np.array_equal(_core.stratified_split(labels.tolist(), 0.2, 43)[1], val)
    with pytest.raises(ValueError, match="val_fraction"):
        _core.stratified_split(labels.tolist(), 1.5, 0)


def test_per_class_subset_and_subset_view(tmp_path):
    for i, name in enumerate(["b", "a", "a", "c", "a"]):
        (tmp_path / name).mkdir(exist_ok=True)
        photo(10, 8, i).save(tmp_path / name / f"{i}.png")
    ds = _core.open_image_folder(str(tmp_path))
    np.testing.assert_array_equal(ds.labels(), [0, 0, 0, 1, 2])
    picked = _core.per_class_subset(ds.labels().tolist(), 2, 1)
    assert Counter(ds.labels()[picked].tolist()) == {0: 2, 1: 1, 2: 1}

    view = _core.Subset(ds, [4, 0])  # c/3.png, a/1.png
    assert len(view) == 2 and view.classes == ["a", "b", "c"]
    np.testing.assert_array_equal(view.indices, [4, 0])
    np.testing.assert_array_equal(view.labels(), [2, 0])
    assert view.source(0) == str(tmp_path / "c" / "3.png")
    np.testing.assert_array_equal(view.image(1), np.asarray(photo(10, 8, 1)))
    with pytest.raises(ValueError, match="out of range"):
        _core.Subset(ds, [5])


def test_folder_stats_count_what_was_skipped(tmp_path):
    (tmp_path / "cat" / ".thumbs").mkdir(parents=True)
    photo(8, 8).save(tmp_path / "cat" / "a.jpg")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"x")
    (tmp_path / "cat" / "labels.csv").write_text("a,b\n")
    (tmp_path / "README").write_text("hi")
    ds = _core.open_image_folder(str(tmp_path))
    assert len(ds) == 1
    assert ds.stats == {"hidden": 2, "non_image": 1, "outside_classes": 1}
    with pytest.raises(ValueError, match="out of range"):
        ds.image(1)
