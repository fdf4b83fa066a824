"""Tar shards read in place (tlcore.open_shards) and loaders that read them shard by shard.

Shards are written here with Python's tarfile (ustar, GNU and pax headers), images with
PIL as lossless PNG; the oracles are tarfile's own listing, PIL's decoding and
torchvision's ImageFolder on the extracted files.
"""
from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

import tlcore
from test_tfrecord import crc32c

WORKER = Path(__file__).with_name("_shard_rank.py")


def _png(seed: int, size: int = 12) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size + 3, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_keyed(path: Path, samples: Sequence[Tuple[str, object]], label_ext: str = "cls",
                fmt: int = tarfile.USTAR_FORMAT, seed: int = 0) -> List[bytes]:
    """A WebDataset shard: key.png + key.cls (or .json). Returns the images' bytes."""
    images = []
    with tarfile.open(path, "w", format=fmt) as tar:
        for k, (key, label) in enumerate(samples):
            images.append(_png(seed * 1000 + k))
            _add(tar, key + ".png", images[-1])
            if label is not None:
                text = json.dumps({"label": label}) if label_ext == "json" else str(label)
                _add(tar, f"{key}.{label_ext}", text.encode())
    return images


def write_keyed_shards(folder: Path, shards: int, per_shard: int, classes: int = 3) -> List[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        p = folder / f"train-{s:04d}.tar"
        write_keyed(p, [(f"s{s}/{k:05d}", (s * per_shard + k) % classes) for k in range(per_shard)],
                    seed=s)
        paths.append(p)
    return paths


# ---------------------------------------------------------------- layouts


def test_keyed_shards_match_what_was_written(tmp_path):
    paths = write_keyed_shards(tmp_path, shards=3, per_shard=5)
    ds = tlcore.open_shards(tmp_path / "train-{0000..0002}.tar")
    assert len(ds) == 15 and ds.classes == ["0", "1", "2"]
    assert list(ds.labels()) == [k % 3 for k in range(15)]
    assert ds.shard_starts() == [0, 5, 10]
    assert ds.stats["shards"] == 3 and ds.stats["skipped"] == 0
    with tarfile.open(paths[1]) as tar:
        member = tar.getmember("s1/00002.png")
        expected = np.asarray(Image.open(tar.extractfile(member)).convert("RGB"))
    np.testing.assert_array_equal(ds.image(7), expected)
    assert ds.source(7) == f"{paths[1]}:s1/00002.png"


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_in_gnu_and_pax_headers(tmp_path, fmt):
    key = "a" * 80 + "/" + "b" * 90 + "/ünïcode-" + "c" * 40
    path = tmp_path / "long.tar"
    write_keyed(path, [(key, 1), ("short", 0)], fmt=fmt)
    with tarfile.open(path) as tar:
        names = [m.name for m in tar.getmembers() if m.name.endswith(".png")]
    ds = tlcore.open_shards(path)
    assert [ds.source(i).split(":", 1)[1] for i in range(len(ds))] == names
    assert list(ds.labels()) == [1, 0]


def test_json_labels_with_names_sort_like_class_names(tmp_path):
    path = tmp_path / "named.tar"
    write_keyed(path, [("x1", "tulip"), ("x2", "daisy"), ("x3", "rose"), ("x4", "daisy")],
                label_ext="json")
    ds = tlcore.open_shards(path)
    assert ds.classes == ["daisy", "rose", "tulip"]
    assert list(ds.labels()) == [2, 0, 1, 0]
    given = tlcore.open_shards(path, classes=["tulip", "rose", "daisy"])
    assert list(given.labels()) == [0, 2, 1, 2]
    with pytest.raises(ValueError, match=r"named\.tar:x1\.png: label 'tulip' is not one of the 2"):
        tlcore.open_shards(path, classes=["rose", "daisy"])


def test_class_folders_inside_shards_match_torchvision(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    names = {"daisy": 3, "rose": 2, "tulip": 4}
    shards = [tmp_path / "a.tar", tmp_path / "b.tar"]
    extracted = tmp_path / "extracted"
    k = 0
    for s, shard in enumerate(shards):
        with tarfile.open(shard, "w") as tar:
            for name, count in names.items():
                for i in range(count if s == 0 else 1):
                    member = f"train/{name}/{s}-{i}.png"
                    data = _png(k)
                    k += 1
                    _add(tar, member, data)
                    (extracted / member).parent.mkdir(parents=True, exist_ok=True)
                    (extracted / member).write_bytes(data)
            _add(tar, "train/README.txt", b"not an image")
    ds = tlcore.open_shards(tmp_path)
    oracle = torchvision.datasets.ImageFolder(str(extracted / "train"))
    assert ds.classes == oracle.classes
    by_name = {Path(p).relative_to(extracted).as_posix(): label for p, label in oracle.samples}
    got = {ds.source(i).split(":", 1)[1]: ds.label(i) for i in range(len(ds))}
    assert got == by_name
    assert ds.stats["non_image"] == 2


def test_open_dataset_recognises_shards(tmp_path):
    write_keyed_shards(tmp_path / "shards", shards=2, per_shard=3)
    (tmp_path / "list.txt").write_text("# train\nshards/train-0001.tar\n\nshards/train-0000.tar\n")
    for pattern in (tmp_path / "shards", tmp_path / "shards" / "train-0000.tar",
                    str(tmp_path / "shards" / "train-*.tar"),
                    str(tmp_path / "shards" / "train-{0000..0001}.tar"), tmp_path / "list.txt"):
        ds = tlcore.open_dataset(pattern)
        assert len(ds) in (3, 6), pattern
    listed = tlcore.open_dataset(tmp_path / "list.txt")
    assert listed.source(0).endswith("train-0001.tar:s1/00000.png")  # the list's order


def test_patterns_name_missing_shards_and_refuse_absurd_ranges(tmp_path):
    write_keyed_shards(tmp_path, shards=2, per_shard=2)
    with pytest.raises(FileNotFoundError, match=r"train-0002\.tar: no such shard"):
        tlcore.open_shards(tmp_path / "train-{0000..0002}.tar")
    with pytest.raises(ValueError, match="names over"):
        tlcore.open_shards(tmp_path / "train-{0..99999999999}.tar")
    with pytest.raises(ValueError, match="without '}'"):
        tlcore.open_shards(tmp_path / "train-{0000..0001.tar")


# ---------------------------------------------------------------- indexes


def test_index_is_reused_and_refreshed_when_a_shard_changes(tmp_path, index_cache):
    paths = write_keyed_shards(tmp_path / "d", shards=4, per_shard=3)
    first = tlcore.open_shards(tmp_path / "d")
    assert first.stats["indexed"] == 4
    again = tlcore.open_shards(tmp_path / "d")
    assert again.stats["indexed"] == 0 and list(again.labels()) == list(first.labels())
    write_keyed(paths[2], [("new/a", 1), ("new/b", 2), ("new/c", 0), ("new/d", 1)], seed=9)
    changed = tlcore.open_shards(tmp_path / "d")
    assert changed.stats["indexed"] == 1 and len(changed) == 13
    assert changed.source(6).endswith("train-0002.tar:new/a.png")


def test_a_damaged_index_is_rebuilt_not_trusted(tmp_path):
    write_keyed_shards(tmp_path / "d", shards=1, per_shard=4)
    cache = tmp_path / "cache"
    reference = tlcore.open_shards(tmp_path / "d", index_dir=cache)
    (index,) = cache.iterdir()
    data = bytearray(index.read_bytes())
    for damage in (data[: len(data) // 2], data[:-9] + bytes(9), bytes(len(data))):
        index.write_bytes(bytes(damage))
        ds = tlcore.open_shards(tmp_path / "d", index_dir=cache)
        assert ds.stats["indexed"] == 1
        assert list(ds.labels()) == list(reference.labels())
        np.testing.assert_array_equal(ds.image(3), reference.image(3))


def _index_file(shard: Path, payload: bytes) -> bytes:
    """An index file for ``shard`` as it is now, in tlcore's format (index_cache.cpp), around
    ``payload``, with a correct CRC32C: only the payload can make it wrong."""
    u64 = lambda v: struct.pack("<Q", v)
    st = shard.stat()
    key = b"tar-shard 2"
    header = (b"TLCINDEX" + u64(1) + u64(st.st_size) + u64(st.st_mtime_ns) + u64(st.st_ctime_ns) +
              u64(st.st_ino) + u64(len(key)) + key + u64(len(payload)))
    return header + payload + struct.pack("<I", crc32c(payload))


def test_an_index_beside_the_shard_with_offsets_outside_it_is_refused(tmp_path):
    shard = tmp_path / "one.tar"
    write_keyed(shard, [("a", 0), ("b", 1)])
    u64 = lambda v: struct.pack("<Q", v)
    text = lambda b: u64(len(b)) + b
    # Well formed, for this very shard, but its one sample lies past the shard's end.
    payload = (b"\x02\x00" + u64(1) + text(b"0") + u64(1) + text(b"x.png") + u64(shard.stat().st_size + 512) +
               u64(100) + u64(0) + u64(0) + u64(0) + u64(0))
    Path(f"{shard}.tlcidx").write_bytes(_index_file(shard, payload))
    ds = tlcore.open_shards(shard, index_dir=tmp_path / "cache")
    assert ds.stats["indexed"] == 1 and len(ds) == 2
    assert ds.source(0).endswith("one.tar:a.png") and ds.image(0).shape == (12, 15, 3)
    # The same file with the offset inside the shard is trusted: the format above is the real one.
    inside = payload.replace(u64(shard.stat().st_size + 512), u64(512))
    Path(f"{shard}.tlcidx").write_bytes(_index_file(shard, inside))
    trusted = tlcore.open_shards(shard, index_dir=tmp_path / "cache2")
    assert trusted.stats["indexed"] == 0 and len(trusted) == 1


# ---------------------------------------------------------------- bad input


def test_a_truncated_shard_names_shard_and_member(tmp_path):
    shard = tmp_path / "cut.tar"
    write_keyed(shard, [(f"k{i}", i % 2) for i in range(6)])
    data = shard.read_bytes()
    with tarfile.open(shard) as tar:
        victim = tar.getmember("k4.png")
    shard.write_bytes(data[: victim.offset_data + 10])
    with pytest.raises(ValueError, match=r"cut\.tar:k4\.png: truncated member"):
        tlcore.open_shards(shard)
    ds = tlcore.open_shards(shard, skip_corrupt=True)
    assert len(ds) == 4 and ds.stats["skipped"] == 1
    assert "k4.png" in ds.stats["problems"][0]


def test_an_image_without_its_label_file(tmp_path):
    shard = tmp_path / "nolabel.tar"
    write_keyed(shard, [("a", 0), ("b", None), ("c", 1)])
    with pytest.raises(ValueError, match=r"nolabel\.tar:b\.png: no label file \(b\.cls or b\.json\)"):
        tlcore.open_shards(shard)
    ds = tlcore.open_shards(shard, skip_corrupt=True)
    assert [ds.source(i)[-5:] for i in range(len(ds))] == ["a.png", "c.png"]
    assert ds.stats["skipped"] == 1


@pytest.mark.parametrize("ext,text,why", [
    ("json", b"{not json", "label file is not valid JSON"),
    ("json", b'{"label": -3}', "no label in the JSON"),
    ("cls", b"", "empty label file"),
    ("cls", b"1\n2\n", "a label file holds one number or name on one line"),
])
def test_a_label_file_that_does_not_parse(tmp_path, ext, text, why):
    shard = tmp_path / "bad.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "ok.png", _png(1))
        _add(tar, f"ok.{ext}", b"1" if ext == "cls" else b'{"label": 1}')
        _add(tar, "bad.png", _png(2))
        _add(tar, f"bad.{ext}", text)
    with pytest.raises(ValueError, match=rf"bad\.tar:bad\.{ext}: {re.escape(why)}"):
        tlcore.open_shards(shard)
    assert len(tlcore.open_shards(shard, skip_corrupt=True)) == 1


def test_a_foreign_shard_is_refused_clearly(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(ValueError, match=r"junk\.tar: tar header at byte offset 0: header checksum"):
        tlcore.open_shards(junk)


def test_a_shard_that_vanishes_mid_epoch(tmp_path):
    write_keyed_shards(tmp_path, shards=6, per_shard=4)
    ds = tlcore.open_shards(tmp_path)  # files are opened on first read
    (tmp_path / "train-0003.tar").unlink()
    loader = tlcore.DataLoader(ds, "cifar-eval", image_size=12, batch_size=4, shuffle=False)
    with pytest.raises(ValueError, match=r"train-0003\.tar:s3/00000\.png: the shard has gone"):
        list(loader)
    skipping = tlcore.DataLoader(ds, "cifar-eval", image_size=12, batch_size=4, shuffle=False,
                                 skip_corrupt=True)
    assert sum(len(labels) for _, labels in skipping) == 20
    assert skipping.skipped == 4


# ---------------------------------------------------------------- compressed shards


def _zstd(data: bytes) -> bytes:
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


COMPRESSORS = {"gz": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress, "zst": _zstd}


def write_compressed_shards(folder: Path, shards: int, per_shard: int, kind: str = "gz") -> List[Path]:
    """Keyed shards, each compressed whole as ``train-NNNN.tar.<kind>``."""
    paths = []
    for plain in write_keyed_shards(folder / "plain", shards, per_shard):
        paths.append(folder / f"{plain.name}.{kind}")
        paths[-1].write_bytes(COMPRESSORS[kind](plain.read_bytes()))
    return paths


def _tar_images(path: Path) -> Dict[str, Tuple[np.ndarray, str]]:
    """Each image member of a (compressed) shard with its .cls text, as Python's tarfile reads it."""
    out, labels = {}, {}
    data = path.read_bytes()
    if path.suffix == ".zst":  # Python's tarfile reads no zstd
        data = subprocess.run(["zstd", "-d", "-q", "-c"], input=data, capture_output=True,
                              check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            data = tar.extractfile(m).read()
            if m.name.endswith(".png"):
                out[m.name] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            else:
                labels[m.name[:-4]] = data.decode()
    return {name: (image, labels[name[:-4]]) for name, image in out.items()}


@pytest.mark.parametrize("kind", ["gz", "bz2", "xz", "zst"])
def test_compressed_shards_stream_what_tarfile_reads(tmp_path, kind):
    if kind == "zst" and not shutil.which("zstd"):
        pytest.skip("no zstd command to compress with")
    paths = write_compressed_shards(tmp_path, shards=3, per_shard=6, kind=kind)
    ds = tlcore.open_shards(tmp_path / f"train-{{0000..0002}}.tar.{kind}")
    assert len(ds) == 18 and ds.shard_starts() == [0, 6, 12] and ds.stats["indexed"] == 3
    oracle = {str(p): _tar_images(p) for p in paths}
    # Backwards, so each read steps a stream back: random access is slow but still right.
    for i in reversed(range(len(ds))):
        shard, name = ds.source(i).split(":", 1)
        image, label = oracle[shard][name]
        np.testing.assert_array_equal(ds.image(i), image)
        assert ds.classes[ds.label(i)] == label
    assert tlcore.open_shards(tmp_path / f"train-{{0000..0002}}.tar.{kind}").stats["indexed"] == 0


@pytest.mark.parametrize("stream_memory", ["512MiB", 1])
def test_loaders_read_compressed_shards_as_they_read_plain_ones(tmp_path, stream_memory):
    """The same batches as the plain shards, with the shuffle buffer drawing out of order
    within a window; with no memory for passed images (1 byte) streams restart, still right."""
    write_compressed_shards(tmp_path, shards=8, per_shard=15)
    plain = tlcore.open_shards(tmp_path / "plain")
    packed = tlcore.open_shards(tmp_path, stream_memory=stream_memory)
    make = lambda ds: tlcore.DataLoader(ds, "cifar-eval", image_size=12, batch_size=8, seed=3,
                                        shuffle_buffer=20, num_workers=2)
    for epoch in range(2):
        a, b = make(plain), make(packed)
        a.set_epoch(epoch)
        b.set_epoch(epoch)
        for (x, y), (u, v) in zip(a, b, strict=True):
            assert torch.equal(x, u) and torch.equal(y, v)


def test_open_dataset_recognises_compressed_shards(tmp_path):
    write_compressed_shards(tmp_path / "s", shards=2, per_shard=3)
    shutil.rmtree(tmp_path / "s" / "plain")
    for pattern in (tmp_path / "s", str(tmp_path / "s" / "train-{0000..0001}.tar.gz"),
                    str(tmp_path / "s" / "*.tar.gz")):
        assert len(tlcore.open_dataset(pattern)) == 6, pattern


def test_a_truncated_compressed_shard(tmp_path):
    (path,) = write_compressed_shards(tmp_path, shards=1, per_shard=200)
    whole = _tar_images(path)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    with pytest.raises(ValueError, match=r"cut\.tar\.gz: .*truncated"):
        tlcore.open_shards(cut)
    ds = tlcore.open_shards(cut, skip_corrupt=True)
    assert 0 < len(ds) < 200 and ds.stats["skipped"] >= 1
    for i in range(len(ds)):  # what is kept is whole
        np.testing.assert_array_equal(ds.image(i), whole[ds.source(i).split(":", 1)[1]][0])


def test_a_compressed_shard_that_changes_or_vanishes_after_opening(tmp_path):
    (path,) = write_compressed_shards(tmp_path, shards=1, per_shard=4)
    ds = tlcore.open_shards(path)
    write_keyed(tmp_path / "other.tar", [(f"other{k}", 0) for k in range(4)])
    path.write_bytes(gzip.compress((tmp_path / "other.tar").read_bytes()))
    with pytest.raises(ValueError, match=r"train-0000\.tar\.gz:s0/00001\.png: the shard changed"):
        ds.image(1)
    path.unlink()
    with pytest.raises(ValueError, match=r"train-0000\.tar\.gz:s0/00002\.png: the shard has gone"):
        ds.image(2)


# ---------------------------------------------------------------- loading order


def _shard_of(ds, index: int) -> str:
    return ds.source(index).split(":", 1)[0]


def test_buffer_shuffle_keeps_reads_local_and_epochs_reproducible(tmp_path):
    write_keyed_shards(tmp_path, shards=10, per_shard=20)
    ds = tlcore.open_shards(tmp_path)
    make = lambda **kw: tlcore._core.Loader(ds, tlcore.Pipeline.preset("cifar-eval", 12, 3),
                                            batch_size=8, seed=5, **kw)
    loader = make(shuffle_buffer=16)
    order = list(loader.epoch_indices(0))
    assert sorted(order) == list(range(200))
    assert order == list(make(shuffle_buffer=16).epoch_indices(0))
    assert order != list(loader.epoch_indices(1))
    # A window of 16 consecutive reads touches the shard being read, the next one and
    # a few of the buffer's stragglers: far fewer than a global shuffle's (about 8 of 10).
    windows = [len({_shard_of(ds, i) for i in order[k:k + 16]}) for k in range(0, 200, 16)]
    global_order = list(make(shuffle_buffer=0).epoch_indices(0))
    global_windows = [len({_shard_of(ds, i) for i in global_order[k:k + 16]})
                      for k in range(0, 200, 16)]
    assert np.mean(windows) < 4 and np.mean(global_windows) > 7


def test_two_rank_loaders_split_shards_and_cover_each_sample_once(tmp_path):
    write_keyed_shards(tmp_path, shards=8, per_shard=10)
    ds = tlcore.open_shards(tmp_path)
    pipeline = tlcore.Pipeline.preset("cifar-eval", 12, 3)
    for epoch in range(3):
        ranks = [list(tlcore._core.Loader(ds, pipeline, batch_size=5, seed=1, rank=r, world_size=2,
                                          shuffle_buffer=8).epoch_indices(epoch)) for r in range(2)]
        assert sorted(ranks[0] + ranks[1]) == list(range(80))
        shards = [{_shard_of(ds, i) for i in r} for r in ranks]
        assert len(shards[0] & shards[1]) == 0 and len(shards[0]) == len(shards[1]) == 4


def test_two_processes_read_their_own_shards(tmp_path):
    """Two real ranks (torch.distributed, Gloo): each loads its shards, and the gathered
    samples of each epoch are every sample exactly once."""
    write_keyed_shards(tmp_path / "d", shards=6, per_shard=7)  # 42 samples: 21 per rank
    port = tlcore.distributed._free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), TLCORE_NUM_THREADS="1")
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), str(tmp_path / "d"), str(tmp_path / "out.json")], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    epochs = json.loads((tmp_path / "out.json").read_text())
    everything = sorted(f"d/train-{s:04d}.tar:s{s}/{k:05d}.png" for s in range(6) for k in range(7))
    orders = []
    for per_rank in epochs:
        assert sorted(per_rank[0] + per_rank[1]) == everything
        shards = [{name.split(":")[0] for name in r} for r in per_rank]
        # 21 samples per rank are 3 whole shards of 7: no shard is read by both ranks.
        assert len(shards[0]) == len(shards[1]) == 3 and not shards[0] & shards[1]
        orders.append(per_rank[0])
    assert orders[0] != orders[1]


# ---------------------------------------------------------------- the converter


def test_write_shards_copies_image_files_byte_for_byte(tmp_path):
    folder = tmp_path / "photos"
    files = {}
    for c, name in enumerate(["cat", "dog", "owl"]):
        (folder / name).mkdir(parents=True)
        for k in range(5):
            rng = np.random.default_rng(10 * c + k)
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(buf, "JPEG")
            (folder / name / f"{k}.jpg").write_bytes(buf.getvalue())
            files[f"{name}/{k}.jpg"] = (buf.getvalue(), c)
    paths = tlcore.write_shards(folder, tmp_path / "out", shard_size="8KB", progress=False)
    assert len(paths) >= 3 and all(p.stat().st_size <= 8000 for p in paths)
    assert all(Path(f"{p}.tlcidx").is_file() for p in paths)
    assert (tmp_path / "out" / "classes.txt").read_text() == "cat\ndog\nowl\n"
    stored = []
    for p in paths:
        with tarfile.open(p) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar}
        for name, data in members.items():
            if name.endswith(".jpg"):
                stored.append((data, int(members[name.replace(".jpg", ".cls")])))
    assert sorted(stored) == sorted(files.values())
    ds = tlcore.open_dataset(tmp_path / "out")
    assert ds.stats["indexed"] == 0 and ds.classes == ["cat", "dog", "owl"]
    assert sorted(ds.labels().tolist()) == sorted(c for _, c in files.values())
    with pytest.raises(FileExistsError, match="already holds shards"):
        tlcore.write_shards(folder, tmp_path / "out", progress=False)


def test_write_shards_stores_pixels_losslessly(tmp_path, fashion_test):
    subset = tlcore.Subset(fashion_test, list(range(40)))
    tlcore.write_shards(subset, tmp_path / "out", shard_size="16KB", channels=1, progress=False)
    ds = tlcore.open_shards(tmp_path / "out")
    assert ds.classes == list(fashion_test.classes) and len(ds) == 40
    for i in range(40):
        png = Image.open(io.BytesIO(ds.encoded(i)))
        np.testing.assert_array_equal(np.asarray(png), fashion_test.image(i, channels=1)[..., 0])
        assert ds.label(i) == fashion_test.label(i)


def test_shard_command(tmp_path):
    write_keyed_shards(tmp_path / "src", shards=2, per_shard=3)
    run = lambda *a: subprocess.run([sys.executable, "-m", "tlcore.cli", *map(str, a)],
                                    capture_output=True, text=True)
    done = run("shard", tmp_path / "src", tmp_path / "out", "--shard-size", "1MB", "--quiet")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{tmp_path / 'out'}: 1 shards"
    again = run("shard", tmp_path / "src", tmp_path / "out", "--quiet")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [f"tlcore: error: {tmp_path / 'out'}: already holds shards; "
                                                 "write to an empty folder"]
