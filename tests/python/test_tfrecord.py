"""TFRecords written here in TensorFlow's format, read by tlcore.

The framing's CRC32C is a pure-Python table implementation checked against the
standard check value, and tf.train.Example is encoded by hand from protobuf's
wire-format rules: nothing is shared with the C++ reader.
"""
from __future__ import annotations

import io
import re
import struct
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest
from PIL import Image

import tlcore
from tlcore import _core


# ---------------------------------------------------------------- reference writer

def _crc_table() -> List[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def frame(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64: two's complement, 10 bytes
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        out.append(low | 0x80 if value else low)
        if not value:
            return bytes(out)


def delimited(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def bytes_feature(*values: bytes) -> bytes:  # Feature.bytes_list = 1, BytesList.value = 1
    return delimited(1, b"".join(delimited(1, v) for v in values))


def int64_feature(*values: int, packed: bool = True) -> bytes:  # Feature.int64_list = 3
    if packed:
        inner = delimited(1, b"".join(varint(v) for v in values))
    else:
        inner = b"".join(varint(1 << 3 | 0) + varint(v) for v in values)
    return delimited(3, inner)


def float_feature(*values: float) -> bytes:  # Feature.float_list = 2, packed fixed32
    return delimited(2, delimited(1, struct.pack(f"<{len(values)}f", *values)))


def example(features: Dict[str, bytes]) -> bytes:
    """Example.features = 1; Features.feature = 1: map entries of key = 1, value = 2."""
    entries = b"".join(delimited(1, delimited(1, k.encode()) + delimited(2, v)) for k, v in features.items())
    return delimited(1, entries)


def jpeg(seed: int, size: Tuple[int, int] = (40, 30)) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:1:complex(0, h), 0:1:complex(0, w)]
    base = np.stack([x * 200 + 20, y * 180 + 30, (x + y) * 60 + seed * 10], axis=2)
    pixels = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def flower(image: bytes, label: int, packed: bool = True) -> bytes:
    """A Kaggle 104-flowers record: "id", "image" and "class" (plus a float the reader ignores)."""
    return example({"id": bytes_feature(b"1a2b3c"), "class": int64_feature(label, packed=packed),
                    "image": bytes_feature(image), "weight": float_feature(0.25)})


def write_shards(folder: Path, labels: Sequence[Sequence[int]]) -> List[Tuple[bytes, int, str]]:
    """Shards train-00.tfrec, train-01.tfrec, ... (written last to first); their records in reading order."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for s, shard_labels in enumerate(labels):
        path = folder / f"train-{s:02d}.tfrec"
        shards.append([(jpeg(10 * s + k), label, f"{path}#{k}") for k, label in enumerate(shard_labels)])
    for s in reversed(range(len(shards))):
        # Alternate packed and unpacked int64 lists: readers must accept both.
        (folder / f"train-{s:02d}.tfrec").write_bytes(
            b"".join(frame(flower(image, label, packed=k % 2 == 0)) for k, (image, label, _) in enumerate(shards[s])))
    return [record for shard in shards for record in shard]


# ---------------------------------------------------------------- tests

def test_reference_crc32c_matches_the_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # RFC 3720's CRC-32C check value


def test_round_trip_jpeg_bytes_and_labels_across_shards(tmp_path: Path):
    records = write_shards(tmp_path, [[3, 0, 1], [2, 3]])
    (tmp_path / "notes.txt").write_text("not a shard")
    names = ["daisy", "rose", "tulip", "iris"]
    ds = tlcore.open_tfrecords(tmp_path / "train-*.tfrec", classes=names)
    assert len(ds) == 5
    assert ds.classes == names
    assert ds.labels().tolist() == [label for _, label, _ in records]
    for i, (data, _, source) in enumerate(records):
        assert ds.source(i) == source
        path = tmp_path / f"image{i}.jpg"
        path.write_bytes(data)
        # The same bytes from a file through the same decoder: identical pixels ...
        np.testing.assert_array_equal(ds.image(i), _core.read_image(str(path)))
        # ... and PIL's decoder agrees to within IDCT rounding.
        reference = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        assert np.abs(ds.image(i).astype(np.float64) - reference).mean() < 1.0
    assert ds.image(0, channels=1).shape == (30, 40, 1)


def test_open_dataset_recognises_files_globs_and_folders(tmp_path: Path):
    write_shards(tmp_path / "shards", [[1, 0], [2]])
    expected = [1, 0, 2]
    for path in (tmp_path / "shards", tmp_path / "shards" / "*.tfrec", str(tmp_path / "shards" / "train-0?.tfrec")):
        ds = tlcore.open_dataset(path)
        assert ds.labels().tolist() == expected, path
        assert ds.classes == ["0", "1", "2"]
    assert tlcore.open_dataset(tmp_path / "shards" / "train-01.tfrec").labels().tolist() == [2]
    data = tlcore.ImageData(str(tmp_path / "shards" / "*.tfrec"), val_split=0, image_size=32)
    assert len(data.train) == 3


def test_feature_names_are_configurable(tmp_path: Path):
    path = tmp_path / "other.tfrecord"
    path.write_bytes(frame(example({"image/encoded": bytes_feature(jpeg(0)), "label": int64_feature(4)})))
    ds = tlcore.open_tfrecords(path, image_key="image/encoded", label_key="label")
    assert ds.labels().tolist() == [4]
    assert ds.image(0).shape == (30, 40, 3)
    with pytest.raises(ValueError, match=r"no feature 'class' \(features: 'image/encoded', 'label'\)"):
        tlcore.open_tfrecords(path, image_key="image/encoded")


def test_loader_batches_match_the_decoded_records(tmp_path: Path):
    write_shards(tmp_path, [[0, 1, 2], [1, 0]])
    ds = tlcore.open_dataset(tmp_path / "*.tfrec")
    pipeline = tlcore.Pipeline.preset("cifar-eval", 24)
    loader = tlcore.DataLoader(ds, pipeline, batch_size=2, shuffle=True, seed=3, num_workers=2)
    seen = []
    for images, labels, indices in loader.batches():
        for image, label, index in zip(images, labels, indices.tolist()):
            expected = pipeline.normalize(pipeline(ds.image(index)))
            np.testing.assert_allclose(image.numpy(), expected, atol=1e-6)
            assert int(label) == ds.label(index)
            seen.append(index)
    assert sorted(seen) == list(range(5))


@pytest.fixture()
def three_records(tmp_path: Path) -> Tuple[Path, bytes, List[int]]:
    path = tmp_path / "data.tfrecord"
    chunks = [frame(flower(jpeg(k), k)) for k in range(3)]
    offsets = [sum(len(c) for c in chunks[:k]) for k in range(3)]
    return path, b"".join(chunks), offsets


@pytest.mark.parametrize("record, byte, bit, problem", [(1, 9, 0x01, "length"), (2, 40, 0x20, "data")])
def test_corrupt_crc_names_file_and_offset(three_records, record, byte, bit, problem):
    path, data, offsets = three_records
    bad = bytearray(data)
    bad[offsets[record] + byte] ^= bit
    path.write_bytes(bytes(bad))
    where = rf"{re.escape(str(path))}: record {record} at byte offset {offsets[record]}"
    with pytest.raises(ValueError, match=rf"{where}: {problem} CRC mismatch"):
        tlcore.open_tfrecords(path)


def test_truncated_file_names_file_and_offset(three_records):
    path, data, offsets = three_records
    path.write_bytes(data[:-3])
    where = rf"{re.escape(str(path))}: record 2 at byte offset {offsets[2]}"
    with pytest.raises(ValueError, match=rf"{where}: truncated record \("):
        tlcore.open_tfrecords(path)
    path.write_bytes(data + b"\0" * 5)
    with pytest.raises(ValueError, match=rf"record 3 at byte offset {len(data)}: truncated record header"):
        tlcore.open_tfrecords(path)


def test_wrong_feature_type_and_label_range(tmp_path: Path):
    path = tmp_path / "bad.tfrec"
    path.write_bytes(frame(example({"image": bytes_feature(jpeg(0)), "class": float_feature(1.0)})))
    with pytest.raises(ValueError, match=r"record 0 at byte offset 0: feature 'class' is a float_list"):
        tlcore.open_tfrecords(path)
    path.write_bytes(frame(flower(jpeg(0), 5)))
    with pytest.raises(ValueError, match=r"label 5 out of range \(2 class names given\)"):
        tlcore.open_tfrecords(path, classes=["a", "b"])
    path.write_bytes(frame(flower(jpeg(0), -3, packed=False)))
    with pytest.raises(ValueError, match=r"label -3 out of range"):
        tlcore.open_tfrecords(path)


def test_nothing_matches(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no files match"):
        tlcore.open_tfrecords(tmp_path / "*.tfrec")
    with pytest.raises(FileNotFoundError):
        tlcore.open_dataset(tmp_path / "missing.tfrec")


def test_record_indexes_are_cached_and_never_trusted_blindly(tmp_path: Path):
    """The first open caches each shard's record index; a damaged index or a changed shard
    is scanned again, so what is read always matches the files."""
    records = write_shards(tmp_path / "d", [[1, 0, 2], [2, 1]])
    cache = tmp_path / "cache"
    first = tlcore.open_tfrecords(tmp_path / "d" / "train-{00..01}.tfrec", index_dir=cache)
    indexes = sorted(cache.glob("*.tfrecordidx"))
    assert len(indexes) == 2 and first.labels().tolist() == [1, 0, 2, 2, 1]
    assert [first.encoded(i) for i in range(5)] == [data for data, _, _ in records]
    for index in indexes:
        data = index.read_bytes()
        index.write_bytes(data[:40] + bytes(len(data) - 40))
    again = tlcore.open_tfrecords(tmp_path / "d", index_dir=cache)
    assert again.labels().tolist() == [1, 0, 2, 2, 1]
    np.testing.assert_array_equal(again.image(3), first.image(3))
    # A shard rewritten with other records: its new records, not the cached ones.
    (tmp_path / "d" / "train-01.tfrec").write_bytes(b"".join(frame(flower(jpeg(99), label)) for label in (0, 0, 0)))
    changed = tlcore.open_tfrecords(tmp_path / "d", index_dir=cache)
    assert changed.labels().tolist() == [1, 0, 2, 0, 0, 0]
    # The dataset opened before the change notices it on reading, by the record's CRC.
    with pytest.raises(ValueError, match=r"train-01\.tfrec: record 0 at byte offset 0: data CRC mismatch"):
        first.image(3)
