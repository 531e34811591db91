"""Similarity-guided ground-truth masks (BRIDGE): where is a generated image still faithful to the
original synthetic render, so that the render's exact depth can supervise it?

Per (generated, original) RGB pair, in the original's pixel grid (the grid of its depth map):

1. registration: ORB keypoints in both images (few pyramid levels, spread over a grid of cells),
   brute-force Hamming matching with cross-check; at least ``min_matches`` matches, else mask A is
   empty. A robust model choice: RANSAC similarity and affine fits (and a homography when the affine
   fit is credible); a more general model is used only when it has clearly more *precise* inliers
   (residual < ``precise_threshold``) than the simpler one. The chosen model, when credible (at least
   ``refine_inlier_fraction`` of the matches are its inliers), is then refined by ECC on a small grey
   copy (``refine``). Warp the generated image onto the original; mask A =
   SSIM(registered, original) > threshold, restricted to pixels the warp fills entirely from inside
   the generated image;
2. direct: mask B = SSIM(size-matched generated, original) > threshold;
3. fusion: A or B, morphological opening then closing, then an erosion that drops slivers;
4. acceptance: ``final_fraction > accept_fraction``;
5. crop: a ``crop_size`` square centred on the bounding box of the largest connected (8-neighbour)
   region of the final mask, clamped to the image.

``target_homography`` says how ground truth moves into the generated image's frame: the registration
when it explains at least as much of the pair as direct comparison (registered >= direct fraction),
the identity otherwise (see :func:`bridgedepth.data.targets.generated_to_original`).

Everything is configured by :class:`bridgedepth.config.LabelConfig`. Bad or degenerate input
(wrong array type, tiny, one colour) never raises: the result has an empty mask and a ``reason``.
A labelling map job keeps one :class:`MaskComputer` per worker (it owns reusable buffers) or calls
:func:`similarity_mask`, which caches one per process and configuration; :func:`similarity_mask_pairs`
spreads many pairs over threads (one computer each; OpenCV and the SSIM kernels release the GIL).
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..config import LabelConfig
from .ssim import SSIMWorkspace, numba_module

__all__ = [
    "MaskResult",
    "MaskComputer",
    "similarity_mask",
    "similarity_masks",
    "similarity_mask_pairs",
    "match_size",
    "crop_box",
    "mask_overlay",
    "STAT_KEYS",
]

# The keys every mask's statistics carry (the `bridge mask --json` contract).
STAT_KEYS = (
    "orb_matches",
    "inliers",
    "registered_fraction",
    "direct_fraction",
    "final_fraction",
    "accepted",
    "crop",
)


@dataclass
class MaskResult:
    """One pair's fusion mask and its statistics (all in the original image's pixel grid)."""

    mask: np.ndarray  # bool (H, W)
    orb_matches: int = 0  # cross-checked ORB matches
    inliers: int = 0  # RANSAC inliers of the chosen model (0 when none was estimated)
    registered_fraction: float = 0.0  # |A| / (H W)
    direct_fraction: float = 0.0  # |B| / (H W)
    final_fraction: float = 0.0  # |fused, cleaned mask| / (H W)
    accepted: bool = False  # final_fraction > accept_fraction
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, width, height
    reason: str = "ok"  # "ok", or why a part is empty / the sample is not accepted
    homography: list[list[float]] | None = None  # generated (size-matched) -> original
    model: str | None = None  # "similarity", "affine" or "homography" (the registration's model)
    refined: bool = False  # the model was refined by ECC
    target_homography: list[list[float]] | None = None  # how ground truth moves: see the module doc
    size: tuple[int, int] = (0, 0)  # (H, W) of the mask
    generated_size: tuple[int, int] | None = None  # (H, W) of the generated image as given
    timings: dict[str, float] = field(default_factory=dict, repr=False)

    def stats(self) -> dict[str, Any]:
        """JSON-able statistics (everything but the mask): the `bridge mask --json` object."""
        return {
            "orb_matches": int(self.orb_matches),
            "inliers": int(self.inliers),
            "registered_fraction": round(float(self.registered_fraction), 6),
            "direct_fraction": round(float(self.direct_fraction), 6),
            "final_fraction": round(float(self.final_fraction), 6),
            "accepted": bool(self.accepted),
            "crop": [int(v) for v in self.crop],
            "reason": self.reason,
            "size": [int(v) for v in self.size],
            "generated_size": None if self.generated_size is None else [int(v) for v in self.generated_size],
            "homography": self.homography,
            "model": self.model,
            "refined": bool(self.refined),
            "target_homography": self.target_homography,
        }


# ------------------------------------------------------------------------------------------
# Helpers (pure functions, tested on their own)
# ------------------------------------------------------------------------------------------


def _describe(a: Any) -> str:
    return f"{type(a).__name__} {getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}".strip()


def _normalise(img: Any, role: str) -> tuple[np.ndarray | None, str | None]:
    """uint8 (H, W) or (H, W, 3); alpha dropped. Returns (image, None) or (None, reason)."""
    if not isinstance(img, np.ndarray):
        return None, f"{role} image is not an array ({_describe(img)})"
    if img.dtype != np.uint8:
        return None, f"{role} image must be uint8, got {img.dtype}"
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
        return None, f"{role} image must be (H, W) or (H, W, 3|4), got shape {img.shape}"
    return np.ascontiguousarray(img), None


def _gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def _degenerate(img: np.ndarray, gray: np.ndarray | None, role: str, cfg: LabelConfig,
                size_only: bool = False) -> str | None:
    h, w = img.shape[:2]
    if min(h, w) < cfg.min_size:
        return f"{role} image is too small ({w}x{h} < {cfg.min_size} px)"
    if size_only:
        return None
    std = float(cv2.meanStdDev(gray)[1][0, 0])
    if std < cfg.min_std:
        if int(gray.max()) == 0:
            return f"{role} image is blank (all black)"
        return f"{role} image is one colour (grey std {std:.2f} < {cfg.min_std})"
    return None


def match_size(generated: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``generated`` to ``size`` = (H, W) of the original (the depth map's grid).

    Rule: the generated image is always brought to the original's exact size, independently per
    axis (a small aspect change, e.g. a generator's multiple-of-16 sizes, is absorbed); area
    interpolation when it shrinks in both axes, bilinear otherwise. Unchanged if equal.
    """
    h, w = size
    gh, gw = generated.shape[:2]
    if (gh, gw) == (h, w):
        return generated
    interp = cv2.INTER_AREA if (gh >= h and gw >= w) else cv2.INTER_LINEAR
    return cv2.resize(generated, (w, h), interpolation=interp)


