"""Depth losses (MiDaS / Depth Anything), batched, masked and differentiable.

All functions take ``pred`` and ``target`` of shape (B, H, W) and a boolean ``mask`` (B, H, W); invalid
pixels never enter a fit, a median or a mean, and changing their values changes nothing.

Relative (affine-invariant disparity) training::

    total = ssi_weight * SSI + gm_weight * GM        (1 : 4 by default, the paper's "1:4")

- **SSI**: per image, the least-squares scale ``s`` and shift ``t`` of the prediction against the target
  over valid pixels (2x2 normal equations, differentiable: gradients flow through ``s`` and ``t``), the
  per-pixel residual ``r = s*pred + t - target``, per-pixel loss ``|r|`` (default, ``"absolute"``) or ``r**2``
  (``"squared"``), then *trimming*: per image, the ``trim`` fraction (10 %) of valid pixels with the largest
  loss is dropped and the loss is the mean over the kept pixels. The absolute residual is the default
  because, with trimming, it is the MiDaS ``ssitrim`` objective that Depth Anything trains with: it is
  robust to the label noise of pseudo-labels and to outliers of synthetic GT (sky, glass), where the
  squared residual lets a few pixels dominate the gradient.
- Targets are normalised per image before the fit (``target_normalization="mad"``: subtract the median,
  divide by the mean absolute deviation over valid pixels) so that a loss value means the same for a
  metric-disparity GT (1/m) and a relative pseudo-label. ``"none"`` fits the raw target.
- **GM**: multi-scale gradient matching on the aligned residual ``r``: for ``gm_scales`` (4) scales, by
  strided subsampling (step 1, 2, 4, 8), the mean absolute x- and y-difference of ``r`` over pixel pairs
  where both pixels are valid. It is not trimmed (as in MiDaS).

Metric training: **SiLog** ``sqrt(mean(d^2) - lambda * mean(d)^2)`` with ``d = log(pred) - log(gt)`` per image,
``lambda = 0.5``.

Reduction: every term is computed per image and averaged over the images that have valid pixels (an
image without valid pixels contributes nothing; a batch without any gives a zero loss that still has a
graph).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "align_scale_shift",
    "normalize_target",
    "trimmed_mean",
    "ssi_loss",
    "gradient_matching_loss",
    "silog_loss",
    "relative_loss",
    "DepthLoss",
    "LossTerms",
]


def _f32(x: Tensor) -> Tensor:
    """Half-precision inputs (mixed-precision training) are computed in float32; float64 stays."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    if pred.dim() != 3 or pred.shape != target.shape or pred.shape != mask.shape:
        raise ValueError(
            f"pred, target and mask must all be (B, H, W); got {tuple(pred.shape)}, {tuple(target.shape)}, "
            f"{tuple(mask.shape)}"
        )
    return mask.bool()


