"""Hostile files (issue 19): model files carrying code, damaged or foreign files, kill -9 mid-save.

Every path that reads a user-given model or weights file refuses a pickle that would run code,
with a message naming the file, and the code never runs (the marker file it would create never
appears): tlcore.load, tlcore.Predictor, tlcore.export, the CLI's predict and evaluate,
Learner(weights=...) and the service. The service serves its good models beside any bad file
and says why each bad one is refused; an unexpected failure reaches the client as a request id
only. A writer SIGKILLed mid-save leaves a whole file under the final name.
"""
from __future__ import annotations

import builtins
import io
import logging
import os
import pickle
import queue
import random
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import tlcore
from tlcore.api.app import create_app

import _save_worker

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "_save_worker.py"


# -- helpers ------------------------------------------------------------------------------------
def png(data: "tlcore.ImageData") -> bytes:
    """The first training image, encoded as an upload would be."""
    buffer = io.BytesIO()
    Image.fromarray(data.train.image(0, channels=1).squeeze(-1)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- what a malicious file holds ------------------------------------------------------------------
class _System:
    """Unpickling this runs ``os.system(command)``: the classic malicious model file."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Exec:
    """Unpickling this runs Python source through ``builtins.exec``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self):
        return builtins.exec, (self.source,)


def write_evil_files(folder: Path, good: Dict[str, object], marker: Path) -> Dict[str, Path]:
    """Model files whose unpickling would create ``marker``, each hiding the code another way."""
    touch, create = _System(f"touch {marker}"), _Exec(f"open({str(marker)!r}, 'w').close()")
    payloads = {
        "evil_format.tlc": dict(good, format=touch),                                     # torch.save's zip
        "evil_exec.tlc": dict(good, spec=create),
        "evil_tensor.tlc": dict(good, state_dict={**good["state_dict"], "conv.weight": touch}),
        "evil_whole.tlc": touch,
    }
    paths = {}
    for name, payload in payloads.items():
        torch.save(payload, folder / name, pickle_module=pickle)
        paths[name] = folder / name
    legacy = folder / "evil_legacy.tlc"  # torch's pre-1.6 format: one pickle after another
    torch.save(dict(good, format=touch), legacy, pickle_module=pickle, _use_new_zipfile_serialization=False)
    raw = folder / "evil_raw.tlc"  # a bare pickle.dump, no torch at all
    raw.write_bytes(pickle.dumps(dict(good, format=touch)))
    return {**paths, legacy.name: legacy, raw.name: raw}


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data() -> "tlcore.ImageData":
    try:
        return _save_worker.small_data(tlcore.fashion_mnist(train=True))
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def good_model(data, tmp_path_factory) -> Path:
    return tlcore.Learner("simple_cnn", data, verbose=False, seed=0).save(tmp_path_factory.mktemp("good") / "fashion.tlc")


@pytest.fixture(scope="module")
def marker(tmp_path_factory) -> Path:
    """What the malicious files would create; every test ends by checking it never appeared."""
    return tmp_path_factory.mktemp("marker") / "PWNED"


@pytest.fixture(scope="module")
def evil(good_model, marker, tmp_path_factory) -> Dict[str, Path]:
    good = torch.load(str(good_model), weights_only=True)
    return write_evil_files(tmp_path_factory.mktemp("evil"), good, marker)


@pytest.fixture()
def image(data, tmp_path) -> Path:
    path = tmp_path / "item.png"
    path.write_bytes(png(data))
    return path


@pytest.fixture(autouse=True)
def no_code_ran(request) -> Iterator[None]:
    yield
    if "marker" in request.fixturenames:
        assert not request.getfixturevalue("marker").exists(), "a malicious file ran its code"


# -- every load path refuses code ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["evil_format.tlc", "evil_exec.tlc", "evil_tensor.tlc", "evil_whole.tlc",
                                  "evil_legacy.tlc", "evil_raw.tlc"])
def test_load_predictor_and_export_refuse_a_pickle_with_code(evil, marker, name, tmp_path):
    path = evil[name]
    with pytest.raises(ValueError, match=re.escape(name)):
        tlcore.load(path)
    with pytest.raises(ValueError, match=re.escape(name)):
        tlcore.Predictor(path, device="cpu")
    with pytest.raises(ValueError, match=re.escape(name)):
        tlcore.export(path, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=re.escape(name)):
        tlcore.export(path, tmp_path / "m.onnx", format="onnx")
    assert list(tmp_path.iterdir()) == []