def crop_box(mask: np.ndarray, crop_size: int, labels: np.ndarray | None = None) -> tuple[int, int, int, int]:
    """[x, y, w, h] of a ``crop_size`` square centred on the bounding box of the largest
    8-connected region of ``mask``, shifted to lie inside the image.

    Rules: if the image is smaller than ``crop_size`` along an axis, the crop spans that whole
    axis (so it is not square); an empty mask gives the crop centred on the image; the top-left
    corner is ``floor(centre - size / 2 + 0.5)`` then clamped to ``[0, side - size]``; ties
    between equally large regions go to the first in raster order. ``labels``: an int32 buffer of the
    mask's shape for the component labels (reused across calls: a fresh one costs page faults).
    """
    h, w = mask.shape[:2]
    cw, ch = min(int(crop_size), w), min(int(crop_size), h)
    if (cw, ch) == (w, h):
        return (0, 0, w, h)  # the crop is the whole image wherever the region lies: nothing to label
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    # Grana's block-based labelling gives the same labels (in the same order) as OpenCV's default
    # here at half the time (tests/test_masks.py compares them)
    if labels is not None and (labels.shape != (h, w) or labels.dtype != np.int32):
        labels = None
    n, _, st, _ = (1, None, None, None) if not cv2.countNonZero(m) else \
        cv2.connectedComponentsWithStatsWithAlgorithm(m, 8, cv2.CV_32S, cv2.CCL_GRANA, labels=labels)
    if n <= 1:
        cx, cy = w / 2.0, h / 2.0
    else:
        i = 1 + int(np.argmax(st[1:, cv2.CC_STAT_AREA]))
        x, y = st[i, cv2.CC_STAT_LEFT], st[i, cv2.CC_STAT_TOP]
        bw, bh = st[i, cv2.CC_STAT_WIDTH], st[i, cv2.CC_STAT_HEIGHT]
        cx, cy = x + bw / 2.0, y + bh / 2.0
    x0 = min(max(int(math.floor(cx - cw / 2.0 + 0.5)), 0), w - cw)
    y0 = min(max(int(math.floor(cy - ch / 2.0 + 0.5)), 0), h - ch)
    return (x0, y0, cw, ch)


def spread_keypoints(pts: np.ndarray, response: np.ndarray, shape: tuple[int, int], cells: int,
                     keep: int) -> np.ndarray:
    """Indices of at most ``keep`` keypoints spread over the image: a grid of about square cells,
    ``cells`` along the longer side; the strongest keypoint of every cell first, then the second
    strongest of every cell, ... (ties by response). Textured regions then cannot take every
    keypoint, so the motion model is constrained over the whole image."""
    n = len(pts)
    if n <= keep or cells <= 1:
        return np.argsort(-response, kind="stable")[:keep]
    h, w = shape
    gx = cells if w >= h else max(1, round(cells * w / h))
    gy = cells if h > w else max(1, round(cells * h / w))
    cx = np.minimum((pts[:, 0] * (gx / w)).astype(np.int64), gx - 1).clip(0)
    cy = np.minimum((pts[:, 1] * (gy / h)).astype(np.int64), gy - 1).clip(0)
    cell = cy * gx + cx
    order = np.lexsort((-response, cell))  # by cell, strongest first within a cell
    c = cell[order]
    first = np.r_[0, np.flatnonzero(np.diff(c)) + 1]
    rank = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))
    pick = np.lexsort((-response[order], rank))[:keep]
    return order[pick]


def _words(a: np.ndarray) -> np.ndarray:
    """Binary descriptors (uint8 rows) as rows of uint64 words, zero-padded to a multiple of 8 bytes."""
    a = np.ascontiguousarray(a, np.uint8)
    if a.shape[1] % 8:
        a = np.pad(a, ((0, 0), (0, 8 - a.shape[1] % 8)))
    return a.view(np.uint64)


