"""tlcore.Predictor: batched, thread-safe predictions, checked against the eager model."""
import io
import struct
import threading
import zlib

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

import tlcore
from tlcore import _core


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, fashion_data):
    fashion = tlcore.fashion_mnist(train=True)
    data = fashion_data(10)
    learner = tlcore.Learner("simple_cnn", data, verbose=False)
    learner.fit(2, lr=3e-3)
    path = learner.save(tmp_path_factory.mktemp("models") / "fashion.tlc")
    images = [fashion.image(i, channels=1) for i in range(40)]
    return path, images


def png_bytes(array):
    out = io.BytesIO()
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(out, format="PNG")
    return out.getvalue()


def eager_logits(path, images):
    clf = tlcore.load(path)
    batch = torch.stack([torch.from_numpy(clf.pipeline.normalize(clf.pipeline(i))) for i in images])
    with torch.no_grad():
        return clf.model.forward(batch)


def eager_probabilities(path, images):
    return torch.softmax(eager_logits(path, images), 1).numpy()


def test_concurrent_requests_form_batches_and_match_eager(saved_model):
    path, images = saved_model
    expected = eager_probabilities(path, images)
    predictor = tlcore.Predictor(path, max_batch=16, max_delay_ms=200)
    assert predictor.classes == tlcore.load(path).classes and predictor.name == "fashion"
    results = [None] * 64
    start = threading.Barrier(64)

    def client(k):
        start.wait()
        data = png_bytes(images[k % len(images)]) if k % 2 else images[k % len(images)]
        results[k] = predictor.probabilities(data)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, probs in enumerate(results):
        np.testing.assert_allclose(probs, expected[k % len(images)], atol=1e-5)
    stats = predictor.stats()
    assert stats["requests"] == 64 and stats["queue_depth"] == 0
    sizes = {int(s): n for s, n in stats["batch_sizes"].items()}
    assert sum(s * n for s, n in sizes.items()) == 64
    assert max(sizes) > 1 and stats["batches"] < 64  # batches really formed
    assert max(sizes) <= 16


def test_predict_labels_threshold_and_top_k(saved_model):
    path, images = saved_model
    expected = eager_probabilities(path, images[:1])[0]
    predictor = tlcore.Predictor(path)
    out = predictor.predict(png_bytes(images[0]), top_k=3)
    assert out["prediction"] == predictor.classes[int(expected.argmax())]
    assert out["confidence"] == pytest.approx(float(expected.max()), abs=1e-5)
    assert [t["label"] for t in out["top_k"]] == [predictor.classes[i] for i in np.argsort(-expected)[:3]]
    strict = tlcore.Predictor(path, threshold=1.01)
    assert strict.predict(images[0])["prediction"] == "unknown"


def test_energy_is_the_logsumexp_and_its_floor_makes_unknown(saved_model):
    path, images = saved_model
    energy = torch.logsumexp(eager_logits(path, images[:4]), 1)
    out = tlcore.Predictor(path).predict_many(images[:4])
    assert [o["energy"] for o in out] == pytest.approx(energy.tolist(), abs=1e-4)
    assert not any(o["unknown"] for o in out)  # the model has no rule
    # A floor between the energies: exactly those below it are unknown, whatever their confidence.
    served = torch.tensor([o["energy"] for o in out])
    floor = float(served.sort().values[1:3].mean())  # two of the four below
    floored = tlcore.Predictor(path, min_energy=floor).predict_many(images[:4])
    assert [o["unknown"] for o in floored] == (served < floor).tolist()
    assert sum(o["unknown"] for o in floored) == 2
    # Given alone, a threshold replaces the model's whole rule, energy floor included.
    clf = tlcore.load(path)
    clf.min_energy = float(energy.max()) + 1
    assert all(o["unknown"] for o in clf.predict_many(images[:4]))
    assert not any(o["unknown"] for o in clf.predict_many(images[:4], threshold=0.0))
    assert tlcore.Predictor(clf, threshold=0.0).min_energy is None


