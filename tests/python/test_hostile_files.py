"""Hostile files (issue 19): kill -9 mid-save.

A writer SIGKILLed mid-save leaves a whole file under the final name: the last complete model
(same predictions) or checkpoint (resumable), and only clearly named temporaries beside it.
"""
from __future__ import annotations

import io
import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest
import torch
from PIL import Image

import tlcore

import _save_worker

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parent / "_save_worker.py"


# -- helpers ------------------------------------------------------------------------------------
def png(data: "tlcore.ImageData") -> bytes:
    """The first training image, encoded as an upload would be."""
    buffer = io.BytesIO()
    Image.fromarray(data.train.image(0, channels=1).squeeze(-1)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data() -> "tlcore.ImageData":
    try:
        return _save_worker.small_data(tlcore.fashion_mnist(train=True))
    except FileNotFoundError as e:
        pytest.skip(str(e))


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