def hamming_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) Hamming distances (uint16) between two sets of binary descriptors (uint8 rows
    of equal length), by XOR and population count over 64-bit words."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"descriptor lengths differ: {a.shape[1]} vs {b.shape[1]}")
    wa, wb = _words(a), _words(b)
    d = np.zeros((len(a), len(b)), np.uint16)
    for j in range(wa.shape[1]):
        d += np.bitwise_count(np.bitwise_xor.outer(wa[:, j], wb[:, j]))
    return d


def hamming_cross_check(a: np.ndarray | None, b: np.ndarray | None,
                        backend: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours of two descriptor sets under the Hamming distance: (indices into
    ``a``, indices into ``b``), in ``a``'s order; ties go to the lower index. The same matches as
    ``cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(a, b)``, without one Python object per
    match. ``backend``: ``auto`` (the Numba kernel of :mod:`._match_numba` when Numba imports, 7x
    faster on 500 ORB descriptors) or ``numpy`` (the whole distance matrix, then argmins)."""
    if a is None or b is None or len(a) == 0 or len(b) == 0:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)
    a, b = np.asarray(a), np.asarray(b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"descriptor lengths differ: {a.shape[1]} vs {b.shape[1]}")
    kernels = numba_module("_match_numba") if backend == "auto" else None
    if kernels is not None:
        return kernels.cross_check(_words(a), _words(b))
    d = hamming_distances(a, b)
    best_b = d.argmin(axis=1)
    best_a = d.argmin(axis=0)
    qi = np.flatnonzero(best_a[best_b] == np.arange(len(a))).astype(np.int32)
    return qi, best_b[qi].astype(np.int32)


def _corner_shift(a: np.ndarray, b: np.ndarray, h: int, w: int) -> float:
    """Largest distance between where two homographies send the image corners."""
    c = np.array([[[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]], np.float64)
    pa = cv2.perspectiveTransform(c, a)[0]
    pb = cv2.perspectiveTransform(c, b)[0]
    return float(np.max(np.linalg.norm(pa - pb, axis=1)))


def _scale_matrix(sx: float, sy: float) -> np.ndarray:
    """Pixel-centre rescaling (cv2.resize's convention): x' + 0.5 = (x + 0.5) * s."""
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


MODELS = ("similarity", "affine", "homography")


def mask_overlay(image: np.ndarray, result: MaskResult, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 picture of a mask on an image of the mask's size: kept pixels tinted green,
    rejected pixels tinted red, the crop outlined in yellow."""
    img = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    img = match_size(img[:, :, :3], result.size)
    m = result.mask
    tint = np.empty_like(img)
    tint[...] = (220, 40, 40)
    tint[m] = (40, 220, 40)
    out = cv2.addWeighted(img, 1.0 - alpha, tint, alpha, 0.0)
    x, y, w, h = result.crop
    if w > 0 and h > 0:
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), (255, 230, 0), 2)
    return out


# ------------------------------------------------------------------------------------------
# The pipeline
# ------------------------------------------------------------------------------------------