def test_cli_predict_and_evaluate_refuse_a_pickle_with_code(evil, marker, image, tmp_path):
    labelled = tmp_path / "labelled" / "shirt"
    labelled.mkdir(parents=True)
    (labelled / image.name).write_bytes(image.read_bytes())
    model = evil["evil_format.tlc"]
    commands = {"predict": ["predict", "--model", model, image],
                "evaluate": ["evaluate", "--model", model, "--data", labelled.parent]}
    runs = {what: subprocess.Popen([sys.executable, "-m", "tlcore.cli", *map(str, argv)], cwd=REPO, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for what, argv in commands.items()}
    for what, run in runs.items():
        out, err = run.communicate(timeout=120)
        assert run.returncode != 0 and not out, (what, out, err)
        assert f"{model}: refused: the file calls 'posix.system'" in err, (what, err)


def test_learner_refuses_weights_with_code(data, marker, tmp_path):
    state = tlcore.Learner("simple_cnn", data, verbose=False).model.state_dict()
    first = next(iter(state))
    files = {"entry.pth": ({**state, first: _System(f"touch {marker}")}, "refused: the file calls 'posix.system'"),
             "whole.pth": (_Exec(f"open({str(marker)!r}, 'w').close()"), "refused: the file calls '__builtin__.exec'")}  # protocol 2's name
    for name, (payload, words) in files.items():
        torch.save(payload, tmp_path / name, pickle_module=pickle)
        with pytest.raises(ValueError, match=re.escape(f"{tmp_path / name}: {words}")):
            tlcore.Learner("simple_cnn", data, verbose=False, weights=tmp_path / name)


def test_a_model_file_with_any_global_beyond_tensors_is_refused(good_model, marker, tmp_path):
    good = torch.load(str(good_model), weights_only=True)
    torch.save(dict(good, notes=_System(f"touch {marker}")), tmp_path / "extra.tlc", pickle_module=pickle)
    with pytest.raises(ValueError, match=r"extra.tlc: refused: the file calls 'posix.system'"):
        tlcore.load(tmp_path / "extra.tlc")


@pytest.mark.parametrize("shape, words", [("cycle", "inside itself"), ("shared", "appears twice"),
                                           ("deep", "nested deeper than 1000")])
def test_a_model_file_of_cyclic_shared_or_deep_data_is_refused(good_model, tmp_path, shape, words):
    """Plain data, but a shape that would leak (a cycle of shared_ptrs) or send every reader
    of it into endless or exponential recursion (found by fuzz_pickle)."""
    good = torch.load(str(good_model), weights_only=True)
    if shape == "cycle":
        notes = []
        notes.append(notes)
    elif shape == "shared":
        leaf = ["x"]
        notes = [leaf, leaf]
    else:
        notes = []
        for _ in range(1100):
            notes = [notes]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))  # pickle itself recurses per level
    torch.save(dict(good, notes=notes), tmp_path / f"{shape}.tlc")
    with pytest.raises(ValueError, match=f"{shape}.tlc: .*{words}"):
        tlcore.load(tmp_path / f"{shape}.tlc")


