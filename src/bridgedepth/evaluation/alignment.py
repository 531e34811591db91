"""Per-image alignment of a prediction to the ground truth, batched over images of one size.

Every function takes tensors of shape (B, H, W): the prediction (already resized to the ground
truth's resolution), the ground-truth depth in metres and the boolean evaluation mask, and returns
the aligned prediction *as depth in metres*, clipped to the dataset's ``[min_depth, max_depth]``,
together with the per-image scale and shift. Everything is computed in float64.

Alignments (the names are CLI contracts):

* ``"disparity"`` — affine-invariant inverse depth (the paper's protocol, Marigold's
  ``least_square_disparity``). The prediction is taken as disparity (a depth prediction is inverted
  first). Scale ``s`` and shift ``t`` minimise ``sum (s*pred + t - 1/gt)^2`` over the evaluation
  mask restricted to ``pred > 0``; the aligned disparity ``s*pred + t`` is clipped below at
  ``disparity_floor`` (1e-3), inverted, and clipped to the dataset range.
* ``"depth"`` — affine-invariant depth (Marigold's ``least_square``). The prediction is taken as
  depth (a disparity prediction becomes ``1 / max(pred, disparity_floor)``); ``s, t`` minimise
  ``sum (s*pred + t - gt)^2`` over the evaluation mask; ``s*pred + t`` is clipped to the range.
* ``"median"`` — ``s = median(gt) / median(pred)`` over the mask (NumPy's median: the mean of the
  two middle values for even counts), ``t = 0``, in depth space.
* ``"none"`` — metric predictions: ``s = 1, t = 0``, in depth space.

A degenerate fit (a prediction that is constant over the mask) gives ``s = 0`` and ``t`` = the mean
target, i.e. a constant prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

ALIGNMENTS = ("disparity", "depth", "median", "none")
PREDICTION_TYPES = ("disparity", "depth")


@dataclass
class Aligned:
    depth: torch.Tensor  # (B, H, W) float64, metres, clipped to [min_depth, max_depth]
    scale: torch.Tensor  # (B,) float64
    shift: torch.Tensor  # (B,) float64
    n_fit: torch.Tensor  # (B,) int64: pixels the fit used


def least_squares_scale_shift(
    x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image, ``(s, t)`` minimising ``sum_mask (s*x + t - y)^2``; returns ``(s, t, n)``.

    Uses centred sums (numerically stable in float64). Pixels outside ``mask`` may hold anything,
    including inf or NaN: they are replaced before any arithmetic.
    """
    m = mask.to(torch.float64)
    x = torch.where(mask, x.to(torch.float64), 0.0)
    y = torch.where(mask, y.to(torch.float64), 0.0)
    dims = tuple(range(1, x.ndim))
    n = m.sum(dims)
    nz = n.clamp(min=1.0)
    xm = x.sum(dims) / nz
    ym = y.sum(dims) / nz
    shape = (-1,) + (1,) * (x.ndim - 1)
    xc = (x - xm.view(shape)) * m
    yc = (y - ym.view(shape)) * m
    sxx = (xc * xc).sum(dims)
    sxy = (xc * yc).sum(dims)
    ok = sxx > 1e-300
    s = torch.where(ok, sxy / torch.where(ok, sxx, 1.0), 0.0)
    t = ym - s * xm
    return s, t, n.to(torch.int64)


def masked_median(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image median over ``mask`` with NumPy's convention (mean of the two middle values for an
    even count). Images with an empty mask give NaN."""
    b = x.shape[0]
    flat = torch.where(mask, x.to(torch.float64), torch.inf).reshape(b, -1)
    n = mask.reshape(b, -1).sum(1)
    srt, _ = torch.sort(flat, dim=1)
    lo = ((n - 1).clamp(min=0) // 2).unsqueeze(1)
    hi = (n // 2).clamp(max=flat.shape[1] - 1).unsqueeze(1)
    med = 0.5 * (srt.gather(1, lo) + srt.gather(1, hi)).squeeze(1)
    return torch.where(n > 0, med, torch.nan)


def to_depth(pred: torch.Tensor, prediction_type: str, disparity_floor: float) -> torch.Tensor:
    """A prediction as depth: depth predictions unchanged, disparity as ``1 / max(d, floor)``."""
    pred = pred.to(torch.float64)
    if prediction_type == "depth":
        return pred
    return 1.0 / pred.clamp(min=disparity_floor)


def to_disparity(pred: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """A prediction as disparity: disparity unchanged, depth as ``1 / d`` where ``d > 0``, else 0."""
    pred = pred.to(torch.float64)
    if prediction_type == "disparity":
        return pred
    return torch.where(pred > 0, 1.0 / torch.where(pred > 0, pred, 1.0), 0.0)


def align(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor,
    *,
    alignment: str,
    prediction_type: str,
    min_depth: float,
    max_depth: float,
    disparity_floor: float = 1e-3,
) -> Aligned:
    """Align ``pred`` (B, H, W) to ``gt`` over ``mask`` and return depth in metres (see module doc)."""
    if alignment not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {alignment!r}; choose one of {', '.join(ALIGNMENTS)}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {prediction_type!r}; choose disparity or depth")
    if not (min_depth > 0):
        raise ValueError(f"min_depth must be > 0, got {min_depth}")
    gt = gt.to(torch.float64)
    b = pred.shape[0]
    if alignment == "disparity":
        x = to_disparity(pred, prediction_type)
        fit = mask & (x > 0)
        y = torch.where(mask, 1.0 / torch.where(mask, gt, 1.0), 0.0)
        s, t, n = least_squares_scale_shift(x, y, fit)
        disp = x * s.view(-1, 1, 1) + t.view(-1, 1, 1)
        depth = 1.0 / disp.clamp(min=disparity_floor)
    else:
        x = to_depth(pred, prediction_type, disparity_floor)
        if alignment == "depth":
            s, t, n = least_squares_scale_shift(x, gt, mask)
        elif alignment == "median":
            s = masked_median(gt, mask) / masked_median(x, mask)
            t = torch.zeros(b, dtype=torch.float64, device=pred.device)
            n = mask.reshape(b, -1).sum(1)
        else:
            s = torch.ones(b, dtype=torch.float64, device=pred.device)
            t = torch.zeros(b, dtype=torch.float64, device=pred.device)
            n = mask.reshape(b, -1).sum(1)
        depth = x * s.view(-1, 1, 1) + t.view(-1, 1, 1)
    depth = depth.clamp(min=min_depth, max=max_depth)
    return Aligned(depth=depth, scale=s, shift=t, n_fit=n)