class MaskComputer:
    """Computes similarity masks with one configuration; keeps ORB, matcher and SSIM buffers.

    One instance per worker process (or thread). ``computer(generated, original)`` returns a
    :class:`MaskResult`; pass ``timings={}`` to accumulate seconds per stage.
    """

    def __init__(self, cfg: LabelConfig | None = None):
        self.cfg = cfg = cfg or LabelConfig()
        if cfg.orb_features < 1:
            raise ValueError(f"label.orb_features must be >= 1, got {cfg.orb_features}")
        self._detect_n = int(cfg.orb_features) * (max(1, int(cfg.orb_oversample)) if cfg.orb_grid > 1 else 1)
        if cfg.orb_patch and not 3 <= int(cfg.orb_patch) <= 31:
            raise ValueError(f"label.orb_patch must be 0 (auto) or 3..31, got {cfg.orb_patch}")
        self._orbs: dict[int, Any] = {}  # ORB detectors by patch size (see orb_patch)
        dtype = np.float64 if cfg.ssim_precision == "float64" else np.float32
        self.ssim = SSIMWorkspace(sigma=cfg.ssim_sigma, k1=cfg.ssim_k1, k2=cfg.ssim_k2, dtype=dtype,
                                  backend=cfg.ssim_backend)
        self._ks = {}
        self._ssim_a: np.ndarray | None = None
        self._ssim_b: np.ndarray | None = None
        self._ones_buf: np.ndarray | None = None
        self._rgba_buf: np.ndarray | None = None
        self._labels_buf: np.ndarray | None = None
        self._ref_owner: tuple | None = None  # (original state, grey?) whose statistics the SSIM workspace holds
        self._last: tuple | None = None  # (copy of the last original, its state): see _original()

    # -- small utilities
    def _kernel(self, k: int) -> np.ndarray:
        if k not in self._ks:
            self._ks[k] = cv2.getStructuringElement(cv2.MORPH_RECT, (k, k))
        return self._ks[k]

    def _buffers(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        if self._ssim_a is None or self._ssim_a.shape != (h, w):
            self._ssim_a = np.empty((h, w), np.float32)
            self._ssim_b = np.empty((h, w), np.float32)
        return self._ssim_a, self._ssim_b

    def _empty(self, size: tuple[int, int], reason: str, gsize=None) -> MaskResult:
        mask = np.zeros(size, bool)
        crop = crop_box(mask, self.cfg.crop_size) if min(size) > 0 else (0, 0, 0, 0)
        return MaskResult(mask=mask, crop=crop, reason=reason, size=size, generated_size=gsize)

    def orb(self, shape: tuple[int, ...]):
        """The ORB detector for an image of ``shape`` (its patch size: :meth:`orb_patch`), made once."""
        patch = self.orb_patch(shape)
        if patch not in self._orbs:
            self._orbs[patch] = cv2.ORB_create(nfeatures=self._detect_n, nlevels=max(1, int(self.cfg.orb_levels)),
                                               edgeThreshold=patch, patchSize=patch)
        return self._orbs[patch]

    def orb_patch(self, shape: tuple[int, ...]) -> int:
        """ORB's patch size (= edge threshold) for an image of ``shape``: ``label.orb_patch``, or when
        0, OpenCV's 31 px from a shorter side of 160 px up and ``max(9, side // 8)`` below (31 px
        patches and a 31 px border leave a 128 px image a 66 px centre to find keypoints in; on
        fixture frames moved by known shifts, 64 px images then registered 0 of 33 times)."""
        if self.cfg.orb_patch:
            return int(self.cfg.orb_patch)
        side = min(shape[:2])
        return 31 if side >= 160 else max(9, side // 8)

    def _keypoints(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """ORB keypoint coordinates (N, 2) in full-resolution pixels, and descriptors."""
        scale = 1.0
        g = gray
        side = self.cfg.orb_max_side
        if side and max(gray.shape) > side:
            scale = max(gray.shape) / float(side)
            size = (max(1, round(gray.shape[1] / scale)), max(1, round(gray.shape[0] / scale)))
            g = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        # detect (oversampled), spread, then describe only the kept keypoints: ORB's descriptors do
        # not depend on which other keypoints are described, so this equals describing all of them
        # and selecting afterwards, at a third of the descriptor cost
        orb = self.orb(g.shape)
        kps = orb.detect(g, None)
        keep = int(self.cfg.orb_features)
        if len(kps) > keep:
            pts = cv2.KeyPoint_convert(kps).reshape(-1, 2)
            resp = np.fromiter((kp.response for kp in kps), np.float32, len(kps))
            sel = spread_keypoints(pts, resp, g.shape[:2], int(self.cfg.orb_grid), keep)
            kps = [kps[i] for i in sel]
        for i, kp in enumerate(kps):
            kp.class_id = i  # compute() groups keypoints by pyramid level: restore the order after
        kps, desc = orb.compute(g, kps)
        if not kps or desc is None:
            pts, desc = np.zeros((0, 2), np.float32), None
        else:
            order = np.argsort(np.fromiter((kp.class_id for kp in kps), np.int64, len(kps)), kind="stable")
            pts = cv2.KeyPoint_convert(kps).reshape(-1, 2).astype(np.float32)[order]
            desc = desc[order]
        if scale != 1.0:
            # pixel-centre convention: x_full + 0.5 = (x_small + 0.5) * scale
            sx, sy = gray.shape[1] / g.shape[1], gray.shape[0] / g.shape[0]
            pts = (pts + 0.5) * np.array([sx, sy], np.float32) - 0.5
        return pts, desc

    def _homography_ok(self, hmat: np.ndarray | None, size: tuple[int, int]) -> str | None:
        """None if ``hmat`` is a sane registration of an image of ``size`` = (H, W), else why not:
        its area scale must lie in [1/s, s] (``max_homography_scale``), and its projective
        denominator ``h31 x + h32 y + h33`` must keep one sign over the image and vary by at most
        ``max_perspective`` times between the corners. A homography fitted to a handful of matches
        can pass the area test and still fold the image over the line at infinity; warped by it, the
        generated image smears into flat streaks whose SSIM against a flat render passes."""
        if hmat is None or not np.all(np.isfinite(hmat)):
            return "no homography found"
        det = float(np.linalg.det(hmat[:2, :2]))
        s = self.cfg.max_homography_scale
        if not (1.0 / s <= det <= s):
            return f"degenerate homography (area scale {det:.3g})"
        h, w = size
        den = hmat[2, 0] * np.array([0.0, w - 1, w - 1, 0.0]) + hmat[2, 1] * np.array([0.0, 0.0, h - 1, h - 1]) + hmat[2, 2]
        lo, hi = float(den.min()), float(den.max())
        if lo <= 0.0 <= hi:
            return "degenerate homography (folds the image over the line at infinity)"
        if hi < 0.0:  # -H is the same map
            lo, hi = -hi, -lo
        if hi > self.cfg.max_perspective * lo:
            return f"degenerate homography (perspective scale {hi / lo:.3g} across the image)"
        return None

    def _fit(self, src: np.ndarray, dst: np.ndarray,
             size: tuple[int, int]) -> tuple[np.ndarray | None, int, str | None, str | None]:
        """The registration model generated -> original of matched points: (3x3, RANSAC inliers, name,
        None or why it is refused by :meth:`_homography_ok`).

        ``auto``: RANSAC similarity and affine fits, and a homography when the affine fit is credible
        (at least max(min_inliers, 10 % of the matches) inliers; on unrelated images its 2000 RANSAC
        iterations are the costly part). Each fit counts its *precise* inliers (residual below
        ``precise_threshold`` over all matches); a more general model replaces the current one only
        with more than ``1 + model_tolerance`` times as many. An unconstrained homography fitted to
        keypoints of a few textured regions extrapolates badly elsewhere, so the simplest model that
        explains the matches wins."""
        cfg = self.cfg
        kw = dict(ransacReprojThreshold=float(cfg.ransac_threshold), maxIters=int(cfg.ransac_max_iters),
                  confidence=float(cfg.ransac_confidence))
        wanted = MODELS if cfg.motion_model == "auto" else (cfg.motion_model,)
        fits: list[tuple[str, np.ndarray, int, int]] = []
        for name in wanted:
            if name == "homography":
                if cfg.motion_model == "auto":
                    aff = next((f for f in fits if f[0] == "affine"), None)
                    if aff is None or aff[2] < max(cfg.min_inliers, 0.1 * len(src)):
                        continue
                hm, inl = cv2.findHomography(src, dst, cv2.RANSAC, kw["ransacReprojThreshold"],
                                             maxIters=kw["maxIters"], confidence=kw["confidence"])
            else:
                est = cv2.estimateAffinePartial2D if name == "similarity" else cv2.estimateAffine2D
                a, inl = est(src, dst, method=cv2.RANSAC, **kw)
                hm = None if a is None else np.vstack([a, [0.0, 0.0, 1.0]])
            if hm is None or inl is None or not np.all(np.isfinite(hm)):
                continue
            proj = cv2.perspectiveTransform(src.reshape(1, -1, 2).astype(np.float64), hm)[0]
            precise = int(np.count_nonzero(np.linalg.norm(proj - dst, axis=1) < cfg.precise_threshold))
            fits.append((name, hm, int(inl.sum()), precise))
        if not fits:
            return None, 0, None, "no homography found"
        # an insane fit never replaces a sane one; when none is sane, the first is returned with why
        checked = [(f, self._homography_ok(f[1], size)) for f in fits]
        pool = [f for f, why in checked if why is None]
        if not pool:
            (name, hm, inl, _), why = checked[0]
            return hm, inl, name, why
        best = pool[0]
        for f in pool[1:]:
            if f[3] > (1.0 + cfg.model_tolerance) * best[3]:
                best = f
        return best[1], best[2], best[0], None

    def _refine(self, hmat: np.ndarray, model: str, g_gen: np.ndarray, st: "_Original") -> tuple[np.ndarray, bool]:
        """ECC refinement of the model on small grey copies; (homography, refined?).

        Similarity and affine models are refined as affine maps, a homography as a homography. The
        result is kept only if it raises the correlation, stays a sane homography and moves no image
        corner by more than ``refine_max_shift`` pixels; otherwise the keypoint model is kept."""
        cfg = self.cfg
        h, w = g_gen.shape[:2]
        small_o, sc = st.small(cfg.refine_side)
        if small_o is None:
            return hmat, False
        small_g = _small_like(g_gen, small_o.shape)
        sm = _scale_matrix(sc[0], sc[1])
        hs = sm @ hmat @ np.linalg.inv(sm)
        warp = np.linalg.inv(hs)  # ECC's warp maps template (original) pixels to input pixels
        warp /= warp[2, 2]
        homog = model == "homography"
        mode = cv2.MOTION_HOMOGRAPHY if homog else cv2.MOTION_AFFINE
        init = (warp if homog else warp[:2]).astype(np.float32)
        size = (small_o.shape[1], small_o.shape[0])
        try:
            cc0 = _ecc_score(small_o, small_g, warp, size)
            crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, int(cfg.refine_iters), 1e-4)
            _, out = cv2.findTransformECC(small_o, small_g, init.copy(), mode, crit, None, 1)
        except cv2.error:
            return hmat, False
        w2 = out.astype(np.float64)
        if not homog:
            w2 = np.vstack([w2, [0.0, 0.0, 1.0]])
        if not np.all(np.isfinite(w2)) or abs(np.linalg.det(w2)) < 1e-12:
            return hmat, False
        if _ecc_score(small_o, small_g, w2, size) < cc0:
            return hmat, False
        new = np.linalg.inv(sm) @ np.linalg.inv(w2) @ sm
        new /= new[2, 2]
        if not homog:
            new[2] = (0.0, 0.0, 1.0)  # affine by construction: no rounding residue in the last row
        if self._homography_ok(new, (h, w)) or _corner_shift(hmat, new, h, w) > cfg.refine_max_shift:
            return hmat, False
        return new, True

    # -- the pipeline
    def __call__(self, generated: Any, original: Any, timings: dict[str, float] | None = None) -> MaskResult:
        """The mask of one (generated, original) pair."""
        return self.masks([generated], original, timings=timings)[0]

    def masks(
        self, generated: list[Any], original: Any, timings: dict[str, float] | None = None
    ) -> list[MaskResult]:
        """Masks of several generated images of one original (e.g. the 4 seeds of a depth map).

        The original's checks, ORB keypoints and SSIM statistics are computed once and shared;
        the results are identical to calling the computer on each pair.
        """
        clock: dict[str, float] = {}
        with _stage(clock, "prepare"):
            state = self._original(original)
        results = []
        try:
            for gen in generated:
                one = dict(clock) if not results else {}
                results.append(self._one(gen, state, one))
        except BaseException:
            self._forget()
            raise
        if timings is not None:
            for r in results:
                for k, v in r.timings.items():
                    timings[k] = timings.get(k, 0.0) + v
        return results

    def _original(self, original: Any) -> "_Original":
        """The checked original with its lazily computed ORB keypoints and SSIM statistics. When a
        call brings an original equal (same shape, dtype and bytes) to the previous call's, as the
        consecutive seeds of one depth map in a generated shard do, the previous state is reused:
        equality is checked against a private copy, so callers may change their arrays freely."""
        last = self._last
        if last is not None and isinstance(original, np.ndarray) and _same_original(original, last[0]):
            return last[1]
        self._forget()
        state = _Original(original, self.cfg)
        if isinstance(original, np.ndarray) and state.img is not None:
            self._last = (original.copy(), state)
        return state

    def _forget(self) -> None:
        self._last = None
        self._ref_owner = None

    def _one(self, generated: Any, st: "_Original", clock: dict[str, float]) -> MaskResult:
        cfg = self.cfg
        with _stage(clock, "prepare"):
            if st.why:
                r = self._empty(st.size, st.why)
                r.timings = clock
                return r
            size = st.size
            gen, why = _normalise(generated, "generated")
            if why:
                r = self._empty(size, why)
                r.timings = clock
                return r
            gsize = gen.shape[:2]
            why = _degenerate(gen, None, "generated", cfg, size_only=True)
            if why is None:
                grey = gen.ndim == 2 or st.img.ndim == 2  # one is grey: compare both as grey
                orig = st.gray if grey else st.img
                gen = match_size(_gray(gen) if grey else gen, size)
                g_gen = _gray(gen)
                why = _degenerate(gen, g_gen, "generated", cfg)
            if why:
                r = self._empty(size, why, gsize)
                r.timings = clock
                return r
        h, w = size
        notes: list[str] = []
        s_reg, s_dir = self._buffers(h, w)

        with _stage(clock, "ssim"):
            owner = self._ref_owner
            if owner is None or owner[0] is not st or owner[1] != grey:
                self.ssim.set_reference(orig)
                self._ref_owner = (st, grey)
            self.ssim.compare(gen, out=s_dir)
            mask_b = s_dir > cfg.ssim_threshold

        # registration
        matches_n, inliers_n, hmat = 0, 0, None
        with _stage(clock, "orb"):
            p_gen, d_gen = self._keypoints(g_gen)
            if st.keypoints is None:
                st.keypoints = self._keypoints(st.gray)
            p_orig, d_orig = st.keypoints
        with _stage(clock, "match"):
            qi, ti = hamming_cross_check(d_gen, d_orig)
            matches_n = len(qi)
        model, refined = None, False
        if matches_n < cfg.min_matches:
            notes.append(f"registration skipped: {matches_n} ORB matches < {cfg.min_matches}")
        else:
            with _stage(clock, "ransac"):
                hmat, inliers_n, model, why = self._fit(p_gen[qi], p_orig[ti], (h, w))
                if why is None and inliers_n < cfg.min_inliers:
                    why = f"{inliers_n} RANSAC inliers < {cfg.min_inliers}"
            if why:
                notes.append(f"registration failed: {why}")
                hmat, model = None, None
            elif cfg.refine == "ecc" and inliers_n >= cfg.refine_inlier_fraction * matches_n:
                with _stage(clock, "refine"):
                    hmat, refined = self._refine(hmat, model, g_gen, st)
        if hmat is not None:
            mask_a = self._registered(gen, hmat, s_reg, clock)
        else:
            mask_a = np.zeros((h, w), bool)

        with _stage(clock, "morphology"):
            fused = np.bitwise_or(mask_a, mask_b).view(np.uint8)
            if cfg.morph_kernel > 1:
                k = self._kernel(cfg.morph_kernel)
                fused = cv2.morphologyEx(fused, cv2.MORPH_OPEN, k)
                fused = cv2.morphologyEx(fused, cv2.MORPH_CLOSE, k)
            if cfg.erode_kernel > 1:
                fused = cv2.erode(fused, self._kernel(cfg.erode_kernel))
            final = fused.astype(bool)
            n = float(h * w)
            frac_a = cv2.countNonZero(mask_a.view(np.uint8)) / n
            frac_b = cv2.countNonZero(mask_b.view(np.uint8)) / n
            frac = cv2.countNonZero(fused) / n
        with _stage(clock, "crop"):
            if self._labels_buf is None or self._labels_buf.shape != (h, w):
                self._labels_buf = np.empty((h, w), np.int32)
            crop = crop_box(fused, cfg.crop_size, self._labels_buf)
        accepted = frac > cfg.accept_fraction
        if not accepted:
            notes.append(f"not accepted: final fraction {frac:.3f} <= {cfg.accept_fraction}")
        return MaskResult(
            mask=final,
            orb_matches=matches_n,
            inliers=inliers_n,
            registered_fraction=frac_a,
            direct_fraction=frac_b,
            final_fraction=frac,
            accepted=accepted,
            crop=crop,
            reason="; ".join(notes) or "ok",
            homography=None if hmat is None else [[float(v) for v in row] for row in hmat],
            model=model,
            refined=refined,
            target_homography=[[float(v) for v in row] for row in
                               (hmat if hmat is not None and frac_a >= frac_b else np.eye(3))],
            size=(h, w),
            generated_size=gsize,
            timings=clock,
        )

    def _registered(self, gen: np.ndarray, hmat: np.ndarray, s_reg: np.ndarray, clock: dict) -> np.ndarray:
        """Mask A: SSIM(gen warped by ``hmat``, reference) > threshold, on pixels the warp fills
        entirely from inside the generated image (the SSIM workspace holds the reference)."""
        h, w = s_reg.shape
        with _stage(clock, "warp"):
            # one warp of the image with an opaque extra channel: that channel is exactly the warp of
            # an all-255 image (per-channel interpolation), i.e. the cover, at little extra cost
            # (colour only: OpenCV's 2-channel warp rounds differently from its 1-channel warp)
            kw = dict(flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            warp = _warp_function(hmat)
            if gen.ndim == 3:
                reg = warp(self._with_alpha(gen), hmat, (w, h), **kw)
                cover = reg[:, :, 3] == 255
                # contiguous RGB for the SSIM kernels: cvtColor drops alpha in 0.03 ms, where a
                # NumPy copy of the strided reg[:, :, :3] took 0.9 ms
                reg = cv2.cvtColor(reg, cv2.COLOR_RGBA2RGB)
            else:
                reg = warp(gen, hmat, (w, h), **kw)
                cover = warp(self._ones(h, w), hmat, (w, h), **kw) == 255
        with _stage(clock, "ssim"):
            self.ssim.compare(reg, out=s_reg)
            return (s_reg > self.cfg.ssim_threshold) & cover

    def registered_mask(self, generated: np.ndarray, original: np.ndarray, homography: Any) -> np.ndarray:
        """Mask A for a *given* homography (size-matched generated -> original), with exactly the
        pipeline's rule (same size matching, channels, SSIM and cover test). Used to score a
        registration against a known warp: ``registered_mask(gen, orig, true_h).mean()`` is the
        registered fraction a perfect registration would reach."""
        gen, why = _normalise(generated, "generated")
        orig, why2 = _normalise(original, "original")
        if why or why2:
            raise ValueError(why or why2)
        grey = gen.ndim == 2 or orig.ndim == 2
        if grey:
            gen, orig = _gray(gen), _gray(orig)
        gen = match_size(gen, orig.shape[:2])
        self._ref_owner = None
        self.ssim.set_reference(orig)
        s_reg, _ = self._buffers(*orig.shape[:2])
        out = self._registered(gen, np.asarray(homography, np.float64), s_reg, {})
        self._ref_owner = None
        return out.copy()

    def _with_alpha(self, img: np.ndarray) -> np.ndarray:
        """RGB ``img`` with an all-255 fourth channel, in a reused buffer."""
        shape = (*img.shape[:2], 4)
        if self._rgba_buf is None or self._rgba_buf.shape != shape:
            self._rgba_buf = np.empty(shape, np.uint8)
        return cv2.cvtColor(img, cv2.COLOR_RGB2RGBA, dst=self._rgba_buf)

    def _ones(self, h: int, w: int) -> np.ndarray:
        if self._ones_buf is None or self._ones_buf.shape != (h, w):
            self._ones_buf = np.full((h, w), 255, np.uint8)
        return self._ones_buf


def _warp_affine(img: np.ndarray, hmat: np.ndarray, size: tuple[int, int], **kw) -> np.ndarray:
    return cv2.warpAffine(img, np.ascontiguousarray(hmat[:2]), size, **kw)


def _warp_function(hmat: np.ndarray):
    """``cv2.warpAffine`` (on the top two rows) for a 3x3 map whose last row is exactly (0, 0, 1),
    ``cv2.warpPerspective`` otherwise: a quarter less time on a 518x518 RGBA warp (no division per
    pixel). Both round source coordinates to 1/32 px, by different arithmetic: on an affine map they
    agree but for one grey level on a few pixels (139 of 307,200 for a 3 % zoom of a 640x480 frame;
    none on 200 random small motions of a 518x518 window)."""
    if hmat[2, 0] == 0.0 and hmat[2, 1] == 0.0 and hmat[2, 2] == 1.0:
        return _warp_affine
    return cv2.warpPerspective


@contextmanager
def _stage(clock: dict[str, float], name: str):
    t0 = time.perf_counter()
    try:
        yield
    finally:
        clock[name] = clock.get(name, 0.0) + time.perf_counter() - t0


class _Original:
    """The original image of a pair, checked once; ORB keypoints filled in lazily."""

    def __init__(self, original: Any, cfg: LabelConfig):
        self.keypoints: tuple[np.ndarray, np.ndarray | None] | None = None
        img, why = _normalise(original, "original")
        self.img = img
        self.size: tuple[int, int] = (0, 0) if img is None else img.shape[:2]
        self.gray = None if img is None else _gray(img)
        if why is None:
            why = _degenerate(img, self.gray, "original", cfg)
        self.why = why
        self._small: dict[int, tuple] = {}

    def small(self, side: int) -> tuple[np.ndarray | None, tuple[float, float]]:
        """Float32 grey copy whose shorter side is ``side`` (never upscaled), and its (sx, sy)."""
        if side not in self._small:
            h, w = self.gray.shape[:2]
            s = min(1.0, float(side) / min(h, w)) if side > 0 else 1.0
            sw, sh = max(8, round(w * s)), max(8, round(h * s))
            if sw > w or sh > h:
                sw, sh = w, h
            img = self.gray if (sh, sw) == (h, w) else cv2.resize(self.gray, (sw, sh), interpolation=cv2.INTER_AREA)
            self._small[side] = (img.astype(np.float32), (sw / w, sh / h))
        return self._small[side]


def _small_like(gray: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``gray`` resized (area) to ``shape`` = (h, w), float32."""
    if gray.shape[:2] != tuple(shape):
        gray = cv2.resize(gray, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    return gray.astype(np.float32)


def _ecc_score(template: np.ndarray, image: np.ndarray, warp: np.ndarray, size: tuple[int, int]) -> float:
    """The ECC criterion of ``image`` warped onto ``template`` (``warp`` maps template -> image pixels),
    over the template pixels the warp covers."""
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    reg = cv2.warpPerspective(image, warp, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    ones = np.full(image.shape[:2], 255, np.uint8)
    cover = cv2.warpPerspective(ones, warp, size, flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if cv2.countNonZero(cover) < 16:
        return -1.0
    return float(cv2.computeECC(template, reg, cover))


_CACHE: dict[str, MaskComputer] = {}


def similarity_mask(
    generated: Any,
    original: Any,
    cfg: LabelConfig | None = None,
    *,
    timings: dict[str, float] | None = None,
) -> MaskResult:
    """The fusion mask of a (generated, original) RGB uint8 pair; see the module docstring.

    Keeps one :class:`MaskComputer` per configuration in this process, so a map job may call it
    per sample without setup cost. Never raises for bad image content: see ``MaskResult.reason``.
    """
    cfg = cfg or LabelConfig()
    return _computer(cfg)(generated, original, timings=timings)


def _cached(cache: dict[str, MaskComputer], cfg: LabelConfig) -> MaskComputer:
    key = repr(cfg)
    comp = cache.get(key)
    if comp is None:
        if len(cache) > 8:
            cache.clear()
        comp = cache[key] = MaskComputer(dataclasses.replace(cfg))
    return comp


def _computer(cfg: LabelConfig) -> MaskComputer:
    """One computer per configuration and process (map jobs use processes; threads: _thread_computer)."""
    return _cached(_CACHE, cfg)


def similarity_masks(
    generated: list[Any],
    original: Any,
    cfg: LabelConfig | None = None,
    *,
    timings: dict[str, float] | None = None,
) -> list[MaskResult]:
    """Masks of several generated images of one original (the seeds of one depth map), sharing
    the original's ORB keypoints and SSIM statistics; same results as :func:`similarity_mask`."""
    cfg = cfg or LabelConfig()
    return _computer(cfg).masks(list(generated), original, timings=timings)


_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}  # (process id, threads): a forked child makes its own
_LOCAL = threading.local()


def _thread_computer(cfg: LabelConfig) -> MaskComputer:
    """This thread's computer for ``cfg`` (a computer is not thread-safe: one per thread)."""
    cache = getattr(_LOCAL, "computers", None)
    if cache is None:
        cache = _LOCAL.computers = {}
    return _cached(cache, cfg)


def _same_original(a: Any, b: Any) -> bool:
    if a is b:
        return True
    return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
            and a.dtype == b.dtype and np.array_equal(a, b))


def similarity_mask_pairs(
    pairs: list[tuple[Any, Any]],
    cfg: LabelConfig | None = None,
    *,
    threads: int = 1,
) -> list[MaskResult]:
    """Masks of many (generated, original) pairs, in order, on ``threads`` threads.

    Consecutive pairs with the same original (the seeds of one depth map) form a group that one
    thread computes with :meth:`MaskComputer.masks`, sharing the original's keypoints and SSIM
    statistics; groups are spread over the threads, each with its own computer. Results are identical
    to :func:`similarity_mask` pair by pair, whatever the thread count (tests). The threads stay
    alive for the next call, so their computers keep their buffers."""
    cfg = cfg or LabelConfig()
    pairs = list(pairs)
    groups: list[list[int]] = []
    for i, (_, orig) in enumerate(pairs):
        if groups and _same_original(pairs[groups[-1][0]][1], orig):
            groups[-1].append(i)
        else:
            groups.append([i])
    threads = max(1, min(int(threads), len(groups)))

    def run(idx: list[int]) -> list[MaskResult]:
        comp = _computer(cfg) if threads == 1 else _thread_computer(cfg)
        return comp.masks([pairs[i][0] for i in idx], pairs[idx[0]][1])

    if threads == 1:
        done = [run(g) for g in groups]
    else:
        key = (os.getpid(), threads)  # a pool's threads do not survive a fork: never reuse a parent's
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ThreadPoolExecutor(threads, thread_name_prefix="bridge-masks")
        done = list(pool.map(run, groups))
    out: list[MaskResult] = [None] * len(pairs)  # type: ignore[list-item]
    for g, results in zip(groups, done):
        for i, r in zip(g, results):
            out[i] = r
    return out
