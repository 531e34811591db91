"""Training targets from samples: ground truth, pseudo-labels, and the hybrid of both.

Every target is a *disparity* map (relative or 1/m) with an explicit valid mask and a per-pixel
source map (0 = no supervision, 1 = teacher pseudo-label, 2 = ground truth). Metric targets are depth
in metres. These are plain-array functions so that both the trainer (``bridgedepth.mde``) and the
labelling stage (``bridgedepth.labels``) can use them without importing each other.

Geometry of a labelled (generated) sample: ``rgb``, ``pseudo`` and ``mask`` live in the generated
image's pixel grid; ``depth``, ``valid`` and ``sky`` in the original render's grid (the grid the
similarity mask was computed in). :func:`generated_to_original` gives the 3x3 map between the two
(the stored registration plus the size match), and the hybrid target moves ground truth into the
generated frame with it (nearest neighbour), so an accepted pixel's depth is the depth of the scene
point the generated image shows there.

Sky: where a source marks it (a bool ``sky`` field), relative ground-truth targets treat it as valid
disparity 0 (``sky_as_far``, ``train.sky_as_far``); metric targets keep it invalid.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import cv2
import numpy as np

from ..errors import InputError
from .augment import color_jitter, random_crop_flip

SOURCE_NONE, SOURCE_PSEUDO, SOURCE_GT = 0, 1, 2
TargetKind = Literal["gt", "pseudo", "hybrid", "metric"]

# The sample fields each target kind reads (sample_target, training_window, training_view). The
# trainer decodes only these: a generated sample's source RGB is never decoded, and for pseudo-label
# targets the source shard a sample references is not read at all.
TARGET_FIELDS: dict[str, tuple[str, ...]] = {
    "gt": ("rgb", "depth", "valid", "sky", "meta"),
    "metric": ("rgb", "depth", "valid", "sky", "meta"),
    "pseudo": ("rgb", "pseudo", "meta"),
    "hybrid": ("rgb", "pseudo", "depth", "valid", "sky", "mask", "meta"),
}


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


def _scale_matrix(sx: float, sy: float) -> np.ndarray:
    """Pixel-centre rescaling (cv2.resize's convention): x' + 0.5 = (x + 0.5) * s."""
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def generated_to_original(stats: dict | None, generated_hw: tuple[int, int],
                          original_hw: tuple[int, int]) -> np.ndarray | None:
    """The 3x3 map from generated-image pixels to original-image pixels, or None for the identity.

    ``stats`` is a sample's ``meta["mask"]`` (the `bridge mask --json` object). The similarity mask
    brings the generated image to the original's size (``match_size``: each axis independently),
    then its ``target_homography`` maps size-matched generated -> original: the registration when it
    explains at least as much as direct comparison, the identity otherwise. Labelled sets written
    before that key existed (label version 1) get the same rule from ``homography`` and the
    registered/direct fractions. Without statistics: the size match alone.
    """
    gh, gw = (int(v) for v in generated_hw[:2])
    oh, ow = (int(v) for v in original_hw[:2])
    stats = stats or {}
    hm = stats.get("target_homography")
    if hm is None and "target_homography" not in stats and stats.get("homography") is not None:
        if float(stats.get("registered_fraction", 0.0)) >= float(stats.get("direct_fraction", 0.0)):
            hm = stats["homography"]
    t = _scale_matrix(ow / gw, oh / gh) if (gh, gw) != (oh, ow) else np.eye(3)
    if hm is not None:
        hm = np.asarray(hm, np.float64)
        if hm.shape == (3, 3) and np.all(np.isfinite(hm)):
            t = hm @ t
    if np.allclose(t, np.eye(3), rtol=0.0, atol=1e-9):
        return None
    return t


def to_generated_frame(arr: np.ndarray, transform: np.ndarray | None, generated_hw: tuple[int, int],
                       fill: float = 0) -> np.ndarray:
    """Resample a map of the original's grid into the generated frame: output pixel q takes the
    value at ``transform @ q`` (nearest neighbour), ``fill`` where that falls outside."""
    gh, gw = (int(v) for v in generated_hw[:2])
    if transform is None and arr.shape[:2] == (gh, gw):
        return arr
    t = np.eye(3) if transform is None else np.asarray(transform, np.float64)
    src = arr.view(np.uint8) if arr.dtype == bool else arr
    if src.dtype == np.float16:
        src = src.astype(np.float32)
    out = cv2.warpPerspective(src, t, (gw, gh), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
    return out.astype(bool) if arr.dtype == bool else out


def crop_in_generated(crop: Any, transform: np.ndarray | None, generated_hw: tuple[int, int]
                      ) -> tuple[int, int, int, int] | None:
    """The recorded crop ``[x, y, w, h]`` (original's grid) as an ``(x0, y0, x1, y1)`` window of the
    generated image: the bounding box of its corners mapped into the generated frame, clamped.
    None when there is no usable crop."""
    try:
        x, y, w, h = (float(v) for v in crop)
    except (TypeError, ValueError):
        return None
    if w <= 0 or h <= 0:
        return None
    gh, gw = (int(v) for v in generated_hw[:2])
    # pixel-edge corners of the window, through the inverse map
    corners = np.array([[[x - 0.5, y - 0.5], [x + w - 0.5, y - 0.5], [x + w - 0.5, y + h - 0.5],
                         [x - 0.5, y + h - 0.5]]], np.float64)
    if transform is not None:
        try:
            corners = cv2.perspectiveTransform(corners, np.linalg.inv(np.asarray(transform, np.float64)))
        except np.linalg.LinAlgError:
            return None
    c = corners[0] + 0.5
    if not np.all(np.isfinite(c)):
        return None
    x0 = max(0, int(math.floor(c[:, 0].min() + 1e-6)))
    y0 = max(0, int(math.floor(c[:, 1].min() + 1e-6)))
    x1 = min(gw, int(math.ceil(c[:, 0].max() - 1e-6)))
    y1 = min(gh, int(math.ceil(c[:, 1].max() - 1e-6)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return x0, y0, x1, y1


def hybrid_target(
    pseudo: np.ndarray,
    depth: np.ndarray,
    valid: np.ndarray,
    mask: np.ndarray,
    accepted: bool,
    min_pixels: int = 64,
    *,
    transform: np.ndarray | None = None,
    sky: np.ndarray | None = None,
    sky_as_far: bool = True,
    stats: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BRIDGE's hybrid supervision for one generated image, in the generated image's pixel grid.

    The teacher's pseudo-label is used everywhere; where the similarity ``mask`` says the generated
    image still matches the synthetic render (and the sample was ``accepted``), the exact ground truth
    replaces it. The pseudo-label is relative (unknown scale and shift), the ground truth is 1/m: to
    put both in one frame, the pseudo-label is first aligned to the GT disparity by least squares over
    the pixels where both are used (mask & valid). Returns (target_disparity, valid, source_map).

    Grids: ``pseudo`` and ``mask`` are the generated image's; ``depth``, ``valid`` and ``sky`` the
    original's. ``transform`` (:func:`generated_to_original`) maps generated pixels to original
    pixels; None means the identity, or the plain size match when the grids differ. Ground truth is
    resampled through it (nearest); generated pixels it sends outside the original get no GT (the
    pseudo-label stays there).

    Sky: with ``sky_as_far``, sky pixels of the original inside the mask become ground truth with
    disparity 0 (only when the alignment happened, so that 0 means "infinitely far" in the target's
    frame). Negative aligned pseudo-labels (the aligned teacher puts the pixel beyond infinity) are
    clamped to 0 = far and stay supervised; ``stats`` (a dict, if given) receives their count
    (``clamped``) with ``gt_pixels``, ``sky_pixels``, ``scale`` and ``shift``.
    """
    pseudo = np.asarray(pseudo, np.float32)
    gshape = pseudo.shape[:2]
    mask = np.asarray(mask, bool)
    if mask.shape != gshape:
        raise InputError(f"mask shape {mask.shape} != pseudo-label shape {pseudo.shape} (both are the generated "
                         "image's grid)")
    depth = np.asarray(depth, np.float32)
    valid = np.asarray(valid, bool)
    if valid.shape != depth.shape:
        raise InputError(f"valid shape {valid.shape} != depth shape {depth.shape}")
    if transform is None and depth.shape != gshape:
        transform = _scale_matrix(depth.shape[1] / gshape[1], depth.shape[0] / gshape[0])
    target = pseudo.copy()
    source = np.full(gshape, SOURCE_PSEUDO, np.uint8)
    out_valid = np.isfinite(pseudo)
    info = {"gt_pixels": 0, "sky_pixels": 0, "clamped": 0, "scale": None, "shift": None}
    d = np.zeros(gshape, np.float32)
    gt_region = np.zeros(gshape, bool)
    if accepted:
        ok = valid & (depth > 0) & np.isfinite(depth)
        d = to_generated_frame(np.where(ok, depth, 0).astype(np.float32), transform, gshape)
        gt_region = mask & (d > 0) & out_valid
    n_gt = int(np.count_nonzero(gt_region))
    if n_gt >= max(1, min_pixels):
        gt_disp = gt_disparity(d, gt_region)
        s, t = _lstsq_affine(pseudo[gt_region], gt_disp[gt_region])
        if s > 0:
            target = s * pseudo + t
            neg = out_valid & (target < 0) & ~gt_region
            info["clamped"] = int(np.count_nonzero(neg))
            target[neg] = 0.0  # beyond the farthest GT: far
            target[gt_region] = gt_disp[gt_region]
            source[gt_region] = SOURCE_GT
            info.update(gt_pixels=n_gt, scale=s, shift=t)
            if sky is not None and sky_as_far:
                sky_g = mask & to_generated_frame(np.asarray(sky, bool) & ~valid, transform, gshape)
                sky_g &= ~gt_region
                target[sky_g] = 0.0
                source[sky_g] = SOURCE_GT
                out_valid |= sky_g
                info["sky_pixels"] = int(np.count_nonzero(sky_g))
        # else: the teacher disagrees in sign with GT there: trust neither blend, keep the pseudo-label
    source[~out_valid] = SOURCE_NONE
    target[~out_valid] = 0.0
    if stats is not None:
        stats.update(info)
    return target.astype(np.float32), out_valid, source


def _labelled_mask(sample: dict, shape: tuple[int, int], transform: np.ndarray | None) -> np.ndarray:
    """The similarity mask in the generated frame. Label version >= 2 stores it there; version 1
    stored the original-grid mask (nearest-resized to the generated size when the sizes differed)."""
    meta = sample.get("meta", {}) or {}
    if "mask" not in sample:
        return np.zeros(shape, bool)
    mask = np.asarray(sample["mask"], bool)
    if int(meta.get("label_version", 1)) >= 2:
        if mask.shape != shape:
            raise InputError(f"sample {sample.get('__key__', '?')}: mask shape {mask.shape} != rgb shape {shape}")
        return mask
    depth_hw = np.shape(sample["depth"])[:2]
    if mask.shape != depth_hw:
        mask = cv2.resize(mask.view(np.uint8), (depth_hw[1], depth_hw[0]), interpolation=cv2.INTER_NEAREST) > 0
    return to_generated_frame(mask, transform, shape)


def _generated_hw(sample: dict, fallback: tuple[int, int]) -> tuple[int, int]:
    rgb = sample.get("rgb")
    return tuple(np.shape(rgb)[:2]) if rgb is not None else fallback


def sample_target(sample: dict, kind: TargetKind, *, sky_as_far: bool = True,
                  stats: dict | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(target, valid, source_map) of a sample for a training target kind.

    ``gt``: GT disparity (source RGB-D), sky as valid disparity 0 when the sample marks sky and
    ``sky_as_far``; ``pseudo``: the teacher disparity; ``hybrid``: :func:`hybrid_target` in the
    generated image's grid; ``metric``: GT depth in metres (sky invalid).
    """
    key = sample.get("__key__", "?")
    if kind in ("gt", "metric"):
        if "depth" not in sample:
            raise InputError(f"sample {key}: no 'depth' field for a '{kind}' target")
        depth = np.asarray(sample["depth"], np.float32)
        valid = np.asarray(sample.get("valid", depth > 0), bool) & (depth > 0) & np.isfinite(depth)
        target = gt_disparity(depth, valid) if kind == "gt" else np.where(valid, depth, 0).astype(np.float32)
        if kind == "gt" and sky_as_far and sample.get("sky") is not None:
            valid = valid | (np.asarray(sample["sky"], bool) & ~valid)  # disparity 0 there already
        return target, valid, np.where(valid, SOURCE_GT, SOURCE_NONE).astype(np.uint8)
    if "pseudo" not in sample:
        raise InputError(f"sample {key}: no 'pseudo' field; run `bridge label` first")
    pseudo = np.asarray(sample["pseudo"], np.float32)
    if kind == "pseudo":
        valid = np.isfinite(pseudo)
        return np.where(valid, pseudo, 0).astype(np.float32), valid, np.where(valid, SOURCE_PSEUDO, SOURCE_NONE).astype(np.uint8)
    if kind == "hybrid":
        if "depth" not in sample:
            raise InputError(f"sample {key}: no 'depth' field for a 'hybrid' target")
        meta = sample.get("meta", {}) or {}
        depth = np.asarray(sample["depth"], np.float32)
        valid = np.asarray(sample.get("valid", depth > 0), bool)
        gshape = pseudo.shape[:2]
        transform = generated_to_original(meta.get("mask"), gshape, depth.shape[:2])
        mask = _labelled_mask(sample, gshape, transform)
        return hybrid_target(pseudo, depth, valid, mask, bool(meta.get("accepted", False)), transform=transform,
                             sky=sample.get("sky"), sky_as_far=sky_as_far, stats=stats)
    raise InputError(f"unknown target kind '{kind}' (gt, pseudo, hybrid, metric)")


def training_window(sample: dict, kind: TargetKind) -> tuple[int, int, int, int] | None:
    """Where training crops of this sample must lie, as ``(x0, y0, x1, y1)`` in the ``rgb`` grid, or
    None (anywhere): for ``hybrid`` samples that were accepted, the recorded crop (the ``crop_size``
    square centred on the largest region of the similarity mask, ``meta.crop``, original's grid)
    mapped into the generated image's frame."""
    if kind != "hybrid":
        return None
    meta = sample.get("meta", {}) or {}
    if not meta.get("accepted") or meta.get("crop") is None or sample.get("depth") is None:
        return None
    gshape = _generated_hw(sample, np.shape(sample["depth"])[:2])
    transform = generated_to_original(meta.get("mask"), gshape, np.shape(sample["depth"])[:2])
    return crop_in_generated(meta["crop"], transform, gshape)


def training_view(sample: dict, kind: TargetKind, train_cfg, rng: np.random.Generator, *,
                  use_crop: bool = True) -> dict:
    """One augmented training crop of a sample: ``{"rgb", "target", "valid", "source"}``.

    ``train_cfg`` is a :class:`bridgedepth.config.TrainConfig` (crop size, flip, colour jitter,
    ``sky_as_far``). The target, valid mask and per-pixel source map (``SOURCE_*``) follow the image
    through the same crop and flip (nearest-neighbour resizing). Accepted ``hybrid`` samples draw
    their crop (random scale and position, flip) inside the recorded window
    (:func:`training_window`; ``use_crop=False`` turns that off); every other sample anywhere in the
    image. This is what one worker does per sample; the trainer collates the results.
    """
    target, valid, source = sample_target(sample, kind, sky_as_far=bool(getattr(train_cfg, "sky_as_far", True)))
    rgb = sample["rgb"]
    maps = [target, valid, source]
    win = training_window(sample, kind) if use_crop else None
    if win is not None and np.shape(rgb)[:2] == target.shape[:2]:
        x0, y0, x1, y1 = win
        rgb = rgb[y0:y1, x0:x1]
        maps = [m[y0:y1, x0:x1] for m in maps]
    rgb, (target, valid, source) = random_crop_flip(rng, rgb, maps, train_cfg.crop_size, hflip=train_cfg.hflip)
    rgb = color_jitter(rng, rgb, train_cfg.color_jitter)
    return {"rgb": rgb, "target": target, "valid": valid, "source": source}
