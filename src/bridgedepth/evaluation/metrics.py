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

from ._segments import F64, Segments, Workspace, gather

METRICS = ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "delta1", "delta2", "delta3")
LOWER_IS_BETTER = {"abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog"}
HIGHER_IS_BETTER = {"delta1", "delta2", "delta3", "accuracy"}


def metrics_flat(
    d: torch.Tensor, g: torch.Tensor, segs: Segments, *, inv_g: torch.Tensor | None = None,
    work: Workspace | None = None,
) -> dict[str, torch.Tensor]:
    """Per-image metrics from the gathered valid pixels: ``d`` aligned depth, ``g`` ground truth
    (flat float64, both > 0). ``d`` is consumed (overwritten). Empty images give NaN.

    ``delta_k`` is computed as ``|ln(p/g)| < ln(1.25^k)``, the same test as ``max(p/g, g/p) < 1.25^k``
    (they can differ only for a ratio within one rounding of the threshold)."""
    n = segs.counts.to(F64)
    nz = n.clamp(min=1.0)
    n_px = d.numel()

    def buf(name, dtype=F64):
        return work.get(name, n_px, dtype, d.device) if work is not None else None

    y = inv_g if inv_g is not None else torch.reciprocal(g, out=buf("m_inv"))
    e = torch.div(d, g, out=buf("m_e")).log_()  # ln p - ln g
    diff = d.sub_(g)
    out = {"abs_rel": segs.dot(torch.abs(diff, out=buf("m_abs")), y) / nz}
    sq = diff.mul_(diff)
    out["sq_rel"] = segs.dot(sq, y) / nz
    out["rmse"] = (segs.sum(sq) / nz).sqrt()
    me, mee = segs.sum(e) / nz, segs.dot(e, e) / nz
    out["rmse_log"] = mee.sqrt()
    ae = e.abs_()
    out["log10"] = segs.sum(ae) / nz / math.log(10.0)
    out["silog"] = (mee - me * me).clamp(min=0.0).sqrt() * 100.0
    for k in (1, 2, 3):
        out[f"delta{k}"] = segs.count_lt(ae, k * math.log(1.25), buf("m_lt", torch.bool)) / nz
    empty = n == 0
    out = {k: torch.where(empty, torch.full_like(v, float("nan")), v) for k, v in out.items()}
    out = {k: out[k] for k in METRICS}
    out["n_valid"] = segs.counts
    return out


def compute_metrics(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image metrics: ``pred``, ``gt`` (B, H, W) depth in metres, ``mask`` bool (B, H, W).

    Returns a dict of (B,) float64 tensors (the keys of :data:`METRICS`) plus ``n_valid`` (B,) int64.
    Pixels outside the mask never enter a sum (they may hold anything). Images with an empty mask
    give NaN.
    """
    segs, (p, g) = gather(mask, pred, gt)
    return metrics_flat(p, g, segs)
