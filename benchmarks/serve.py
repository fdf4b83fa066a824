"""Requests/s and latency of tlcore's service vs the workshop's naive FastAPI service.

Both sides: one uvicorn process on 127.0.0.1, the ImageNet MobileNetV2 from ../shared at
224 px on CPU, ``--clients`` concurrent clients (threads, one keep-alive connection each)
posting ../shared/data/photos/dog.jpg to POST /predict/ for ``--duration`` seconds after a
warm-up; every answer must be "malamute". The naive side (benchmarks/naive_service.py) runs
torchvision's model once per request; tlcore's side (api/) batches concurrent requests in
C++. Reports requests/s, p50/p99 latency, errors and the batch sizes tlcore formed (from
/health). The process renices itself (and so both servers) to at least 10.

Prints one JSON line; "ratio" (tlcore requests/s / naive requests/s) last.

With ``--precision bf16|int8`` the two sides are tlcore's service in fp32 and in that
precision (TLCORE_PRECISION), same clients and model; int8 first calibrates the model on
128 flower photos (tlcore.quantize). ``--arch resnet50`` serves a randomly initialised
ResNet-50 (no weights can be downloaded here) whose answers must match the fp32 model's
label for the photo. "ratio" is then reduced precision / fp32 requests/s.

Usage: .venv/bin/python benchmarks/serve.py [--duration 20] [--clients 32] [--max-batch 16]
       .venv/bin/python benchmarks/serve.py --precision int8 --arch resnet50
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import httpx

import tlcore

from _common import REPO, shared_dir

log = logging.getLogger("serve")

WEIGHTS = "weights/mobilenet_v2-imagenet-dequantized.pth"


def save_imagenet_model(weights: Path, path: Path, arch: str = "mobilenet_v2", precision: str = "fp32") -> str:
    """An ImageNet classifier (1,000 classes) saved as a tlcore model file; returns the label
    it gives dog.jpg. mobilenet_v2 has the shared weights; another arch is randomly initialised.
    int8 calibrates it on 128 flower photos."""
    if arch != "mobilenet_v2":
        import torch
        import torchvision

        torch.manual_seed(0)
        weights = path.with_suffix(".pth")
        torch.save(getattr(torchvision.models, arch)().state_dict(), weights)
    clf = tlcore.Classifier.pretrained(arch, weights)
    if precision == "int8":
        tlcore.quantize(clf, shared_dir() / "data" / "flowers" / "train", images=128)
    clf.save(path)
    return clf.predict(shared_dir() / "data" / "photos" / "dog.jpg")["prediction"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One server process (``argv`` after the interpreter: ``-m uvicorn ...`` or ``-m tlcore.cli serve ...``),
    told its host, port and log level; ready once ``ready_path`` answers 200."""

    def __init__(self, argv: List[str], env: Dict[str, str], ready_path: str, log_path: Path,
                 port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        with open(log_path, "wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, *argv, "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
                cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while True:
            if self.process.poll() is not None:
                sys.exit(f"server {' '.join(argv)} exited:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + ready_path, timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.close()
                sys.exit(f"server {' '.join(argv)} not ready after 300 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)

    def cpu_seconds(self) -> Optional[float]:
        """User + system CPU time of the server process so far (Linux), else None."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_load(url: str, image: bytes, expected: str, clients: int, warmup: float, duration: float,
             at_start: Callable[[], object], at_end: Callable[[], object]) -> Dict[str, object]:
    """Clients post ``image`` back to back; answers finished inside the window are measured.

    ``at_start`` and ``at_end`` run when the window opens and closes; their results are "marks".
    """
    start = time.perf_counter() + warmup
    end = start + duration
    latencies: List[float] = []
    errors: List[str] = []
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while True:
                t0 = time.perf_counter()
                if t0 >= end:
                    return
                try:
                    r = http.post("/predict/", files={"file": ("dog.jpg", image, "image/jpeg")})
                    problem = None if r.status_code == 200 and r.json()["prediction"] == expected else \
                        f"{r.status_code} {r.text[:200]}"
                except httpx.HTTPError as e:
                    problem = f"{type(e).__name__}: {e}"
                t1 = time.perf_counter()
                if start <= t1 <= end:
                    with lock:
                        (errors.append(problem) if problem else latencies.append(t1 - t0))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    marks = {}
    for name, when, hook in (("start", start, at_start), ("end", end, at_end)):
        time.sleep(max(0.0, when - time.perf_counter()))
        marks[name] = hook()
    for t in threads:
        t.join()
    latencies.sort()
    return {
        "requests_per_s": round(len(latencies) / duration, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 1) if latencies else None,
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1)
        if latencies else None,
        "answers": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "marks": marks,
    }


def snapshot(server: Server, batching: bool) -> Dict[str, object]:
    """The server's CPU time and, for tlcore, its batch-size counts."""
    marks: Dict[str, object] = {"cpu_s": server.cpu_seconds()}
    if batching:
        marks["batch_sizes"] = httpx.get(server.url + "/health", timeout=30).json()["models"]["imagenet"]["batch_sizes"]
    return marks


def summarize(result: Dict[str, object]) -> Dict[str, object]:
    """Replaces the window's start/end marks with what happened between them."""
    before, after = result.pop("marks").values()
    if before["cpu_s"] is not None and result["answers"]:
        # CPU per answer barely depends on what else the machine runs, unlike requests/s.
        result["server_cpu_ms_per_request"] = round(1000 * (after["cpu_s"] - before["cpu_s"]) / result["answers"], 1)
    if "batch_sizes" in after:
        grown = {k: n - before["batch_sizes"].get(k, 0) for k, n in after["batch_sizes"].items()}
        result["batch_sizes"] = {k: n for k, n in sorted(grown.items(), key=lambda kv: int(kv[0])) if n > 0}
    return result


def run_tlcore(args: argparse.Namespace, models: Path, image: bytes, expected: str, precision: str,
               log_path: Path) -> Dict[str, object]:
    """tlcore's service (api.app) over ``models`` in ``precision``, under the benchmark's load."""
    log.info("tlcore: api.app in %s with max_batch %d, max_delay_ms %g", precision, args.max_batch, args.max_delay_ms)
    service = Server(["-m", "uvicorn", "api.app:app", "--no-access-log"], {"TLCORE_MODELS": str(models), "TLCORE_MAX_BATCH": str(args.max_batch),
                                       "TLCORE_MAX_DELAY_MS": str(args.max_delay_ms), "TLCORE_PRECISION": precision},
                     "/health", log_path)
    try:
        return summarize(run_load(service.url, image, expected, args.clients, args.warmup, args.duration,
                                  lambda: snapshot(service, True), lambda: snapshot(service, True)))
    finally:
        service.close()


def compare_precisions(args: argparse.Namespace) -> int:
    """tlcore's service in fp32 and in ``args.precision``: same model, same clients."""
    shared = shared_dir()
    image = (shared / "data/photos/dog.jpg").read_bytes()
    results: Dict[str, Dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="tlcore-serve-bench-") as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        expected = save_imagenet_model(shared / WEIGHTS, models / "imagenet.tlc", args.arch, args.precision)
        for precision in ("fp32", args.precision):
            results[precision] = run_tlcore(args, models, image, expected, precision, Path(tmp) / f"{precision}.log")
    fast, base = results[args.precision], results["fp32"]
    print(json.dumps({
        "benchmark": "serve-precision", "arch": args.arch, "image_size": 224, "device": "cpu",
        "cpu_cores": os.cpu_count(), "clients": args.clients, "duration_s": args.duration,
        "fp32": base, args.precision: fast,
        "p99_no_worse": (fast["p99_ms"] or 1e9) <= (base["p99_ms"] or 0),
        "ratio": round(fast["requests_per_s"] / base["requests_per_s"], 2) if base["requests_per_s"] else None,
    }))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=20.0, help="measured seconds per side")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds of load first")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=16, help="tlcore's largest batch")
    parser.add_argument("--max-delay-ms", type=float, default=5.0, help="tlcore's longest wait for a batch")
    parser.add_argument("--precision", choices=["bf16", "int8"], default=None,
                        help="compare tlcore in this precision with tlcore in fp32 instead of with the naive service")
    parser.add_argument("--arch", default="mobilenet_v2", help="with --precision: the model served")
    args = parser.parse_args(argv)
    if args.precision == "int8":
        tlcore.precision.run_int8_without_amx()  # this process calibrates, so int8 runs here first
    if args.precision:
        return compare_precisions(args)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    os.nice(max(0, 10 - os.nice(0)))

    shared = shared_dir()
    weights, image = shared / WEIGHTS, (shared / "data/photos/dog.jpg").read_bytes()
    results: Dict[str, Dict[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="tlcore-serve-bench-") as tmp:
        models = Path(tmp) / "models"
        models.mkdir()
        expected = save_imagenet_model(weights, models / "imagenet.tlc")

        log.info("naive: torchvision mobilenet_v2, one forward pass per request")
        naive = Server(["-m", "uvicorn", "--app-dir", "benchmarks", "naive_service:app", "--no-access-log"], {"NAIVE_WEIGHTS": str(weights)},
                       "/docs", Path(tmp) / "naive.log")
        try:
            results["naive"] = summarize(run_load(naive.url, image, expected, args.clients, args.warmup, args.duration,
                                                  lambda: snapshot(naive, False), lambda: snapshot(naive, False)))
        finally:
            naive.close()

        results["tlcore"] = run_tlcore(args, models, image, expected, "fp32", Path(tmp) / "tlcore.log")
    for side in ("naive", "tlcore"):
        r = results[side]
        log.info("%-7s %7.1f req/s  p50 %7.1f ms  p99 %7.1f ms  %s ms server CPU/request  %d errors", side,
                 r["requests_per_s"], r["p50_ms"] or float("nan"), r["p99_ms"] or float("nan"),
                 r.get("server_cpu_ms_per_request"), r["errors"])
    log.info("tlcore batch sizes during the run: %s", results["tlcore"]["batch_sizes"])
    naive_rps = results["naive"]["requests_per_s"]
    print(json.dumps({
        "benchmark": "serve", "arch": "mobilenet_v2", "image_size": 224, "device": "cpu",
        "cpu_cores": os.cpu_count(), "clients": args.clients, "duration_s": args.duration,
        "naive": results["naive"], "tlcore": results["tlcore"],
        "p99_no_worse": (results["tlcore"]["p99_ms"] or 1e9) <= (results["naive"]["p99_ms"] or 0),
        "ratio": round(results["tlcore"]["requests_per_s"] / naive_rps, 2) if naive_rps else None,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
