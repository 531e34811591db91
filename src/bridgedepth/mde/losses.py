"""Depth losses (MiDaS / Depth Anything), batched, masked and differentiable.

All functions take ``pred`` and ``target`` of shape (B, H, W) and a boolean ``mask`` (B, H, W); invalid
pixels never enter a fit, a median or a sum, and changing their values changes nothing. The formulas
are those of MiDaS (Ranftl et al., "Towards Robust Monocular Depth Estimation: Mixing Datasets for
Zero-shot Cross-dataset Transfer", TPAMI), in MiDaS's normalisation; docs/training.md states them in
full. Per image, with ``M`` the number of valid pixels:

**Alignment** (``alignment``), both in disparity space:

- ``"median_mad"`` (default; MiDaS's ``ssitrim`` / ``ssimae`` and Depth Anything's affine-invariant
  loss): prediction *and* target are each normalised by their own median ``t(d)`` and mean absolute
  deviation ``s(d) = (1/M) sum |d - t(d)|``: ``d_hat = (d - t(d)) / s(d)``. ``s(d) > 0``, so an inverted
  prediction cannot be fitted: ``relative_loss(-t, t)`` is twice the SSI of a constant prediction.
- ``"lstsq"`` (MiDaS's ``ssimse`` alignment): the target is normalised as ``target_normalization`` says
  (``"mad"``: by its median/MAD as above; ``"none"``: raw), then the prediction is fitted to it by the
  per-image least-squares scale and shift, ``d_hat = s*d + t``. The scale is clamped at ``s >= 0``: a
  prediction anti-correlated with the target gets ``s = 0`` (the loss of a constant prediction, and no
  gradient through that image) instead of being fitted by a negative scale.

**SSI**: ``r = d_hat - d_hat*``, per-pixel ``rho(r) = |r|`` (``ssi_residual="absolute"``) or ``r**2``
(``"squared"``). *Trimming*: among the pixels eligible for trimming (``trim_sources="pseudo"``: the
teacher pseudo-label pixels of the source map, ``source == SOURCE_PSEUDO``; ``"all"``: every valid pixel;
no source map given: every valid pixel) the ``floor(trim * n_eligible)`` largest ``rho`` are dropped;
ground-truth pixels are always kept. ``SSI = (1 / 2M) * sum_kept rho(r)`` -- MiDaS's 1/(2M), with M
counting all valid pixels (trimmed ones included), as in MiDaS's ``ssitrim``.

**GM** (MiDaS's ``L_reg``): on the same residual map ``R = d_hat - d_hat*``, for scales ``k = 0..K-1``
(``gm_scales``, 4) with ``R^k = R[::2^k, ::2^k]``: ``GM = sum_k (1 / M_k) sum_i (|grad_x R^k_i| +
|grad_y R^k_i|)``, forward differences over neighbouring pairs whose two pixels are valid, ``M_k`` the
number of valid pixels of the scale-k map. Not trimmed.

**Total**: ``ssi_weight * SSI + gm_weight * GM``: the weights multiply the terms in MiDaS's units (MiDaS
itself uses ``1 : 0.5``; our default ``1 : 4`` is the value given as BRIDGE's, see docs/training.md).

Metric training: **SiLog** ``sqrt(mean(d^2) - lambda * mean(d)^2)`` with ``d = log(pred) - log(gt)`` per image,
``lambda = 0.5``.

Reduction: every term is computed per image and averaged over the images that have valid pixels (an
image without valid pixels contributes nothing; a batch without any gives a zero loss that still has a
graph).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..data.targets import SOURCE_PSEUDO

__all__ = [
    "ALIGNMENTS",
    "TRIM_SOURCES",
    "align_scale_shift",
    "masked_median",
    "median_mad_normalize",
    "normalize_target",
    "trim_keep_mask",
    "trimmed_mean",
    "ssi_loss",
    "gradient_matching_loss",
    "silog_loss",
    "relative_loss",
    "DepthLoss",
    "LossTerms",
]

ALIGNMENTS = ("median_mad", "lstsq")
TRIM_SOURCES = ("pseudo", "all")


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


def align_scale_shift(pred: Tensor, target: Tensor, mask: Tensor, *, nonnegative: bool = False) -> tuple[Tensor, Tensor]:
    """Per-image least-squares ``(scale, shift)`` (each (B,)) minimising ``sum_mask (s*pred + t - target)^2``.

    The 2x2 normal equations ``[[sum p^2, sum p], [sum p, n]] [s, t] = [sum p*g, sum g]`` are solved in their
    centred form (subtracting the masked means first diagonalises the system, which avoids the float32
    cancellation of ``n * sum p^2 - (sum p)^2``): ``s = sum p'g' / sum p'^2``, ``t = mean g - s * mean p``.
    Differentiable w.r.t. ``pred`` and ``target``. Degenerate images (a constant prediction, or fewer than
    two valid pixels) get ``s = 0`` and ``t`` = mean of the valid targets (0 when there are none).
    ``nonnegative=True`` clamps the scale at 0 (then ``t`` = mean target): the constrained least-squares
    optimum when the unconstrained one is negative.
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
    if nonnegative:
        ok = ok & (b > 0)
    scale = torch.where(ok, b / torch.where(ok, a, torch.ones_like(a)), torch.zeros_like(a))
    shift = mean_g - scale * mean_p
    return scale, shift


