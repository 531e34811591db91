"""The mask stage's fast paths give the results of the straightforward OpenCV calls they replace."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bridgedepth.config import LabelConfig
from bridgedepth.io import read_image
from bridgedepth.labels.masks import MaskComputer, hamming_cross_check, hamming_distances


@pytest.fixture(scope="module")
def pairs(shared_data):
    """(generated, original) 518x518 pairs of real fixtures: shifted, recoloured+noisy, warped."""
    rgbd = shared_data / "rgbd"
    rng = np.random.default_rng(5)
    out = []
    for name in ("open3d/color/00000.jpg", "nyu_sync/rgb/rgb_00100.jpg"):
        img = read_image(rgbd / name)
        img = cv2.resize(img, (700, 560), interpolation=cv2.INTER_LINEAR)
        orig = np.ascontiguousarray(img[20:538, 90:608])
        out.append((np.ascontiguousarray(img[26:544, 81:599]), orig))
        noisy = np.clip(orig * np.array([1.1, 1.0, 0.9]) + rng.normal(0, 6, orig.shape), 0, 255)
        out.append((noisy.astype(np.uint8), orig))
        src = np.float32([[0, 0], [518, 0], [518, 518], [0, 518]])
        hm = cv2.getPerspectiveTransform(src, src + rng.uniform(-9, 9, (4, 2)).astype(np.float32))
        out.append((cv2.warpPerspective(orig, hm, (518, 518), borderMode=cv2.BORDER_REFLECT), orig))
    return out


@pytest.mark.parametrize("backend", ["auto", "numpy"])
def test_hamming_cross_check_equals_bfmatcher(pairs, backend):
    """Both matchers (the Numba kernel and the NumPy distance matrix) give BFMatcher's cross-checked
    matches, in its order, on real ORB descriptors, odd lengths, duplicates and empty sets."""
    orb = cv2.ORB_create(500)
    for gen, orig in pairs[:3]:
        _, da = orb.detectAndCompute(cv2.cvtColor(gen, cv2.COLOR_RGB2GRAY), None)
        _, db = orb.detectAndCompute(cv2.cvtColor(orig, cv2.COLOR_RGB2GRAY), None)
        ref = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(da, db)
        qi, ti = hamming_cross_check(da, db, backend)
        assert [(m.queryIdx, m.trainIdx) for m in ref] == list(zip(qi.tolist(), ti.tolist()))
        d = hamming_distances(da, db)
        assert [int(d[m.queryIdx, m.trainIdx]) for m in ref] == [int(m.distance) for m in ref]
    # odd descriptor lengths, ties (duplicates) and empty sets
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (40, 13), dtype=np.uint8)
    b = np.concatenate([a[:10], a[:10], rng.integers(0, 256, (5, 13), dtype=np.uint8)])
    ref = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(a, b)
    qi, ti = hamming_cross_check(a, b, backend)
    assert [(m.queryIdx, m.trainIdx) for m in ref] == list(zip(qi.tolist(), ti.tolist()))
    # many ties: 4 of every 8 bits set to zero, 300 x 280 descriptors
    a2 = rng.integers(0, 256, (300, 32), dtype=np.uint8) & 0x0F
    b2 = rng.integers(0, 256, (280, 32), dtype=np.uint8) & 0x0F
    ref = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(a2, b2)
    qi, ti = hamming_cross_check(a2, b2, backend)
    assert [(m.queryIdx, m.trainIdx) for m in ref] == list(zip(qi.tolist(), ti.tolist()))
    assert qi.dtype == ti.dtype == np.int32
    assert hamming_cross_check(None, b, backend)[0].size == 0 and hamming_cross_check(a[:0], b, backend)[0].size == 0
    with pytest.raises(ValueError, match="lengths differ"):
        hamming_cross_check(a, b[:, :8], backend)
    with pytest.raises(ValueError, match="lengths differ"):
        hamming_distances(a, b[:, :8])


def test_keypoints_equal_detect_and_compute_then_select(pairs):
    """Describing only the kept keypoints gives the descriptors (and order) of describing all."""
    comp = MaskComputer(LabelConfig())
    for gen, _ in pairs:
        g = cv2.cvtColor(gen, cv2.COLOR_RGB2GRAY)
        pts, desc = comp._keypoints(g)
        kps, all_desc = comp.orb(g.shape).detectAndCompute(g, None)
        all_pts = cv2.KeyPoint_convert(kps)
        resp = np.array([k.response for k in kps], np.float32)
        from bridgedepth.labels.masks import spread_keypoints

        if len(kps) > comp.cfg.orb_features:
            sel = spread_keypoints(all_pts, resp, g.shape, comp.cfg.orb_grid, comp.cfg.orb_features)
            all_pts, all_desc = all_pts[sel], all_desc[sel]
        np.testing.assert_array_equal(pts, all_pts)
        np.testing.assert_array_equal(desc, all_desc)


def test_one_warp_with_alpha_gives_the_separate_cover(pairs):
    gen = pairs[2][0]
    hm = np.array([[1.01, 0.02, -4.0], [-0.01, 0.99, 3.0], [1e-5, -2e-5, 1.0]])
    comp = MaskComputer(LabelConfig())
    both = cv2.warpPerspective(comp._with_alpha(gen), hm, (518, 518), flags=cv2.INTER_LINEAR)
    rgb = cv2.warpPerspective(gen, hm, (518, 518), flags=cv2.INTER_LINEAR)
    cover = cv2.warpPerspective(np.full((518, 518), 255, np.uint8), hm, (518, 518), flags=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(both[:, :, :3], rgb)
    np.testing.assert_array_equal(both[:, :, 3], cover)
    # grey pairs take two warps; their masks equal the one-channel rule
    grey = np.ascontiguousarray(gen[:, :, 1])
    a = comp.registered_mask(grey, np.ascontiguousarray(pairs[2][1][:, :, 1]), hm)
    assert a.dtype == bool and 0.0 < a.mean() < 1.0


def test_affine_maps_warp_with_warpaffine_as_with_warpperspective(pairs, monkeypatch):
    """Affine registrations are warped with cv2.warpAffine (no division per pixel): the same pixels as
    cv2.warpPerspective but for one grey level where the two round a coordinate differently, and the
    same masks; a map with perspective terms still takes warpPerspective."""
    from bridgedepth.labels import masks as M

    rng = np.random.default_rng(3)
    kw = dict(flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    img = M.MaskComputer(LabelConfig())._with_alpha(pairs[0][1]).copy()
    differ = total = 0
    for _ in range(20):
        a = cv2.getRotationMatrix2D(tuple(rng.uniform(0, 518, 2)), rng.uniform(-4, 4), rng.uniform(0.96, 1.04))
        a[:, 2] += rng.uniform(-10, 10, 2)
        hm = np.vstack([a, [0.0, 0.0, 1.0]])
        assert M._warp_function(hm) is M._warp_affine
        d = np.abs(M._warp_affine(img, hm, (518, 518), **kw).astype(int)
                   - cv2.warpPerspective(img, hm, (518, 518), **kw).astype(int))
        assert d.max() <= 1
        differ += int((d.max(axis=2) > 0).sum())
        total += d.shape[0] * d.shape[1]
    assert differ <= 1e-3 * total
    hm = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1e-6, 0.0, 1.0]])
    assert M._warp_function(hm) is cv2.warpPerspective
    # the pipeline's masks and statistics on the shifted and recoloured pairs, either way
    fast = [MaskComputer(LabelConfig())(g, o) for g, o in pairs[:2]]
    monkeypatch.setattr(M, "_warp_function", lambda hm: cv2.warpPerspective)
    plain = [MaskComputer(LabelConfig())(g, o) for g, o in pairs[:2]]
    for f, p in zip(fast, plain):
        assert f.model in ("similarity", "affine")
        assert np.mean(f.mask == p.mask) >= 0.999 and f.inliers == p.inliers


def test_consecutive_calls_with_one_original_reuse_it_safely(pairs):
    """The seeds of one depth map arrive one call at a time: the original's keypoints and SSIM
    statistics are reused, results equal a fresh computer's, and a changed array is noticed."""
    gens = [g for g, _ in pairs[:3]]
    orig = pairs[0][1].copy()
    fresh = [MaskComputer(LabelConfig())(g, orig).stats() for g in gens]
    comp = MaskComputer(LabelConfig())
    t: dict = {}
    got = [comp(g, orig, timings=t).stats() for g in gens]
    assert got == fresh
    assert comp._last is not None and comp._last[0] is not orig  # a private copy
    # the caller changes the original in place: the cached state must not be used
    orig[:100] = 255 - orig[:100]
    again = comp(gens[0], orig).stats()
    assert again == MaskComputer(LabelConfig())(gens[0], orig).stats()
    assert again != fresh[0]


def test_float32_masks_equal_float64_masks(pairs):
    """The default (float32 SSIM) masks equal the float64 (skimage to 1e-8) masks on >= 99.9 % of
    pixels of every pair."""
    fast, exact = MaskComputer(LabelConfig()), MaskComputer(LabelConfig(ssim_precision="float64"))
    for gen, orig in pairs:
        a, b = fast(gen, orig), exact(gen, orig)
        assert np.mean(a.mask == b.mask) >= 0.999
