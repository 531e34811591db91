"""The metric stage started from a relative checkpoint predicts depth in the right order from step 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from bridgedepth.config import LossConfig, load_config
from bridgedepth.data.scenes import render_scene
from bridgedepth.mde import build_model, save_model
from bridgedepth.mde.losses import DepthLoss
from bridgedepth.mde.model import parameter_groups, relative_to_metric
from bridgedepth.mde.model import ScaleHead, apply_scale, forward_with_features
from bridgedepth.mde.trainer import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    _build_stage_model,
    _calibrate_metric_head,
    _init_scale_from_data,
)


def _scenes(seeds):
    rgb, depth, valid = [], [], []
    for s in seeds:
        sc = render_scene(s, "mixed", (64, 64))
        rgb.append(sc["rgb"][4:60, 4:60])
        depth.append(sc["depth"][4:60, 4:60])
        valid.append(sc["valid"][4:60, 4:60])
    x = torch.from_numpy(np.stack(rgb)).permute(0, 3, 1, 2).float() / 255
    d = torch.from_numpy(np.stack(depth)).float()
    return (x - IMAGENET_MEAN) / IMAGENET_STD, d, torch.from_numpy(np.stack(valid)) & (d > 0)


def _spearman(pred, depth, valid):
    return [spearmanr(p[m].numpy(), g[m].numpy()).statistic for p, g, m in zip(pred, depth, valid)]


def test_relative_to_metric_orders_like_depth():
    rel = build_model("micro", seed=3).eval()
    met = relative_to_metric(rel, 10).eval()
    assert met.config.depth_estimation_type == "metric" and met.config.max_depth == 10
    x = torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        r = rel(pixel_values=x).predicted_depth
        m = met(pixel_values=x).predicted_depth
    on = r > 0  # ReLU-active pixels: the metric logits are exactly -0.3 * the relative output
    assert float(on.float().mean()) > 0.5
    assert torch.allclose(m[on], 10 * torch.sigmoid(-0.3 * r[on]), atol=1e-5)
    assert bool((m[~on] >= 5.0 - 1e-5).all())  # clipped (far) pixels map to the far half


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_first_metric_prediction_is_not_inversely_ordered(tmp_path):
    """A tiny relative model trained a few steps, then the metric stage's model built from its checkpoint:
    the first metric prediction's Spearman correlation with GT depth is not negative (the starting
    commit copied the relative head and got about -0.7)."""
    torch.manual_seed(0)
    x, d, v = _scenes(range(16))
    disp = torch.where(v, 1.0 / d.clamp_min(1e-6), torch.zeros_like(d))
    rel = build_model("micro", seed=0).train()
    opt = torch.optim.AdamW(parameter_groups(rel, 2e-4, 10.0), lr=2e-4)
    loss = DepthLoss(LossConfig())
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        idx = torch.randint(0, len(x), (8,), generator=g)
        l = loss(rel(pixel_values=x[idx]).predicted_depth, disp[idx], v[idx]).total
        opt.zero_grad()
        l.backward()
        opt.step()
    save_model(rel.eval(), tmp_path / "rel")

    xt, dt, vt = _scenes(range(1000, 1008))
    with torch.no_grad():
        rel_rho = np.mean(_spearman(-rel(pixel_values=xt).predicted_depth, dt, vt))  # disparity vs depth
    assert rel_rho > 0.2  # the relative model has learnt the order

    cfg = load_config("tiny", ["train.stage=metric", "model.name=micro", "model.max_depth=20"])
    metric = _build_stage_model(cfg, str(tmp_path / "rel"))
    assert metric.config.depth_estimation_type == "metric" and metric.training
    with torch.no_grad():
        rho = _spearman(metric.eval()(pixel_values=xt).predicted_depth, dt, vt)
    assert np.mean(rho) >= 0 and sum(r < 0 for r in rho) == 0
    assert np.mean(rho) > rel_rho - 0.05  # the order carries over from the relative model


class _Batches:
    """A stand-in for the trainer's MixtureLoader: the same batches of un-normalised images in turn."""

    def __init__(self, batches):
        self.batches, self.i = batches, 0

    def next_batch(self, normalize=False):
        b = self.batches[self.i % len(self.batches)]
        self.i += 1
        return b


