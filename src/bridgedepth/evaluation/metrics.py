"""Depth metrics per image over the valid pixels, batched over images of one size.

With ``p`` the aligned predicted depth and ``g`` the ground-truth depth (metres, both > 0) over the
``n`` valid pixels of one image:

========== ==========================================================================
abs_rel    mean(|p - g| / g)
sq_rel     mean((p - g)^2 / g)
rmse       sqrt(mean((p - g)^2))                                   (metres)
rmse_log   sqrt(mean((ln p - ln g)^2))
log10      mean(|log10 p - log10 g|)
silog      100 * sqrt(mean(e^2) - mean(e)^2),  e = ln p - ln g     (lambda = 1, x100)
delta1..3  mean(max(p/g, g/p) < 1.25^k), k = 1, 2, 3
========== ==========================================================================

A dataset's score is the plain mean of the per-image values over the evaluated images.
"""

from __future__ import annotations

import math

import torch

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "delta1", "delta2", "delta3")
LOWER_IS_BETTER = {"abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"}
HIGHER_IS_BETTER = {"delta1", "delta2", "delta3", "accuracy"}


def compute_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image metrics: ``pred``, ``gt`` (B, H, W) depth in metres, ``mask`` bool (B, H, W).

    Returns a dict of (B,) float64 tensors (the keys of :data:`METRICS`) plus ``n_valid`` (B,) int64.
    Pixels outside the mask never enter a sum (they may hold anything). Images with an empty mask
    give NaN.
    """
    b = pred.shape[0]
    m = mask.reshape(b, -1)
    p = torch.where(m, pred.reshape(b, -1).to(torch.float64), 1.0)
    g = torch.where(m, gt.reshape(b, -1).to(torch.float64), 1.0)
    w = m.to(torch.float64)
    n = w.sum(1)
    nz = n.clamp(min=1.0)

    def mean(v: torch.Tensor) -> torch.Tensor:
        return (v * w).sum(1) / nz

    diff = p - g
    adiff = diff.abs()
    sq = diff * diff
    e = torch.log(p) - torch.log(g)
    ratio = torch.maximum(p / g, g / p)
    me = mean(e)
    out = {
        "abs_rel": mean(adiff / g),
        "sq_rel": mean(sq / g),
        "rmse": mean(sq).sqrt(),
        "rmse_log": mean(e * e).sqrt(),
        "log10": mean(e.abs()) / math.log(10.0),
        "silog": (mean(e * e) - me * me).clamp(min=0.0).sqrt() * 100.0,
        "delta1": mean((ratio < 1.25).to(torch.float64)),
        "delta2": mean((ratio < 1.25**2).to(torch.float64)),
        "delta3": mean((ratio < 1.25**3).to(torch.float64)),
    }
    empty = n == 0
    for k in out:
        out[k] = torch.where(empty, torch.nan, out[k])
    out["n_valid"] = n.to(torch.int64)
    return out
