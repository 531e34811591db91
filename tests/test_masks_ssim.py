"""SSIM maps against scikit-image's reference implementation."""

from __future__ import annotations

import numpy as np
import pytest

skimage_metrics = pytest.importorskip("skimage.metrics")
ndimage = pytest.importorskip("scipy.ndimage")

from bridgedepth.io import read_image  # noqa: E402
from bridgedepth.labels.ssim import SSIMWorkspace, gaussian_kernel, ssim_map  # noqa: E402

PAD = 5  # skimage's interior: (win_size - 1) // 2 with 11 taps


def skimage_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True, data_range=255)
    if x.ndim == 3:
        return skimage_metrics.structural_similarity(x, y, channel_axis=2, **kw)[1].mean(axis=2)
    return skimage_metrics.structural_similarity(x, y, **kw)[1]


def interior_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b)[PAD:-PAD, PAD:-PAD].max())


@pytest.fixture(scope="module")
def real(shared_data):
    img = read_image(shared_data / "rgbd/nyu_sync/rgb/rgb_00000.jpg")
    return np.ascontiguousarray(img[100:260, 200:420])  # 160 x 220, textured and flat parts


def perturbations(img: np.ndarray) -> dict[str, np.ndarray]:
    import cv2

    rng = np.random.default_rng(1)
    f = img.astype(np.float32)
    return {
        "noise": np.clip(f + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8),
        "blur": cv2.GaussianBlur(img, (0, 0), 1.3),
        "recolour": np.clip(f * 1.15 - 20, 0, 255).astype(np.uint8),
        "shift": np.roll(img, (3, -4), axis=(0, 1)),
        "flat": np.full_like(img, 200),
        "saturated": np.where(img > 128, 255, 0).astype(np.uint8),
    }


def test_kernel_matches_scipy_gaussian():
    k = gaussian_kernel(1.5)
    assert k.shape == (11,)
    impulse = np.zeros(31)
    impulse[15] = 1.0
    ref = ndimage.gaussian_filter1d(impulse, 1.5, truncate=3.5)
    np.testing.assert_allclose(k, ref[10:21], atol=1e-15)
    assert gaussian_kernel(1.0).shape == (9,)  # r = int(3.5 + 0.5) = 4


@pytest.mark.parametrize("channels", [0, 3])
def test_random_images_float64_exact(channels):
    rng = np.random.default_rng(0)
    shape = (57, 73) if channels == 0 else (57, 73, channels)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-40, 40, shape), 0, 255).astype(np.uint8)
    ours = ssim_map(x, y, dtype=np.float64)
    ref = skimage_map(x, y)
    assert ours.shape == shape[:2] and ours.dtype == np.float32
    assert interior_err(ours, ref) < 1e-4
    # same border handling too (mirror with edge repeated), so the whole map agrees
    assert float(np.abs(ours - ref).max()) < 1e-6


@pytest.mark.parametrize("kind", ["noise", "blur", "recolour", "shift", "flat", "saturated"])
def test_real_image_pairs_colour_and_grey(real, kind):
    other = perturbations(real)[kind]
    ref = skimage_map(other, real)
    exact = ssim_map(other, real, dtype=np.float64)
    assert interior_err(exact, ref) < 1e-4
    assert float(np.abs(exact - ref).max()) < 1e-6
    fast = ssim_map(other, real, dtype=np.float32)
    # float32: E[x^2] - E[x]^2 cancels in flat regions (denominator only C2); documented bound
    assert interior_err(fast, ref) < 2e-4
    gx, gy = other[..., 1].copy(), real[..., 1].copy()
    assert interior_err(ssim_map(gx, gy, dtype=np.float64), skimage_map(gx, gy)) < 1e-4


def test_float32_close_on_typical_pairs(real):
    # the pairs the mask stage sees (a perturbed copy of an image) stay within 1e-4 in float32
    for kind in ("noise", "blur", "recolour"):
        other = perturbations(real)[kind]
        assert interior_err(ssim_map(other, real, dtype=np.float32), skimage_map(other, real)) < 1e-4


def test_identical_is_one_and_workspace_reuse(real):
    ws = SSIMWorkspace(dtype=np.float32, strip_rows=16)  # several strips with halos
    ws.set_reference(real)
    out = np.empty(real.shape[:2], np.float32)
    s = ws.compare(real, out=out)
    assert s is out
    np.testing.assert_allclose(s, 1.0, atol=1e-5)
    # one reference, several comparisons, and strips give the same map as whole-image filtering
    other = perturbations(real)["noise"]
    whole = SSIMWorkspace(dtype=np.float64, strip_rows=10_000)
    whole.set_reference(real)
    strips = SSIMWorkspace(dtype=np.float64, strip_rows=11)
    strips.set_reference(real)
    np.testing.assert_allclose(strips.compare(other), whole.compare(other), atol=1e-9)
    # a new shape reallocates
    ws.set_reference(real[:40, :50])
    assert ws.compare(real[:40, :50]).shape == (40, 50)


def test_errors():
    ws = SSIMWorkspace()
    with pytest.raises(RuntimeError):
        ws.compare(np.zeros((20, 20), np.uint8))
    ws.set_reference(np.zeros((20, 20), np.uint8))
    with pytest.raises(ValueError):
        ws.compare(np.zeros((20, 21), np.uint8))
    with pytest.raises(ValueError):
        ssim_map(np.zeros((20, 20), np.uint8), np.zeros((21, 20), np.uint8))
    with pytest.raises(ValueError):
        SSIMWorkspace(dtype=np.int32)
