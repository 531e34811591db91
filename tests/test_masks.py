"""Similarity masks on pairs made from the real RGB-D fixtures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bridgedepth.config import LabelConfig
from bridgedepth.io import read_image
from bridgedepth.labels.masks import (
    STAT_KEYS,
    MaskComputer,
    MaskResult,
    crop_box,
    mask_overlay,
    match_size,
    similarity_mask,
    similarity_mask_pairs,
    similarity_masks,
)


@pytest.fixture(scope="module")
def room(shared_data):
    return read_image(shared_data / "rgbd/open3d/color/00000.jpg")  # 480 x 640, rendered interior


@pytest.fixture(scope="module")
def nyu(shared_data):
    return read_image(shared_data / "rgbd/nyu_sync/rgb/rgb_00000.jpg")


@pytest.fixture(scope="module")
def street(shared_data):
    return read_image(shared_data / "rgbd/kitti_annotated/rgb/0000000005.png")


def window(img, y, x, h=300, w=360):
    return np.ascontiguousarray(img[y : y + h, x : x + w])


def test_identical_pair_full_mask(room):
    r = similarity_mask(room, room)
    assert isinstance(r, MaskResult)
    assert r.mask.shape == room.shape[:2] and r.mask.dtype == bool
    assert r.orb_matches >= 10 and r.inliers >= 10
    assert r.registered_fraction == 1.0 and r.direct_fraction == 1.0 and r.final_fraction == 1.0
    assert r.accepted and r.reason == "ok"
    # the 518 crop centred on the (whole-image) region, clamped: 640 wide, 480 high
    assert r.crop == (61, 0, 518, 480)
    np.testing.assert_allclose(np.array(r.homography), np.eye(3), atol=0.02)
    assert set(STAT_KEYS) <= set(r.stats())


def test_shift_is_recovered_by_registration(nyu):
    dy, dx = 9, 14
    orig = window(nyu, 60, 120)
    gen = window(nyu, 60 + dy, 120 + dx)  # the same scene seen 14 px right, 9 px down
    r = similarity_mask(gen, orig)
    assert r.direct_fraction < 0.3  # without registration almost nothing matches
    assert r.registered_fraction > 0.75
    assert r.final_fraction > 0.7 and r.accepted
    hm = np.array(r.homography)
    # generated -> original maps a point p to p + (dx, dy)
    p = hm @ np.array([180.0, 150.0, 1.0])
    np.testing.assert_allclose(p[:2] / p[2], [180 + dx, 150 + dy], atol=1.0)
    # pixels the warp leaves without data are never in mask A
    h, w = orig.shape[:2]
    assert r.registered_fraction <= (h - dy) * (w - dx) / (h * w) + 1e-9


def test_recolour_blur_noise_sensible(nyu):
    orig = window(nyu, 60, 120)
    f = orig.astype(np.float32)
    rng = np.random.default_rng(0)
    recol = np.clip(f * np.array([1.1, 0.97, 0.9]) + 6, 0, 255).astype(np.uint8)
    r = similarity_mask(recol, orig)
    assert r.accepted and r.final_fraction > 0.8
    blur = cv2.GaussianBlur(orig, (0, 0), 1.0)
    rb = similarity_mask(blur, orig)
    assert rb.accepted and 0.5 < rb.final_fraction < 1.0
    fracs = []
    for sigma in (2, 8, 30):
        noisy = np.clip(f + rng.normal(0, sigma, orig.shape), 0, 255).astype(np.uint8)
        fracs.append(similarity_mask(noisy, orig).final_fraction)
    assert fracs[0] > fracs[1] > fracs[2]
    assert fracs[0] > 0.8 and fracs[2] < 0.1


def test_unrelated_images_rejected(room, street):
    gen = cv2.resize(street[:, 300:800], (640, 480))
    r = similarity_mask(gen, room)
    assert not r.accepted
    assert r.final_fraction < 0.25  # only smooth areas of similar brightness survive SSIM
    assert "not accepted" in r.reason


def test_sizes_differ_generated_is_resized_to_original(nyu):
    orig = window(nyu, 60, 120)
    big = cv2.resize(orig, (orig.shape[1] * 2, orig.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
    r = similarity_mask(big, orig)
    assert r.mask.shape == orig.shape[:2]
    assert r.generated_size == big.shape[:2] and r.size == orig.shape[:2]
    assert r.accepted and r.final_fraction > 0.8
    # a small aspect change (e.g. a generator's multiple-of-16 size) is absorbed as well
    odd = cv2.resize(orig, (368, 304))
    assert similarity_mask(odd, orig).accepted
    assert match_size(orig, orig.shape[:2]) is orig


def test_grey_against_colour(nyu):
    orig = window(nyu, 60, 120)
    grey = cv2.cvtColor(orig, cv2.COLOR_RGB2GRAY)
    r = similarity_mask(grey, orig)
    assert r.accepted and r.final_fraction > 0.9


def test_few_matches_leave_mask_a_empty_but_direct_counts():
    yy, xx = np.mgrid[0:200, 0:240]
    smooth = np.dstack([xx, yy, (xx + yy) // 2]).astype(np.uint8)  # gradients: no corners for ORB
    r = similarity_mask(smooth, smooth)
    assert r.orb_matches < 10
    assert r.registered_fraction == 0.0 and r.inliers == 0 and r.homography is None
    assert "registration skipped" in r.reason
    assert r.direct_fraction == 1.0 and r.accepted


def test_constants_come_from_config(nyu):
    orig = window(nyu, 60, 120)
    r = similarity_mask(orig, orig, LabelConfig(min_matches=10_000))
    assert r.registered_fraction == 0.0 and "10000" in r.reason and r.accepted
    r = similarity_mask(orig, orig, LabelConfig(accept_fraction=1.0))
    assert not r.accepted  # "more than" the fraction
    r = similarity_mask(orig, orig, LabelConfig(crop_size=100))
    assert r.crop[2:] == (100, 100)
    rng = np.random.default_rng(3)
    noisy = np.clip(orig + rng.normal(0, 8, orig.shape), 0, 255).astype(np.uint8)
    strict = similarity_mask(noisy, orig, LabelConfig(ssim_threshold=0.95)).final_fraction
    loose = similarity_mask(noisy, orig, LabelConfig(ssim_threshold=0.5)).final_fraction
    assert strict < loose
    exact = similarity_mask(noisy, orig, LabelConfig(ssim_precision="float64"))
    fast = similarity_mask(noisy, orig)
    assert abs(exact.final_fraction - fast.final_fraction) < 1e-3
    down = similarity_mask(orig, orig, LabelConfig(orb_max_side=160))
    assert down.accepted and down.orb_matches >= 10
    np.testing.assert_allclose(np.array(down.homography), np.eye(3), atol=0.05)


@pytest.mark.parametrize(
    "gen_kind, orig_kind, words",
    [
        ("ok", "blank", "original image is blank"),
        ("blank", "ok", "generated image is blank"),
        ("flat", "ok", "one colour"),
        ("ok", "flat", "one colour"),
        ("tiny", "ok", "too small"),
        ("ok", "tiny", "too small"),
        ("float", "ok", "uint8"),
        ("twochan", "ok", "shape"),
        ("none", "ok", "not an array"),
        ("ok", "none", "not an array"),
    ],
)
def test_degenerate_inputs_give_empty_mask_with_reason(nyu, gen_kind, orig_kind, words):
    ok = window(nyu, 60, 120, 120, 140)
    make = {
        "ok": ok,
        "blank": np.zeros_like(ok),
        "flat": np.full_like(ok, 77),
        "tiny": ok[:8, :8].copy(),
        "float": ok.astype(np.float32),
        "twochan": ok[:, :, :2].copy(),
        "none": None,
    }
    r = similarity_mask(make[gen_kind], make[orig_kind])
    assert words in r.reason
    assert not r.accepted and r.final_fraction == 0.0 and not r.mask.any()
    if orig_kind == "ok":
        assert r.mask.shape == ok.shape[:2]
        assert r.crop == (0, 0, 140, 120)  # centred (whole image: smaller than the crop)
    assert set(STAT_KEYS) <= set(r.stats())


def test_crop_box_rules():
    m = np.zeros((600, 800), bool)
    m[10:60, 700:790] = True  # largest region near the top-right corner
    m[300:310, 100:110] = True  # a smaller one
    assert crop_box(m, 518) == (800 - 518, 0, 518, 518)  # centred on it, then clamped
    m2 = np.zeros((600, 800), bool)
    m2[250:350, 300:400] = True  # bbox centre (350, 300)
    assert crop_box(m2, 200) == (250, 200, 200, 200)
    assert crop_box(m2, 201) == (250, 200, 201, 201)  # floor(centre - 100.5 + 0.5)
    # image smaller than the crop along an axis: the crop spans that axis
    assert crop_box(np.ones((300, 800), bool), 518) == (141, 0, 518, 300)
    assert crop_box(np.ones((100, 120), bool), 518) == (0, 0, 120, 100)
    # empty mask: centred on the image
    assert crop_box(np.zeros((600, 800), bool), 518) == (141, 41, 518, 518)
    # 8-connectivity: two 25x25 blocks touching at a corner are one region (1250 px), larger
    # than a lone 30x30 block (900 px) that would win under 4-connectivity
    m3 = np.zeros((600, 800), bool)
    m3[0:25, 0:25] = True
    m3[25:50, 25:50] = True
    m3[500:530, 700:730] = True
    assert crop_box(m3, 100) == (0, 0, 100, 100)


def test_crop_box_labelling_equals_opencv_default():
    # crop_box labels with Grana's algorithm (faster here); its labels, in the same order, and stats
    # must equal OpenCV's default labelling, so the largest region and its tie-breaking are unchanged
    import cv2

    rng = np.random.default_rng(7)
    for i in range(60):
        m = (rng.random((40 + i, 57)) < rng.uniform(0.1, 0.7)).astype(np.uint8)
        if i % 2:
            m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
        n0, l0, s0, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        n1, l1, s1, _ = cv2.connectedComponentsWithStatsWithAlgorithm(m, 8, cv2.CV_32S, cv2.CCL_GRANA)
        assert n0 == n1 and np.array_equal(l0, l1) and np.array_equal(s0, s1)
        if n0 > 1:  # the chosen box is the one the default labelling gives
            k = 1 + int(np.argmax(s0[1:, cv2.CC_STAT_AREA]))
            x, y, bw, bh = s0[k, :4]
            cw, ch = min(30, m.shape[1]), min(30, m.shape[0])
            x0 = min(max(int(np.floor(x + bw / 2 - cw / 2 + 0.5)), 0), m.shape[1] - cw)
            y0 = min(max(int(np.floor(y + bh / 2 - ch / 2 + 0.5)), 0), m.shape[0] - ch)
            assert crop_box(m.astype(bool), 30) == (x0, y0, cw, ch)


def test_crop_box_whole_image_shortcut_keeps_the_rule():
    # a crop at least as large as the image along both axes is the whole image wherever the largest
    # region lies: crop_box returns it without labelling; the rule with labelling gives the same box
    import cv2

    rng = np.random.default_rng(3)
    for i in range(20):
        h, w = 30 + i, 45 - i
        m = (rng.random((h, w)) < rng.uniform(0.05, 0.6)).astype(np.uint8)
        n, _, st, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        for size in (max(h, w), max(h, w) + 7):
            cw, ch = min(size, w), min(size, h)
            cx, cy = (w / 2, h / 2)
            if n > 1:
                k = 1 + int(np.argmax(st[1:, cv2.CC_STAT_AREA]))
                cx, cy = st[k, 0] + st[k, 2] / 2, st[k, 1] + st[k, 3] / 2
            x0 = min(max(int(np.floor(cx - cw / 2 + 0.5)), 0), w - cw)
            y0 = min(max(int(np.floor(cy - ch / 2 + 0.5)), 0), h - ch)
            assert crop_box(m.astype(bool), size) == (x0, y0, cw, ch) == (0, 0, w, h)
    # one axis smaller than the crop, the other not: still labelled and centred on the region
    m = np.zeros((40, 200), bool)
    m[5:20, 150:190] = True
    assert crop_box(m, 100) == (100, 0, 100, 40)


def test_computer_reuse_timings_and_overlay(nyu, room):
    comp = MaskComputer(LabelConfig())
    t: dict[str, float] = {}
    a = comp(room, room, timings=t)
    b = comp(window(nyu, 60, 120), window(nyu, 60, 120))  # another size: buffers reallocated
    assert a.accepted and b.accepted and b.mask.shape == (300, 360)
    assert {"prepare", "ssim", "orb", "match", "ransac", "warp", "morphology", "crop"} <= set(t)
    assert set(a.timings) == set(t)
    ov = mask_overlay(room, a)
    assert ov.shape == room.shape and ov.dtype == np.uint8


def test_several_generated_of_one_original_share_work(nyu):
    import json

    orig = window(nyu, 60, 120)
    rng = np.random.default_rng(5)
    gens = [
        window(nyu, 66, 128),
        np.clip(orig + rng.normal(0, 5, orig.shape), 0, 255).astype(np.uint8),
        cv2.cvtColor(orig, cv2.COLOR_RGB2GRAY),  # grey: the grey reference is used for this one
        np.zeros_like(orig),  # degenerate: empty with a reason, the others unaffected
        orig,
    ]
    totals: dict[str, float] = {}
    many = similarity_masks(gens, orig, timings=totals)
    single = [similarity_mask(g, orig) for g in gens]
    assert len(many) == len(gens)
    for a, b in zip(many, single):
        assert a.stats() == b.stats()
        assert np.array_equal(a.mask, b.mask)
        json.dumps(a.stats())
    assert "blank" in many[3].reason and many[4].final_fraction == 1.0
    assert totals["orb"] > 0 and totals["ssim"] > 0
    # a bad original: every generated image gets the same empty result
    bad = similarity_masks(gens[:2], np.zeros((5, 5, 3), np.uint8))
    assert all("too small" in r.reason and r.mask.shape == (5, 5) for r in bad)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_mask_pairs_on_threads_equal_pair_by_pair(nyu, room, street, threads):
    # groups of equal originals (the seeds of one depth map, equal arrays but not the same object),
    # single pairs, an unusable original and an unusable generated image, in one call
    rng = np.random.default_rng(3)
    orig_a, orig_b = window(nyu, 60, 120), window(room, 40, 100)
    orig_c = np.ascontiguousarray(street[:300, 200:560])

    def noisy(img):
        return np.clip(img.astype(np.int16) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)

    pairs = [(noisy(orig_a), orig_a.copy()) for _ in range(4)]
    pairs += [(window(room, 46, 108), orig_b), (cv2.GaussianBlur(orig_c, (0, 0), 1.2), orig_c)]
    pairs += [(noisy(orig_b), orig_b), (noisy(orig_b), orig_b), (orig_a, np.zeros((5, 5, 3), np.uint8))]
    pairs += [(np.zeros((3, 3), np.uint8), orig_c), (noisy(orig_c), orig_c)]
    expected = [MaskComputer(LabelConfig())(g, o) for g, o in pairs]
    for _ in range(2):  # twice: the threads' computers keep state between calls
        got = similarity_mask_pairs(pairs, LabelConfig(), threads=threads)
        assert len(got) == len(pairs)
        for e, r in zip(expected, got):
            assert r.stats() == e.stats() and r.reason == e.reason
            np.testing.assert_array_equal(r.mask, e.mask)
    assert similarity_mask_pairs([], threads=threads) == []


def test_never_raises_on_arbitrary_arrays():
    hypothesis = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")

    def image(draw):
        h = draw(st.integers(1, 70))
        w = draw(st.integers(1, 70))
        c = draw(st.sampled_from([None, 1, 3, 4]))
        kind = draw(st.sampled_from(["noise", "flat", "blocks"]))
        seed = draw(st.integers(0, 2**16))
        rng = np.random.default_rng(seed)
        shape = (h, w) if c is None else (h, w, c)
        if kind == "noise":
            return rng.integers(0, 256, shape, dtype=np.uint8)
        if kind == "flat":
            return np.full(shape, int(rng.integers(0, 256)), np.uint8)
        small = rng.integers(0, 256, ((h + 7) // 8, (w + 7) // 8) + shape[2:], dtype=np.uint8)
        return np.ascontiguousarray(small.repeat(8, 0).repeat(8, 1)[:h, :w])

    images = st.composite(image)()

    @hypothesis.settings(max_examples=40, deadline=None)
    @hypothesis.given(images, images)
    def check(gen, orig):
        r = similarity_mask(gen, orig)
        assert r.mask.shape == orig.shape[:2]
        assert 0.0 <= r.final_fraction <= 1.0 and isinstance(r.reason, str)
        x, y, w, h = r.crop
        assert 0 <= x and 0 <= y and x + w <= orig.shape[1] and y + h <= orig.shape[0]

    check()


def test_mask_thread_pool_is_not_reused_across_processes(room, monkeypatch):
    # a thread pool's threads do not survive a fork: a process (another pid) never reuses its parent's pool
    import os

    from bridgedepth.labels import masks as M

    pairs = [(window(room, 40, 100), window(room, 40, 100)), (window(room, 50, 110), window(room, 40, 100))]
    pairs += [(window(room, 0, 0), window(room, 5, 5))]
    similarity_mask_pairs(pairs, threads=2)
    assert (os.getpid(), 2) in M._POOLS
    parent_pool = M._POOLS[(os.getpid(), 2)]
    monkeypatch.setattr(M.os, "getpid", lambda: -12345)
    got = similarity_mask_pairs(pairs, threads=2)
    assert M._POOLS[(-12345, 2)] is not parent_pool and len(got) == 3
    M._POOLS.pop((-12345, 2)).shutdown()
