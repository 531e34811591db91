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
from bridgedepth.mde.trainer import IMAGENET_MEAN, IMAGENET_STD, _build_stage_model


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
