"""SSIM maps against scikit-image's reference implementation."""

from __future__ import annotations

import numpy as np
import pytest

skimage_metrics = pytest.importorskip("skimage.metrics")
ndimage = pytest.importorskip("scipy.ndimage")

from bridgedepth.io import read_image  # noqa: E402
from bridgedepth.labels.ssim import SSIMWorkspace, gaussian_kernel, numba_available, ssim_map  # noqa: E402

PAD = 5  # skimage's interior: (win_size - 1) // 2 with 11 taps

# numba is a core dependency: its kernels must be there, not silently skipped
BACKENDS = ["opencv", "numba"]


def test_numba_kernels_are_installed_and_used_by_default():
    assert numba_available()
    assert SSIMWorkspace().backend == "numba"
    assert SSIMWorkspace(backend="opencv").backend == "opencv"
    assert SSIMWorkspace(sigma=3.0).backend == "opencv"  # 23 taps: wider than the fused kernels


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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels", [0, 3])
def test_random_images_float64_exact(channels, backend):
    rng = np.random.default_rng(0)
    shape = (57, 73) if channels == 0 else (57, 73, channels)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-40, 40, shape), 0, 255).astype(np.uint8)
    ours = ssim_map(x, y, dtype=np.float64, backend=backend)
    ref = skimage_map(x, y)
    assert ours.shape == shape[:2] and ours.dtype == np.float32
    assert interior_err(ours, ref) < 1e-4
    # same border handling too (mirror with edge repeated), so the whole map agrees
    assert float(np.abs(ours - ref).max()) < 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["noise", "blur", "recolour", "shift", "flat", "saturated"])
def test_real_image_pairs_colour_and_grey(real, kind, backend):
    other = perturbations(real)[kind]
    ref = skimage_map(other, real)
    exact = ssim_map(other, real, dtype=np.float64, backend=backend)
    assert interior_err(exact, ref) < 1e-4
    assert float(np.abs(exact - ref).max()) < 1e-6
    fast = ssim_map(other, real, dtype=np.float32, backend=backend)
    # float32: E[x^2] - E[x]^2 cancels in flat regions (denominator only C2); documented bound
    assert interior_err(fast, ref) < 2e-4
    gx, gy = other[..., 1].copy(), real[..., 1].copy()
    assert interior_err(ssim_map(gx, gy, dtype=np.float64, backend=backend), skimage_map(gx, gy)) < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_close_on_typical_pairs(real, backend):
    # the pairs the mask stage sees (a perturbed copy of an image) stay within 1e-4 in float32
    for kind in ("noise", "blur", "recolour"):
        other = perturbations(real)[kind]
        fast = ssim_map(other, real, dtype=np.float32, backend=backend)
        assert interior_err(fast, skimage_map(other, real)) < 1e-4


def scipy_ssim(x: np.ndarray, y: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """skimage's formula with SciPy's filter directly (skimage refuses images under 11 pixels)."""
    x3 = x.astype(np.float64).reshape(*x.shape[:2], -1)
    y3 = y.astype(np.float64).reshape(*y.shape[:2], -1)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    maps = []
    for ch in range(x3.shape[2]):
        f = lambda a: ndimage.gaussian_filter(a, sigma, truncate=3.5, mode="reflect")  # noqa: E731
        a, b = x3[..., ch], y3[..., ch]
        ux, uy = f(a), f(b)
        vx, vy, vxy = f(a * a) - ux * ux, f(b * b) - uy * uy, f(a * b) - ux * uy
        maps.append((2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2)))
    return np.mean(maps, axis=0)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (4, 3), (5, 5, 3), (6, 13, 3), (12, 2, 3), (23, 17, 2), (11, 11, 4)])
def test_numba_small_and_odd_shapes_match_scipy(shape):
    # borders that reflect more than once (sides below the 5-pixel radius), 1-pixel images, odd channel counts
    rng = np.random.default_rng(sum(shape))
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-30, 30, shape), 0, 255).astype(np.uint8)
    ref = scipy_ssim(x, y)
    for dtype, tol in ((np.float64, 1e-6), (np.float32, 2e-4)):
        ours = ssim_map(x, y, dtype=dtype, backend="numba")
        assert ours.shape == shape[:2] and ours.dtype == np.float32
        assert float(np.abs(ours - ref).max()) < tol, (dtype, shape)


def test_numba_and_opencv_masks_agree_at_518(shared_data):
    # the mask stage's case: float32 maps of a 518x518 colour pair, thresholded at 0.85
    import cv2

    img = read_image(shared_data / "rgbd/open3d/color/00000.jpg")
    y = np.ascontiguousarray(img[:518, :518])
    x = cv2.GaussianBlur(y, (0, 0), 0.8)
    a = ssim_map(x, y, dtype=np.float32, backend="numba")
    b = ssim_map(x, y, dtype=np.float32, backend="opencv")
    assert float(np.abs(a - b).max()) < 2e-4
    assert float(np.mean((a > 0.85) == (b > 0.85))) >= 0.999


def test_numba_workspace_reuse_and_fallbacks(real):
    ws = SSIMWorkspace(dtype=np.float32, backend="numba")
    ws.set_reference(real)
    other = perturbations(real)["noise"]
    first = ws.compare(other).copy()
    real_copy = real.copy()
    ws.set_reference(real_copy)
    real_copy[:] = 0  # the workspace keeps its own copy of the reference
    np.testing.assert_array_equal(ws.compare(other), first)
    # a float image against the uint8 reference goes through the OpenCV path, same values
    as_float = ws.compare(other.astype(np.float32))
    assert float(np.abs(as_float - first).max()) < 2e-4
    # a float reference, and a new shape
    ws.set_reference(real.astype(np.float64))
    assert float(np.abs(ws.compare(other) - first).max()) < 2e-4
    ws.set_reference(real[:40, :50])
    assert ws.compare(real[:40, :50]).shape == (40, 50)
    with pytest.raises(ValueError, match="23 taps"):
        SSIMWorkspace(sigma=3.0, backend="numba")
    with pytest.raises(ValueError, match="backend must be one of"):
        SSIMWorkspace(backend="cuda")


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
