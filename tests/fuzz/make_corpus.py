"""Seed corpora for the fuzz harnesses: small valid files of every kind tlcore reads.

Usage: python tests/fuzz/make_corpus.py OUT_DIR   (OUT_DIR/<harness>/<seed>)
"""
from __future__ import annotations

import gzip
import io
import json
import struct
import sys
import tarfile
from pathlib import Path
from typing import Callable, Dict, List

import cv2
import numpy as np
import torch

RNG = np.random.default_rng(0)


def images() -> Dict[str, bytes]:
    """One small picture in each format and layout the decoder handles."""
    rgb = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    out = {}
    for ext, img in [(".jpg", rgb), (".png", rgb), (".bmp", rgb), (".webp", rgb)]:
        out["rgb" + ext] = cv2.imencode(ext, img)[1].tobytes()
    out["gray.jpg"] = cv2.imencode(".jpg", gray)[1].tobytes()
    out["gray.png"] = cv2.imencode(".png", gray)[1].tobytes()
    out["alpha.png"] = cv2.imencode(".png", np.dstack([rgb, gray]))[1].tobytes()
    out["16bit.png"] = cv2.imencode(".png", rgb.astype(np.uint16) * 257)[1].tobytes()
    out["progressive.jpg"] = cv2.imencode(".jpg", rgb, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    return out


def archives() -> Dict[str, bytes]:
    """The class-folder layout in a plain tar and in a tar.gz."""
    files = {f"train/{c}/{i}{ext}": data for c in ("cat", "dog")
             for i, (ext, data) in enumerate([(".png", images()["rgb.png"]), (".jpg", images()["rgb.jpg"])])}
    out = {}
    for name, mode in [("plain.tar", "w"), ("gzip.tar.gz", "w:gz")]:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode=mode) as tar:
            for member, data in files.items():
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        out[name] = buf.getvalue()
    return out


def shards() -> Dict[str, bytes]:
    """fuzz_shards' input: a mode byte, then a WebDataset shard (ustar, pax, GNU) or a
    class-folder shard; and the index tlcore writes for one (mode 1, payload only)."""
    out = {}
    png = images()["rgb.png"]
    for name, fmt in [("ustar", tarfile.USTAR_FORMAT), ("pax", tarfile.PAX_FORMAT),
                      ("gnu", tarfile.GNU_FORMAT)]:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
            for key, label in [("a/1", b"0"), ("b" * 120 + "/2", b'{"label": 1}')]:
                for ext, data in [(".png", png), (".cls" if label == b"0" else ".json", label)]:
                    info = tarfile.TarInfo(key + ext)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        out[f"{name}.tar"] = b"\x00" + buf.getvalue()
        # The same shard compressed: scanned and read through a stream.
        out[f"{name}.tar.gz"] = b"\x00" + gzip.compress(buf.getvalue())
    out["folders.tar"] = b"\x02" + archives()["plain.tar"]
    # An index payload: layout 2, not streamed, one label "0", one sample "a/1.png" at 512,
    # 70 bytes.
    le = lambda v: v.to_bytes(8, "little")
    text = lambda s: le(len(s)) + s
    out["index"] = (b"\x01\x02\x00" + le(1) + text(b"0") + le(1) + text(b"a/1.png") + le(512) +
                    le(70) + le(0) + le(0) + le(0) + le(0))
    return out


def cifar() -> Dict[str, bytes]:
    """fuzz_cifar's input: mode byte, 16-bit names length, names, batch."""
    def batch(label_bytes: int) -> bytes:
        return b"".join(bytes(RNG.integers(0, 10, label_bytes, dtype=np.uint8)) +
                        RNG.integers(0, 256, 3072, dtype=np.uint8).tobytes() for _ in range(3))
    names10 = "\n".join(f"class{i}" for i in range(10)).encode()
    names100 = "\n".join(f"fine{i}" for i in range(100)).encode()
    pack = lambda mode, names, data: bytes([mode]) + struct.pack(">H", len(names)) + names + data
    return {"cifar10": pack(0, b"", batch(1)), "cifar10_names": pack(4, names10, batch(1)),
            "cifar100": pack(1, b"", batch(2)), "cifar100_names": pack(5, names100, batch(2))}


