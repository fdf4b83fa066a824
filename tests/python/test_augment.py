"""Augmentation ops and pipelines against torchvision (PIL), PIL and numpy."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

from tlcore import _core

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def photos(shared_dir: Path) -> list[Path]:
    paths = sorted((shared_dir / "data" / "photos").glob("*.jpg"))
    if not paths:
        pytest.skip(f"no photos in {shared_dir / 'data' / 'photos'}")
    return paths


def smooth_image(height: int, width: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    image = np.stack(
        [
            128 + 100 * np.sin(x * 0.05) * np.cos(y * 0.04),
            128 + 90 * np.cos(x * 0.03 + y * 0.02),
            x * 255.0 / width,
        ],
        axis=-1,
    )
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def random_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width) if channels == 0 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def torchvision_eval(image: Image.Image, size: int = 224) -> np.ndarray:
    transform = T.Compose(
        [
            T.Resize(round(size * 256 / 224)),
            T.CenterCrop(size),
            T.ToTensor(),
            T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    return transform(image).numpy()


def compare_eval_preset(
    photos: list[Path], load: Callable[[Path, Image.Image], np.ndarray]
) -> list[tuple[float, float]]:
    """(mean, max) abs difference per photo of the imagenet-eval preset vs torchvision."""
    pipeline = _core.Pipeline.preset("imagenet-eval", 224)
    diffs = []
    for path in photos:
        with Image.open(path) as pil:
            rgb = pil.convert("RGB")
        expected = torchvision_eval(rgb)
        ours = pipeline.normalize(pipeline(load(path, rgb)))
        assert ours.shape == expected.shape == (3, 224, 224)
        assert ours.dtype == np.float32
        diff = np.abs(ours - expected)
        diffs.append((float(diff.mean()), float(diff.max())))
        log.info("%s %dx%d: mean %.2e max %.2e", path.name, rgb.height, rgb.width, *diffs[-1])
        assert diff.mean() < 0.03, f"{path.name}: mean abs diff {diff.mean():.4f}"
    return diffs


def test_imagenet_eval_preset_matches_torchvision_on_photos(photos: list[Path]) -> None:
    diffs = compare_eval_preset(photos, lambda path, rgb: np.asarray(rgb))
    log.info("imagenet-eval vs torchvision (PIL decode): worst mean %.2e, worst max %.2e",
             max(d[0] for d in diffs), max(d[1] for d in diffs))


def test_imagenet_eval_preset_with_tlcore_decoder(photos: list[Path]) -> None:
    if not hasattr(_core, "read_image"):
        pytest.skip("this build of tlcore._core has no read_image")
    diffs = compare_eval_preset(photos, lambda path, rgb: _core.read_image(str(path)))
    log.info("imagenet-eval vs torchvision (tlcore decode): worst mean %.2e, worst max %.2e",
             max(d[0] for d in diffs), max(d[1] for d in diffs))


def test_imagenet_eval_preset_with_reduced_decode(photos: list[Path], tmp_path: Path) -> None:
    """min_decode_side lets large JPEGs decode at a reduced scale without changing the result."""
    if not hasattr(_core, "read_image"):
        pytest.skip("this build of tlcore._core has no read_image")
    min_side = _core.Pipeline.preset("imagenet-eval", 224).min_decode_side
    large = []
    for path in photos:
        # The photos are too small to reduce: enlarge them to a 1100-pixel shorter side.
        with Image.open(path) as pil:
            rgb = pil.convert("RGB")
        scale = 1100 / min(rgb.size)
        size = (round(rgb.width * scale), round(rgb.height * scale))
        big = rgb.resize(size, Image.Resampling.LANCZOS)
        large.append(tmp_path / path.name)
        big.save(large[-1], quality=95)

    def load(path: Path, rgb: Image.Image) -> np.ndarray:
        image = _core.read_image(str(path), min_side=min_side)
        assert min(image.shape[:2]) == 550, "expected a decode at half scale"
        return image

    diffs = compare_eval_preset(large, load)
    log.info("imagenet-eval vs torchvision (tlcore decode at 1/2, min_side=%d): "
             "worst mean %.2e, worst max %.2e",
             min_side, max(d[0] for d in diffs), max(d[1] for d in diffs))


def test_random_resized_crop_draws_match_torchvision_statistics() -> None:
    height, width, draws = 375, 500, 2000
    op = _core.RandomResizedCrop(224)
    ours = np.array([op.sample(height, width, _core.Rng(0, 0, i)) for i in range(draws)])
    torch.manual_seed(0)
    image = torch.empty(3, height, width)
    theirs = np.array(
        [T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(draws)]
    )
    top, left, h, w = ours.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= height).all() and (left + w <= width).all()

    def stats(boxes: np.ndarray) -> tuple[float, float]:
        area = boxes[:, 2] * boxes[:, 3] / (height * width)
        return float(area.mean()), float(np.log(boxes[:, 3] / boxes[:, 2]).mean())

    (our_area, our_log_ratio), (their_area, their_log_ratio) = stats(ours), stats(theirs)
    log.info("mean area fraction: tlcore %.4f torchvision %.4f", our_area, their_area)
    # Area fractions have a standard deviation near 0.25: over 2000 draws the
    # difference of two means has a standard error near 0.008.
    assert abs(our_area - their_area) < 0.03
    assert abs(our_log_ratio - their_log_ratio) < 0.02
    # Every draw lands on the torchvision constraints (up to rounding).
    assert (h * w >= 0.08 * height * width * 0.97).all()


def test_random_resized_crop_applies_its_box_like_torchvision() -> None:
    image = smooth_image(300, 400)
    op = _core.RandomResizedCrop(64)
    for index in range(5):
        top, left, h, w = op.sample(300, 400, _core.Rng(3, 0, index))
        expected = np.asarray(F.resized_crop(Image.fromarray(image), top, left, h, w, [64, 64]))
        ours = op(image, seed=3, index=index)
        assert ours.shape == (64, 64, 3)
        assert np.abs(ours.astype(float) - expected).mean() < 1.5


def test_flip_equals_numpy() -> None:
    image = random_image(17, 23)
    flip = _core.RandomHorizontalFlip(p=1.0)
    np.testing.assert_array_equal(flip(image), image[:, ::-1])
    np.testing.assert_array_equal(_core.RandomHorizontalFlip(p=0.0)(image), image)
    gray = random_image(9, 11, channels=0)
    np.testing.assert_array_equal(flip(gray), gray[:, ::-1, None])
    # A strided view is accepted (copied), not misread.
    np.testing.assert_array_equal(flip(image[:, ::-1]), image)
    flips = [_core.RandomHorizontalFlip().sample(_core.Rng(0, 0, i)) for i in range(1000)]
    assert 420 < sum(flips) < 580


def test_center_crop_with_padding_equals_torchvision() -> None:
    image = random_image(25, 35)
    for size in [(40, 30), (7, 8), (25, 35), (26, 3)]:
        expected = F.center_crop(torch.from_numpy(image).permute(2, 0, 1), list(size))
        np.testing.assert_array_equal(
            _core.CenterCrop(size)(image), expected.permute(1, 2, 0).numpy(), err_msg=str(size)
        )


def test_resize_equals_pil_bilinear(photos: list[Path]) -> None:
    with Image.open(photos[0]) as pil:
        rgb = pil.convert("RGB")
    image = np.asarray(rgb)
    for size in [256, 97]:
        expected = np.asarray(F.resize(rgb, size))
        np.testing.assert_array_equal(_core.Resize(size)(image), expected)
    gray = np.asarray(rgb.convert("L"))
    expected = np.asarray(Image.fromarray(gray).resize((50, 33), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(_core.Resize((33, 50))(gray)[..., 0], expected)
    # Upscaling: OpenCV's bilinear, which rounds differently by at most one level.
    small = smooth_image(20, 30)
    expected = np.asarray(Image.fromarray(small).resize((75, 50), Image.Resampling.BILINEAR))
    assert np.abs(_core.Resize((50, 75))(small).astype(int) - expected).max() <= 1


def test_resize_follows_torchvision_sizes() -> None:
    image = random_image(333, 777)
    assert _core.Resize(256)(image).shape == (256, 597, 3)
    assert _core.Resize(256)(image.transpose(1, 0, 2)).shape == (597, 256, 3)
    assert _core.Resize((50, 60))(image).shape == (50, 60, 3)


def test_pad_random_crop_equals_numpy_pad() -> None:
    image = random_image(32, 32)
    for mode, numpy_mode in [("zero", "constant"), ("reflect", "reflect")]:
        op = _core.PadRandomCrop(32, 4, padding_mode=mode)
        padded = np.pad(image, ((4, 4), (4, 4), (0, 0)), mode=numpy_mode)
        for index in range(20):
            top, left, h, w = op.sample(32, 32, _core.Rng(1, 0, index))
            assert -4 <= top <= 4 and -4 <= left <= 4 and (h, w) == (32, 32)
            np.testing.assert_array_equal(
                op(image, seed=1, index=index), padded[top + 4 : top + 36, left + 4 : left + 36]
            )
    with pytest.raises(ValueError, match="padding mode"):
        _core.PadRandomCrop(32, 4, padding_mode="edge")


def test_grayscale_equals_pil() -> None:
    image = random_image(40, 50)
    expected = np.asarray(Image.fromarray(image).convert("L"))
    ours = _core.Grayscale3()(image)
    assert ours.shape == (40, 50, 3)
    for c in range(3):
        np.testing.assert_array_equal(ours[..., c], expected)


def test_rotation_matches_pil_bilinear() -> None:
    image = smooth_image(101, 121)
    ours = _core.RandomRotation((30, 30))(image)
    expected = np.asarray(
        F.rotate(Image.fromarray(image), 30, interpolation=T.InterpolationMode.BILINEAR)
    )
    # Compare where both have image content (away from the rotated border).
    inside = (ours.min(axis=-1) > 0) & (expected.min(axis=-1) > 0)
    inside[:10], inside[-10:], inside[:, :10], inside[:, -10:] = False, False, False, False
    assert inside.sum() > 0.3 * inside.size
    assert np.abs(ours.astype(float) - expected)[inside].mean() < 1.0


def test_color_jitter_matches_torchvision_adjustments() -> None:
    image = smooth_image(48, 64)
    op = _core.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)
    # torchvision on floats in [0, 1]: the exact blends, with no rounding between steps
    # (its uint8 path truncates each step, a bias tlcore's rounding avoids).
    tensor = torch.from_numpy(image).permute(2, 0, 1).double() / 255
    for index in range(5):
        b, c, s = op.sample(_core.Rng(7, 0, index))
        assert all(0.6 <= f < 1.4 for f in (b, c, s))
        expected = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(tensor, b), c), s)
        ours = op(image, seed=7, index=index)
        diff = np.abs(ours - expected.permute(1, 2, 0).numpy() * 255)
        assert diff.max() <= 2.0 and diff.mean() < 0.6, (diff.max(), diff.mean())
    np.testing.assert_array_equal(_core.ColorJitter()(image), image)


def test_normalize_equals_numpy_reference() -> None:
    pipeline = _core.Pipeline([], 16, IMAGENET_MEAN, IMAGENET_STD)
    image = random_image(16, 16)
    expected = (image.astype(np.float64) / 255 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(pipeline.normalize(image), expected.transpose(2, 0, 1), atol=1e-5)
    gray = _core.Pipeline([], (16, 8), [0.5], [0.25], channels=1)
    plane = random_image(16, 8, channels=0)
    np.testing.assert_allclose(gray.normalize(plane)[0], (plane / 255 - 0.5) / 0.25, atol=1e-5)


def test_pipeline_is_deterministic_per_seed_triple() -> None:
    pipeline = _core.Pipeline.preset("imagenet-train", 64)
    image = smooth_image(120, 160)
    first = pipeline(image, seed=5, epoch=2, index=9)
    np.testing.assert_array_equal(first, pipeline(image, seed=5, epoch=2, index=9))
    assert first.shape == (64, 64, 3) and first.dtype == np.uint8
    others = [pipeline(image, seed=5, epoch=2, index=i) for i in range(10, 20)]
    assert all(not np.array_equal(first, other) for other in others)
    assert not np.array_equal(first, pipeline(image, seed=5, epoch=3, index=9))


def test_presets_and_their_reprs() -> None:
    pipeline = _core.Pipeline.preset("imagenet-eval", 224)
    assert repr(pipeline) == (
        "Pipeline([Resize(256), CenterCrop((224, 224))], size=(224, 224), "
        "mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), channels=3)"
    )
    assert pipeline.size == (224, 224) and pipeline.channels == 3
    assert pipeline.min_decode_side == 512  # twice the resize: Pillow's reducing gap
    assert [repr(op) for op in pipeline.ops] == ["Resize(256)", "CenterCrop((224, 224))"]
    assert isinstance(pipeline.ops[0], _core.Resize)
    train = _core.Pipeline.preset("imagenet-train", 224)
    assert train.min_decode_side == math.ceil(2 * 224 / math.sqrt(0.08 * 3 / 4))
    cifar = _core.Pipeline.preset("cifar-train", 32, channels=1)
    assert cifar.channels == 1 and len(cifar.mean) == 1
    assert cifar(random_image(32, 32, channels=0)).shape == (32, 32, 1)
    assert _core.Pipeline.preset("cifar-eval", 32)(random_image(32, 32)).shape == (32, 32, 3)


def test_errors_are_value_errors_with_reasons() -> None:
    with pytest.raises(ValueError, match="known presets: imagenet-train, imagenet-eval"):
        _core.Pipeline.preset("imagenet", 224)
    pipeline = _core.Pipeline.preset("cifar-eval", 32)
    with pytest.raises(ValueError, match=r"Pipeline\(\[\].*40x40x3"):
        pipeline(random_image(40, 40))
    with pytest.raises(ValueError, match="uint8"):
        pipeline(np.zeros((32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        pipeline(np.zeros((32, 32, 4), np.uint8))
    with pytest.raises(ValueError, match="std"):
        _core.Pipeline([], 32, [0.5] * 3, [0.5, 0.0, 0.5])
    with pytest.raises(ValueError, match="mean and std need one value per channel"):
        _core.Pipeline([], 32, [0.5], [0.5])
    with pytest.raises(ValueError, match="scale"):
        _core.RandomResizedCrop(224, scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="p must be in"):
        _core.RandomHorizontalFlip(p=1.5)
