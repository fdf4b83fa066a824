"""The prediction service (api/) as a client sees it: real uvicorn processes on 127.0.0.1.

Oracles: torchvision's MobileNetV2 with the same ImageNet weights and torchvision's own
preprocessing for the photos (dog.jpg -> malamute), and tlcore.load's Classifier (the
training-side inference path, not the Predictor) for the model the test trains.
The browser test drives Debian's headless Chromium through chromedriver (Selenium).
"""
from __future__ import annotations

import io
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import tlcore

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = "weights/mobilenet_v2-imagenet-dequantized.pth"
IMAGENET_CLASSES = (Path(tlcore.__file__).parent / "imagenet_classes.txt").read_text().splitlines()
STARTUP_TIMEOUT_S = 180


# -- models the tests make ----------------------------------------------------------------------
def save_imagenet_mobilenet_v2(weights: Path, path: Path) -> Path:
    """The pretrained ImageNet MobileNetV2, head and 1,000 classes kept, as a tlcore model file."""
    return tlcore.Classifier.pretrained("mobilenet_v2", weights).save(path)


def train_fashion(path: Path) -> Path:
    """A small CNN on 200 Fashion-MNIST training images: seconds, and far better than chance."""
    train = tlcore.fashion_mnist(train=True)
    subset = tlcore._core.Subset(train, tlcore.per_class_subset(train.labels(), 20, 0))
    data = tlcore.ImageData(subset, val_split=0, image_size=28, channels=1, batch_size=16,
                            train_transform="cifar-eval", eval_transform="cifar-eval")
    learner = tlcore.Learner("simple_cnn", data, verbose=False, seed=0)
    learner.fit(5, lr=3e-3)
    return learner.save(path)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_bomb(side: int = 10_000) -> bytes:
    """A valid grey PNG of side x side zero pixels: a few hundred KB that decode to side^2 bytes."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    compressor = zlib.compressobj()
    rows = b"\0" * (side + 1) * 500  # filter byte + pixels, 500 rows at a time
    idat = b"".join(compressor.compress(rows) for _ in range(side // 500)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


# -- servers ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A service process on 127.0.0.1, stopped by close(); its output goes to ``log``."""

    def __init__(self, argv: List[str], log: Path, env: Optional[Dict[str, str]] = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen([*argv, "--port", str(self.port)], cwd=REPO, stdout=out,
                                            stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        self.client = httpx.Client(base_url=self.url, timeout=60)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"server not up after {STARTUP_TIMEOUT_S} s:\n{self.output()}")
            time.sleep(0.2)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-5000:]

    def alive(self) -> bool:
        """Still running and answering; a server that died fails the test with its log."""
        if self.process.poll() is not None:
            pytest.fail(f"server exited with {self.process.returncode}:\n{self.output()}")
        return self.client.get("/health").status_code == 200

    def health(self, model: str) -> Dict[str, object]:
        return self.client.get("/health").json()["models"][model]

    def close(self) -> None:
        """Stops the server; raises if it had died on its own (the service must never die on input)."""
        self.client.close()
        if self.process.poll() is not None:
            raise RuntimeError(f"server died during the tests (exit {self.process.returncode}):\n{self.output()}")
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def photos() -> Optional[Path]:
    """../shared/data/photos, or None (the tests that need it skip)."""
    root = Path(os.environ.get("TLCORE_SHARED") or REPO.parent / "shared")
    return root / "data/photos" if (root / WEIGHTS).is_file() and (root / "data/photos").is_dir() else None


def need(photos: Optional[Path]) -> Path:
    if photos is None:
        pytest.skip("needs ../shared (photos and ImageNet MobileNetV2 weights); set TLCORE_SHARED")
    return photos


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, photos) -> Path:
    """fashion.tlc (trained here), imagenet.tlc (with ../shared) and a broken file."""
    folder = tmp_path_factory.mktemp("models")
    train_fashion(folder / "fashion.tlc")
    if photos is not None:
        save_imagenet_mobilenet_v2(photos.parents[1] / WEIGHTS, folder / "imagenet.tlc")
    (folder / "broken.tlc").write_bytes(b"not a model")
    (folder / "notes.txt").write_text("not a model file either, and not *.tlc: ignored")
    return folder


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory) -> Iterator[Server]:
    """`uvicorn api.app:app`, configured by the environment."""
    s = Server([sys.executable, "-X", "faulthandler", "-m", "uvicorn", "api.app:app", "--host", "127.0.0.1"],
               tmp_path_factory.mktemp("server") / "uvicorn.log", env={"TLCORE_MODELS": str(models_dir)})
    yield s
    s.close()


