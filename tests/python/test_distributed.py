"""Data-parallel training on torch.distributed (Gloo on 127.0.0.1), with real processes.

The oracle for 2 ranks is 1 rank with the doubled batch: averaging the gradients of two
shards of a batch is the gradient of the whole batch, so the weights must agree.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tlcore

WORKER = Path(__file__).with_name("_dist_train.py")


def _env(**extra):
    env = dict(os.environ)
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env["TLCORE_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def _read(out, rank):
    return json.loads(Path(f"{out}.rank{rank}.json").read_text())


def _free_port():
    return tlcore.distributed._free_port()


def _spawn_ranks(out, world, extra_args=(), timeout=60, **extra_env):
    port = _free_port()
    procs = []
    for r in range(world):
        env = _env(RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   TLCORE_DIST_TIMEOUT=str(timeout), **extra_env)
        procs.append(subprocess.Popen([sys.executable, str(WORKER), "--out", str(out), *extra_args], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def _wait_for(path, procs, timeout=120):
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        assert all(p.poll() is None for p in procs), "a rank ended before starting to train"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def test_shards_are_disjoint_and_cover_the_epoch():
    ds = tlcore.fashion_mnist(train=False)
    for n, drop_last in ((101, False), (101, True), (100, False)):
        sub = tlcore._core.Subset(ds, list(range(n)))
        shards = [tlcore.DataLoader(sub, "cifar-eval", image_size=28, channels=1, batch_size=11, seed=5,
                                    rank=r, world_size=3, drop_last=drop_last)._loader.epoch_indices(2)
                  for r in range(3)]
        assert len({len(s) for s in shards}) == 1, "every rank gets as many samples"
        single = tlcore.DataLoader(sub, "cifar-eval", image_size=28, channels=1, batch_size=11, seed=5,
                                   drop_last=False)._loader.epoch_indices(2)
        union = [i for s in shards for i in s]
        if drop_last:  # the tail that does not divide evenly is dropped, nothing repeats
            assert len(set(union)) == len(union) == n - n % 3
        else:  # padded by wrapping around, like DistributedSampler
            assert set(union) == set(single) == set(range(n))
            assert len(union) - len(set(union)) == (-n) % 3
        # DistributedSampler's rule: rank r takes every world_size-th sample of the shared permutation
        padded = single + single[: (-n) % 3]
        if not drop_last:
            assert shards[1] == padded[1::3]


# How the ranks get their group: tlcore's own C++ Gloo group; torch.distributed's, made by
# the script itself (the trainer then runs its collectives through Python, the path NCCL
# takes on GPUs); or torch.distributed's, made by tlcore (as where it was built without
# Gloo's headers). Each: (worker arguments, environment).
GROUPS = {"tlcore": ([], {}), "torch": (["--torch-distributed"], {}),
          "torch-gloo": ([], {"TLCORE_DIST_BACKEND": "torch-gloo"})}


def _run_two_ranks(out, *args, **env):
    tlcore.distributed.launch([sys.executable, str(WORKER), "--out", str(out), "--batch-size", "16", *args],
                              nproc=2, threads_per_rank=1, timeout_s=120, env=_env(**env))
    return torch.load(f"{out}.pt")


def _largest_difference(a, b):
    """The largest absolute difference between two state dicts (any devices)."""
    assert a.keys() == b.keys()
    return max(float((a[k].detach().float().cpu() - b[k].detach().float().cpu()).abs().max()) for k in a)


# Training-mode BatchNorm computes its statistics by torch's kernel in one process and by
# tlcore's synchronised arithmetic in two: results differ in the last bits, which flips ties
# in max-pooling (Fashion-MNIST has flat regions) and grows within a few steps. So that case
# compares one step; tests/cpp (SyncBatchNorm) checks the arithmetic against torch's kernel.
@pytest.mark.slow
@pytest.mark.parametrize("batchnorm, extra, group", [
    ("eval", [], "tlcore"),
    ("sync", ["--epochs", "1", "--per-class", "3", "--no-augment"], "tlcore"),
    ("eval", [], "torch"),
    ("eval", [], "torch-gloo"),
])
def test_two_ranks_match_one_rank_with_the_doubled_batch(tmp_path, batchnorm, extra, group):
    """BatchNorm in inference mode, or training with statistics synchronised across ranks."""
    one = tmp_path / "one"
    subprocess.run([sys.executable, str(WORKER), "--out", str(one), "--batch-size", "32", "--batchnorm", batchnorm,
                    *extra], env=_env(), check=True, timeout=300)
    two = tmp_path / "two"
    group_args, group_env = GROUPS[group]
    a, b = torch.load(f"{one}.pt"), _run_two_ranks(two, "--batchnorm", batchnorm, *extra, *group_args, **group_env)
    worst = _largest_difference(a, b)
    assert worst <= 1e-5, f"weights differ by {worst}"
    if batchnorm == "sync":
        # Each rank's own batch statistics train a different model: the synchronisation mattered.
        local = _largest_difference(a, _run_two_ranks(tmp_path / "local", "--batchnorm", "local", *extra))
        assert local > 1e-3, f"per-rank BatchNorm statistics changed the weights by only {local}"
        assert any(k.endswith("running_var") and not torch.equal(a[k], torch.ones_like(a[k])) for k in a)
    start = tlcore.Learner("simple_cnn", tlcore.ImageData(tlcore.fashion_mnist(False), val_split=0, image_size=28,
                                                          channels=1), verbose=False, seed=3)
    init = start.model.state_dict()
    moved = max(float((a[k].float() - init[k].float()).abs().max()) for k in a
                if k in init and k.endswith("weight"))
    assert moved > 1e-3, "training changed the weights"

    ranks = [_read(two, r) for r in range(2)]
    assert {r["world_size"] for r in ranks} == {2}
    assert {r["group"] for r in ranks} == {"GlooProcessGroup" if group == "tlcore" else "TorchDistributedGroup"}
    s0, s1 = set(ranks[0]["shard"]), set(ranks[1]["shard"])
    assert not s0 & s1, "the ranks' shards overlap"
    assert s0 | s1 == set(_read(one, 0)["shard"]), "together the shards cover the epoch"
    # Metrics are computed over all ranks: the same numbers as the single process.
    for h1, h2 in zip(_read(one, 0)["history"], ranks[0]["history"]):
        assert h2["val_accuracy"] == pytest.approx(h1["val_accuracy"], abs=1e-9)
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=1e-4)
        assert h2["train_accuracy"] == pytest.approx(h1["train_accuracy"], abs=1e-9)


@pytest.mark.slow
def test_torchrun_on_two_nodes_matches_one_rank_with_the_doubled_batch(tmp_path):
    """Two torchrun agents (one per "node", static rendezvous) on this machine: the ranks join
    the agent's store as clients and bind Gloo to the interface GLOO_SOCKET_IFNAME names."""
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(WORKER), "--out", str(one), "--batch-size", "32"], env=_env(), check=True,
                   timeout=300)
    port = str(_free_port())
    # Debian's torch 1.13 reads torchrun's default "--redirects 0" as None under Python 3.11
    # (IntFlag iteration skips 0), so the streams are named explicitly.
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--redirects", "2", "--tee", "2",
                                "--nnodes", "2", "--node_rank", str(n), "--nproc_per_node", "1",
                                "--master_addr", "127.0.0.1", "--master_port", port, "--log_dir", str(tmp_path / "logs"),
                                str(WORKER), "--out", str(two), "--batch-size", "16"],
                               env=_env(TLCORE_DIST_TIMEOUT="60", GLOO_SOCKET_IFNAME="lo"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for n in range(2)]
    for agent in agents:
        output, _ = agent.communicate(timeout=300)
        assert agent.returncode == 0, output[-3000:]
    worst = _largest_difference(torch.load(f"{one}.pt"), torch.load(f"{two}.pt"))
    assert worst <= 1e-5, f"weights differ by {worst}"
    assert [_read(two, r)["world_size"] for r in range(2)] == [2, 2]


