"""The CUDA path: pinned uint8 batches normalised on the GPU, training with and without
mixed precision, prediction and the Predictor on the GPU. The oracle is the CPU path.
"""
import numpy as np
import pytest
import torch

import tlcore

cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                          reason="no CUDA device here (torch.cuda.is_available() is False); "
                                 "these run on a GPU machine")


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
    assert max(float((a[k] - start[k]).abs().max()) for k in a if a[k].is_floating_point()) > 1e-3
    worst = max(float((a[k].float() - b[k].detach().float().cpu()).abs().max()) for k in a)
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
def test_predictions_on_cuda_match_the_cpu():
    data = _data(per_class=4)
    learner = _learner(data, "cuda")
    learner.fit(1, lr=1e-3)
    gpu_probs, labels, _ = learner.predictions("val")
    clf = tlcore.Classifier(tlcore.learner._payload(learner.arch, learner.model, data.classes, learner.head,
                                                    data.eval_pipeline))
    image = data.val.image(0, channels=1)
    cpu_probs = clf.predict_proba([image])[0]
    assert torch.allclose(gpu_probs[0], cpu_probs, atol=1e-3)


@cuda
def test_predictor_batches_onto_the_gpu():
    model = tlcore._core.create_model("resnet18", 10)
    model.eval()
    pipeline = tlcore.Pipeline.preset("imagenet-eval", 64, 3)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (80, 96, 3), dtype=np.uint8) for _ in range(8)]
    on_cpu = tlcore._core.Predictor(model, pipeline, tlcore._core.PredictorOptions())
    cpu_probs = [on_cpu.predict_array(im) for im in images]
    options = tlcore._core.PredictorOptions()
    options.device = "cuda"
    on_gpu = tlcore._core.Predictor(model, pipeline, options)
    assert on_gpu.device.startswith("cuda")
    for im, ref in zip(images, cpu_probs):
        assert torch.allclose(on_gpu.predict_array(im), ref, atol=1e-3)