def _kth_smallest(vals: Tensor, k: Tensor) -> Tensor:
    """Per row of ``vals`` (B, N) its ``k``-th smallest value (``k`` (B,), 1-based, in 1..N), as (B, 1).

    A selection (``torch.kthvalue``, linear time), not a sort: the same value a sort would put at position
    ``k - 1``; the gradient goes to that element. One batched call when every row asks for the same rank
    (the usual case: equally valid images), else one call per row."""
    if bool((k == k[0]).all()):
        return vals.kthvalue(int(k[0]), dim=1, keepdim=True).values
    return torch.stack([vals[i].kthvalue(int(k[i])).values for i in range(vals.shape[0])])[:, None]


def masked_median(x: Tensor, mask: Tensor) -> Tensor:
    """Per-image median (B,) of the valid values of ``x`` (B, H, W): for an even count the mean of the two
    middle values (NumPy's convention); 0 for an image without valid pixels. Differentiable (the
    gradient goes to the middle value(s))."""
    b = x.shape[0]
    flat = x.reshape(b, -1)
    fmask = mask.reshape(b, -1).bool()
    n = fmask.sum(1)
    big = torch.finfo(flat.dtype).max
    vals = torch.where(fmask, flat, torch.full_like(flat, big))  # invalid pixels rank last
    lo = (n - 1).clamp_min(0) // 2
    hi = (n // 2).clamp_max(flat.shape[1] - 1)
    has = (n > 0)[:, None]
    v_lo = _kth_smallest(vals, lo + 1)
    v_hi = v_lo if bool((hi == lo).all()) else _kth_smallest(vals, hi + 1)
    v_lo = torch.where(has, v_lo, torch.zeros_like(v_lo))
    v_hi = torch.where(has, v_hi, torch.zeros_like(v_hi))
    return (0.5 * (v_lo + v_hi)).squeeze(1)


def median_mad_normalize(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """MiDaS's per-image normalisation ``(x - t(x)) / s(x)``, ``t`` = median, ``s = (1/M) sum |x - t|`` over
    the valid pixels. Returns ``(x_hat, t, s)`` (``t``, ``s`` of shape (B,)). A (numerically) constant
    image (``s <= 1e-6 |t| + 1e-12``) is divided by 1 instead, so its ``x_hat`` is ~0. Differentiable."""
    mask = mask.bool()
    t = masked_median(x, mask)
    dev = torch.where(mask, (x - t[:, None, None]).abs(), torch.zeros_like(x))
    s = dev.sum((1, 2)) / mask.sum((1, 2)).clamp_min(1).to(x.dtype)
    ok = s > 1e-6 * t.abs() + 1e-12
    s_safe = torch.where(ok, s, torch.ones_like(s))
    return (x - t[:, None, None]) / s_safe[:, None, None], t, torch.where(ok, s, torch.zeros_like(s))


def normalize_target(target: Tensor, mask: Tensor) -> Tensor:
    """Per image: (target - median) / mean|target - median| over valid pixels (see :func:`median_mad_normalize`)."""
    return median_mad_normalize(target, mask.bool())[0]


def trim_keep_mask(per_pixel: Tensor, mask: Tensor, trim: float = 0.1, eligible: Tensor | None = None) -> Tensor:
    """The pixels (B, H, W) kept after trimming: per image, among the ``eligible`` valid pixels (default:
    all valid pixels), the ``floor(trim * n_eligible)`` with the largest ``per_pixel`` value are dropped
    (ties broken by position, so exactly that many); valid pixels that are not eligible are always kept."""
    if not 0.0 <= trim < 1.0:
        raise ValueError(f"trim must be in [0, 1), got {trim}")
    mask = mask.bool()
    elig = mask if eligible is None else mask & eligible.bool()
    if trim == 0.0:
        return mask
    b = per_pixel.shape[0]
    flat = per_pixel.reshape(b, -1).detach()
    fel = elig.reshape(b, -1)
    n = fel.sum(1)
    drop_n = torch.floor(n.to(torch.float64) * trim).to(n.dtype)
    # the drop_n-th largest eligible value per image (a selection, not a sort: non-eligible pixels rank
    # lowest); everything above it is dropped, and of the pixels equal to it the first ones by position
    # until exactly drop_n are (the same pixels a stable descending sort would rank first)
    low = torch.finfo(flat.dtype).min
    vals = torch.where(fel, flat, torch.full_like(flat, low))
    some = drop_n > 0
    k = torch.where(some, flat.shape[1] - drop_n + 1, torch.ones_like(drop_n))
    thr = _kth_smallest(vals, k)
    above = fel & (vals > thr)
    tied = fel & (vals == thr)
    need = (drop_n - above.sum(1))[:, None]
    dropped = (above | (tied & (tied.cumsum(1) <= need))) & some[:, None]
    return mask & ~dropped.reshape(mask.shape)


def trimmed_mean(per_pixel: Tensor, mask: Tensor, trim: float = 0.1, eligible: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-image mean of ``per_pixel`` over the pixels :func:`trim_keep_mask` keeps (Depth Anything's "ignore
    the largest-loss share" as a plain mean). Returns (per-image loss (B,), kept mask (B, H, W)); an image
    without valid pixels gets 0. :func:`ssi_loss` uses MiDaS's 1/(2M) normalisation instead."""
    keep = trim_keep_mask(per_pixel, mask, trim, eligible)
    b = per_pixel.shape[0]
    k = keep.reshape(b, -1)
    flat = per_pixel.reshape(b, -1)
    total = torch.where(k, flat, torch.zeros_like(flat)).sum(1)
    return total / k.sum(1).clamp_min(1).to(flat.dtype), keep


def _batch_mean(per_image: Tensor, has_valid: Tensor, anchor: Tensor) -> Tensor:
    if bool(has_valid.any()):
        return per_image[has_valid].mean()
    return anchor.sum() * 0.0


def _trim_eligible(source: Tensor | None, mask: Tensor, trim_sources: str) -> Tensor | None:
    if trim_sources not in TRIM_SOURCES:
        raise ValueError(f"trim_sources must be one of {list(TRIM_SOURCES)}, got {trim_sources!r}")
    if source is None or trim_sources == "all":
        return None
    if source.shape != mask.shape:
        raise ValueError(f"source must be (B, H, W) like the mask; got {tuple(source.shape)}, {tuple(mask.shape)}")
    return source == SOURCE_PSEUDO


@dataclass
class LossTerms:
    """What :func:`relative_loss` returns: the total and its (weighted-before) parts."""

    total: Tensor
    ssi: Tensor
    gm: Tensor
    scale: Tensor  # (B,) per-image scale applied to the prediction (for logging)
    shift: Tensor  # (B,) per-image shift, in the (normalised) target's units

    def as_floats(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "ssi": float(self.ssi.detach()), "gm": float(self.gm.detach())}


def ssi_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    *,
    alignment: str = "median_mad",
    residual: str = "absolute",
    trim: float = 0.1,
    trim_eligible: Tensor | None = None,
    target_normalization: str = "mad",
    return_details: bool = False,
):
    """Scale-and-shift-invariant loss ``(1/2M) sum_kept rho(d_hat - d_hat*)`` (see module docstring).

    ``trim_eligible`` (bool (B, H, W)) restricts trimming to those pixels (None: all valid pixels).
    ``target_normalization`` applies to ``alignment="lstsq"`` only (median/MAD alignment normalises the
    target by definition). Returns a scalar, or with ``return_details``
    ``(loss, aligned_residual (B,H,W), keep_mask, scale, shift)``."""
    pred, target = _f32(pred), _f32(target)
    mask = _check(pred, target, mask)
    if target_normalization not in ("mad", "none"):
        raise ValueError(f"target_normalization must be 'mad' or 'none', got {target_normalization!r}")
    if alignment == "median_mad":
        p_hat, t_p, s_p = median_mad_normalize(pred, mask)
        g_hat = normalize_target(target, mask)
        scale = torch.where(s_p > 0, 1.0 / torch.where(s_p > 0, s_p, torch.ones_like(s_p)), torch.ones_like(s_p))
        shift = -t_p * scale
        r = p_hat - g_hat
    elif alignment == "lstsq":
        g_hat = normalize_target(target, mask) if target_normalization == "mad" else target
        scale, shift = align_scale_shift(pred, g_hat, mask, nonnegative=True)
        r = scale[:, None, None] * pred + shift[:, None, None] - g_hat
    else:
        raise ValueError(f"alignment must be one of {list(ALIGNMENTS)}, got {alignment!r}")
    r = torch.where(mask, r, torch.zeros_like(r))
    if residual == "absolute":
        per_pixel = r.abs()
    elif residual == "squared":
        per_pixel = r * r
    else:
        raise ValueError(f"residual must be 'absolute' or 'squared', got {residual!r}")
    keep = trim_keep_mask(per_pixel, mask, trim, trim_eligible)
    n_valid = mask.sum((1, 2)).clamp_min(1).to(per_pixel.dtype)
    per_image = torch.where(keep, per_pixel, torch.zeros_like(per_pixel)).sum((1, 2)) / (2.0 * n_valid)
    loss = _batch_mean(per_image, mask.flatten(1).any(1), pred)
    if return_details:
        return loss, r, keep, scale, shift
    return loss


def gradient_matching_loss(residual: Tensor, mask: Tensor, scales: int = 4) -> Tensor:
    """MiDaS's multi-scale gradient matching ``L_reg`` on an (aligned) residual map (B, H, W).

    Scale k subsamples with stride ``2**k``; its term is ``(1 / M_k) sum (|dR/dx| + |dR/dy|)`` over
    neighbouring pairs whose two pixels are valid, ``M_k`` the valid pixels of that scale; terms are
    summed over scales (per image) and averaged over the images that have a valid pair.
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
        m_k = m.sum((1, 2))
        total = total + (gx.sum((1, 2)) + gy.sum((1, 2))) / m_k.clamp_min(1).to(r.dtype)
        any_pairs |= (mx.sum((1, 2)) + my.sum((1, 2))) > 0
    return _batch_mean(total, any_pairs, residual)


def relative_loss(
    pred: Tensor,
    target: Tensor,
    mask: Tensor,
    source: Tensor | None = None,
    *,
    ssi_weight: float = 1.0,
    gm_weight: float = 4.0,
    gm_scales: int = 4,
    trim: float = 0.1,
    trim_sources: str = "pseudo",
    alignment: str = "median_mad",
    ssi_residual: str = "absolute",
    target_normalization: str = "mad",
) -> LossTerms:
    """``ssi_weight * SSI + gm_weight * GM`` for a relative disparity prediction against a disparity target
    (GT 1/depth, a pseudo-label or a hybrid of both); ``source`` is the per-pixel source map (uint8
    ``SOURCE_*``, (B, H, W)) that decides which pixels may be trimmed (None: all valid pixels). The
    keyword names are :class:`bridgedepth.config.LossConfig`'s."""
    mask = mask.bool()
    ssi, r, _, scale, shift = ssi_loss(
        pred, target, mask, alignment=alignment, residual=ssi_residual, trim=trim,
        trim_eligible=_trim_eligible(source, mask, trim_sources),
        target_normalization=target_normalization, return_details=True,
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

    ``DepthLoss(cfg)(pred, target, mask, source=None)`` -> :class:`LossTerms` (relative);
    ``.metric(pred, gt, mask)`` -> SiLog.
    """

    def __init__(self, cfg=None, **overrides):
        super().__init__()
        from ..config import ConfigError, LossConfig

        cfg = cfg or LossConfig()
        vals = {k: getattr(cfg, k) for k in LossConfig.__dataclass_fields__}
        vals.update(overrides)
        self.cfg = c = LossConfig(**vals)
        if c.alignment not in ALIGNMENTS:
            raise ConfigError(f"train.loss.alignment: {c.alignment!r} is not one of {list(ALIGNMENTS)}")
        if c.trim_sources not in TRIM_SOURCES:
            raise ConfigError(f"train.loss.trim_sources: {c.trim_sources!r} is not one of {list(TRIM_SOURCES)}")
        if not (math.isfinite(c.trim) and 0.0 <= c.trim < 1.0):
            raise ConfigError(f"train.loss.trim: must be in [0, 1), got {c.trim}")
        if c.gm_scales < 1 or c.ssi_weight < 0 or c.gm_weight < 0:
            raise ConfigError(f"train.loss: gm_scales must be >= 1 and the weights >= 0, got gm_scales={c.gm_scales}, "
                              f"ssi_weight={c.ssi_weight}, gm_weight={c.gm_weight}")

    def forward(self, pred: Tensor, target: Tensor, mask: Tensor, source: Tensor | None = None) -> LossTerms:
        c = self.cfg
        return relative_loss(
            pred, target, mask, source, ssi_weight=c.ssi_weight, gm_weight=c.gm_weight, gm_scales=c.gm_scales,
            trim=c.trim, trim_sources=c.trim_sources, alignment=c.alignment, ssi_residual=c.ssi_residual,
            target_normalization=c.target_normalization,
        )

    def metric(self, pred_depth: Tensor, gt_depth: Tensor, mask: Tensor) -> Tensor:
        return silog_loss(pred_depth, gt_depth, mask, lam=self.cfg.silog_lambda)
