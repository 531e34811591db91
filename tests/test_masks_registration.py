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
