"""Training targets from samples: ground truth, pseudo-labels, and the hybrid of both.

Every target is a *disparity* map (relative or 1/m) with an explicit valid mask and a per-pixel
source map (0 = no supervision, 1 = teacher pseudo-label, 2 = ground truth). Metric targets are depth
in metres. These are plain-array functions so that both the trainer (``bridgedepth.mde``) and the
labelling stage (``bridgedepth.labels``) can use them without importing each other.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import InputError
from .augment import color_jitter, random_crop_flip

SOURCE_NONE, SOURCE_PSEUDO, SOURCE_GT = 0, 1, 2
TargetKind = Literal["gt", "pseudo", "hybrid", "metric"]


def gt_disparity(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """1 / depth on valid pixels, 0 elsewhere (float32)."""
    out = np.zeros(depth.shape, np.float32)
    np.divide(1.0, depth, out=out, where=valid & (depth > 0))
    return out


def _lstsq_affine(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Scale and shift minimising ||s*x + t - y||^2 (float64 normal equations)."""
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    n = x.size
    sx, sy, sxx, sxy = x.sum(), y.sum(), (x * x).sum(), (x * y).sum()
    det = n * sxx - sx * sx
    if n < 2 or abs(det) < 1e-12 * max(1.0, n * sxx):
        return 1.0, float(sy / max(n, 1) - sx / max(n, 1))
    s = (n * sxy - sx * sy) / det
    t = (sy - s * sx) / n
    return float(s), float(t)


def hybrid_target(
    pseudo: np.ndarray,
    depth: np.ndarray,
    valid: np.ndarray,
    mask: np.ndarray,
    accepted: bool,
    min_pixels: int = 64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BRIDGE's hybrid supervision for one generated image.

    The teacher's pseudo-label is used everywhere; where the similarity ``mask`` says the generated
    image still matches the synthetic render (and the sample was ``accepted``), the exact ground truth
    replaces it. The pseudo-label is relative (unknown scale and shift), the ground truth is 1/m: to
    put both in one frame, the pseudo-label is first aligned to the GT disparity by least squares over
    the pixels where both are used (mask & valid). Returns (target_disparity, valid, source_map).
    """
    pseudo = np.asarray(pseudo, np.float32)
    if pseudo.shape != depth.shape:
        raise InputError(f"pseudo-label shape {pseudo.shape} != depth shape {depth.shape}")
    target = pseudo.copy()
    source = np.full(pseudo.shape, SOURCE_PSEUDO, np.uint8)
    out_valid = np.isfinite(pseudo)
    gt_region = mask & valid & (depth > 0) if accepted else np.zeros_like(valid)
    if gt_region.sum() >= min_pixels:
        gt_disp = gt_disparity(depth, valid)
        s, t = _lstsq_affine(pseudo[gt_region], gt_disp[gt_region])
        if s > 0:
            target = s * pseudo + t
            target[gt_region] = gt_disp[gt_region]
            source[gt_region] = SOURCE_GT
            out_valid &= (target > 0) | gt_region
        else:  # the teacher disagrees in sign with GT there: trust neither blend, keep the pseudo-label
            pass
    source[~out_valid] = SOURCE_NONE
    target[~out_valid] = 0.0
    return target.astype(np.float32), out_valid, source


def sample_target(sample: dict, kind: TargetKind) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target, valid, source_map) of a sample for a training target kind.

    ``gt``: GT disparity (source RGB-D or masked GT); ``pseudo``: the teacher disparity;
    ``hybrid``: :func:`hybrid_target`; ``metric``: GT depth in metres.
    """
    key = sample.get("__key__", "?")
    if kind in ("gt", "metric"):
        if "depth" not in sample:
            raise InputError(f"sample {key}: no 'depth' field for a '{kind}' target")
        depth = np.asarray(sample["depth"], np.float32)
        valid = np.asarray(sample.get("valid", depth > 0), bool) & (depth > 0) & np.isfinite(depth)
        target = gt_disparity(depth, valid) if kind == "gt" else np.where(valid, depth, 0).astype(np.float32)
        return target, valid, np.where(valid, SOURCE_GT, SOURCE_NONE).astype(np.uint8)
    if "pseudo" not in sample:
        raise InputError(f"sample {key}: no 'pseudo' field; run `bridge label` first")
    pseudo = np.asarray(sample["pseudo"], np.float32)
    if kind == "pseudo":
        valid = np.isfinite(pseudo)
        return np.where(valid, pseudo, 0).astype(np.float32), valid, np.where(valid, SOURCE_PSEUDO, SOURCE_NONE).astype(np.uint8)
    if kind == "hybrid":
        meta = sample.get("meta", {}) or {}
        mask = np.asarray(sample.get("mask", np.zeros(pseudo.shape, bool)), bool)
        depth = np.asarray(sample["depth"], np.float32)
        valid = np.asarray(sample.get("valid", depth > 0), bool)
        return hybrid_target(pseudo, depth, valid, mask, bool(meta.get("accepted", False)))
    raise InputError(f"unknown target kind '{kind}' (gt, pseudo, hybrid, metric)")


def training_view(sample: dict, kind: TargetKind, train_cfg, rng: np.random.Generator) -> dict:
    """One augmented training crop of a sample: ``{"rgb", "target", "valid", "source"}``.

    ``train_cfg`` is a :class:`bridgedepth.config.TrainConfig` (crop size, flip, colour jitter).
    The target, valid mask and per-pixel source map (``SOURCE_*``) follow the image through the same
    crop and flip (nearest-neighbour resizing). This is what one worker does per sample; the trainer
    collates the results.
    """
    target, valid, source = sample_target(sample, kind)
    rgb, (target, valid, source) = random_crop_flip(rng, sample["rgb"], [target, valid, source],
                                                    train_cfg.crop_size, hflip=train_cfg.hflip)
    rgb = color_jitter(rng, rgb, train_cfg.color_jitter)
    return {"rgb": rgb, "target": target, "valid": valid, "source": source}
