"""Registration that registers: on real fixture frames moved by known small motions, the registered
fraction of `bridge mask` is within 0.03 of what the true warp gives (issue #11, item 1)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from bridgedepth.config import LabelConfig
from bridgedepth.io import read_image
from bridgedepth.labels.masks import MaskComputer, spread_keypoints

FRAMES = [f"open3d/color/{i:05d}.jpg" for i in range(5)] + [
    f"nyu_sync/rgb/rgb_{i:05d}.jpg" for i in (0, 50, 100)] + [
    f"kitti_annotated/rgb/{i:010d}.png" for i in (5, 50, 100)]

# (dx, dy) px, rotation in degrees, scale: shifts up to 10 px, rotations up to 3 degrees, scale up to 3 %
MOTIONS = [
    (10.0, 0.0, 0.0, 1.0),
    (0.0, -10.0, 0.0, 1.0),
    (5.0, -3.0, 1.5, 1.0),  # the issue's example
    (0.0, 0.0, 3.0, 1.0),
    (0.0, 0.0, -3.0, 1.0),
    (0.0, 0.0, 0.0, 1.03),
    (-4.0, 6.0, -1.0, 0.97),
    (-10.0, 10.0, -3.0, 1.03),  # everything at its largest
]
TOLERANCE = 0.03


def motion(h: int, w: int, dx: float, dy: float, deg: float, scale: float) -> np.ndarray:
    """3x3 map original -> generated pixels: rotation and scale about the image centre, then a shift."""
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), deg, scale)
    m[:, 2] += (dx, dy)
    return np.vstack([m, [0.0, 0.0, 1.0]])


def generated(img: np.ndarray, m: np.ndarray, gamma: float, noise: float, seed: int) -> np.ndarray:
    """The frame moved by ``m`` (reflected borders), with a gamma change and Gaussian noise."""
    h, w = img.shape[:2]
    g = cv2.warpAffine(img, m[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    f = (g.astype(np.float32) / 255.0) ** gamma * 255.0
    f += np.random.default_rng(seed).normal(0.0, noise, f.shape)
    return np.clip(f + 0.5, 0, 255).astype(np.uint8)


def moved_pairs(root: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, generated, original, true homography generated -> original): each frame with three of
    the motions (each motion on three or more frames), gamma 0.85 or 1.15, noise sigma 2."""
    out = []
    for i, rel in enumerate(FRAMES):
        img = read_image(root / "rgbd" / rel)
        h, w = img.shape[:2]
        for k in (0, 3, 5):
            j = (i + k) % len(MOTIONS)
            m = motion(h, w, *MOTIONS[j])
            gen = generated(img, m, 0.85 if (i + k) % 2 else 1.15, 2.0, seed=i * 10 + k)
            out.append((f"{rel} motion {MOTIONS[j]}", gen, img, np.linalg.inv(m)))
    return out


@pytest.fixture(scope="module")
def pairs(shared_data):
    return moved_pairs(shared_data)


def test_registered_fraction_matches_the_true_warp(pairs):
    comp = MaskComputer(LabelConfig())
    rows = []
    for name, gen, orig, true_h in pairs:
        r = comp(gen, orig)
        truth = float(comp.registered_mask(gen, orig, true_h).mean())
        rows.append((name, truth, r.registered_fraction, r.model))
    diffs = np.array([abs(t - e) for _, t, e, _ in rows])
    report = "\n".join(f"{n}: true {t:.3f} estimated {e:.3f} ({m})" for n, t, e, m in rows)
    assert diffs.max() <= TOLERANCE, report
    assert np.mean([t for _, t, _, _ in rows]) > 0.8  # the pairs are registrable at all
    # similarity motions are explained by the similarity model (a homography only if clearly better)
    assert sum(m == "similarity" for *_, m in rows) >= 0.8 * len(rows), report


def test_issue_example(shared_data):
    """1.5 degrees, (5, -3) px, gamma and noise on a real indoor frame: before, a homography with
    2.4 % scale error and perspective terms registered 0.57 of the frame where the true warp gives
    0.97."""
    img = read_image(shared_data / "rgbd/open3d/color/00000.jpg")
    h, w = img.shape[:2]
    m = motion(h, w, 5.0, -3.0, 1.5, 1.0)
    gen = generated(img, m, 0.9, 2.0, seed=0)
    comp = MaskComputer(LabelConfig())
    r = comp(gen, img)
    truth = comp.registered_mask(gen, img, np.linalg.inv(m)).mean()
    assert abs(r.registered_fraction - truth) <= TOLERANCE
    assert r.model == "similarity" and r.stats()["model"] == "similarity"
    hm = np.array(r.homography)
    scale = math.sqrt(abs(np.linalg.det(hm[:2, :2])))
    assert abs(scale - 1.0) < 0.005 and np.abs(hm[2, :2]).max() < 1e-9  # no perspective terms
    grid = np.stack(np.meshgrid(np.linspace(0, w - 1, 9), np.linspace(0, h - 1, 7)), -1).reshape(1, -1, 2)
    err = cv2.perspectiveTransform(grid, hm) - cv2.perspectiveTransform(grid, np.linalg.inv(m))
    assert np.linalg.norm(err, axis=-1).max() < 0.5  # sub-pixel everywhere, corners included


