"""Data-parallel training across processes on torch.distributed.

Each rank is one process running the same script. The process group comes from the
environment torchrun sets (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``), so ``torchrun --nproc_per_node=2 train.py`` works unchanged; ``launch``
starts N local ranks itself. A ``Learner`` made in a rank process joins the group on its
own: each rank trains on its shard of every epoch, gradients are averaged, and only rank 0
writes. The backend: the group the script made itself with
``torch.distributed.init_process_group`` if there is one (any backend, any launcher);
otherwise NCCL when training on CUDA (each rank on GPU ``LOCAL_RANK``), and Gloo on the CPU
(tlcore's own C++ group where it was built with Gloo's headers, torch.distributed's if not).
``TLCORE_DIST_BACKEND`` overrides the choice: "gloo", "nccl", or "torch-gloo" for
torch.distributed's Gloo even where tlcore has its own.

Usage::

    tlcore.distributed.launch([sys.executable, "train.py"], nproc=2)
"""
from __future__ import annotations

import atexit
import datetime
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple

from . import _core

if TYPE_CHECKING:
    import torch

DistributedError = _core.DistributedError

# The exit code of a launched rank that failed because another rank did, so that
# `launch` names the rank where the trouble started, whichever process ended first.
PEER_FAILURE_EXIT = 75


def _exit_on_peer_failure(kind, value, traceback) -> None:
    sys.__excepthook__(kind, value, traceback)
    if isinstance(value, DistributedError):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(PEER_FAILURE_EXIT)


if os.environ.get("TLCORE_LAUNCHED") == "1":
    sys.excepthook = _exit_on_peer_failure

log = logging.getLogger(__name__)

_group: Optional["_core.ProcessGroup"] = None
_joined = False


class _TorchCollectives:
    """torch.distributed's collectives as tlcore's C++ trainer calls them (through Python).

    NCCL reduces CUDA tensors only: the trainer's few CPU tensors (metrics, row counts)
    make a round trip through the GPU.
    """

    def __init__(self, group: Optional[object] = None) -> None:
        import torch.distributed as dist

        self._dist, self._group = dist, group
        self.backend = str(dist.get_backend(group))
        self._cuda_only = self.backend == "nccl"

    def all_reduce(self, tensor: "torch.Tensor"):
        return self._run(self._dist.all_reduce, tensor)

    def broadcast(self, tensor: "torch.Tensor", root: int):
        return self._run(self._dist.broadcast, tensor, root)

    def _run(self, collective, tensor: "torch.Tensor", *args):
        """The collective's work handle (its wait() ends it)."""
        if self._cuda_only and not tensor.is_cuda:
            on_gpu = tensor.cuda()
            collective(on_gpu, *args, group=self._group)
            tensor.copy_(on_gpu)
            return _Done()
        return collective(tensor, *args, group=self._group, async_op=True)


class _Done:
    """The work handle of a collective that has already ended."""

    def wait(self) -> bool:
        return True


def _timeout_s() -> float:
    return float(os.environ.get("TLCORE_DIST_TIMEOUT") or 300.0)


def wrap(group: Optional[object] = None) -> "_core.ProcessGroup":
    """tlcore's handle on a process group made with torch.distributed (default: the default group).

    Usage: ``torch.distributed.init_process_group("nccl"); group = tlcore.distributed.wrap()``
    """
    import torch.distributed as dist

    collectives = _TorchCollectives(group)
    return _core.TorchDistributedGroup(collectives, dist.get_rank(group), dist.get_world_size(group),
                                       _timeout_s(), collectives.backend)


# TLCORE_DIST_BACKEND's values and the torch.distributed backend each runs on, where tlcore
# does not run its own group ("gloo" does, when built with Gloo's headers).
_TORCH_BACKEND = {"gloo": "gloo", "nccl": "nccl", "torch-gloo": "gloo"}


