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

The least-squares fits solve the 2x2 normal equations with sums accumulated in float64 over the
valid pixels (gathered image after image, see ``_segments``). A degenerate fit (a prediction that is
constant over the mask) gives ``s = 0`` and ``t`` = the mean target, i.e. a constant prediction.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._segments import F64, Segments, gather

ALIGNMENTS = ("disparity", "depth", "median", "none")
PREDICTION_TYPES = ("disparity", "depth")


@dataclass
class Aligned:
    depth: torch.Tensor  # (B, H, W) float64, metres, clipped to [min_depth, max_depth]
    scale: torch.Tensor  # (B,) float64
    shift: torch.Tensor  # (B,) float64
    n_fit: torch.Tensor  # (B,) int64: pixels the fit used


def _check(alignment: str, prediction_type: str, min_depth: float) -> None:
    if alignment not in ALIGNMENTS:
        raise ValueError(f"unknown alignment {alignment!r}; choose one of {', '.join(ALIGNMENTS)}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction type {prediction_type!r}; choose disparity or depth")
    if not (min_depth > 0):
        raise ValueError(f"min_depth must be > 0, got {min_depth}")


def to_depth(pred: torch.Tensor, prediction_type: str, disparity_floor: float, inplace: bool = False) -> torch.Tensor:
    """A prediction as depth (float64; a new tensor unless ``inplace`` and ``pred`` is float64): depth
    unchanged, disparity as ``1 / max(d, floor)``."""
    x = pred if inplace and pred.dtype == F64 else pred.to(F64, copy=True)
    if prediction_type == "depth":
        return x
    return x.clamp_(min=disparity_floor).reciprocal_()


def to_disparity(pred: torch.Tensor, prediction_type: str, inplace: bool = False) -> torch.Tensor:
    """A prediction as disparity (float64; a new tensor unless ``inplace`` and ``pred`` is float64):
    disparity unchanged, depth as ``1 / d`` where ``d > 0``, else 0."""
    x = pred if inplace and pred.dtype == F64 else pred.to(F64, copy=True)
    if prediction_type == "disparity":
        return x
    nonpos = x <= 0
    return x.reciprocal_().masked_fill_(nonpos, 0.0)


# ------------------------------------------------------------------ flat (gathered) core
def fit_flat(x: torch.Tensor, y: torch.Tensor, segs: Segments) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per segment, ``(s, t)`` minimising ``sum (s*x + t - y)^2``; returns ``(s, t, n)``."""
    n = segs.counts.to(F64)
    nz = n.clamp(min=1.0)
    sx, sy = segs.sum(x), segs.sum(y)
    sxx, sxy = segs.dot(x, x), segs.dot(x, y)
    varx = sxx - sx * sx / nz
    cov = sxy - sx * sy / nz
    ok = varx > 1e-12 * sxx.abs()
    s = torch.where(ok, cov / torch.where(ok, varx, torch.ones_like(varx)), torch.zeros_like(varx))
    t = (sy - s * sx) / nz
    return s, t, segs.counts


def masked_median_flat(v: torch.Tensor, segs: Segments) -> torch.Tensor:
    """Per-segment median with NumPy's convention (mean of the two middle values for an even count)."""
    out = []
    for a, b in segs.slices:
        n = b - a
        if n == 0:
            out.append(torch.tensor(float("nan"), dtype=F64, device=v.device))
            continue
        seg = v[a:b]
        lo = torch.kthvalue(seg, (n + 1) // 2).values
        hi = torch.kthvalue(seg, n // 2 + 1).values if n % 2 == 0 else lo
        out.append(0.5 * (lo + hi))
    return torch.stack(out) if out else v.new_zeros(0)


def fit_alignment_flat(
    p: torch.Tensor, g: torch.Tensor, segs: Segments, *, alignment: str, prediction_type: str,
    disparity_floor: float, inplace: bool = False, inv_g: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """From the gathered valid pixels: (x = the prediction in the alignment space, s, t, n_fit).
    ``inplace``: ``p`` may be overwritten (x is then ``p``); ``inv_g``: ``1/g`` if already computed."""
    if alignment == "disparity":
        x = to_disparity(p, prediction_type, inplace)
        y = inv_g if inv_g is not None else g.reciprocal()
        if segs.total and not bool(torch.amin(x) > 0):  # fit only where the prediction is positive
            fsegs, idx = segs.select(x > 0)
            s, t, n = fit_flat(x.index_select(0, idx), y.index_select(0, idx), fsegs)
        else:
            s, t, n = fit_flat(x, y, segs)
        return x, s, t, n
    x = to_depth(p, prediction_type, disparity_floor, inplace)
    if alignment == "depth":
        s, t, n = fit_flat(x, g, segs)
    elif alignment == "median":
        s = masked_median_flat(g, segs) / masked_median_flat(x, segs)
        t, n = torch.zeros_like(s), segs.counts
    else:
        s = torch.ones(segs.b, dtype=F64, device=p.device)
        t, n = torch.zeros_like(s), segs.counts
    return x, s, t, n


def align_flat(
    p: torch.Tensor, g: torch.Tensor, segs: Segments, *, alignment: str, prediction_type: str,
    min_depth: float, max_depth: float, disparity_floor: float = 1e-3, inplace: bool = False,
    inv_g: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Aligned depth of the gathered valid pixels: (depth, s, t, n_fit). With ``inplace`` the
    returned depth is ``p``'s storage."""
    _check(alignment, prediction_type, min_depth)
    x, s, t, n = fit_alignment_flat(p, g, segs, alignment=alignment, prediction_type=prediction_type,
                                    disparity_floor=disparity_floor, inplace=inplace, inv_g=inv_g)
    d = segs.affine_(x, s, t)
    if alignment == "disparity":
        d.clamp_(min=disparity_floor).reciprocal_()
    return d.clamp_(min=min_depth, max=max_depth), s, t, n


# ------------------------------------------------------------------ dense API
def least_squares_scale_shift(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor):
    """Per image (leading axis), ``(s, t, n)`` minimising ``sum_mask (s*x + t - y)^2``."""
    segs, (xf, yf) = gather(mask, x, y)
    return fit_flat(xf, yf, segs)


def masked_median(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-image median over ``mask`` (NumPy's convention); NaN for an empty mask."""
    segs, (xf,) = gather(mask, x)
    return masked_median_flat(xf, segs)


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
    """Align ``pred`` (B, H, W) to ``gt`` over ``mask`` and return the whole aligned depth map (see the
    module doc). ``gt`` must be > 0 wherever ``mask`` holds."""
    _check(alignment, prediction_type, min_depth)
    segs, (p, g) = gather(mask, pred, gt)
    if segs.total and not bool(torch.amin(g) > 0):
        raise ValueError("ground truth must be > 0 on the evaluation mask")
    _, s, t, n = fit_alignment_flat(p, g, segs, alignment=alignment, prediction_type=prediction_type,
                                    disparity_floor=disparity_floor)
    shape = (-1,) + (1,) * (pred.ndim - 1)
    if alignment == "disparity":
        x = to_disparity(pred, prediction_type)
        depth = (x * s.view(shape) + t.view(shape)).clamp_(min=disparity_floor).reciprocal_()
    else:
        depth = to_depth(pred, prediction_type, disparity_floor) * s.view(shape) + t.view(shape)
    return Aligned(depth=depth.clamp_(min=min_depth, max=max_depth), scale=s, shift=t, n_fit=n)