def test_perspective_motion_chooses_a_homography(shared_data):
    img = read_image(shared_data / "rgbd/nyu_sync/rgb/rgb_00050.jpg")
    h, w = img.shape[:2]
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    dst = src + np.float32([[9, -8], [-10, 7], [8, 10], [-9, -6]])
    p = cv2.getPerspectiveTransform(src, dst)
    gen = cv2.warpPerspective(img, p, (w, h), borderMode=cv2.BORDER_REFLECT)
    comp = MaskComputer(LabelConfig())
    r = comp(gen, img)
    assert r.model == "homography"
    truth = comp.registered_mask(gen, img, np.linalg.inv(p)).mean()
    assert abs(r.registered_fraction - truth) <= TOLERANCE
    # forcing the simplest model leaves most of the frame unregistered: the choice matters
    sim = MaskComputer(LabelConfig(motion_model="similarity"))(gen, img)
    assert sim.model == "similarity" and sim.registered_fraction < truth - 0.1


def test_model_and_refinement_are_configurable(pairs):
    name, gen, orig, true_h = pairs[2]
    plain = MaskComputer(LabelConfig(refine="none"))(gen, orig)
    assert plain.refined is False and plain.stats()["refined"] is False
    forced = MaskComputer(LabelConfig(motion_model="affine"))(gen, orig)
    assert forced.model == "affine"
    for r in (plain, forced):
        assert {"model", "refined", "target_homography"} <= set(r.stats())


def test_only_credible_models_are_refined(shared_data, pairs, monkeypatch):
    """ECC refines a model only when at least `refine_inlier_fraction` (10 %) of the matches are its
    inliers. Between unrelated real frames RANSAC still finds models of 4-10 chance inliers among
    120-150 matches (23 of the fixture pairs); ECC from there ran all its iterations (about 15 ms)
    and was refused every time, so skipping it changes no mask."""
    calls = []
    real = MaskComputer._refine

    def counting(self, *a):
        calls.append(1)
        return real(self, *a)

    monkeypatch.setattr(MaskComputer, "_refine", counting)
    gen = read_image(shared_data / "rgbd/open3d/color/00000.jpg")
    orig = read_image(shared_data / "rgbd/nyu_sync/rgb/rgb_00050.jpg")
    timings: dict = {}
    weak = MaskComputer(LabelConfig())(gen, orig, timings=timings)
    assert weak.model is not None and 0 < weak.inliers < 0.1 * weak.orb_matches, weak.stats()
    assert not calls and "refine" not in timings and weak.refined is False
    everything = MaskComputer(LabelConfig(refine_inlier_fraction=0.0))(gen, orig)
    assert len(calls) == 1 and everything.refined is False  # tried, refused
    assert np.array_equal(everything.mask, weak.mask) and everything.stats() == weak.stats()
    # a credible model (a real motion) is still refined
    name, g, o, _ = pairs[2]
    r = MaskComputer(LabelConfig())(g, o)
    assert r.inliers >= 0.1 * r.orb_matches and len(calls) == 2, name


def test_spread_keypoints_covers_the_grid():
    rng = np.random.default_rng(0)
    # 900 strong keypoints in the top-left corner, 100 weak ones spread over the image
    pts = np.concatenate([rng.uniform(0, 50, (900, 2)), rng.uniform(0, 400, (100, 2))]).astype(np.float32)
    resp = np.concatenate([rng.uniform(1, 2, 900), rng.uniform(0, 0.1, 100)]).astype(np.float32)
    keep = spread_keypoints(pts, resp, (400, 400), 8, 200)
    assert len(keep) == 200 and len(set(keep.tolist())) == 200
    assert np.count_nonzero(keep >= 900) >= 90  # nearly every weak, isolated keypoint is kept
    top = np.argsort(-resp)[:200]
    assert np.count_nonzero(top >= 900) == 0  # whereas "strongest first" keeps none of them
    np.testing.assert_array_equal(np.sort(spread_keypoints(pts, resp, (400, 400), 1, 200)), np.sort(top))