def align_scale_shift(pred: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image least-squares ``(scale, shift)`` (each (B,)) minimising ``sum_mask (s*pred + t - target)^2``.

    The 2x2 normal equations ``[[sum p^2, sum p], [sum p, n]] [s, t] = [sum p*g, sum g]`` are solved in their
    centred form (subtracting the masked means first diagonalises the system, which avoids the float32
    cancellation of ``n * sum p^2 - (sum p)^2``): ``s = sum p'g' / sum p'^2``, ``t = mean g - s * mean p``.
    Differentiable w.r.t. ``pred`` and ``target``. Degenerate images (a constant prediction, or fewer than
    two valid pixels) get ``s = 0`` and ``t`` = mean of the valid targets (0 when there are none).
    """
    m = _check(pred, target, mask)
    zeros = torch.zeros_like(pred)
    n = m.sum((1, 2)).to(pred.dtype)
    n_safe = n.clamp_min(1)
    p = torch.where(m, pred, zeros)
    g = torch.where(m, target, zeros)
    mean_p = p.sum((1, 2)) / n_safe
    mean_g = g.sum((1, 2)) / n_safe
    pc = torch.where(m, pred - mean_p[:, None, None], zeros)
    gc = torch.where(m, target - mean_g[:, None, None], zeros)
    a = (pc * pc).sum((1, 2))
    b = (pc * gc).sum((1, 2))
    # degenerate when the prediction's variance vanishes relative to its magnitude
    ok = a > 1e-12 * n_safe * (mean_p * mean_p + 1e-12)
    scale = torch.where(ok, b / torch.where(ok, a, torch.ones_like(a)), torch.zeros_like(a))
    shift = mean_g - scale * mean_p
    return scale, shift


def normalize_target(target: Tensor, mask: Tensor) -> Tensor:
    """Per image: (target - median) / mean|target - median| over valid pixels (no gradient needed)."""
    mask = mask.bool()
    flat = torch.where(mask, target, torch.full_like(target, float("nan"))).flatten(1)
    med = torch.nanmedian(flat, dim=1).values
    med = torch.nan_to_num(med, nan=0.0)
    dev = (target - med[:, None, None]).abs()
    cnt = mask.sum((1, 2)).clamp_min(1)
    mad = torch.where(mask, dev, torch.zeros_like(dev)).sum((1, 2)) / cnt
    mad = torch.where(mad > 1e-12, mad, torch.ones_like(mad))
    return (target - med[:, None, None]) / mad[:, None, None]


def trimmed_mean(per_pixel: Tensor, mask: Tensor, trim: float = 0.1) -> tuple[Tensor, Tensor]:
    """Per-image mean of ``per_pixel`` over the valid pixels left after dropping the largest ``trim`` share.

    With ``n`` valid pixels, ``floor(trim * n)`` pixels with the largest values are dropped (ties broken by
    position, so exactly that many). Returns (per-image loss (B,), kept mask (B, H, W)); an image without
    valid pixels gets 0.
    """
    if not 0.0 <= trim < 1.0:
        raise ValueError(f"trim must be in [0, 1), got {trim}")
    mask = mask.bool()
    b = per_pixel.shape[0]
    flat = per_pixel.reshape(b, -1)
    fmask = mask.reshape(b, -1)
    n = fmask.sum(1)
    keep_n = n - torch.floor(n.to(torch.float64) * trim).to(n.dtype)
    if trim == 0.0:
        keep = fmask
    else:
        big = torch.finfo(flat.dtype).max
        vals = torch.where(fmask, flat.detach(), torch.full_like(flat, big))
        order = torch.argsort(vals, dim=1, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand(b, -1).contiguous())
        keep = fmask & (rank < keep_n[:, None])
    total = torch.where(keep, flat, torch.zeros_like(flat)).sum(1)
    loss = total / keep_n.clamp_min(1).to(flat.dtype)
    return loss, keep.reshape(mask.shape)


def _batch_mean(per_image: Tensor, has_valid: Tensor, anchor: Tensor) -> Tensor:
    if bool(has_valid.any()):
        return per_image[has_valid].mean()
    return anchor.sum() * 0.0


@dataclass
class LossTerms:
    """What :func:`relative_loss` returns: the total and its (weighted-before) parts."""

    total: Tensor
    ssi: Tensor
    gm: Tensor
    scale: Tensor  # (B,) fitted per-image scale (for logging)
    shift: Tensor  # (B,)

    def as_floats(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "ssi": float(self.ssi.detach()), "gm": float(self.gm.detach())}


def ssi_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    *,
    residual: str = "absolute",
    trim: float = 0.1,
    target_normalization: str = "mad",
    return_details: bool = False,
):
    """Scale-and-shift-invariant loss (see module docstring). Returns a scalar, or with ``return_details``
    ``(loss, aligned_residual (B,H,W), keep_mask, scale, shift)``."""
    pred, target = _f32(pred), _f32(target)
    mask = _check(pred, target, mask)
    if target_normalization == "mad":
        target = normalize_target(target, mask)
    elif target_normalization != "none":
        raise ValueError(f"target_normalization must be 'mad' or 'none', got {target_normalization!r}")
    scale, shift = align_scale_shift(pred, target, mask)
    r = scale[:, None, None] * pred + shift[:, None, None] - target
    r = torch.where(mask, r, torch.zeros_like(r))
    if residual == "absolute":
        per_pixel = r.abs()
    elif residual == "squared":
        per_pixel = r * r
    else:
        raise ValueError(f"residual must be 'absolute' or 'squared', got {residual!r}")
    per_image, keep = trimmed_mean(per_pixel, mask, trim)
    loss = _batch_mean(per_image, mask.flatten(1).any(1), pred)
    if return_details:
        return loss, r, keep, scale, shift
    return loss


def gradient_matching_loss(residual: Tensor, mask: Tensor, scales: int = 4) -> Tensor:
    """Multi-scale gradient matching on an (aligned) residual map (B, H, W).

    Scale k subsamples with stride ``2**k``; the term per scale is the mean of ``|dr/dx|`` and ``|dr/dy|`` over
    neighbouring pairs where both pixels are valid (per image); terms are summed over scales and averaged
    over images.
    """
    mask = mask.bool()
    total = residual.new_zeros(residual.shape[0])
    any_pairs = torch.zeros(residual.shape[0], dtype=torch.bool, device=residual.device)
    for k in range(scales):
        step = 2**k
        r = residual[:, ::step, ::step]
        m = mask[:, ::step, ::step]
        mx = m[:, :, 1:] & m[:, :, :-1]
        my = m[:, 1:, :] & m[:, :-1, :]
        gx = torch.where(mx, (r[:, :, 1:] - r[:, :, :-1]).abs(), torch.zeros_like(r[:, :, 1:]))
        gy = torch.where(my, (r[:, 1:, :] - r[:, :-1, :]).abs(), torch.zeros_like(r[:, 1:, :]))
        cnt = mx.sum((1, 2)) + my.sum((1, 2))
        total = total + (gx.sum((1, 2)) + gy.sum((1, 2))) / cnt.clamp_min(1).to(r.dtype)
        any_pairs |= cnt > 0
    return _batch_mean(total, any_pairs, residual)


def relative_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    *,
    ssi_weight: float = 1.0,
    gm_weight: float = 4.0,
    gm_scales: int = 4,
    trim: float = 0.1,
    ssi_residual: str = "absolute",
    target_normalization: str = "mad",
) -> LossTerms:
    """``ssi_weight * SSI + gm_weight * GM`` for a relative disparity prediction against a disparity target
    (GT 1/depth or a pseudo-label); the argument names are :class:`bridgedepth.config.LossConfig`'s."""
    ssi, r, _, scale, shift = ssi_loss(
        pred, target, mask, residual=ssi_residual, trim=trim, target_normalization=target_normalization,
        return_details=True,
    )
    gm = gradient_matching_loss(r, mask, gm_scales) if gm_weight else ssi * 0.0
    return LossTerms(ssi_weight * ssi + gm_weight * gm, ssi, gm, scale.detach(), shift.detach())


def silog_loss(pred_depth: Tensor, gt_depth: Tensor, mask: Tensor, lam: float = 0.5, eps: float = 1e-6) -> Tensor:
    """Scale-invariant log loss for metric depth: per image ``sqrt(mean(d^2) - lam * mean(d)^2)``,
    ``d = log(pred) - log(gt)`` over valid pixels (gt > 0 is also required)."""
    pred_depth, gt_depth = _f32(pred_depth), _f32(gt_depth)
    mask = _check(pred_depth, gt_depth, mask) & (gt_depth > 0)
    one = torch.ones_like(pred_depth)
    d = torch.log(torch.where(mask, pred_depth, one).clamp_min(eps)) - torch.log(torch.where(mask, gt_depth, one))
    d = torch.where(mask, d, torch.zeros_like(d))
    n = mask.sum((1, 2)).clamp_min(1).to(d.dtype)
    mean_d = d.sum((1, 2)) / n
    mean_d2 = (d * d).sum((1, 2)) / n
    per_image = torch.sqrt((mean_d2 - lam * mean_d * mean_d).clamp_min(0) + 1e-12)
    return _batch_mean(per_image, mask.flatten(1).any(1), pred_depth)


class DepthLoss(nn.Module):
    """Module wrapper configured from :class:`bridgedepth.config.LossConfig`.

    ``DepthLoss(cfg)(pred, target, mask)`` -> :class:`LossTerms` (relative); ``.metric(pred, gt, mask)`` -> SiLog.
    """

    def __init__(self, cfg=None, **overrides):
        super().__init__()
        from ..config import LossConfig

        cfg = cfg or LossConfig()
        vals = {k: getattr(cfg, k) for k in LossConfig.__dataclass_fields__}
        vals.update(overrides)
        self.cfg = LossConfig(**vals)

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor) -> LossTerms:
        c = self.cfg
        return relative_loss(
            pred, target, mask, ssi_weight=c.ssi_weight, gm_weight=c.gm_weight, gm_scales=c.gm_scales,
            trim=c.trim, ssi_residual=c.ssi_residual, target_normalization=c.target_normalization,
        )

    def metric(self, pred_depth: Tensor, gt_depth: Tensor, mask: Tensor) -> Tensor:
        return silog_loss(pred_depth, gt_depth, mask, lam=self.cfg.silog_lambda)