def _join(device: str) -> Optional["_core.ProcessGroup"]:
    import torch
    import torch.distributed as dist

    have_torch = dist.is_available()
    if have_torch and dist.is_initialized():
        return wrap() if dist.get_world_size() > 1 else None
    if world_size() <= 1:
        return None
    choice = os.environ.get("TLCORE_DIST_BACKEND") or (
        "nccl" if device.startswith("cuda") and have_torch and dist.is_nccl_available() else "gloo")
    if choice not in _TORCH_BACKEND:
        raise ValueError(f"TLCORE_DIST_BACKEND must be one of {', '.join(_TORCH_BACKEND)}, got {choice!r}")
    if choice == "gloo" and _core.GlooProcessGroup.available():
        return _core.ProcessGroup.from_environment()
    if not have_torch:
        raise DistributedError("this torch was built without torch.distributed")
    backend = _TORCH_BACKEND[choice]
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=_timeout_s()))
    atexit.register(_leave)
    return wrap()


def _leave() -> None:
    """Ends the torch.distributed group that tlcore made while the interpreter is still whole:
    torch's Gloo can abort the process ("terminate called without an active exception") when
    its group is only torn down with the interpreter."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def process_group(device: str = "cpu") -> Optional["_core.ProcessGroup"]:
    """This process's group, joined on first use (see the module's docstring); None outside a
    multi-rank run. ``device`` is where the model trains: "cuda" picks NCCL."""
    global _group, _joined
    if not _joined:
        _group = _join(device)
        _joined = True
    return _group


def rank() -> int:
    """This process's rank (0 outside a distributed run)."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def world_size() -> int:
    """How many ranks the run has (1 outside a distributed run)."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def is_main_process() -> bool:
    """True on rank 0, the one that writes checkpoints, reports and plots."""
    return rank() == 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def launch(argv: Sequence[str], nproc: int, threads_per_rank: Optional[int] = None,
           timeout_s: float = 300.0, env: Optional[Mapping[str, str]] = None,
           grace_s: float = 5.0) -> None:
    """Runs ``argv`` as ``nproc`` local ranks (127.0.0.1) and waits for all of them.

    Each rank gets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``,
    ``TLCORE_DIST_TIMEOUT`` (every collective fails after ``timeout_s``) and
    ``TLCORE_NUM_THREADS`` (the machine's cores shared out, unless given). When a rank
    fails, the others get ``grace_s`` to end on their own, are then stopped, and
    ``DistributedError`` names the failed rank: the first to fail, not counting ranks that
    ended with ``DistributedError`` (they exit with ``PEER_FAILURE_EXIT``) while another
    failed otherwise.

    Usage: ``tlcore.distributed.launch([sys.executable, "train.py"], nproc=2)``
    """
    if nproc < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    threads = threads_per_rank or max(1, _core.available_cores() // nproc)
    base: Dict[str, str] = dict(os.environ if env is None else env)
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(nproc),
                LOCAL_WORLD_SIZE=str(nproc), TLCORE_DIST_TIMEOUT=str(timeout_s),
                TLCORE_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), TLCORE_LAUNCHED="1")
    procs: List[subprocess.Popen] = []
    for r in range(nproc):
        rank_env = dict(base, RANK=str(r), LOCAL_RANK=str(r))
        procs.append(subprocess.Popen(list(argv), env=rank_env))
    log.info("started %d ranks (%d threads each) on port %s", nproc, threads, base["MASTER_PORT"])
    # One watcher thread per rank: the first rank to fail is the first reported, even
    # when its peers fail a few milliseconds later because of it.
    exits: "queue.Queue[Tuple[int, int]]" = queue.Queue()
    for r, p in enumerate(procs):
        threading.Thread(target=lambda r=r, p=p: exits.put((r, p.wait())), daemon=True).start()
    failed: Optional[Tuple[int, int]] = None
    try:
        for _ in range(nproc):
            try:
                r, code = exits.get(timeout=grace_s if failed else None)
            except queue.Empty:
                break  # the others did not end on their own within the grace period
            peer = failed is not None and failed[1] == PEER_FAILURE_EXIT
            if code != 0 and (failed is None or (peer and code != PEER_FAILURE_EXIT)):
                failed = (r, code)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    if failed is not None:
        r, code = failed
        raise DistributedError(f"rank {r} of {nproc} failed with {_describe(code)}; "
                               f"the run was stopped ({' '.join(argv)})")