# A homography RANSAC fitted to 5 of 10 ORB matches between a 128 px generated image and its render
# in the demo (2026-12-06): the area test passed (0.43), but its denominator changes sign inside the
# image, so the warp smeared the generated image into flat streaks whose SSIM against the flat
# render passed on 58 % of the pixels: the demo's only "accepted" image.
FOLDING = np.array([[-2.0609912576363785, 2.186901848222757, 73.94296645543965],
                    [-1.806384426743754, 1.708163106255643, 76.72237970963366],
                    [-0.032023365543823804, 0.03677149686636776, 1.0]])


def test_insane_homographies_are_refused():
    comp = MaskComputer(LabelConfig())
    assert "folds the image" in comp._homography_ok(FOLDING, (128, 128))
    assert comp._homography_ok(np.eye(3), (128, 128)) is None
    assert comp._homography_ok(-np.eye(3), (128, 128)) is None  # -H is the same map
    # a camera turned by 10 degrees (focal 500 px, 640 px wide): kept; 3x perspective scale: refused
    t = math.radians(10)
    k = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    rot = np.array([[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]])
    turned = k @ rot @ np.linalg.inv(k)
    assert comp._homography_ok(turned / turned[2, 2], (480, 640)) is None
    steep = np.array([[1.0, 0, 0], [0, 1, 0], [2.0 / 639, 0, 1]])
    assert "perspective scale 3" in comp._homography_ok(steep, (480, 640))
    assert MaskComputer(LabelConfig(max_perspective=4.0))._homography_ok(steep, (480, 640)) is None
    assert "area scale" in comp._homography_ok(np.diag([10.0, 10.0, 1.0]), (128, 128))


def test_a_folding_homography_never_replaces_a_sane_model():
    """6 matches lie exactly on the folding homography, 5 on a small shift: the homography explains
    more matches, but the sane similarity is the registration."""
    rng = np.random.default_rng(0)
    src_f = rng.uniform(10, 118, (6, 2))
    dst_f = cv2.perspectiveTransform(src_f.reshape(1, -1, 2), FOLDING)[0]
    src_s = rng.uniform(10, 118, (5, 2))
    src = np.vstack([src_f, src_s]).astype(np.float32)
    dst = np.vstack([dst_f, src_s + [1.5, -0.5]]).astype(np.float32)
    comp = MaskComputer(LabelConfig())
    hm, inliers, model, why = comp._fit(src, dst, (128, 128))
    assert model in ("similarity", "affine") and inliers == 5 and why is None
    np.testing.assert_allclose(hm, [[1, 0, 1.5], [0, 1, -0.5], [0, 0, 1]], atol=1e-6)

    class Unchecked(MaskComputer):  # the same fit without the check picks the folding homography
        def _homography_ok(self, hmat, size):
            return None

    assert Unchecked(LabelConfig())._fit(src, dst, (128, 128))[2] == "homography"
    # a homography forced and fitted to the folding matches only: it comes back with why it is refused
    forced = MaskComputer(LabelConfig(motion_model="homography"))
    hm, _, model, why = forced._fit(src_f.astype(np.float32), dst_f.astype(np.float32), (128, 128))
    assert model == "homography" and "folds the image" in why


def test_small_images_register_with_smaller_orb_patches(shared_data):
    """At 64-128 px, OpenCV's 31 px ORB patch and border leave too little image to find keypoints in;
    the automatic patch (max(9, side // 8) below 160 px) registers the fixture frames moved by known
    shifts to within the usual tolerance of the true warp's fraction."""
    comp = MaskComputer(LabelConfig())
    fixed = MaskComputer(LabelConfig(orb_patch=31))
    assert [comp.orb_patch((s, 2 * s)) for s in (40, 64, 96, 128, 159, 160, 518)] == [9, 9, 12, 16, 19, 31, 31]
    with pytest.raises(ValueError, match="orb_patch"):
        MaskComputer(LabelConfig(orb_patch=40))
    rng = np.random.default_rng(3)
    for side in (64, 96, 128):
        errs, found, found_fixed = [], 0, 0
        for rel in FRAMES:
            img = read_image(shared_data / "rgbd" / rel)
            h, w = img.shape[:2]
            s = side / min(h, w)
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
            h, w = img.shape[:2]
            m = motion(h, w, *rng.uniform(-3, 3, 2), 0.0, 1.0)
            gen = generated(img, m, 1.0, 1.0, seed=side)
            r = comp(gen, img)
            found += r.homography is not None
            found_fixed += fixed(gen, img).homography is not None
            errs.append(abs(r.registered_fraction - comp.registered_mask(gen, img, np.linalg.inv(m)).mean()))
        assert found == len(FRAMES), side
        assert np.median(errs) <= TOLERANCE and max(errs) <= 0.1, (side, errs)
        if side == 64:
            assert found_fixed <= len(FRAMES) // 4, found_fixed  # the 31 px default registers hardly any
