"""Files tlcore writes: whole or not at all, with the mode a plain open() gives under the umask."""
from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest

import tlcore
from tlcore.files import atomic_write_bytes, atomic_writer


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_honour_the_umask(tmp_path, umask):
    plain = tmp_path / "plain.bin"
    with open(plain, "wb") as f:  # the oracle: what open() makes under this umask
        f.write(b"x")
    path = atomic_write_bytes(tmp_path / "sub" / "data.bin", b"payload")
    assert path.read_bytes() == b"payload"
    assert mode(path) == 0o666 & ~umask == mode(plain)
    assert {0o022: 0o644, 0o077: 0o600, 0o002: 0o664}[umask] == mode(path)


def test_replacing_a_file_gives_it_the_umask_mode(tmp_path, umask):
    path = tmp_path / "model.tlc"
    path.write_bytes(b"old")
    path.chmod(0o600)
    atomic_write_bytes(path, b"new")
    assert path.read_bytes() == b"new" and mode(path) == 0o666 & ~umask


def test_report_save_honours_the_umask(tmp_path, umask):
    report = tlcore.Report(classes=["a", "b"], accuracy=0.5, top_k={}, per_class=[
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}] * 2,
        macro={"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 4},
        weighted={"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 4},
        confusion=np.array([[1, 1], [1, 1]]), num_samples=4)
    paths = report.save(tmp_path / "out", prefix="run_")
    assert sorted(p.name for p in paths.values()) == ["run_confusion.png", "run_report.json", "run_report.md"]
    for path in paths.values():
        assert mode(path) == 0o666 & ~umask, path.name


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="checksum"):
        with atomic_writer(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("checksum mismatch")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.pth"]


def test_concurrent_writers_each_leave_a_whole_file(tmp_path):
    path = tmp_path / "shared.bin"
    payloads = [bytes([i]) * 100_000 for i in range(8)]
    threads = [threading.Thread(target=atomic_write_bytes, args=(path, p)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert path.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["shared.bin"]


def test_report_module_still_offers_atomic_write_bytes():
    # learner.py and exporter.py import it from .report (issue 15).
    from tlcore import report

    assert report.atomic_write_bytes is atomic_write_bytes


def test_plots_and_report_import_without_a_cycle():
    import ast

    package = Path(tlcore.__file__).parent
    for name, other in (("plots", "report"), ("files", "report"), ("files", "plots")):
        tree = ast.parse((package / f"{name}.py").read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module is None
                     for a in n.names}
        assert other not in imported, f"{name}.py imports {other}"
