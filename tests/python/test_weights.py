"""Weights download against a local HTTP server: progress, checksum, cache, offline."""
from __future__ import annotations

import hashlib
import http.server
import io
import socket
import threading

import pytest
import torch

from tlcore import _core, weights


class _Server:
    """Serves {path: bytes} on 127.0.0.1 and counts the requests."""

    def __init__(self, files):
        self.files, self.requests = files, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def checkpoint():
    """A small real checkpoint (an mlp's state dict) and its name with the hash in it."""
    model = _core.create_model("mlp", 3, input_size=4, widths=[8])
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    data = buf.getvalue()
    return data, f"tiny-{hashlib.sha256(data).hexdigest()[:8]}.pth", model


@pytest.fixture
def server(checkpoint):
    data, name, _ = checkpoint
    s = _Server({f"/models/{name}": data, "/models/tiny-00000000.pth": data})
    yield s
    s.close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(weights, "_REGISTRY", dict(weights._REGISTRY))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_download_shows_progress_and_is_cached(server, checkpoint, isolated, capsys):
    data, name, model = checkpoint
    weights.register("tiny", "imagenet", f"{server.url}/models/{name}")
    path = weights.fetch("tiny")
    assert path == isolated / name
    assert path.read_bytes() == data
    err = capsys.readouterr().err
    assert name in err and "100%" in err
    assert server.requests == [f"/models/{name}"]
    fresh = _core.create_model("mlp", 3, input_size=4, widths=[8])
    fresh.load_checkpoint(str(path))
    assert torch.equal(fresh.state_dict()["layers.0.weight"], model.state_dict()["layers.0.weight"])

    assert weights.fetch("tiny") == path  # the cache answers: no second request
    assert len(server.requests) == 1
    assert [p.name for p in isolated.iterdir()] == [name]


def test_checksum_mismatch_leaves_no_file(server, isolated):
    weights.register("tiny", "imagenet", f"{server.url}/models/tiny-00000000.pth")
    with pytest.raises(weights.WeightsError, match="SHA-256 .* does not start with 00000000"):
        weights.fetch("tiny", progress=False)
    assert list(isolated.iterdir()) == []
    assert len(server.requests) == 1


def test_offline_names_the_file_and_where_to_put_it(isolated):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    weights.register("tiny", "imagenet", f"http://127.0.0.1:{port}/models/tiny-12345678.pth")
    with pytest.raises(weights.WeightsError) as e:
        weights.fetch("tiny", progress=False)
    assert str(isolated / "tiny-12345678.pth") in str(e.value)
    assert "TORCH_HOME" in str(e.value)
    assert list(isolated.iterdir()) == []


def test_existing_user_file_is_reused_without_network(isolated):
    isolated.mkdir(parents=True)
    (isolated / "resnet18-f37072fd.pth").write_bytes(b"user's file")
    assert weights.fetch("resnet18") == isolated / "resnet18-f37072fd.pth"


def test_local_paths_and_unknown_tags(tmp_path, checkpoint):
    data, _, _ = checkpoint
    local = tmp_path / "mine.pth"
    local.write_bytes(data)
    assert weights.fetch("mlp", local) == local
    with pytest.raises(FileNotFoundError, match="nowhere.pth.*resnet18.*imagenet"):
        weights.fetch("resnet18", tmp_path / "nowhere.pth")


def test_registry_entries():
    with pytest.raises(ValueError, match="already registered"):
        weights.register("resnet50", "imagenet", "https://example.invalid/resnet50-00000000.pth")
    entry = {w.arch: w for w in weights.available()}
    assert entry["resnet50"].sha256_prefix == "0676ba61"
    assert entry["efficientnet_b0"].filename == "efficientnet_b0_rwightman-3dd342df.pth"
    archs = set(entry)
    assert archs <= set(_core.model_names())
    assert {n for n in _core.model_names() if n not in ("simple_cnn", "mlp")} <= archs


def test_imagenet_classes_ship_with_the_package():
    names = weights.imagenet_classes()
    assert len(names) == 1000
    assert (names[249], names[21], names[340]) == ("malamute", "kite", "zebra")
