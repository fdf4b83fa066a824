"""`--augment` / ImageData(train_transform="flip,rotate=0.2,...") against the definitions of
Keras' preprocessing layers, on a real photo: RandomFlip("horizontal"), RandomRotation(f)
(an angle within ±f x 2π), RandomZoom(f) (a scale in [1-f, 1+f]), RandomContrast(f)
(a factor in [1-f, 1+f]; tlcore blends with the grey mean, as torchvision does) and
RandomTranslation(f, f, fill_mode="constant") (a shift of up to f x the side)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tlcore import transforms as T

SIZE = 96


@pytest.fixture(scope="module")
def photo(shared_dir: Path) -> np.ndarray:
    path = shared_dir / "data" / "photos" / "dog.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return T.read_image(str(path))


@pytest.fixture(scope="module")
def base() -> T.Pipeline:
    return T.Pipeline.preset("imagenet-eval", SIZE)


def draws(op: T.Op, n: int = 4000) -> np.ndarray:
    return np.array([op.sample(T.Rng(1, 0, i)) for i in range(n)])


def the_op(pipeline: T.Pipeline) -> T.Op:
    """The augmentation after the eval preset's resize and crop."""
    return pipeline.ops[-1]


def test_rotation_factor_is_a_fraction_of_a_full_turn(photo, base):
    pipeline = T.augmentation("rotate=0.2", base)
    angles = draws(the_op(pipeline))
    assert angles.min() >= -0.2 * 360 and angles.max() <= 0.2 * 360  # ±0.2 x 2π rad = ±72°
    assert angles.min() < -68 and angles.max() > 68 and abs(angles.mean()) < 3  # uniform over it
    resized = base(photo)
    centre = ((SIZE - 1) / 2, (SIZE - 1) / 2)
    for i in range(3):
        angle = the_op(pipeline).sample(T.Rng(5, 0, i))
        expected = cv2.warpAffine(resized, cv2.getRotationMatrix2D(centre, angle, 1.0), (SIZE, SIZE),
                                  flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        got = pipeline(photo, seed=5, epoch=0, index=i)
        assert np.abs(got.astype(int) - expected.astype(int)).mean() < 1.0, angle


def test_zoom_factor_is_the_scale_range(photo, base):
    pipeline = T.augmentation("zoom=0.2", base)
    scales = draws(the_op(pipeline))
    assert scales.min() >= 0.8 and scales.max() <= 1.2 and scales.min() < 0.81 and scales.max() > 1.19
    resized = base(photo)
    c = (SIZE - 1) / 2
    for i in range(3):
        f = the_op(pipeline).sample(T.Rng(5, 0, i))
        # Keras: output pixel x reads input c + (x - c) * f (f > 1 zooms out).
        to_input = np.float64([[f, 0, c * (1 - f)], [0, f, c * (1 - f)]])
        expected = cv2.warpAffine(resized, to_input, (SIZE, SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        got = pipeline(photo, seed=5, epoch=0, index=i)
        assert np.abs(got.astype(int) - expected.astype(int)).mean() < 1.0, f


def test_contrast_factor_is_the_blend_range(photo, base):
    pipeline = T.augmentation("contrast=0.1", base)
    factors = np.array([s[1] for s in draws(the_op(pipeline))])  # (brightness, contrast, saturation)
    assert factors.min() >= 0.9 and factors.max() <= 1.1 and factors.min() < 0.905 and factors.max() > 1.095
    resized = base(photo).astype(np.float64)
    grey_mean = (resized @ [0.299, 0.587, 0.114]).mean()
    for i in range(3):
        f = the_op(pipeline).sample(T.Rng(5, 0, i))[1]
        expected = np.clip(f * resized + (1 - f) * grey_mean, 0, 255)
        got = pipeline(photo, seed=5, epoch=0, index=i)
        assert np.abs(got - expected).max() <= 1.5, f


def test_flip_mirrors_half_of_the_draws(photo, base):
    pipeline = T.augmentation("flip", base)
    resized = base(photo)
    mirrored = [np.array_equal(pipeline(photo, seed=3, epoch=0, index=i), resized[:, ::-1]) for i in range(200)]
    kept = [np.array_equal(pipeline(photo, seed=3, epoch=0, index=i), resized) for i in range(200)]
    assert all(m != k for m, k in zip(mirrored, kept)) and 70 < sum(mirrored) < 130


def test_translate_shifts_by_whole_pixels_within_the_factor(photo, base):
    """Each draw is the resized image moved by (dy, dx), |d| <= 0.03 x 96 px (3), the border
    black; every shift in the range comes up."""
    pipeline = T.augmentation("translate=0.03", base)
    resized = base(photo)
    seen = set()
    for i in range(300):
        got = pipeline(photo, seed=2, epoch=0, index=i)
        matches = []
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                moved = np.zeros_like(resized)
                moved[max(dy, 0):SIZE + min(dy, 0), max(dx, 0):SIZE + min(dx, 0)] = \
                    resized[max(-dy, 0):SIZE + min(-dy, 0), max(-dx, 0):SIZE + min(-dx, 0)]
                if np.array_equal(got, moved):
                    matches.append((dy, dx))
        assert len(matches) == 1, i
        seen.add(matches[0])
    assert seen == {(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)}


def test_the_workshop_chain_keeps_the_eval_size_and_normalisation(base):
    pipeline = T.augmentation("flip,rotate=0.2,zoom=0.2,contrast=0.1", base)
    assert pipeline.size == base.size and pipeline.mean == base.mean and pipeline.std == base.std
    assert [type(op).__name__ for op in pipeline.ops[-4:]] == [
        "RandomHorizontalFlip", "RandomRotation", "RandomZoom", "ColorJitter"]


@pytest.mark.parametrize("text", ["spin=0.2", "rotate=x", "zoom=1.5", "flip,,contrast=-1"])
def test_bad_augmentations_say_what_is_wrong(base, text):
    with pytest.raises(ValueError, match="augmentation"):
        T.augmentation(text, base)
