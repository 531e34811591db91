"""Alignment and metrics against independent computations (hand values, closed forms, NumPy)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bridgedepth.evaluation import (
    METRICS,
    align,
    compute_metrics,
    evaluate_arrays,
    masked_median,
    pair_accuracy,
    prediction_to_gt_frame,
    resize_bilinear,
)


def _t(*arrays):
    return [torch.from_numpy(np.asarray(a)) for a in arrays]


def _gt(rng, b=3, h=24, w=32, lo=0.5, hi=9.0):
    gt = rng.uniform(lo, hi, size=(b, h, w)).astype(np.float32)
    valid = rng.uniform(size=(b, h, w)) > 0.2
    gt[~valid] = 0.0
    return gt, valid


# ---------------------------------------------------------------- closed forms
def test_affine_of_inverse_gt_is_perfect_after_disparity_alignment():
    rng = np.random.default_rng(0)
    gt, valid = _gt(rng)
    s = np.array([0.3, 2.0, 17.0])[:, None, None]
    t = np.array([0.1, -0.05, 4.0])[:, None, None]
    pred = np.where(valid, s / np.where(valid, gt, 1.0) + t, 123.0)  # garbage outside the mask
    r = evaluate_arrays(*_t(pred, gt, valid), alignment="disparity", prediction_type="disparity",
                        min_depth=1e-3, max_depth=10.0)
    assert torch.allclose(r["abs_rel"], torch.zeros(3, dtype=torch.float64), atol=1e-9)
    assert torch.equal(r["delta1"], torch.ones(3, dtype=torch.float64))
    assert torch.allclose(r["rmse"], torch.zeros(3, dtype=torch.float64), atol=1e-8)
    # the fitted transform inverts the one applied: s' = 1/s, t' = -t/s
    assert torch.allclose(r["scale"], torch.tensor(1 / s.ravel()), rtol=1e-9)
    assert torch.allclose(r["shift"], torch.tensor(-t.ravel() / s.ravel()), rtol=1e-8, atol=1e-12)


def test_affine_of_gt_is_perfect_after_depth_alignment_and_median_scaling():
    rng = np.random.default_rng(1)
    gt, valid = _gt(rng)
    pred = 0.25 * gt.astype(np.float64) + 0.7
    r = evaluate_arrays(*_t(pred, gt, valid), alignment="depth", prediction_type="depth", min_depth=1e-3, max_depth=10.0)
    assert float(r["abs_rel"].abs().max()) < 1e-9
    r = evaluate_arrays(*_t(3.0 * gt.astype(np.float64), gt, valid), alignment="median", prediction_type="depth", min_depth=1e-3, max_depth=10.0)
    assert float(r["abs_rel"].abs().max()) < 1e-9


@pytest.mark.parametrize("e", [0.5, 0.9, 1.0, 1.1, 1.2])
def test_constant_multiplicative_error_under_no_alignment(e):
    rng = np.random.default_rng(2)
    gt, valid = _gt(rng, lo=1.0, hi=5.0)
    r = evaluate_arrays(*_t(e * gt, gt, valid), alignment="none", prediction_type="depth", min_depth=1e-3, max_depth=80.0)
    assert torch.allclose(r["abs_rel"], torch.full((3,), abs(e - 1), dtype=torch.float64), atol=1e-6)
    assert torch.allclose(r["silog"], torch.zeros(3, dtype=torch.float64), atol=1e-3)  # scale-invariant
    assert torch.allclose(r["rmse_log"], torch.full((3,), abs(math.log(e)), dtype=torch.float64), atol=1e-6)
    assert torch.allclose(r["log10"], torch.full((3,), abs(math.log10(e)), dtype=torch.float64), atol=1e-6)
    expect_d1 = 1.0 if max(e, 1 / e) < 1.25 else 0.0
    assert torch.equal(r["delta1"], torch.full((3,), expect_d1, dtype=torch.float64))


def test_hand_computed_values():
    g = np.array([[[1.0, 2.0], [4.0, 0.0]]], np.float32)  # last pixel invalid
    p = np.array([[[1.5, 2.0], [2.0, 99.0]]], np.float32)
    m = g > 0
    r = compute_metrics(*_t(p, g, m))
    # errors on the 3 valid pixels: +0.5, 0, -2
    assert r["n_valid"].item() == 3
    assert r["abs_rel"].item() == pytest.approx((0.5 / 1 + 0 + 2 / 4) / 3)
    assert r["sq_rel"].item() == pytest.approx((0.25 / 1 + 0 + 4 / 4) / 3)
    assert r["rmse"].item() == pytest.approx(math.sqrt((0.25 + 0 + 4) / 3))
    d = [math.log(1.5), 0.0, math.log(0.5)]
    assert r["rmse_log"].item() == pytest.approx(math.sqrt(sum(x * x for x in d) / 3))
    assert r["log10"].item() == pytest.approx(sum(abs(x) for x in d) / 3 / math.log(10))
    var = sum(x * x for x in d) / 3 - (sum(d) / 3) ** 2
    assert r["silog"].item() == pytest.approx(100 * math.sqrt(var))
    # ratios 1.5, 1, 2: delta1 counts 1 of 3; delta2 (1.5625) 2 of 3; delta3 (1.953125) 2 of 3
    assert r["delta1"].item() == pytest.approx(1 / 3)
    assert r["delta2"].item() == pytest.approx(2 / 3)
    assert r["delta3"].item() == pytest.approx(2 / 3)


def test_disparity_floor_and_range_clip():
    # a fit that drives some aligned disparities below the floor: those pixels become 1/floor, then
    # clipped to max_depth
    g = np.array([[[1.0, 2.0, 4.0, 8.0]]], np.float32)
    m = np.ones_like(g, bool)
    x = 1 / g.astype(np.float64)
    pred = np.array([[[x[0, 0, 0], x[0, 0, 1], x[0, 0, 2], -1.0]]])  # the last is negative: excluded from the fit
    al = align(*_t(pred, g, m), alignment="disparity", prediction_type="disparity", min_depth=1e-3, max_depth=5.0,
               disparity_floor=1e-3)
    assert al.n_fit.item() == 3
    assert al.depth[0, 0, :3].numpy() == pytest.approx([1.0, 2.0, 4.0])
    assert al.depth[0, 0, 3].item() == 5.0  # -1 -> floor 1e-3 -> 1000 m -> clipped to 5


def test_masked_median_numpy_convention():
    x = torch.tensor([[5.0, 1.0, 3.0, 2.0, 100.0], [4.0, 2.0, 9.0, 1.0, 7.0]], dtype=torch.float64)
    m = torch.tensor([[True, True, True, True, False], [True, True, True, True, True]])
    med = masked_median(x, m)
    assert med.tolist() == [np.median([5, 1, 3, 2]), np.median([4, 2, 9, 1, 7])]


def test_empty_mask_gives_nan_and_degenerate_fit_is_constant():
    g = np.full((1, 4, 4), 2.0, np.float32)
    r = compute_metrics(*_t(g, g, np.zeros_like(g, bool)))
    assert math.isnan(r["abs_rel"].item()) and r["n_valid"].item() == 0
    rng = np.random.default_rng(3)
    gt = rng.uniform(1, 3, (1, 4, 4)).astype(np.float32)
    al = align(*_t(np.ones_like(gt), gt, gt > 0), alignment="depth", prediction_type="depth", min_depth=1e-3, max_depth=10)
    assert al.scale.item() == 0.0
    assert torch.allclose(al.depth, torch.full_like(al.depth, float(gt.astype(np.float64).mean())))


# ---------------------------------------------------------------- resizing
def test_resize_matches_opencv_half_pixel_bilinear():
    import cv2

    rng = np.random.default_rng(4)
    small = rng.uniform(0, 1, (7, 9)).astype(np.float32)
    for size in [(21, 27), (16, 20), (5, 6)]:
        ours = resize_bilinear(torch.from_numpy(small), size).numpy()
        ref = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_full_frame_prediction_is_cropped_like_the_ground_truth():
    full = np.arange(375 * 1242, dtype=np.float32).reshape(375, 1242)
    crop = (23, 13, 352, 1216)
    out = prediction_to_gt_frame(full, (375, 1242), crop, (352, 1216)).numpy()
    np.testing.assert_array_equal(out, full[23:375, 13:1229])
    # a prediction of another size covers the cropped frame and is resized
    small = np.ones((176, 608), np.float32)
    assert prediction_to_gt_frame(small, (375, 1242), crop, (352, 1216)).shape == (352, 1216)


# ---------------------------------------------------------------- DA-2K ordering
def test_pair_accuracy_orders_by_prediction_type_and_ties_are_wrong():
    depth = np.array([[1.0, 2.0], [3.0, 3.0]])
    pts = np.array([[0, 0, 0, 1], [1, 0, 0, 1], [1, 0, 1, 1]])
    closer1 = np.array([True, False, True])
    assert pair_accuracy(depth, pts, closer1, "depth").tolist() == [True, True, False]
    assert pair_accuracy(1 / depth, pts, closer1, "disparity").tolist() == [True, True, False]
    assert pair_accuracy(depth, pts, closer1, "disparity").tolist() == [False, False, False]


# ---------------------------------------------------------------- vs an independent NumPy loop
def reference_numpy(pred, gt, valid, alignment, ptype, min_d, max_d, floor=1e-3):
    """Straightforward per-image implementation of the documented protocol."""
    out = {k: [] for k in METRICS}
    for p, g, m in zip(pred.astype(np.float64), gt.astype(np.float64), valid):
        if alignment == "disparity":
            x = p if ptype == "disparity" else np.where(p > 0, 1 / np.where(p > 0, p, 1), 0)
            fit = m & (x > 0)
            A = np.stack([x[fit], np.ones(fit.sum())], 1)
            (s, t), *_ = np.linalg.lstsq(A, 1 / g[fit], rcond=None)
            d = 1 / np.clip(s * x + t, floor, None)
        else:
            x = p if ptype == "depth" else 1 / np.maximum(p, floor)
            if alignment == "depth":
                A = np.stack([x[m], np.ones(m.sum())], 1)
                (s, t), *_ = np.linalg.lstsq(A, g[m], rcond=None)
                d = s * x + t
            elif alignment == "median":
                d = x * np.median(g[m]) / np.median(x[m])
            else:
                d = x
        d = np.clip(d, min_d, max_d)[m]
        gg = g[m]
        out["abs_rel"].append(np.mean(np.abs(d - gg) / gg))
        out["sq_rel"].append(np.mean((d - gg) ** 2 / gg))
        out["rmse"].append(np.sqrt(np.mean((d - gg) ** 2)))
        out["rmse_log"].append(np.sqrt(np.mean((np.log(d) - np.log(gg)) ** 2)))
        out["log10"].append(np.mean(np.abs(np.log10(d) - np.log10(gg))))
        e = np.log(d) - np.log(gg)
        out["silog"].append(np.sqrt(np.mean(e**2) - np.mean(e) ** 2) * 100)
        ratio = np.maximum(d / gg, gg / d)
        for k in (1, 2, 3):
            out[f"delta{k}"].append(np.mean(ratio < 1.25**k))
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize(
    "alignment,ptype", [("disparity", "disparity"), ("disparity", "depth"), ("depth", "depth"),
                        ("depth", "disparity"), ("median", "depth"), ("none", "depth")]
)
def test_batched_matches_independent_numpy_loop(alignment, ptype):
    rng = np.random.default_rng(5)
    gt, valid = _gt(rng, b=4, h=30, w=40, lo=0.2, hi=12.0)
    valid &= gt < 10.0  # the dataset range, as loaders apply it
    noise = rng.lognormal(0, 0.3, gt.shape)
    if ptype == "disparity":
        pred = (2.0 / np.maximum(gt, 0.1) * noise + 0.3).astype(np.float32)
        pred[:, :2, :2] = -0.5  # negative disparities exercise the fit mask and the floor
    else:
        pred = (1.7 * np.maximum(gt, 0.1) * noise + 0.2).astype(np.float32)
    ours = evaluate_arrays(*_t(pred, gt, valid), alignment=alignment, prediction_type=ptype, min_depth=1e-3, max_depth=10.0)
    ref = reference_numpy(pred, gt, valid, alignment, ptype, 1e-3, 10.0)
    for k in METRICS:
        np.testing.assert_allclose(ours[k].numpy(), ref[k], rtol=1e-6, atol=1e-9, err_msg=k)


def test_dense_api_workspace_reuse_and_accelerator_reductions_agree(monkeypatch):
    from bridgedepth.evaluation import Workspace, _segments

    rng = np.random.default_rng(6)
    gt, valid = _gt(rng, b=3, h=20, w=30)
    pred = (1.0 / np.maximum(gt, 0.1) * rng.lognormal(0, 0.2, gt.shape)).astype(np.float32)
    kw = dict(alignment="disparity", prediction_type="disparity", min_depth=1e-3, max_depth=10.0)
    ref = evaluate_arrays(*_t(pred, gt, valid), **kw)
    # the dense API (whole aligned map, then metrics) gives the same numbers
    al = align(*_t(pred, gt, valid), **kw)
    dense = compute_metrics(al.depth, torch.from_numpy(gt), torch.from_numpy(valid))
    # one workspace reused over batches of different sizes
    work = Workspace()
    big = evaluate_arrays(*_t(pred, gt, valid), work=work, **kw)
    small = evaluate_arrays(*_t(pred[:1, :10], gt[:1, :10], valid[:1, :10]), work=work, **kw)
    again = evaluate_arrays(*_t(pred, gt, valid), work=work, **kw)
    # the accelerator code path (index_add_ reductions) on CPU tensors
    monkeypatch.setattr(_segments.Segments, "on_cpu", False, raising=False)
    orig_init = _segments.Segments.__init__

    def init(self, counts):
        orig_init(self, counts)
        self.on_cpu = False

    monkeypatch.setattr(_segments.Segments, "__init__", init)
    accel = evaluate_arrays(*_t(pred, gt, valid), **kw)
    small_ref = evaluate_arrays(*_t(pred[:1, :10], gt[:1, :10], valid[:1, :10]), **kw)
    for k in METRICS:
        for other in (dense, big, again, accel):
            np.testing.assert_allclose(other[k].numpy(), ref[k].numpy(), rtol=1e-9, err_msg=k)
        np.testing.assert_allclose(small[k].numpy(), small_ref[k].numpy(), rtol=1e-9, err_msg=k)


def test_runner_batches_mixed_sizes_and_counts_skips():
    from bridgedepth.data.benchmarks import GroundTruth, Item
    from bridgedepth.evaluation import evaluate_dense

    rng = np.random.default_rng(7)
    sizes = [(12, 16), (12, 16), (20, 10), (12, 16), (20, 10), (5, 5)]
    data = {}
    for i, (h, w) in enumerate(sizes):
        g = rng.uniform(0.5, 9.0, (h, w)).astype(np.float32)
        v = rng.uniform(size=(h, w)) > 0.1
        if i == 5:
            v[:] = False
            v[0, :3] = True  # 3 valid pixels: skipped
        p = (1 / g * rng.lognormal(0, 0.2, (h, w))).astype(np.float32)
        data[f"im{i}"] = (g, v, p)

    class Bench:
        name, min_depth, max_depth = "fake", 1e-3, 10.0

        def items(self, limit=None):
            return [Item(k, None, None) for k in data][:limit]

        def load_gt(self, item):
            g, v, _ = data[item.key]
            return GroundTruth(np.where(v, g, 0), v, g.shape)

        def constants(self):
            return {}

    class Source:
        def get(self, key, item=None, benchmark=None):
            return data[key][2]

    res = evaluate_dense(Bench(), Source(), prediction_type="disparity", alignment="disparity",
                         batch_pixels=400, progress=False)
    assert res.n_images == 5 and res.n_skipped == 1 and res.per_image[5]["skipped"]
    per = {k: [] for k in METRICS}
    for k in list(data)[:5]:
        g, v, p = data[k]
        r = reference_numpy(p[None], g[None], v[None], "disparity", "disparity", 1e-3, 10.0)
        for m in METRICS:
            per[m].append(r[m][0])
    for m in METRICS:
        assert res.metrics[m] == pytest.approx(float(np.mean(per[m])), rel=1e-9), m
        assert [row["key"] for row in res.per_image] == list(data)