class _FromFile(torch.nn.Module):
    """A TorchScript module whose ``__setstate__`` creates ``target``: its code runs on load."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target
        self.x = torch.zeros(1)

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, torch.Tensor]:
        return self.target, self.x

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, torch.Tensor]) -> None:
        self.target = state[0]
        self.x = torch.from_file(self.target, True, 1)  # shared=True opens the file with O_CREAT
        self.training = False


def test_resume_refuses_a_checkpoint_carrying_torchscript_code(data, tmp_path):
    created = tmp_path / "CREATED"
    torch.jit.script(_FromFile(str(created))).save(str(tmp_path / f"{_save_worker.PHASE}.ckpt"))
    learner = tlcore.Learner("simple_cnn", data, verbose=False, checkpoint_dir=tmp_path)
    with pytest.raises(Exception) as info:
        learner.fit(1, phase=_save_worker.PHASE)
    assert not created.exists(), "reading the checkpoint ran the TorchScript code it holds"
    assert info.type is ValueError and f"{_save_worker.PHASE}.ckpt" in str(info.value)


# -- the service holds ------------------------------------------------------------------------------
def write_bad_files(folder: Path, good_model: Path, marker: Path) -> Dict[str, str]:
    """Every kind of bad model file in ``folder``; returns file name -> words its reason holds."""
    good = torch.load(str(good_model), weights_only=True)
    evil = write_evil_files(folder, good, marker)
    whole = good_model.read_bytes()
    (folder / "truncated.tlc").write_bytes(whole[: len(whole) // 2])
    (folder / "random.tlc").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "empty.tlc").write_bytes(b"")
    torch.save(good["state_dict"], folder / "state_dict.tlc")
    torch.save({"format": 5}, folder / "format5.tlc")
    torch.save(dict(good, format="tlcore-model/9"), folder / "newer.tlc")
    (folder / "folder.tlc").mkdir()
    os.mkfifo(folder / "fifo.tlc")  # opening it would wait for a writer forever
    return {**{name: "" for name in evil},
            "truncated.tlc": "damaged", "random.tlc": "not a PyTorch checkpoint",
            "empty.tlc": "not a PyTorch checkpoint", "state_dict.tlc": "not a tlcore model file",
            "format5.tlc": "not a tlcore model file", "newer.tlc": "newer than this tlcore reads",
            "folder.tlc": "not a regular file", "fifo.tlc": "not a regular file"}


def post(client: TestClient, body: bytes, **params) -> httpx.Response:
    return client.post("/predict/", params=params, files={"file": ("item.png", body, "image/png")})


def test_service_serves_good_models_and_lists_each_bad_file(good_model, data, marker, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("fashion.tlc", "fashion_copy.tlc"):
        (folder / name).write_bytes(good_model.read_bytes())
    expected = write_bad_files(folder, good_model, marker)
    with TestClient(create_app(folder)) as client:
        listing = client.get("/models").json()
        assert [m["name"] for m in listing["models"]] == ["fashion", "fashion_copy"]
        reasons = {r["file"]: r["reason"] for r in listing["rejected"]}
        assert set(reasons) == set(expected)
        for name, words in expected.items():
            assert reasons[name].startswith(f"{name}: ") and words in reasons[name], reasons[name]
            assert str(folder) not in reasons[name]
        health = client.get("/health").json()
        assert health["status"] == "degraded" and health["default_model"] == "fashion"
        assert health["rejected"] == listing["rejected"] and set(health["models"]) == {"fashion", "fashion_copy"}

        expected_answer = tlcore.load(good_model).predict(png(data), top_k=3)
        for model in ("fashion", "fashion_copy", None):
            r = post(client, png(data), top_k=3, **({"model": model} if model else {}))
            assert r.status_code == 200, r.text
            assert r.json()["prediction"] == expected_answer["prediction"]
            assert r.json()["confidence"] == pytest.approx(expected_answer["confidence"], rel=1e-5)
        r = post(client, png(data), model="evil_format")
        assert r.status_code == 503 and r.json()["detail"] == f"model 'evil_format' is not loaded: {reasons['evil_format.tlc']}"
        assert post(client, png(data), model="never_was").status_code == 404


@pytest.mark.parametrize("bad", [True, False], ids=["every-file-bad", "no-files"])
def test_service_starts_without_any_loadable_model(good_model, data, marker, tmp_path, bad):
    folder = tmp_path / "models"
    folder.mkdir()
    expected = write_bad_files(folder, good_model, marker) if bad else {}
    with TestClient(create_app(folder)) as client:
        listing = client.get("/models").json()
        assert listing["models"] == [] and {r["file"] for r in listing["rejected"]} == set(expected)
        health = client.get("/health").json()
        assert health["status"] == "no model loaded" and health["default_model"] is None
        for params in ({}, {"model": "fashion"}):
            r = post(client, png(data), **params)
            assert r.status_code == 503, r.text
            assert r.json()["detail"].startswith(f"no model loaded: {len(expected)} model file(s) rejected")
        r = client.post("/predict/batch", files=[("files", ("a.png", png(data), "image/png"))])
        assert r.status_code == 503 and r.json()["detail"].startswith("no model loaded")


def test_a_rejected_default_model_is_not_replaced_by_another(good_model, data, marker, tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "fashion.tlc").write_bytes(good_model.read_bytes())
    write_evil_files(folder, torch.load(str(good_model), weights_only=True), marker)
    with TestClient(create_app(folder, default_model="evil_raw")) as client:
        assert client.get("/health").json()["default_model"] is None
        r = post(client, png(data))
        assert r.status_code == 503 and r.json()["detail"].startswith("model 'evil_raw' is not loaded: evil_raw.tlc: ")
        assert post(client, png(data), model="fashion").status_code == 200
    # A default that names no file at all is a mistake in the configuration: the start fails.
    with pytest.raises(LookupError, match="'typo' is not in"):
        with TestClient(create_app(folder, default_model="typo")):
            pass


def test_unexpected_errors_reach_the_client_as_a_request_id_only(good_model, data, tmp_path, monkeypatch, caplog):
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "fashion.tlc").write_bytes(good_model.read_bytes())

    def leak(*args, **kwargs):
        raise RuntimeError("secret /etc/path")

    with TestClient(create_app(folder), raise_server_exceptions=False) as client:
        monkeypatch.setattr(tlcore.Predictor, "predict", leak)
        with caplog.at_level(logging.ERROR):
            single = post(client, png(data))
            batch = client.post("/predict/batch", files=[("files", ("a.png", png(data), "image/png"))])
        for r in (single, batch):
            assert r.status_code == 500 and "secret" not in r.text and "RuntimeError" not in r.text, r.text
            request_id = r.json()["request_id"]
            assert r.json()["detail"] == f"internal error (request id {request_id})"
            assert r.headers["X-Request-ID"] == request_id
            [record] = [rec for rec in caplog.records if request_id in rec.getMessage()]
            assert "secret /etc/path" in caplog.text and record.exc_info[0] is RuntimeError
        # Client errors keep their reasons: they are tlcore's own words about the client's input.
        monkeypatch.undo()
        r = client.post("/predict/", files={"file": ("junk.jpg", b"\xff\xd8\xffjunk", "image/jpeg")})
        assert r.status_code == 400 and r.json()["detail"].startswith("junk.jpg")


# -- kill -9 while saving ---------------------------------------------------------------------------
KILLS = 5
KILL_DELAYS_S = (0.0, 0.25)
WAIT_S = 60


class Worker:
    """``_save_worker.py`` in a subprocess, its stdout lines read by a thread into a queue."""

    def __init__(self, folder: Path) -> None:
        self.process = subprocess.Popen([sys.executable, str(WORKER), str(folder)], cwd=REPO, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.lines: "queue.Queue[Optional[str]]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.expect("ready")

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def next_line(self) -> str:
        try:
            line = self.lines.get(timeout=WAIT_S)
        except queue.Empty:
            pytest.fail(f"the save worker said nothing for {WAIT_S} s")
        if line is None:
            pytest.fail(f"the save worker exited ({self.process.wait()})")
        return line

    def expect(self, prefix: str) -> str:
        line = self.next_line()
        assert line.startswith(prefix), line
        return line

    def round(self, command: str, delay_s: float) -> int:
        """Runs one child on ``command``, SIGKILLs it ``delay_s`` after its first save; the last K saved."""
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        pid = int(self.expect("child ").split()[1])
        last = int(self.expect("saved ").split()[1])
        threading.Event().wait(delay_s)
        os.kill(pid, signal.SIGKILL)
        while not (line := self.next_line()).startswith("reaped "):
            assert line.startswith("saved "), line
            last = int(line.split()[1])
        return last

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(WAIT_S)


@pytest.fixture()
def worker(tmp_path) -> Iterator[Tuple[Worker, Path]]:
    folder = tmp_path / "out"
    folder.mkdir()
    w = Worker(folder)
    yield w, folder
    w.close()


def leftovers(folder: Path, final: str, temp: "re.Pattern[str]") -> List[str]:
    """Files in ``folder`` other than ``final`` that are not clearly named temporaries."""
    return [p.name for p in folder.iterdir() if p.name != final and not temp.fullmatch(p.name)]


def test_kill_during_learner_save_leaves_a_whole_model(worker, data, tmp_path):
    w, folder = worker
    versions = [tlcore.load(learner.save(tmp_path / f"v{k}.tlc"))
                for k, learner in enumerate(_save_worker.version_learners(data))]
    image = [png(data)]
    answers = [v.predict_proba(image) for v in versions]
    assert not torch.equal(answers[0], answers[1])  # versions are told apart by their predictions
    temp = re.compile(re.escape(f".{_save_worker.MODEL_NAME}.") + r"[0-9a-f]{8}\.tmp")
    rng, start = random.Random(19), 0
    for _ in range(KILLS):
        last = w.round(f"model {start}", rng.uniform(*KILL_DELAYS_S))
        # The file is the last save that returned, or the one under way if its rename was done.
        got = tlcore.load(folder / _save_worker.MODEL_NAME).predict_proba(image)
        candidates = [answers[k % _save_worker.VERSIONS] for k in (last, last + 1)]
        assert any(torch.equal(got, c) for c in candidates), f"killed after version {last}: another file"
        assert leftovers(folder, _save_worker.MODEL_NAME, temp) == []
        start = last + 1
    # The temporaries are hidden and are no model file to the service's *.tlc scan.
    assert [p.name for p in folder.glob("*.tlc")] == [_save_worker.MODEL_NAME]


def test_kill_during_checkpoint_leaves_a_whole_checkpoint(worker, data, tmp_path):
    w, folder = worker
    checkpoint = f"{_save_worker.PHASE}.ckpt"
    temp = re.compile(re.escape(checkpoint) + r"\.tmp")
    rng, start = random.Random(19), 1
    for _ in range(KILLS):
        last = w.round(f"checkpoint {start}", rng.uniform(*KILL_DELAYS_S))
        # Resuming reads the whole checkpoint (model, best weights, optimizer, history) and, with
        # the epochs asked for already done, trains nothing more.
        resumed = tlcore.Learner("simple_cnn", data, verbose=False, seed=0, checkpoint_dir=folder)
        epochs = len(resumed.fit(1, lr=1e-3, phase=_save_worker.PHASE))
        assert epochs in (last, last + 1), f"killed after {last} epochs: a checkpoint of {epochs}"
        assert leftovers(folder, checkpoint, temp) == []
        start = last + 1