@pytest.fixture(scope="module")
def strict_server(models_dir, photos, tmp_path_factory) -> Iterator[Server]:
    """`tlcore serve` with tight limits: 64 KB uploads, 300k pixels, no batching, a queue of one,
    request headers due within 2 s."""
    folder = tmp_path_factory.mktemp("strict_models")
    name = "imagenet.tlc" if photos is not None else "fashion.tlc"
    shutil.copy(models_dir / name, folder / name)
    s = Server([sys.executable, "-X", "faulthandler", "-m", "tlcore.cli", "serve", "--models", str(folder),
                "--host", "127.0.0.1", "--max-upload-mb", "0.0625", "--max-pixels", "300000", "--max-batch", "1",
                "--max-queue", "1", "--max-delay-ms", "0", "--header-timeout", "2"],
               tmp_path_factory.mktemp("strict") / "serve.log")
    yield s
    s.close()


@pytest.fixture(scope="module")
def fashion_images() -> Tuple[List[np.ndarray], List[int]]:
    test = tlcore.fashion_mnist(train=False)
    return [test.image(i, channels=1) for i in range(64)], [int(y) for y in test.labels()[:64]]


@pytest.fixture(scope="module")
def torchvision_answers(photos) -> Dict[str, torch.Tensor]:
    """Each photo's probabilities from torchvision's MobileNetV2 with torchvision's transforms."""
    import torchvision
    from torchvision import transforms as T

    photos = need(photos)
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(str(photos.parents[1] / WEIGHTS), map_location="cpu", weights_only=True))
    model.eval()
    transform = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    answers = {}
    with torch.no_grad():
        for path in sorted(photos.glob("*.jpg")):
            answers[path.name] = torch.softmax(model(transform(Image.open(path).convert("RGB"))[None]), 1)[0]
    return answers


def post(server: Server, data: bytes, filename: str = "image.jpg", **params) -> httpx.Response:
    return server.client.post("/predict/", params=params, files={"file": (filename, data, "image/jpeg")})


# -- models and predictions ---------------------------------------------------------------------
def test_models_lists_every_loadable_model(server, models_dir):
    listing = server.client.get("/models").json()
    models = {m["name"]: m for m in listing["models"]}
    assert "fashion" in models and "broken" not in models and "notes" not in models
    fashion = models["fashion"]
    assert fashion["classes"] == tlcore.data.FASHION_MNIST_CLASSES and fashion["num_classes"] == 10
    assert fashion["arch"] == "simple_cnn" and fashion["input_size"] == 28 and fashion["threshold"] == 0.0
    assert fashion["min_energy"] is None  # an uncalibrated model: nothing is "unknown"
    if "imagenet" in models:
        assert models["imagenet"]["classes"] == IMAGENET_CLASSES and models["imagenet"]["input_size"] == 224
    assert [m["name"] for m in models.values() if m["default"]] == ["fashion"]  # first by name

    [rejected] = listing["rejected"]
    assert rejected["file"] == "broken.tlc" and rejected["reason"].startswith("broken.tlc: not a PyTorch checkpoint")
    assert str(models_dir) not in rejected["reason"]  # the server's folder is not the client's business

    health = server.client.get("/health").json()
    assert health["status"] == "degraded" and health["default_model"] == "fashion"
    assert health["rejected"] == [rejected]