def idx() -> Dict[str, bytes]:
    """fuzz_idx's input: 16-bit labels length, labels file, images file (plain and gzipped)."""
    n, h, w = 4, 8, 8
    labels = struct.pack(">II", 0x801, n) + bytes(RNG.integers(0, 10, n, dtype=np.uint8))
    images = struct.pack(">IIII", 0x803, n, h, w) + RNG.integers(0, 256, n * h * w, dtype=np.uint8).tobytes()
    pack = lambda lab, img: struct.pack(">H", len(lab)) + lab + img
    return {"plain": pack(labels, images), "gzip": pack(gzip.compress(labels), gzip.compress(images))}


def varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def example(image: bytes, label: int) -> bytes:
    """A tf.train.Example with an "image" bytes feature and a "class" int64 feature."""
    bytes_feature = field(1, field(1, image))               # Feature.bytes_list.value
    int64_feature = field(3, field(1, varint(label)))       # Feature.int64_list.value (packed)
    entry = lambda key, feature: field(1, field(1, key.encode()) + field(2, feature))
    return field(1, entry("image", bytes_feature) + entry("class", int64_feature))


def tfrecords() -> Dict[str, bytes]:
    """fuzz_tfrecord's input in its framed mode (mode byte, then 16-bit length + record)."""
    records = [example(images()["rgb.jpg"], 1), example(images()["rgb.png"], 2)]
    framed = lambda mode: bytes([mode]) + b"".join(struct.pack(">H", len(r)) + r for r in records)
    return {"framed": framed(1), "framed_classes": framed(3)}


def tf_examples() -> Dict[str, bytes]:
    return {"jpeg": example(images()["rgb.jpg"], 1), "png": example(images()["rgb.png"], 0)}


def model_files() -> Dict[str, bytes]:
    """A real tlcore model file, and plain state dicts in the zip and legacy formats."""
    import tempfile

    import tlcore  # a file the library itself writes, as users' files are
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        for c in ("cat", "dog"):
            (folder / c).mkdir(parents=True)
            for i in range(2):
                (folder / c / f"{i}.png").write_bytes(images()["rgb.png"])
        data = tlcore.ImageData(folder, val_split=0, image_size=32)
        path = tlcore.Learner("simple_cnn", data, verbose=False, seed=0).save(Path(tmp) / "m.tlc")
        out = {"model.tlc": path.read_bytes()}
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor(3)}
    for name, zipped in [("state.pth", True), ("legacy.pth", False)]:
        buf = io.BytesIO()
        torch.save(state, buf, _use_new_zipfile_serialization=zipped)
        out[name] = buf.getvalue()
    return out


def pickles() -> Dict[str, bytes]:
    import pickle
    plain = {"a": [1, 2.5, None, True, "x"], "b": (b"\x00", -7, 2 ** 70)}
    return {f"protocol{p}": pickle.dumps(plain, protocol=p) for p in (2, 3, 4)}


def specs(models: Dict[str, bytes]) -> Dict[str, bytes]:
    import zipfile
    out = {}
    if "model.tlc" in models:
        with zipfile.ZipFile(io.BytesIO(models["model.tlc"])) as z:
            pkl = next(n for n in z.namelist() if n.endswith("data.pkl"))
            text = z.read(pkl)
            start = text.find(b'{"')
            if start >= 0:
                depth_end = text.rfind(b"}") + 1
                out["spec.json"] = text[start:depth_end]
    out["minimal.json"] = json.dumps({"arch": "simple_cnn", "classes": ["a", "b"]}).encode()
    return out


def main(out: Path) -> None:
    imgs, models = images(), model_files()
    corpora: Dict[str, Dict[str, bytes]] = {
        "image_header": imgs, "image_decode": imgs, "archive": archives(), "cifar": cifar(),
        "idx": idx(), "tfrecord": tfrecords(), "tf_example": tf_examples(),
        "model_file": models, "pickle": pickles(), "spec": specs(models), "shards": shards()}
    for harness, seeds in corpora.items():
        folder = out / harness
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in seeds.items():
            (folder / name).write_bytes(data)
        print(f"{harness}: {len(seeds)} seeds")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
