"""Similarity-guided ground-truth masks (BRIDGE): where is a generated image still faithful to the
original synthetic render, so that the render's exact depth can supervise it?

Per (generated, original) RGB pair, in the original's pixel grid (the grid of its depth map):

1. registration: ORB keypoints in both images, brute-force Hamming matching with cross-check;
   at least ``min_matches`` matches, else mask A is empty; RANSAC homography generated -> original;
   warp the generated image onto the original; mask A = SSIM(registered, original) > threshold,
   restricted to pixels the warp fills entirely from inside the generated image;
2. direct: mask B = SSIM(size-matched generated, original) > threshold;
3. fusion: A or B, morphological opening then closing, then an erosion that drops slivers;
4. acceptance: ``final_fraction > accept_fraction``;
5. crop: a ``crop_size`` square centred on the bounding box of the largest connected (8-neighbour)
   region of the final mask, clamped to the image.

Everything is configured by :class:`bridgedepth.config.LabelConfig`. Bad or degenerate input
(wrong array type, tiny, one colour) never raises: the result has an empty mask and a ``reason``.
A labelling map job keeps one :class:`MaskComputer` per worker (it owns reusable buffers) or calls
:func:`similarity_mask`, which caches one per process and configuration.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..config import LabelConfig
from .ssim import SSIMWorkspace

__all__ = [
    "MaskResult",
    "MaskComputer",
    "similarity_mask",
    "similarity_masks",
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
    inliers: int = 0  # RANSAC inliers of the homography (0 when none was estimated)
    registered_fraction: float = 0.0  # |A| / (H W)
    direct_fraction: float = 0.0  # |B| / (H W)
    final_fraction: float = 0.0  # |fused, cleaned mask| / (H W)
    accepted: bool = False  # final_fraction > accept_fraction
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)  # x, y, width, height
    reason: str = "ok"  # "ok", or why a part is empty / the sample is not accepted
    homography: list[list[float]] | None = None  # generated (size-matched) -> original
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


def crop_box(mask: np.ndarray, crop_size: int) -> tuple[int, int, int, int]:
    """[x, y, w, h] of a ``crop_size`` square centred on the bounding box of the largest
    8-connected region of ``mask``, shifted to lie inside the image.

    Rules: if the image is smaller than ``crop_size`` along an axis, the crop spans that whole
    axis (so it is not square); an empty mask gives the crop centred on the image; the top-left
    corner is ``floor(centre - size / 2 + 0.5)`` then clamped to ``[0, side - size]``; ties
    between equally large regions go to the first in raster order.
    """
    h, w = mask.shape[:2]
    cw, ch = min(int(crop_size), w), min(int(crop_size), h)
    m = np.ascontiguousarray(mask, dtype=np.uint8)
    n, _, st, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
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
        self.orb = cv2.ORB_create(nfeatures=int(cfg.orb_features))
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
        dtype = np.float64 if cfg.ssim_precision == "float64" else np.float32
        self.ssim = SSIMWorkspace(sigma=cfg.ssim_sigma, k1=cfg.ssim_k1, k2=cfg.ssim_k2, dtype=dtype)
        self._ks = {}
        self._ssim_a: np.ndarray | None = None
        self._ssim_b: np.ndarray | None = None
        self._ones_buf: np.ndarray | None = None
        self._ref_owner: tuple | None = None  # which original the SSIM workspace holds

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

    def _keypoints(self, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """ORB keypoint coordinates (N, 2) in full-resolution pixels, and descriptors."""
        scale = 1.0
        g = gray
        side = self.cfg.orb_max_side
        if side and max(gray.shape) > side:
            scale = max(gray.shape) / float(side)
            size = (max(1, round(gray.shape[1] / scale)), max(1, round(gray.shape[0] / scale)))
            g = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        kps, desc = self.orb.detectAndCompute(g, None)
        pts = np.array([kp.pt for kp in kps], np.float32).reshape(-1, 2)
        if scale != 1.0:
            # pixel-centre convention: x_full + 0.5 = (x_small + 0.5) * scale
            sx, sy = gray.shape[1] / g.shape[1], gray.shape[0] / g.shape[0]
            pts = (pts + 0.5) * np.array([sx, sy], np.float32) - 0.5
        return pts, desc

    def _homography_ok(self, hmat: np.ndarray | None) -> str | None:
        if hmat is None or not np.all(np.isfinite(hmat)):
            return "no homography found"
        det = float(np.linalg.det(hmat[:2, :2]))
        s = self.cfg.max_homography_scale
        if not (1.0 / s <= det <= s):
            return f"degenerate homography (area scale {det:.3g})"
        return None

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
            state = _Original(original, self.cfg)
        results = []
        try:
            for gen in generated:
                one = dict(clock) if not results else {}
                results.append(self._one(gen, state, one))
        finally:
            self._ref_owner = None  # never reuse SSIM statistics across calls (arrays may change)
        if timings is not None:
            for r in results:
                for k, v in r.timings.items():
                    timings[k] = timings.get(k, 0.0) + v
        return results

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
            ref_key = (id(st), grey)
            if self._ref_owner != ref_key:
                self.ssim.set_reference(orig)
                self._ref_owner = ref_key
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
            matches = []
            if d_gen is not None and d_orig is not None:
                matches = self.matcher.match(d_gen, d_orig)
            matches_n = len(matches)
        if matches_n < cfg.min_matches:
            notes.append(f"registration skipped: {matches_n} ORB matches < {cfg.min_matches}")
        else:
            with _stage(clock, "ransac"):
                qi = np.fromiter((m.queryIdx for m in matches), np.int32, matches_n)
                ti = np.fromiter((m.trainIdx for m in matches), np.int32, matches_n)
                hmat, inl = cv2.findHomography(
                    p_gen[qi],
                    p_orig[ti],
                    cv2.RANSAC,
                    float(cfg.ransac_threshold),
                    maxIters=int(cfg.ransac_max_iters),
                    confidence=float(cfg.ransac_confidence),
                )
                inliers_n = int(inl.sum()) if inl is not None else 0
                why = self._homography_ok(hmat)
                if why is None and inliers_n < cfg.min_inliers:
                    why = f"{inliers_n} RANSAC inliers < {cfg.min_inliers}"
            if why:
                notes.append(f"registration failed: {why}")
                hmat = None
        if hmat is not None:
            with _stage(clock, "warp"):
                reg = cv2.warpPerspective(
                    gen, hmat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
                )
                cover = cv2.warpPerspective(
                    self._ones(h, w), hmat, (w, h), flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0,
                )
            with _stage(clock, "ssim"):
                self.ssim.compare(reg, out=s_reg)
                mask_a = (s_reg > cfg.ssim_threshold) & (cover == 255)
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
            crop = crop_box(fused, cfg.crop_size)
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
            size=(h, w),
            generated_size=gsize,
            timings=clock,
        )

    def _ones(self, h: int, w: int) -> np.ndarray:
        if self._ones_buf is None or self._ones_buf.shape != (h, w):
            self._ones_buf = np.full((h, w), 255, np.uint8)
        return self._ones_buf


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


def _computer(cfg: LabelConfig) -> MaskComputer:
    """One computer per configuration and process (map jobs use processes, not threads)."""
    key = repr(cfg)
    comp = _CACHE.get(key)
    if comp is None:
        if len(_CACHE) > 8:
            _CACHE.clear()
        comp = _CACHE[key] = MaskComputer(dataclasses.replace(cfg))
    return comp


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
