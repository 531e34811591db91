"""Colour jitter as one affine cv2.transform pass against the step-by-step NumPy definition."""

import numpy as np
import pytest

from bridgedepth.data.augment import color_jitter


def _reference(rng, rgb, strength):
    b, c, s = (1.0 + float(rng.uniform(-strength, strength)) for _ in range(3))
    x = rgb.astype(np.float64) * b
    mean = x.mean()
    x = (x - mean) * c + mean
    gray = x.mean(axis=2, keepdims=True)
    x = (x - gray) * s + gray
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape", [(128, 128, 3), (37, 91, 3), (20, 30, 1), (16, 16, 4)])
@pytest.mark.parametrize("strength", [0.2, 0.4, 0.9])
def test_jitter_matches_the_stepwise_definition(shape, strength):
    img = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    for seed in range(5):
        got = color_jitter(np.random.default_rng(seed), img, strength)
        ref = _reference(np.random.default_rng(seed), img, strength)
        assert got.shape == img.shape and got.dtype == np.uint8
        d = np.abs(got.astype(int) - ref.astype(int))
        assert d.max() <= 1 and (d > 0).mean() < 1e-3, (seed, d.max(), (d > 0).mean())


def test_jitter_views_and_the_random_stream():
    img = np.random.default_rng(2).integers(0, 256, (64, 80, 3), dtype=np.uint8)
    for view in (img[5:50, 7:70], img[:, ::-1], img[::-1]):
        r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
        got = color_jitter(r1, view, 0.3)
        ref = _reference(r2, np.ascontiguousarray(view), 0.3)
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
        assert r1.random() == r2.random()  # the same three draws: later augmentations see the same stream
    assert color_jitter(np.random.default_rng(0), img, 0.0) is img
    # a photograph-like image: smooth gradients, saturated corners
    y, x = np.mgrid[0:96, 0:96]
    photo = np.stack([x * 255 // 95, y * 255 // 95, (x + y) * 255 // 190], -1).astype(np.uint8)
    got = color_jitter(np.random.default_rng(4), photo, 0.4)
    ref = _reference(np.random.default_rng(4), photo, 0.4)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
