"""Losses: invariances, optimum, masks, gradients, trimming."""

from __future__ import annotations

import math

import pytest
import torch

from bridgedepth.config import LossConfig
from bridgedepth.data.targets import SOURCE_GT, SOURCE_NONE, SOURCE_PSEUDO
from bridgedepth.mde.losses import (
    DepthLoss,
    align_scale_shift,
    gradient_matching_loss,
    relative_loss,
    silog_loss,
    ssi_loss,
    trimmed_mean,
)


def _batch(seed=0, b=2, h=12, w=10, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(b, h, w, generator=g, dtype=dtype) + 0.1
    pred = torch.rand(b, h, w, generator=g, dtype=dtype)
    mask = torch.rand(b, h, w, generator=g) > 0.2
    return pred, target, mask


def test_align_recovers_known_affine():
    pred, target, mask = _batch()
    t = 3.0 * pred - 0.7
    s, sh = align_scale_shift(pred, t, mask)
    assert torch.allclose(s, torch.full_like(s, 3.0), atol=1e-4)
    assert torch.allclose(sh, torch.full_like(sh, -0.7), atol=1e-4)


@pytest.mark.parametrize("residual", ["absolute", "squared"])
@pytest.mark.parametrize("norm,alignment", [("mad", "lstsq"), ("none", "lstsq"), ("mad", "median_mad")])
def test_ssi_invariant_to_prediction_scale_and_shift(residual, norm, alignment):
    pred, target, mask = _batch(1)
    kw = dict(ssi_residual=residual, target_normalization=norm, alignment=alignment)
    base = relative_loss(pred, target, mask, **kw).total
    for a, b in [(2.5, 0.0), (0.01, 5.0), (7.0, -3.0)]:
        other = relative_loss(a * pred + b, target, mask, **kw).total
        assert torch.allclose(base, other, rtol=1e-4, atol=1e-6)
    # and it is not trivially constant
    assert not torch.allclose(base, relative_loss(pred.flip(1), target, mask).total)


def test_zero_at_optimum():
    pred, target, mask = _batch(2)
    for alignment in ("median_mad", "lstsq"):
        for a, b in [(1.0, 0.0), (0.5, -2.0), (10.0, 3.0)]:
            terms = relative_loss(a * target + b, target, mask, alignment=alignment)
            assert float(terms.total) < 1e-5 and float(terms.gm) < 1e-5
    # lambda 0.5: a global scale error costs sqrt(1 - 0.5) * |log 3|
    assert abs(float(silog_loss(target * 3.0, target, mask)) - 0.5**0.5 * math.log(3.0)) < 1e-4
    assert float(silog_loss(target, target, mask)) < 1e-5


def test_masked_pixels_change_nothing():
    pred, target, mask = _batch(3)
    cfg = LossConfig()
    loss = DepthLoss(cfg)
    base = loss(pred, target, mask)
    p2, t2 = pred.clone(), target.clone()
    p2[~mask] = torch.randn(int((~mask).sum())) * 100
    t2[~mask] = torch.randn(int((~mask).sum())) * 100
    other = loss(p2, t2, mask)
    assert torch.allclose(base.total, other.total, atol=1e-6)
    assert torch.allclose(base.gm, other.gm, atol=1e-6)
    d = target * 2 + 0.1
    d2 = d.clone()
    d2[~mask] = 1e6
    assert torch.allclose(loss.metric(d, target, mask), loss.metric(d2, target, mask))
    # gradients are exactly zero at masked pixels
    p = pred.clone().requires_grad_(True)
    loss(p, target, mask).total.backward()
    assert float(p.grad[~mask].abs().max()) == 0.0
    assert float(p.grad[mask].abs().max()) > 0.0


def test_empty_masks_give_zero_with_graph():
    pred, target, mask = _batch(4)
    p = pred.clone().requires_grad_(True)
    terms = relative_loss(p, target, torch.zeros_like(mask))
    assert float(terms.total.detach()) == 0.0
    terms.total.backward()
    # one image empty, the other valid: equals the loss of the valid image alone
    m = mask.clone()
    m[0] = False
    both = relative_loss(pred, target, m).total
    alone = relative_loss(pred[1:], target[1:], m[1:]).total
    assert torch.allclose(both, alone)


@pytest.mark.parametrize("residual", ["absolute", "squared"])
@pytest.mark.parametrize("alignment", ["median_mad", "lstsq"])
def test_gradcheck(residual, alignment):
    pred, target, mask = _batch(5, b=2, h=6, w=5, dtype=torch.float64)
    pred = (pred + 0.5 * target).detach()  # positively correlated: the lstsq scale is not clamped
    pred.requires_grad_(True)
    source = torch.where(torch.rand(pred.shape, generator=torch.Generator().manual_seed(1)) > 0.5, 2, 1).to(torch.uint8)

    def f(p):
        return relative_loss(p, target, mask, source, ssi_residual=residual, trim=0.2, gm_scales=2,
                             alignment=alignment).total

    assert torch.autograd.gradcheck(f, (pred,), eps=1e-6, atol=1e-5)
    gt = target.clone()
    assert torch.autograd.gradcheck(lambda p: silog_loss(p.abs() + 0.1, gt, mask), (pred,), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradcheck(lambda p: gradient_matching_loss(p, mask, 3), (pred,), eps=1e-6, atol=1e-5)


def test_trimming_removes_exactly_the_largest():
    vals = torch.arange(20, dtype=torch.float32).reshape(1, 4, 5)
    vals = vals[:, :, torch.randperm(5, generator=torch.Generator().manual_seed(0))]
    mask = torch.ones(1, 4, 5, dtype=torch.bool)
    mask[0, 0, 0] = False  # 19 valid pixels -> floor(0.1 * 19) = 1 dropped
    loss, keep = trimmed_mean(vals, mask, 0.1)
    valid_vals = vals[mask]
    dropped = mask & ~keep
    assert int(dropped.sum()) == 1 and float(vals[dropped]) == float(valid_vals.max())
    assert torch.allclose(loss, (valid_vals.sum() - valid_vals.max()) / 18)
    loss3, keep3 = trimmed_mean(vals, mask, 0.25)  # floor(4.75) = 4 dropped
    assert int((mask & ~keep3).sum()) == 4
    assert set(vals[mask & ~keep3].tolist()) == set(sorted(valid_vals.tolist())[-4:])
    loss0, keep0 = trimmed_mean(vals, mask, 0.0)
    assert torch.equal(keep0, mask) and torch.allclose(loss0, valid_vals.mean())
    # ties: exactly floor(trim * n) pixels go
    ties = torch.ones(1, 4, 5)
    _, kt = trimmed_mean(ties, torch.ones_like(mask), 0.1)
    assert int((~kt).sum()) == 2


def test_trimming_ignores_outliers_in_ssi():
    pred, target, mask = _batch(6)
    mask[:] = True
    clean = relative_loss(2 * target + 1, target, mask, trim=0.1).ssi
    corrupted = (2 * target + 1).clone()
    corrupted[0, 0, :3] = 100.0  # 3 outliers out of 120 pixels, trim drops 12
    t_trim = relative_loss(corrupted, target, mask, trim=0.1, ssi_residual="squared").ssi
    t_full = relative_loss(corrupted, target, mask, trim=0.0, ssi_residual="squared").ssi
    assert float(clean) < 1e-5 and float(t_full) > float(t_trim) > float(clean)


def test_loss_config_weights_used():
    pred, target, mask = _batch(7)
    a = DepthLoss(LossConfig(gm_weight=0.0))(pred, target, mask)
    b = DepthLoss(LossConfig(gm_weight=4.0))(pred, target, mask)
    assert torch.allclose(a.total, a.ssi)
    assert torch.allclose(b.total, b.ssi + 4 * b.gm)
    with pytest.raises(ValueError):
        ssi_loss(pred, target, mask, residual="cubic")
    from bridgedepth.config import ConfigError

    for bad in (dict(trim=1.5), dict(trim=-0.1), dict(alignment="huber"), dict(trim_sources="gt"), dict(gm_scales=0)):
        with pytest.raises(ConfigError, match="train.loss"):
            DepthLoss(LossConfig(**bad))


def test_half_precision_inputs_computed_in_float32():
    pred, target, mask = _batch(8)
    ref = relative_loss(pred, target, mask).total
    p16 = pred.bfloat16().requires_grad_(True)
    out = relative_loss(p16, target.bfloat16(), mask).total
    assert out.dtype == torch.float32 and abs(float(out.detach()) - float(ref)) < 0.05 * float(ref)
    out.backward()
    assert p16.grad is not None and p16.grad.dtype == torch.bfloat16


# ------------------------------------------------------------------------------------------------
# Sign of the scale (issue #11, item 5)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alignment", ["median_mad", "lstsq"])
def test_inverted_disparity_is_penalised(alignment):
    """A model must not satisfy the relative loss with inverted disparity: the loss of -t is at least the
    loss of a constant prediction, while t itself (and any positive affine map of it) costs ~0."""
    _, target, mask = _batch(9, b=2, h=24, w=20)
    target = target.double()
    kw = dict(alignment=alignment)
    same = relative_loss(target, target, mask, **kw)
    inverted = relative_loss(-target, target, mask, **kw)
    constant = relative_loss(torch.ones_like(target), target, mask, **kw)
    assert float(same.total) < 1e-6
    assert float(inverted.total) >= 0.99 * float(constant.total) > 0.1
    assert float(inverted.ssi) >= 0.99 * float(constant.ssi) > 0.1
    assert bool((inverted.scale >= 0).all())
    if alignment == "median_mad":
        # MAD of the prediction is positive: -t is matched against t with a positive scale, costing
        # twice a constant's SSI, and the gradient points the prediction back
        assert float(inverted.ssi) > 1.9 * float(constant.ssi)
        p = (-target).clone().requires_grad_(True)
        relative_loss(p, target, mask, **kw).total.backward()
        assert float(p.grad[mask].abs().max()) > 0


# ------------------------------------------------------------------------------------------------
# Trimming only pseudo-label pixels (issue #11, item 4)
# ------------------------------------------------------------------------------------------------


def _hybrid_case():
    """A hybrid sample: left half GT, right half pseudo-label; the largest residuals are on GT pixels."""
    g = torch.Generator().manual_seed(10)
    b, h, w = 1, 16, 20
    target = torch.rand(b, h, w, generator=g, dtype=torch.float64) + 0.2
    mask = torch.ones(b, h, w, dtype=torch.bool)
    mask[0, 0, :3] = False
    source = torch.full((b, h, w), SOURCE_PSEUDO, dtype=torch.uint8)
    source[:, :, : w // 2] = SOURCE_GT
    source[~mask] = SOURCE_NONE
    pred = target + 0.01 * torch.randn(b, h, w, generator=g, dtype=torch.float64)
    gt_px = (source == SOURCE_GT).nonzero()
    pred[gt_px[:20, 0], gt_px[:20, 1], gt_px[:20, 2]] += 3.0  # large errors on exact GT
    return pred, target, mask, source


def test_trimming_drops_pseudo_pixels_only():
    pred, target, mask, source = _hybrid_case()
    is_gt, is_pseudo = source == SOURCE_GT, source == SOURCE_PSEUDO
    _, r, keep, _, _ = ssi_loss(pred, target, mask, trim=0.1, trim_eligible=is_pseudo, return_details=True)
    dropped = mask & ~keep
    assert bool(keep[is_gt].all())  # every GT pixel is kept, the large GT residuals included
    n_pseudo = int(is_pseudo.sum())
    assert int(dropped.sum()) == math.floor(0.1 * n_pseudo) and bool(is_pseudo[dropped].all())
    # the dropped ones are the largest residuals among pseudo-label pixels
    assert float(r[dropped].abs().min()) >= float(r[is_pseudo & keep].abs().max())

    # DepthLoss with the source map (default trim_sources="pseudo") vs trimming everything
    pseudo_only = DepthLoss(LossConfig())(pred, target, mask, source)
    everything = DepthLoss(LossConfig(trim_sources="all"))(pred, target, mask, source)
    no_map = DepthLoss(LossConfig())(pred, target, mask)  # without a source map every valid pixel may go
    assert float(pseudo_only.ssi) > 2 * float(everything.ssi)
    assert torch.allclose(no_map.total, everything.total)
    # teacher data (all GT): nothing is trimmed
    all_gt = torch.where(mask, SOURCE_GT, SOURCE_NONE).to(torch.uint8)
    assert torch.allclose(DepthLoss(LossConfig())(pred, target, mask, all_gt).total,
                          DepthLoss(LossConfig(trim=0.0))(pred, target, mask).total)


def test_trainer_passes_the_source_map_to_the_loss():
    from bridgedepth.config import load_config
    from bridgedepth.mde.trainer import _stage_loss

    pred, target, mask, source = _hybrid_case()
    for stage in ("teacher", "student-pseudo", "student-hybrid"):
        fn = _stage_loss(load_config("tiny", [f"train.stage={stage}"]))
        got = fn(pred, target, mask, source)
        assert torch.allclose(got, relative_loss(pred, target, mask, source).total)
        assert not torch.allclose(got, relative_loss(pred, target, mask).total)


# ------------------------------------------------------------------------------------------------
# Metric GT beyond max_depth (issue #11, item 6)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["metric", "scale-head"])
def test_metric_gt_beyond_max_depth_is_masked(stage):
    from bridgedepth.config import load_config
    from bridgedepth.mde.trainer import _stage_loss

    g = torch.Generator().manual_seed(11)
    gt = torch.rand(2, 12, 10, generator=g) * 70 + 2.0
    far = torch.zeros_like(gt, dtype=torch.bool)
    far[:, :3] = True
    gt[far] = 150.0
    valid = torch.ones_like(far)
    # a prediction equal to GT where the head can reach it, and at the cap beyond
    pred = torch.where(far, torch.full_like(gt, 80.0 * 0.999), gt).requires_grad_(True)
    fn = _stage_loss(load_config("tiny", [f"train.stage={stage}", "model.max_depth=80"]))
    loss = fn(pred, gt, valid, torch.full_like(gt, SOURCE_GT, dtype=torch.uint8))
    assert float(loss.detach()) < 1e-4
    loss.backward()
    assert float(pred.grad[far].abs().max()) == 0.0
    # switched off, the 150 m pixels give a loss no prediction in range can remove
    fn_off = _stage_loss(load_config("tiny", [f"train.stage={stage}", "model.max_depth=80",
                                              "train.loss.mask_beyond_max_depth=false"]))
    assert float(fn_off(pred, gt, valid, None).detach()) > 0.1