def test_bad_images_are_errors_that_name_the_problem(saved_model, tmp_path):
    path, images = saved_model
    predictor = tlcore.Predictor(path, max_pixels=10_000)
    with pytest.raises(ValueError, match="upload.png: empty image data"):
        predictor.predict(b"", source="upload.png")
    with pytest.raises(ValueError, match="not an image"):
        predictor.predict(b"hello, world" * 10)
    jpeg = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(jpeg, format="JPEG")
    with pytest.raises(ValueError, match="image: .*corrupt JPEG"):
        predictor.predict(jpeg.getvalue()[:300])
    # A PNG header claiming 100,000 x 100,000 pixels: refused before any pixel memory is taken.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    bomb = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
            + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)))
    with pytest.raises(ValueError, match="100000 x 100000 pixels is over the limit of 10000"):
        predictor.predict(bomb)
    big = np.zeros((200, 200, 1), np.uint8)
    with pytest.raises(ValueError, match="over the limit"):
        predictor.predict(big)
    with pytest.raises(FileNotFoundError):
        predictor.predict(tmp_path / "missing.png")
    # Still answering afterwards.
    assert predictor.predict(images[0])["prediction"] in predictor.classes


def test_full_queue_is_refused_not_queued_forever(saved_model):
    path, images = saved_model
    predictor = tlcore.Predictor(path, max_batch=1, max_delay_ms=0, max_queue=1)
    outcomes = []
    lock = threading.Lock()

    def client():
        try:
            predictor.probabilities(images[0])
            result = "ok"
        except tlcore.Overloaded as e:
            assert "queue full" in str(e)
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=client) for _ in range(48)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = predictor.stats()
    assert len(outcomes) == 48 and "ok" in outcomes
    assert outcomes.count("refused") == stats["rejected"] > 0
    assert stats["requests"] == outcomes.count("ok")
    assert issubclass(tlcore.Overloaded, RuntimeError)


def test_options_are_checked(saved_model):
    path, _ = saved_model
    with pytest.raises(ValueError, match="max_batch"):
        tlcore.Predictor(path, max_batch=0)
    with pytest.raises(ValueError, match="device must be"):
        tlcore.Predictor(path, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            tlcore.Predictor(path, device="cuda")
    predictor = tlcore.Predictor(path)
    predictor.close()
    with pytest.raises(RuntimeError, match="closed"):
        predictor.predict(b"x")


def test_imagenet_mobilenet_v2_on_real_photos(shared_dir, tmp_path):
    weights = shared_dir / "weights" / "mobilenet_v2-imagenet-dequantized.pth"
    if not weights.exists():
        pytest.skip(f"{weights} not found")
    ref = torchvision.models.mobilenet_v2()
    ref.load_state_dict(torch.load(str(weights)))
    ref.eval()
    clf = tlcore.Classifier.pretrained("mobilenet_v2", weights)
    saved = tlcore.load(clf.save(tmp_path / "imagenet.tlc"))
    assert len(saved.classes) == 1000 and saved.classes[249] == "malamute"
    predictor = tlcore.Predictor(saved, max_delay_ms=20)
    photos = shared_dir / "data" / "photos"
    expected = {"dog.jpg": "malamute", "eagle.jpg": "kite", "giraffe.jpg": "zebra"}
    got = predictor.predict_many([photos / name for name in expected])
    assert [g["prediction"] for g in got] == list(expected.values())
    batch = torch.stack([torch.from_numpy(clf.pipeline.normalize(clf.pipeline(
        _core.read_image(str(photos / name))))) for name in expected])
    with torch.no_grad():
        oracle = torch.softmax(ref(batch), 1)
    for g, row in zip(got, oracle):
        assert g["confidence"] == pytest.approx(float(row.max()), abs=1e-4)
