"""The CUDA path: pinned uint8 batches normalised on the GPU, training with and without
mixed precision, prediction and the Predictor on the GPU. The oracle is the CPU path.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed

import tlcore
from test_distributed import WORKER, _env, _largest_difference

_needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="no CUDA device here (torch.cuda.is_available() is False); "
                                        "these run on a GPU machine")


def cuda(test):
    """A test that needs a CUDA device: marked `gpu` (select with -m gpu), skipped without one."""
    return pytest.mark.gpu(_needs_cuda(test))


def _data(per_class=24, batch_size=32):
    # Fashion-MNIST's test set alone, split in two: a GPU machine need not have the training set.
    ds = tlcore.fashion_mnist(train=False)
    ds = tlcore._core.Subset(ds, tlcore.per_class_subset(ds.labels(), per_class + 20, 0))
    return tlcore.ImageData(ds, val_split=20 / (per_class + 20), seed=7, image_size=28, channels=1,
                            batch_size=batch_size, train_transform="cifar-eval", eval_transform="cifar-eval")


def _learner(data, device, amp="off"):
    # No dropout: the CPU and CUDA generators draw different masks.
    return tlcore.Learner("simple_cnn", data, device=device, amp=amp, verbose=False, seed=3,
                          head="dropout_linear", dropout=0.0)


def test_fp16_needs_cuda():
    learner = _learner(_data(per_class=2), "cpu", amp="fp16")
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        learner.fit(1)


def test_device_names_are_checked():
    with pytest.raises(ValueError, match="device must be"):
        tlcore._core.resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            tlcore._core.resolve_device("cuda")
        assert tlcore._core.resolve_device("auto") == "cpu"


@cuda
def test_gpu_batches_are_pinned_uint8():
    data = _data(per_class=4)
    images, labels, _ = next(data.loader("train", for_gpu=True).batches())
    assert images.dtype == torch.uint8 and images.is_pinned()
    floats, _, _ = next(data.loader("train").batches())
    # normalised on the GPU the way the CPU pipeline normalises
    mean, std = data.train_pipeline.mean, data.train_pipeline.std
    on_gpu = (images.cuda().float() / 255 - mean[0]) / std[0]
    assert torch.allclose(on_gpu.cpu(), floats, atol=1e-5)


def _train_on_cpu_and_cuda(per_class, epochs):
    data = _data(per_class=per_class)
    cpu, gpu = _learner(data, "cpu"), _learner(data, "cuda")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    for learner in (cpu, gpu):
        learner.fit(epochs, lr=0.02, optimizer="sgd", momentum=0.9, restore_best=False)
    return cpu, gpu


@cuda
def test_a_training_step_on_cuda_matches_the_cpu():
    cpu, gpu = _train_on_cpu_and_cuda(per_class=3, epochs=1)  # 30 images: one batch
    a, b = cpu.model.state_dict(), gpu.model.state_dict()
    assert all(v.is_cuda for v in b.values())
    start = _learner(cpu.data, "cpu").model.state_dict()
    moved = max(float((a[k] - start[k]).detach().abs().max()) for k in a if a[k].is_floating_point())
    assert moved > 1e-3
    worst = _largest_difference(a, b)
    assert worst < 1e-4, worst


@cuda
def test_training_on_cuda_follows_the_cpu():
    # Weights cannot be compared after many steps: at this learning rate a 1e-6 relative
    # change of the initial weights moves them by ~2e-3 within two epochs (measured on the CPU).
    cpu, gpu = _train_on_cpu_and_cuda(per_class=24, epochs=2)
    for c, g in zip(cpu.history, gpu.history):
        assert g["train_loss"] == pytest.approx(c["train_loss"], rel=0.01)
        assert g["val_accuracy"] == pytest.approx(c["val_accuracy"], abs=0.02)


@cuda
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_learns_like_float32(amp):
    data = _data(per_class=60)
    ref, mixed = _learner(data, "cuda"), _learner(data, "cuda", amp)
    for learner in (ref, mixed):
        learner.fit(4, lr=1e-3)
    assert all(np.isfinite(h["train_loss"]) for h in mixed.history)
    assert mixed.history[-1]["train_loss"] < mixed.history[0]["train_loss"]
    assert mixed.history[-1]["val_accuracy"] > 0.5
    assert mixed.history[-1]["val_accuracy"] == pytest.approx(ref.history[-1]["val_accuracy"], abs=0.08)


@cuda
def test_predictions_on_cuda_match_the_cpu(tmp_path):
    data = _data(per_class=4)
    learner = _learner(data, "cuda")
    learner.fit(1, lr=1e-3)
    gpu_probs, labels, _ = learner.predictions("val")
    clf = tlcore.load(learner.save(tmp_path / "m.tlc"))  # a CPU copy
    image = data.val.image(0, channels=1)
    cpu_probs = clf.predict_proba([image])[0]
    assert torch.allclose(gpu_probs[0], cpu_probs, atol=1e-3)


@cuda
def test_predictor_batches_onto_the_gpu(tmp_path):
    data = _data(per_class=2)
    path = _learner(data, "cpu").save(tmp_path / "m.tlc")
    images = [data.val.image(i, channels=1) for i in range(8)]
    on_cpu = tlcore.Predictor(path, device="cpu").predict_many(images)
    on_gpu = tlcore.Predictor(path, device="cuda").predict_many(images)
    for gpu, cpu in zip(on_gpu, on_cpu):
        assert gpu["prediction"] == cpu["prediction"]
        assert gpu["confidence"] == pytest.approx(cpu["confidence"], abs=1e-3)
        assert gpu["energy"] == pytest.approx(cpu["energy"], abs=1e-3)


def _worker_env():
    # Loopback for the collectives' sockets: a sandboxed GPU machine's hostname may not resolve.
    return _env(GLOO_SOCKET_IFNAME="lo", NCCL_SOCKET_IFNAME="lo")


@cuda
@pytest.mark.slow
def test_two_ranks_on_one_gpu_match_one_rank_with_the_doubled_batch(tmp_path):
    """torch.distributed's Gloo reduces CUDA tensors; one step (30 images), compared like on the CPU."""
    args = ["--device", "cuda", "--epochs", "1", "--per-class", "3", "--no-augment", "--torch-distributed",
            "--test-set-only"]
    subprocess.run([sys.executable, str(WORKER), "--out", str(tmp_path / "one"), "--batch-size", "32", *args],
                   env=_worker_env(), check=True, timeout=300)
    tlcore.distributed.launch([sys.executable, str(WORKER), "--out", str(tmp_path / "two"), "--batch-size", "16",
                               *args], nproc=2, threads_per_rank=1, timeout_s=120, env=_worker_env())
    worst = _largest_difference(torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt"))
    assert worst < 1e-4, worst


NCCL_SCRIPT = """
import os, sys, torch, torch.distributed as dist, tlcore
sys.path.insert(0, sys.argv[1])
from test_cuda import _data, _learner, _largest_difference
os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(tlcore.distributed._free_port()))
dist.init_process_group("nccl", rank=0, world_size=1)
group = tlcore.distributed.wrap()
assert group.backend == "nccl", group.backend
on_gpu = group.all_reduce_sum(torch.arange(4.0, device="cuda"))
on_cpu = group.all_reduce_sum(torch.arange(4, dtype=torch.float64))  # a round trip through the GPU
assert on_gpu.is_cuda and on_gpu.tolist() == on_cpu.tolist() == [0, 1, 2, 3]
group.barrier()
data = _data(per_class=3)
alone, grouped = _learner(data, "cuda"), _learner(data, "cuda")
grouped.group = group  # a world of one: the gradient all-reduce must change nothing
for learner in (alone, grouped):
    learner.fit(1, lr=0.02, optimizer="sgd", momentum=0.9, restore_best=False)
print(_largest_difference(alone.model.state_dict(), grouped.model.state_dict()))
dist.destroy_process_group()
"""


@pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_nccl_available(),
                    reason="this torch has no NCCL")
@cuda
def test_an_nccl_group_runs_the_trainers_collectives():
    out = subprocess.run([sys.executable, "-c", NCCL_SCRIPT, str(Path(__file__).parent)], env=_worker_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert float(out.stdout.strip().splitlines()[-1]) < 1e-5