def _signal_rank_1(tmp_path, sig, timeout, group):
    """Starts 2 long-training ranks, sends rank 1 `sig` mid-run; (rank 0's code, seconds to end, stderr)."""
    out = tmp_path / "run"
    group_args, group_env = GROUPS[group]
    procs = _spawn_ranks(out, 2, ["--epochs", "200", "--per-class", "50", *group_args], timeout=timeout,
                         **group_env)
    try:
        _wait_for(f"{out}.rank0.started", procs)
        _wait_for(f"{out}.rank1.started", procs)
        time.sleep(1.0)
        procs[1].send_signal(sig)
        start = time.monotonic()
        _, err = procs[0].communicate(timeout=90)
        return procs[0].returncode, time.monotonic() - start, err
    finally:
        for p in procs:
            p.kill()


@pytest.mark.slow
def test_two_ranks_resume_after_a_kill(tmp_path):
    """Killed after its second epoch and launched again with the same world size: the uninterrupted weights."""
    args = ["--epochs", "3", "--batchnorm", "sync"]
    whole = _run_two_ranks(tmp_path / "whole", *args)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(tlcore.DistributedError, match="rank 0 of 2 failed"):
        _run_two_ranks(tmp_path / "cut", *args, "--checkpoint-dir", str(ckpt), "--kill-rank-0-after-epoch", "1")
    assert not Path(f"{tmp_path / 'cut'}.pt").exists() and list(ckpt.glob("*.ckpt"))
    resumed = _run_two_ranks(tmp_path / "cut", *args, "--checkpoint-dir", str(ckpt))
    assert len(_read(tmp_path / "cut", 0)["history"]) == 3
    for k in whole:
        torch.testing.assert_close(resumed[k], whole[k], atol=0, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("group", ["tlcore", "torch"])
def test_a_killed_rank_ends_the_run_with_an_error(tmp_path, group):
    code, elapsed, err = _signal_rank_1(tmp_path, signal.SIGKILL, timeout=60, group=group)
    assert code != 0
    assert elapsed < 60, f"rank 0 took {elapsed:.0f} s to notice"
    assert "DistributedError" in err and "rank 0 of 2" in err, err[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("group", ["tlcore", "torch"])
def test_a_hung_rank_ends_the_run_after_the_timeout(tmp_path, group):
    code, elapsed, err = _signal_rank_1(tmp_path, signal.SIGSTOP, timeout=6, group=group)
    assert code != 0
    assert elapsed < 45, f"rank 0 took {elapsed:.0f} s with a 6 s timeout"
    assert "DistributedError" in err and "did not answer within 6 s" in err, err[-2000:]


@pytest.mark.slow
def test_the_launcher_names_the_failed_rank(tmp_path):
    start = time.monotonic()
    with pytest.raises(tlcore.DistributedError, match=r"rank 1 of 2 failed with exit code 3"):
        tlcore.distributed.launch([sys.executable, str(WORKER), "--out", str(tmp_path / "x"),
                                   "--exit-code-on-rank", "1", "3"], nproc=2, timeout_s=60, env=_env(),
                                  grace_s=2)
    assert time.monotonic() - start < 60


@pytest.mark.slow
def test_cli_train_with_two_ranks_writes_once(tmp_path):
    out = tmp_path / "runs"
    subprocess.run([sys.executable, "-m", "tlcore.cli", "train", "--nproc", "2", "--limit", "200", "--epochs", "1",
                    "--batch-size", "32", "--out", str(out)], env=_env(), check=True, timeout=300)
    models = list(out.glob("*.tlc"))
    assert len(models) == 1
    clf = tlcore.load(models[0])
    assert len(clf.classes) == 10


def test_process_group_arguments_are_checked():
    with pytest.raises(ValueError, match="outside world size"):
        tlcore._core.GlooProcessGroup("127.0.0.1", 29500, rank=2, world_size=2)
    with pytest.raises(ValueError, match="not a TCP port"):
        tlcore._core.GlooProcessGroup("127.0.0.1", 70000, rank=0, world_size=2)
