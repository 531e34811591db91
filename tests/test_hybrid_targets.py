"""Hybrid targets in the generated image's frame (issue #11, items 2, 3, 8 and 11): registered ground
truth moves with the generated image, training crops come from the recorded window, sky is far."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bridgedepth.config import LabelConfig, TrainConfig
from bridgedepth.data.targets import (
    SOURCE_GT,
    SOURCE_NONE,
    SOURCE_PSEUDO,
    crop_in_generated,
    generated_to_original,
    hybrid_target,
    sample_target,
    training_view,
    training_window,
)
from bridgedepth.io import read_image
from bridgedepth.labels.label import mask_in_generated_frame
from bridgedepth.labels.masks import similarity_mask

EDGE = 180  # depth edge column in the original's grid
SHIFT = 6  # the generated image shows the scene SHIFT px further right


@pytest.fixture(scope="module")
def nyu(shared_data):
    return read_image(shared_data / "rgbd/nyu_sync/rgb/rgb_00000.jpg")


def step_depth(h: int, w: int, edge: int) -> np.ndarray:
    d = np.full((h, w), 4.0, np.float32)
    d[:, :edge] = 1.0  # near on the left, far on the right
    return d


def labelled(gen: np.ndarray, orig: np.ndarray, depth: np.ndarray, pseudo: np.ndarray, **meta) -> dict:
    """What `bridge label` stores for a pair (without the teacher: ``pseudo`` is given)."""
    res = similarity_mask(gen, orig, LabelConfig())
    stats = res.stats()
    return {"__key__": "x_g0", "rgb": gen, "source_rgb": orig, "depth": depth, "valid": depth > 0,
            "pseudo": pseudo.astype(np.float16), "mask": mask_in_generated_frame(res.mask, stats, gen.shape[:2]),
            "meta": {"mask": stats, "accepted": res.accepted, "crop": stats["crop"], "label_version": 2, **meta}}


def shifted_pair(nyu):
    y0, x0, h, w = 60, 120, 300, 360
    orig = np.ascontiguousarray(nyu[y0:y0 + h, x0:x0 + w])
    gen = np.ascontiguousarray(nyu[y0:y0 + h, x0 - SHIFT:x0 - SHIFT + w])  # gen(x) = orig(x - SHIFT)
    return gen, orig


def test_registered_gt_lands_on_the_generated_images_edge(nyu):
    gen, orig = shifted_pair(nyu)
    h, w = orig.shape[:2]
    depth = step_depth(h, w, EDGE)
    # a teacher that is right in the generated frame, up to scale and shift
    pseudo = 3.0 / step_depth(h, w, EDGE + SHIFT) + 0.5
    s = labelled(gen, orig, depth, pseudo)
    stats = s["meta"]["mask"]
    assert s["meta"]["accepted"] and stats["registered_fraction"] > stats["direct_fraction"]
    t = np.array(stats["target_homography"])
    np.testing.assert_allclose(t[:2, 2], [-SHIFT, 0], atol=0.2)  # generated -> original: x - 6
    target, valid, source = sample_target(s, "hybrid")
    assert target.shape == gen.shape[:2]
    gt = source == SOURCE_GT
    rows = gt[:, EDGE + SHIFT - 4:EDGE + SHIFT + 4].all(axis=1)
    assert rows.sum() > 50  # plenty of rows with GT across the edge
    band = target[rows, EDGE + SHIFT - 4:EDGE + SHIFT + 4]
    # near (disparity 1) up to the generated image's edge column, far (0.25) from it on
    np.testing.assert_allclose(band[:, :4], 1.0)
    np.testing.assert_allclose(band[:, 4:], 0.25)
    # the aligned pseudo-label agrees with the ground truth elsewhere
    np.testing.assert_allclose(target[valid & ~gt], (1 / step_depth(h, w, EDGE + SHIFT))[valid & ~gt], rtol=1e-3)
    # generated columns the shift uncovered (their scene lies left of the original) get no GT
    assert not gt[:, :SHIFT].any()
    # a labelled set of version 1 (mask stored in the original's grid) reads the same
    res = similarity_mask(gen, orig, LabelConfig())
    v1 = dict(s, mask=res.mask, meta={**s["meta"], "label_version": 1,
                                      "mask": {k: v for k, v in s["meta"]["mask"].items()
                                               if k not in ("target_homography", "model", "refined")}})
    t1, _, src1 = sample_target(v1, "hybrid")
    both = gt & (src1 == SOURCE_GT)
    assert np.mean(src1 == source) > 0.995 and np.array_equal(t1[both], target[both])


def test_generated_image_of_another_size(nyu):
    gen, orig = shifted_pair(nyu)
    big = cv2.resize(gen, (gen.shape[1] * 2, gen.shape[0] * 2), interpolation=cv2.INTER_CUBIC)
    h, w = orig.shape[:2]
    depth = step_depth(h, w, EDGE)
    pseudo = cv2.resize(1.0 / step_depth(h, w, EDGE + SHIFT), (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
    s = labelled(big, orig, depth, pseudo)
    assert s["mask"].shape == big.shape[:2] and s["meta"]["mask"]["generated_size"] == [2 * h, 2 * w]
    target, valid, source = sample_target(s, "hybrid")
    assert target.shape == big.shape[:2]
    gt = source == SOURCE_GT
    edge = 2 * (EDGE + SHIFT)
    rows = gt[:, edge - 4:edge + 4].all(axis=1)
    assert rows.sum() > 100
    band = target[rows, edge - 4:edge + 4]
    # within a pixel of the generated image's edge (the size match and registration are sub-pixel)
    np.testing.assert_allclose(band[:, :3], 1.0)
    np.testing.assert_allclose(band[:, 5:], 0.25)
    # hybrid_target itself: a plain size match when no map is given
    t2, v2, s2 = hybrid_target(pseudo, depth, depth > 0, np.ones(big.shape[:2], bool), True)
    assert t2.shape == big.shape[:2] and (s2 == SOURCE_GT).all()
    np.testing.assert_array_equal(t2[:, :2 * EDGE], 1.0)
    np.testing.assert_array_equal(t2[:, 2 * EDGE:], 0.25)


def test_negative_aligned_pseudo_labels_are_clamped_to_far_and_counted():
    h, w = 30, 40
    rng = np.random.default_rng(0)
    depth = rng.uniform(1.0, 5.0, (h, w)).astype(np.float32)
    mask = np.zeros((h, w), bool)
    mask[:, :20] = True
    pseudo = (1.0 / depth).astype(np.float32)  # aligned: scale 1, shift 0
    pseudo[:5, 30:] = -0.3  # the teacher puts these beyond the farthest GT
    stats: dict = {}
    target, valid, source = hybrid_target(pseudo, depth, np.ones((h, w), bool), mask, True, stats=stats)
    far = np.zeros((h, w), bool)
    far[:5, 30:] = True
    assert stats["clamped"] == far.sum() == 50
    assert valid[far].all() and (source[far] == SOURCE_PSEUDO).all() and (target[far] == 0).all()
    assert stats["gt_pixels"] == mask.sum() and stats["scale"] == pytest.approx(1.0, abs=1e-5)
    assert (target >= 0).all()


def test_sky_is_valid_far_for_relative_targets_and_invalid_for_metric():
    h, w = 20, 30
    depth = np.repeat(np.linspace(1.0, 4.0, w, dtype=np.float32)[None], h, 0)
    depth[:6] = 0.0
    valid = depth > 0
    sky = np.zeros((h, w), bool)
    sky[:6, :20] = True  # the rest of the top rows: invalid, but not sky
    s = {"__key__": "a", "rgb": np.zeros((h, w, 3), np.uint8), "depth": depth, "valid": valid, "sky": sky}
    t, v, src = sample_target(s, "gt")
    assert v[sky].all() and (t[sky] == 0).all() and (src[sky] == SOURCE_GT).all()
    assert not v[:6, 20:].any() and (src[:6, 20:] == SOURCE_NONE).all()
    np.testing.assert_allclose(t[valid], 1.0 / depth[valid])
    t, v, src = sample_target(s, "gt", sky_as_far=False)
    assert not v[sky].any()
    t, v, src = sample_target(s, "metric")
    assert not v[sky].any() and (t[sky] == 0).all()
    # hybrid: sky inside the mask of an accepted sample is ground truth 0, outside it the pseudo-label
    mask = np.ones((h, w), bool)
    mask[:, 10:] = False
    pseudo = np.where(valid, 3.0 / np.maximum(depth, 1e-3) + 1.0, 1.2).astype(np.float32)  # sky: aligned 0.067
    stats: dict = {}
    t, v, src = hybrid_target(pseudo, depth, valid, mask, True, sky=sky, stats=stats)
    assert (src[:6, :10] == SOURCE_GT).all() and (t[:6, :10] == 0).all() and stats["sky_pixels"] == 60
    assert (src[:6, 10:] == SOURCE_PSEUDO).all()
    np.testing.assert_allclose(t[:6, 10:], (1.2 - 1.0) / 3.0, rtol=1e-5)
    t2, _, src2 = hybrid_target(pseudo, depth, valid, mask, True, sky=sky, sky_as_far=False)
    assert (src2[:6, :10] == SOURCE_PSEUDO).all()
    # training_view takes the switch from the training configuration
    rng = np.random.default_rng(0)
    view = training_view(s, "gt", TrainConfig(crop_size=16, hflip=False), rng)
    off = training_view(s, "gt", TrainConfig(crop_size=16, hflip=False, sky_as_far=False), np.random.default_rng(0))
    assert view["valid"].sum() > off["valid"].sum()


def _window_sample(h=400, w=600, crop=(50, 20, 300, 300), accepted=True, stats=None):
    x, y, cw, ch = crop
    rgb = np.full((h, w, 3), 10, np.uint8)
    rgb[y:y + ch, x:x + cw] = 200
    return {"__key__": "w", "rgb": rgb, "pseudo": np.ones((h, w), np.float16), "mask": np.ones((h, w), bool),
            "depth": np.full((h, w), 2.0, np.float32), "valid": np.ones((h, w), bool),
            "meta": {"accepted": accepted, "crop": list(crop), "label_version": 2,
                     "mask": stats or {"target_homography": np.eye(3).tolist(), "size": [h, w]}}}


def test_training_crops_of_accepted_samples_come_from_the_recorded_window():
    cfg = TrainConfig(crop_size=64, hflip=True, color_jitter=0.0)
    s = _window_sample()
    assert training_window(s, "hybrid") == (50, 20, 350, 320)
    assert training_window(s, "pseudo") is None and training_window(_window_sample(accepted=False), "hybrid") is None
    for seed in range(25):
        v = training_view(s, "hybrid", cfg, np.random.default_rng(seed))
        assert v["rgb"].shape == (64, 64, 3) and (v["rgb"] == 200).all()
        assert v["source"].shape == (64, 64) and (v["source"] == SOURCE_GT).all()
    # elsewhere the random crop may leave the window
    outside = [(training_view(x, k, cfg, np.random.default_rng(seed))["rgb"] == 10).any()
               for seed in range(25) for x, k in ((s, "pseudo"), (_window_sample(accepted=False), "hybrid"))]
    assert any(outside)
    assert not (training_view(s, "hybrid", cfg, np.random.default_rng(0), use_crop=False)["rgb"] == 10).all()


def test_window_in_the_generated_frame():
    # generated image twice the original's size: the window doubles
    t = generated_to_original({"target_homography": np.eye(3).tolist()}, (800, 1200), (400, 600))
    assert crop_in_generated([50, 20, 300, 300], t, (800, 1200)) == (100, 40, 700, 640)
    # registered 6 px to the right (generated -> original: x - 6): the window moves with the image
    shift = np.array([[1.0, 0, -6], [0, 1, 0], [0, 0, 1]])
    t = generated_to_original({"target_homography": shift.tolist()}, (400, 600), (400, 600))
    assert crop_in_generated([50, 20, 300, 300], t, (400, 600)) == (56, 20, 356, 320)
    assert crop_in_generated([0, 0, 0, 0], t, (400, 600)) is None
    # clamped to the image
    assert crop_in_generated([400, 100, 300, 300], t, (400, 600)) == (406, 100, 600, 400)
    # label version 1 statistics: the registration only where it explains more than direct comparison
    v1 = {"homography": shift.tolist(), "registered_fraction": 0.7, "direct_fraction": 0.1}
    np.testing.assert_allclose(generated_to_original(v1, (400, 600), (400, 600)), shift)
    assert generated_to_original({**v1, "registered_fraction": 0.05}, (400, 600), (400, 600)) is None
    assert generated_to_original(None, (400, 600), (400, 600)) is None
    cfg = TrainConfig(crop_size=32, hflip=False)
    s = _window_sample(h=800, w=1200, crop=(50, 20, 300, 300),
                       stats={"target_homography": np.eye(3).tolist(), "size": [400, 600]})
    s["depth"] = np.full((400, 600), 2.0, np.float32)
    s["valid"] = np.ones((400, 600), bool)
    s["rgb"][:] = 10
    s["rgb"][40:640, 100:700] = 200
    for seed in range(10):
        assert (training_view(s, "hybrid", cfg, np.random.default_rng(seed))["rgb"] == 200).all()