def _uint8(x):
    """The normalised images back to what next_batch(normalize=False) gives: uint8 (B, 3, H, W)."""
    return ((x * IMAGENET_STD + IMAGENET_MEAN) * 255).round().clamp(0, 255).to(torch.uint8)


def _norm(u):
    return (u.float() / 255 - IMAGENET_MEAN) / IMAGENET_STD


def _raw_batches(seeds_per_batch):
    out = []
    for seeds in seeds_per_batch:
        x, _, v = _scenes(seeds)
        out.append({"image": _uint8(x), "valid": v})
    return out


def test_scale_head_starts_at_the_least_squares_affine_map():
    """Ground truth that *is* an affine map of the model's disparity (1/depth = a * disparity + b, as for a
    model trained up to scale and shift): the initial head reproduces it, shift included."""
    model = build_model("micro", seed=1).eval()
    batches = _raw_batches([range(0, 4), range(4, 8)])
    a, b = 0.3, 0.05
    for batch in batches:
        with torch.no_grad():
            disp, _ = forward_with_features(model, _norm(batch["image"]))
        batch["target"] = 1.0 / (a * disp.float() + b)
        batch["valid"] = batch["valid"] & (batch["target"] < 50)
    head = ScaleHead(model.config.backbone_config.hidden_size, max_depth=50)
    _init_scale_from_data(model, head, _Batches(batches), batches=2)
    assert float(head.mlp[2].bias[0].detach().exp()) == pytest.approx(a, rel=1e-4)
    assert float(head.mlp[2].bias[1].detach()) == pytest.approx(b, abs=1e-5)
    with torch.no_grad():
        x = _norm(batches[0]["image"])
        disp, feats = forward_with_features(model, x)
        depth = apply_scale(disp, *head(feats[-1]), max_depth=50)
    m = batches[0]["valid"]
    torch.testing.assert_close(depth[m], batches[0]["target"][m], rtol=1e-3, atol=1e-4)


def test_metric_head_calibration_recovers_the_scale_of_depth():
    """After relative_to_metric the depth is max_depth * sigmoid(z) with an arbitrary scale; ground truth
    made as max_depth * sigmoid(alpha z + beta) is recovered exactly by the calibration, and on real
    procedural scenes the calibrated start is far closer to the ground truth than the uncalibrated one."""
    met = relative_to_metric(build_model("micro", seed=2).eval(), 20).eval()
    batches = _raw_batches([range(10, 14), range(14, 18)])
    zs = []
    hook = met.head.conv3.register_forward_hook(lambda _m, _i, o: zs.append(o.detach()[:, 0]))
    for batch in batches:
        with torch.no_grad():
            met(pixel_values=_norm(batch["image"]))
        batch["target"] = 20 * torch.sigmoid(0.7 * zs.pop() - 1.5)
    hook.remove()
    alpha, beta = _calibrate_metric_head(met, _Batches(batches), batches=2)
    assert alpha == pytest.approx(0.7, rel=1e-4) and beta == pytest.approx(-1.5, abs=1e-4)
    with torch.no_grad():
        pred = met(pixel_values=_norm(batches[1]["image"])).predicted_depth
    m = batches[1]["valid"]
    torch.testing.assert_close(pred[m], batches[1]["target"][m], rtol=1e-3, atol=1e-3)

    # real depth: the uncalibrated head says about max_depth / 2 everywhere
    met = relative_to_metric(build_model("micro", seed=2).eval(), 80).eval()
    x, d, v = _scenes(range(20, 28))
    real = [{"image": _uint8(x), "target": d, "valid": v}]
    x = _norm(real[0]["image"])

    def absrel():
        with torch.no_grad():
            p = met(pixel_values=x).predicted_depth
        return float(((p - d).abs() / d)[v & (d < 80)].mean())

    before = absrel()
    _calibrate_metric_head(met, _Batches(real), batches=1)
    after = absrel()
    assert after < 0.5 * before, (before, after)