def test_dog_is_a_malamute(server, photos):
    dog = (need(photos) / "dog.jpg").read_bytes()
    r = post(server, dog, "dog.jpg", model="imagenet")
    assert r.status_code == 200, r.text
    body = r.json()
    # The workshop client's fields, and nothing it would trip on.
    assert set(body) == {"prediction", "confidence", "top_k", "model"}
    assert body["prediction"] == "malamute" and body["model"] == "imagenet"
    assert [t["label"] for t in body["top_k"]][0] == "malamute" and len(body["top_k"]) == 5
    probabilities = [t["probability"] for t in body["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True) and body["confidence"] == probabilities[0]
    assert len(post(server, dog, model="imagenet", top_k=3).json()["top_k"]) == 3


def test_photos_agree_with_torchvision(server, photos, torchvision_answers):
    for name, expected in torchvision_answers.items():
        body = post(server, (photos / name).read_bytes(), name, model="imagenet", top_k=5).json()
        values, indices = expected.topk(2)
        got = {t["label"]: t["probability"] for t in body["top_k"]}
        if values[0] - values[1] > 0.05:  # a clear winner must be the same
            assert body["prediction"] == IMAGENET_CLASSES[indices[0]], name
        label = IMAGENET_CLASSES[indices[0]]
        assert label in got and abs(got[label] - float(values[0])) < 0.05, (name, got, float(values[0]))


def test_trained_model_agrees_with_the_classifier(server, models_dir, fashion_images):
    images, labels = fashion_images
    files = [("files", (f"{i}.png", png_bytes(a), "image/png")) for i, a in enumerate(images)]
    r = server.client.post("/predict/batch", params={"model": "fashion", "top_k": 3}, files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "fashion" and len(body["results"]) == len(images)
    expected = tlcore.load(models_dir / "fashion.tlc").predict_proba(images)
    for i, item in enumerate(body["results"]):
        assert item["filename"] == f"{i}.png" and item["status"] == 200
        values, indices = expected[i].topk(3)
        assert [t["label"] for t in item["top_k"]] == [tlcore.data.FASHION_MNIST_CLASSES[j] for j in indices]
        assert np.allclose([t["probability"] for t in item["top_k"]], values.numpy(), atol=1e-3)
    predicted = [tlcore.data.FASHION_MNIST_CLASSES.index(item["prediction"]) for item in body["results"]]
    assert np.mean(np.array(predicted) == np.array(labels)) > 0.5  # chance is 0.1


def test_a_served_energy_floor_replaces_each_models_rule(models_dir, fashion_images):
    """TLCORE_MIN_ENERGY / --min-energy: every model gets that floor, and images under it are "unknown"."""
    from tlcore.api.registry import BatchOptions, ModelRegistry

    images, _ = fashion_images
    energy = tlcore.load(models_dir / "fashion.tlc").predict_scores(images[:4])[1]
    registry = ModelRegistry(models_dir, BatchOptions(min_energy=float(energy.max()) + 1))
    registry.load()
    served = registry.models["fashion"]
    assert served.info()["min_energy"] == float(energy.max()) + 1 and served.info()["threshold"] == 0.0
    assert all(a["prediction"] == "unknown" for a in served.predictor.predict_many(images[:4]))


def test_default_model_answers_without_a_model_parameter(server, fashion_images):
    images, _ = fashion_images
    r = post(server, png_bytes(images[0]), "shirt.png")
    assert r.status_code == 200 and r.json()["model"] == "fashion"


def test_batch_reports_each_bad_file_and_answers_the_rest(server, fashion_images):
    images, _ = fashion_images
    files = [("files", ("good.png", png_bytes(images[0]), "image/png")),
             ("files", ("empty.png", b"", "image/png")),
             ("files", ("notes.txt", b"hello, not an image", "text/plain")),
             ("files", ("good2.png", png_bytes(images[1]), "image/png"))]
    r = server.client.post("/predict/batch", params={"model": "fashion"}, files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [200, 400, 415, 200]
    assert results[1]["error"].startswith("empty.png") and results[2]["error"].startswith("notes.txt")
    assert results[0]["prediction"] and results[3]["prediction"]


# -- bad input: status codes, and the server keeps answering ------------------------------------
def assert_still_serving(server: Server, images) -> None:
    assert server.alive()
    assert post(server, png_bytes(images[0]), "check.png", model="fashion").status_code == 200


@pytest.mark.parametrize("case,status,words", [
    ("empty", 400, "empty"),
    ("text", 415, "not an image"),
    ("truncated_png", 400, "png"),
    ("truncated_jpeg", 400, "jpeg"),
    ("bomb", 400, "pixels"),
])
def test_bad_images(server, fashion_images, case, status, words):
    images, _ = fashion_images
    good_png = png_bytes(images[2])
    jpeg = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    data = {"empty": b"", "text": b"#!/bin/sh\necho this is not an image\n",
            "truncated_png": good_png[: len(good_png) // 2], "truncated_jpeg": jpeg.getvalue()[:3000],
            "bomb": png_bomb()}[case]
    r = post(server, data, f"{case}.bin", model="fashion")
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"{case}.bin") and words in detail.lower(), detail
    assert_still_serving(server, images)


def test_unknown_model_is_404(server, fashion_images):
    images, _ = fashion_images
    r = post(server, png_bytes(images[0]), model="no_such_model")
    assert r.status_code == 404 and "no_such_model" in r.json()["detail"] and "fashion" in r.json()["detail"]
    r = server.client.post("/predict/batch", params={"model": "nope"}, files=[("files", ("a.png", b"x", "image/png"))])
    assert r.status_code == 404


def test_missing_file_field_is_a_json_error(server, fashion_images):
    r = server.client.post("/predict/", files={"image": ("a.png", png_bytes(fashion_images[0][0]), "image/png")})
    assert r.status_code == 422 and r.json()["detail"]
    r = server.client.post("/predict/", content=b"raw bytes, not multipart", headers={"content-type": "image/png"})
    assert r.status_code == 422
    assert_still_serving(server, fashion_images[0])


def multipart_request(path: str, body_size: int, declared: Optional[int] = None) -> bytes:
    """Head and body of a multipart upload whose whole body is ``body_size`` bytes."""
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
    tail = b"\r\n--x--\r\n"
    body = head + b"\0" * (body_size - len(head) - len(tail)) + tail
    return (f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=x\r\n"
            f"Content-Length: {declared or len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def test_default_upload_limit_is_10_mib(server, fashion_images):
    limit = 10 * 1024 * 1024
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(multipart_request("/predict/?model=fashion", limit + 1)[:1000])
        status, _, body = read_http_response(sock)
    assert status == 413 and "upload limit of 10485760 bytes" in json.loads(body)["detail"]
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(multipart_request("/predict/?model=fashion", limit))  # exactly at the limit: read
        status, _, body = read_http_response(sock)
    assert status == 415 and json.loads(body)["detail"].startswith("big.bin")
    assert_still_serving(server, fashion_images[0])


def read_http_response(sock: socket.socket, timeout: float = 30) -> tuple:
    """(status, headers, body) of one response on a raw socket."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_declared_oversize_body_is_refused_before_it_is_sent(strict_server):
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(b"POST /predict/ HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                     b"Content-Length: 1000000000\r\n\r\n")
        status, headers, body = read_http_response(sock)  # no byte of the body was sent
    assert status == 413 and headers["connection"] == "close"
    assert "upload limit of 65536 bytes" in json.loads(body)["detail"]
    assert strict_server.alive()


def test_streamed_oversize_body_is_cut_off(strict_server):
    """A chunked body has no length: the server counts, answers 413 and stops reading."""
    limit, sent, piece = 65536, 0, b"\0" * 8192
    part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'
    with socket.create_connection(("127.0.0.1", strict_server.port)) as sock:
        sock.sendall(b"POST /predict/ HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\n\r\n%x\r\n%s\r\n" % (len(part), part))
        while sent < 100 * limit:
            if select.select([sock], [], [], 0.01)[0]:
                break  # the answer came
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        status, headers, body = read_http_response(sock)
    assert status == 413 and "upload limit" in json.loads(body)["detail"]
    assert sent < 100 * limit  # answered long before the client was done
    assert strict_server.alive()


def test_pixel_limit_is_configurable(strict_server):
    flat = io.BytesIO()
    Image.new("RGB", (600, 600), (200, 120, 40)).save(flat, "JPEG")  # a few KB, 360,000 pixels
    r = post(strict_server, flat.getvalue(), "big.jpg")
    assert r.status_code == 400 and "pixel" in r.json()["detail"].lower(), r.text
    assert strict_server.alive()


# -- what benchmarks/hostile.py found ------------------------------------------------------------
def zeros_tiff(side: int) -> bytes:
    """A grey TIFF of side x side zero pixels in one deflated strip: ~1 KB per million pixels."""
    strip = zlib.compress(b"\0" * side * side, 9)
    tags = [(256, 4, side), (257, 4, side), (258, 3, 8), (259, 3, 8), (262, 3, 1), (273, 4, 8 + 2 + 9 * 12 + 4),
            (277, 3, 1), (278, 4, side), (279, 4, len(strip))]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        for tag, kind, value in tags)
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0\0\0\0" + strip


def test_other_formats_are_refused_before_any_decoder(server, fashion_images):
    """OpenCV decodes TIFF (and PNM, EXR, ...) without tlcore's pixel limit: 7,000 x 7,000
    pixels from 50 KB. The service takes JPEG, PNG, BMP and WebP only."""
    r = post(server, zeros_tiff(7000), "bomb.tif", model="fashion")
    assert r.status_code == 415 and r.json()["detail"].startswith("bomb.tif: not an image"), r.text
    assert_still_serving(server, fashion_images[0])


def test_a_corrupt_jpeg_header_does_not_break_later_jpegs(server, fashion_images):
    """The decoder keeps a TurboJPEG handle per thread, which a bad Huffman table used to leave
    broken: every later JPEG on that thread was "corrupt" too. Small images and large ones
    (over 2 megapixels: the large-image lane's threads) alike."""
    small, large = io.BytesIO(), io.BytesIO()
    Image.fromarray(fashion_images[0][0].squeeze(-1)).save(small, "JPEG")
    Image.new("L", (2500, 2000), 128).save(large, "JPEG")
    for good in (small.getvalue(), large.getvalue()):
        dht = good.index(b"\xff\xc4")
        bad = good[:dht + 5] + b"\xff" * 16 + good[dht + 21:]  # its 16 code counts sum to far over 256
        for _ in range(3):
            r = post(server, bad, "bad.jpg", model="fashion")
            assert r.status_code == 400 and "corrupt JPEG header" in r.json()["detail"], r.text
            assert post(server, good, "good.jpg", model="fashion").status_code == 200


def test_a_part_full_of_line_breaks_is_parsed_in_linear_time(server, fashion_images):
    """python-multipart 0.0.5 spent ~40 us on each CR byte of a part: 2 MiB of them held the event
    loop (every client) for 77 s. The service cuts the body at its boundary itself."""
    body = (b'--x\r\nContent-Disposition: form-data; name="file"; filename="cr.jpg"\r\n\r\n'
            + b"\xff\xd8\xff" + b"\r" * (2 << 20) + b"\r\n--x--\r\n")
    start = time.perf_counter()
    r = server.client.post("/predict/", params={"model": "fashion"}, content=body,
                           headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400 and r.json()["detail"].startswith("cr.jpg"), r.text
    assert time.perf_counter() - start < 10
    assert_still_serving(server, fashion_images[0])


def test_malformed_multipart_bodies_are_400(server, fashion_images):
    image = png_bytes(fashion_images[0][0])
    head = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'

    def send(body: bytes, content_type: str = "multipart/form-data; boundary=x") -> httpx.Response:
        return server.client.post("/predict/", params={"model": "fashion"}, content=body,
                                  headers={"content-type": content_type})

    r = send(b"a preamble\r\n" + head + image + b"\r\n--x--\r\nan epilogue", 'multipart/form-data; boundary="x"')
    assert r.status_code == 200, r.text
    assert send(head + image, "multipart/form-data").json()["detail"].startswith("multipart/form-data without")
    assert "truncated" in send(head + image).json()["detail"]
    many = b"".join(b'--x\r\nContent-Disposition: form-data; name="f"\r\n\r\nv\r\n' for _ in range(1001))
    r = send(many + b"--x--\r\n")
    assert r.status_code == 400 and "more than 1000 parts" in r.json()["detail"]
    assert_still_serving(server, fashion_images[0])


def test_headers_over_16_kib_are_431(server):
    r = server.client.get("/health", headers={"x-padding": "a" * 20_000})
    assert r.status_code == 431 and "over the limit of 16384 bytes" in r.json()["detail"]
    assert server.alive()


def _read_until_closed(s: socket.socket, limit_s: float) -> Tuple[bytes, float]:
    """What the server sends until it closes the connection, and when it closed (monotonic)."""
    reply, deadline = b"", time.monotonic() + limit_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([s], [], [], 0.1)
        if ready:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply, time.monotonic()


def test_trickling_headers_get_408_and_the_connection_closed(strict_server):
    """Slowloris: a head sent a line every 0.2 s is never whole; `tlcore serve --header-timeout 2`
    answers 408 and closes about 2 s after the connection opened (uvicorn alone never does)."""
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=10) as s:
        opened = time.monotonic()
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        reply = b""
        for i in range(30):  # 6 s of trickle at most
            ready, _, _ = select.select([s], [], [], 0.2)
            if ready:
                break
            try:
                s.sendall(b"X-Slow-%d: z\r\n" % i)
            except OSError:
                break
        reply, closed = _read_until_closed(s, 5)
    assert reply.startswith(b"HTTP/1.1 408 ") and b"request headers too slow" in reply, reply[:200]
    assert 1.8 < closed - opened < 4.5
    assert strict_server.alive()


def test_kept_alive_connections_still_serve_whole_requests(strict_server):
    """The deadline covers heads only: two requests on one connection, 1 s apart, both answered."""
    with socket.create_connection(("127.0.0.1", strict_server.port), timeout=10) as s:
        for _ in range(2):
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(65536)
            assert head.startswith(b"HTTP/1.1 200 "), head[:200]
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = head.split(b"\r\n\r\n", 1)[1]
            while len(body) < length:
                body += s.recv(65536)
            time.sleep(1.0)
        # Idle past the deadline: closed quietly, without an unasked-for 408.
        reply, _ = _read_until_closed(s, 4)
        assert reply == b""


def test_a_trickling_body_gets_408():
    """BodyLimit on its own: a body at 20 bytes/s where 100 are needed, after 0.2 s of grace."""
    import asyncio

    from tlcore.api.body_limit import BodyLimit

    async def app(scope, receive, send):
        while (await receive())["type"] == "http.request":
            pass  # reads until BodyLimit tells it the client left; its answer is then dropped
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"too late"})

    async def trickle():
        await asyncio.sleep(0.05)
        return {"type": "http.request", "body": b"x", "more_body": True}

    sent: list = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "headers": []}
    asyncio.run(BodyLimit(app, max_bytes=1000, grace_s=0.2, min_rate=100)(scope, trickle, send))
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["detail"].startswith("request body too slow")


def test_image_pixels_reads_the_headers_the_decoder_reads(fashion_images):
    from tlcore.api.registry import image_pixels

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8))
    for fmt, options in [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}), ("BMP", {}),
                         ("WEBP", {}), ("WEBP", {"lossless": True})]:
        buffer = io.BytesIO()
        picture.save(buffer, fmt, **options)
        assert image_pixels(buffer.getvalue()) == 37 * 53, (fmt, options)
    assert image_pixels(b"not an image") is None and image_pixels(b"\xff\xd8\xff") is None


def test_full_queue_is_503(strict_server, photos):
    """A queue of one and batches of one: 32 simultaneous requests cannot all wait."""
    data = (need(photos) / "dog.jpg").read_bytes()
    small = Image.open(io.BytesIO(data)).resize((384, 288))
    buffer = io.BytesIO()
    small.save(buffer, "JPEG")  # under the strict server's 300k pixels and 64 KB

    def one(_):
        with httpx.Client(base_url=strict_server.url, timeout=60) as client:
            return client.post("/predict/", files={"file": ("dog.jpg", buffer.getvalue(), "image/jpeg")})

    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(one, range(32)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert "queue" in refused.json()["detail"] or "waiting" in refused.json()["detail"]
    assert refused.headers["retry-after"] == "1"
    assert all(r.json()["prediction"] == "malamute" for r in responses if r.status_code == 200)
    assert strict_server.alive()


# -- concurrency: 64 requests at once form batches -----------------------------------------------
def test_64_concurrent_requests_are_batched_and_correct(server, photos, fashion_images):
    if photos is not None:
        model, images = "imagenet", [p.read_bytes() for p in sorted(photos.glob("*.jpg"))]
    else:
        model, images = "fashion", [png_bytes(a) for a in fashion_images[0][:8]]
    alone = [post(server, data, model=model).json() for data in images]
    before = server.health(model)

    def one(i: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            return client.post("/predict/", params={"model": model},
                               files={"file": (f"{i}.jpg", images[i % len(images)], "image/jpeg")})

    with ThreadPoolExecutor(64) as pool:
        responses = list(pool.map(one, range(64)))
    assert [r.status_code for r in responses] == [200] * 64
    for i, r in enumerate(responses):
        got, expected = r.json(), alone[i % len(images)]
        assert got["prediction"] == expected["prediction"]
        assert abs(got["confidence"] - expected["confidence"]) < 1e-3

    after = server.health(model)
    assert after["requests"] - before["requests"] == 64
    grown = {int(k): n - before["batch_sizes"].get(k, 0) for k, n in after["batch_sizes"].items()}
    assert sum(size * n for size, n in grown.items()) == 64
    assert max(size for size, n in grown.items() if n > 0) > 1, grown  # batches really formed
    assert after["batches"] - before["batches"] < 64
    assert after["queue_depth"] == 0 and after["max_batch"] == 16


# -- the rest of the surface ---------------------------------------------------------------------
def test_docs_openapi_and_metrics(server, fashion_images):
    assert "swagger" in server.client.get("/docs").text.lower()
    paths = server.client.get("/openapi.json").json()["paths"]
    assert {"/predict/", "/predict/batch", "/models", "/health"} <= set(paths)
    assert post(server, png_bytes(fashion_images[0][0]), model="fashion").status_code == 200
    metrics = server.client.get("/metrics")
    assert metrics.status_code == 200
    assert 'tlcore_predictor_requests_total{model="fashion"}' in metrics.text
    assert 'tlcore_http_prediction_seconds_bucket{le="+Inf",model="fashion"}' in metrics.text
    assert 'tlcore_http_predictions_total{model="fashion",status="200"}' in metrics.text


def test_index_page_and_its_files(server):
    page = server.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page.text and "getUserMedia" not in page.text
    script = server.client.get("/static/app.js")
    assert script.status_code == 200 and "getUserMedia" in script.text
    assert server.client.get("/static/style.css").status_code == 200


def test_cli_serve_help():
    r = subprocess.run([sys.executable, "-m", "tlcore.cli", "serve", "--help"], capture_output=True, text=True,
                       cwd=REPO, timeout=120)
    assert r.returncode == 0 and "--models" in r.stdout and "--max-upload-mb" in r.stdout


def test_the_service_is_the_package_tlcore_api():
    # python/tlcore/api links to api/: one service, importable as api.app in the checkout and as
    # tlcore.api.app everywhere (an install copies it; test_install.py checks that).
    import tlcore.api.app

    assert Path(tlcore.api.app.__file__).resolve() == (REPO / "api" / "app.py").resolve()
    assert tlcore.api.app.STATIC.resolve() == (REPO / "api" / "static").resolve()


def test_missing_models_folder_fails_at_startup(tmp_path):
    r = subprocess.run([sys.executable, "-m", "tlcore.cli", "serve", "--models", str(tmp_path / "none"),
                        "--port", str(free_port())], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode != 0 and "models folder not found" in r.stdout + r.stderr


# -- the page in a real browser ------------------------------------------------------------------
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture()
def browser(tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs python3-selenium")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900",
                "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def save_screenshot(driver, tmp_path: Path, name: str) -> Path:
    """Into the test's tmp_path, and a copy in <repo>/test-output/ for CI to keep."""
    path = tmp_path / name
    driver.save_screenshot(str(path))
    out = REPO / "test-output"
    out.mkdir(exist_ok=True)
    shutil.copy(path, out / name)
    return path


def wait_for_answer(driver):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.state"))
    return driver.execute_script("return document.body.dataset.state")


def test_page_classifies_an_upload_in_headless_chromium(server, photos, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    dog = need(photos) / "dog.jpg"
    browser.get(server.url + "/")
    select = Select(browser.find_element(By.ID, "model"))
    assert {o.get_attribute("value") for o in select.options} == {"fashion", "imagenet"}
    select.select_by_value("imagenet")
    browser.find_element(By.ID, "file").send_keys(str(dog))
    assert wait_for_answer(browser) == "done", browser.find_element(By.ID, "status").text
    assert browser.find_element(By.ID, "prediction").text == "malamute"
    bars = browser.find_elements(By.CSS_SELECTOR, "#bars li")
    assert len(bars) == 5 and bars[0].text.startswith("malamute")
    assert browser.execute_script("return document.getElementById('preview').naturalWidth") == 768
    assert save_screenshot(browser, tmp_path, "api_page_dog.png").stat().st_size > 10_000

    browser.set_window_size(390, 844)  # a phone: everything stays inside the screen width
    overflow = browser.execute_script("return document.documentElement.scrollWidth > window.innerWidth")
    assert not overflow
    save_screenshot(browser, tmp_path, "api_page_dog_phone.png")


def test_fresh_page_shows_no_empty_card_and_unknown_says_why(server, browser, tmp_path):
    """Before any photo: no result card (it used to show with a broken image). An "unknown"
    answer names the best guess and why: under the model's threshold, or unlike its training
    images (under its energy floor). Desktop and phone screenshots."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.set_window_size(1200, 900)
    browser.get(server.url + "/")
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) == 2)
    assert not browser.find_element(By.ID, "result").is_displayed()
    assert not browser.find_element(By.ID, "preview").is_displayed()
    save_screenshot(browser, tmp_path, "api_page_fresh.png")
    browser.set_window_size(390, 844)
    assert not browser.execute_script("return document.documentElement.scrollWidth > window.innerWidth")
    save_screenshot(browser, tmp_path, "api_page_fresh_phone.png")

    show = """rules.fashion = {threshold: %s, minEnergy: 3.5};
        document.getElementById('result').hidden = false;
        showBars({prediction: 'unknown', confidence: 0.41, model: 'fashion',
                  top_k: [{label: 'Bag', probability: 0.41}, {label: 'Coat', probability: 0.3}]});"""
    browser.execute_script(show % "0.5")
    text = browser.find_element(By.ID, "confidence").text
    assert browser.find_element(By.ID, "prediction").text == "unknown"
    assert text == "best guess Bag 41.0%, under this model's 50.0% threshold", text
    browser.execute_script(show % "0")
    text = browser.find_element(By.ID, "confidence").text
    assert text == "best guess Bag 41.0%, unlike the images this model learned from", text
    save_screenshot(browser, tmp_path, "api_page_unknown_phone.png")


def test_page_takes_a_photo_with_the_camera(server, photos, browser, tmp_path):
    """Chromium's fake camera (a test pattern) through getUserMedia, canvas and POST /predict/."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    need(photos)
    before = server.health("imagenet")["requests"]
    browser.get(server.url + "/")
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#model option")) == 2)
    browser.execute_script("document.getElementById('model').value = 'imagenet'")
    browser.find_element(By.ID, "camera-open").click()
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.getElementById('video').videoWidth"))
    browser.find_element(By.ID, "camera-shoot").click()
    assert wait_for_answer(browser) == "done", browser.find_element(By.ID, "status").text
    assert browser.find_element(By.ID, "prediction").text in IMAGENET_CLASSES + ["unknown"]
    assert "camera.jpg" in browser.find_element(By.ID, "status").text
    assert server.health("imagenet")["requests"] == before + 1
    save_screenshot(browser, tmp_path, "api_page_camera.png")


def test_docs_render_without_network_in_headless_chromium(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if "/docs-static/" not in server.client.get("/docs").text:
        pytest.skip("/docs loads Swagger UI from a CDN here; local files need python3-flasgger")
    browser.get(server.url + "/docs")
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {e.text.replace("\u200b", "") for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/predict/", "/predict/batch", "/models", "/health"} <= paths, paths
    save_screenshot(browser, tmp_path, "api_docs.png")
