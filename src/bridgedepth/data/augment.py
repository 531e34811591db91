"""Training-time augmentation on NumPy arrays (before collation): random resized crop, horizontal
flip, colour jitter. Deterministic given a ``numpy.random.Generator``.

Targets are resized with nearest-neighbour so that sparse ground truth never blends valid with
invalid pixels; images with area/bilinear interpolation.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def _resize(arr: np.ndarray, size_hw: tuple[int, int], nearest: bool) -> np.ndarray:
    h, w = size_hw
    if arr.shape[:2] == (h, w):
        return arr
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if h < arr.shape[0] else cv2.INTER_LINEAR)
    if arr.dtype == bool:
        return cv2.resize(arr.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    return cv2.resize(arr, (w, h), interpolation=interp)


def random_crop_flip(
    rng: np.random.Generator,
    rgb: np.ndarray,
    maps: list[np.ndarray],
    crop: int,
    scale_range: tuple[float, float] = (1.0, 1.3),
    hflip: bool = True,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Scale so the shorter side is ``crop * U(scale_range)``, take a random ``crop x crop`` window,
    flip horizontally with probability 0.5. ``maps`` (targets, masks) follow with nearest resizing."""
    h, w = rgb.shape[:2]
    s = crop / min(h, w) * float(rng.uniform(*scale_range))
    nh, nw = max(crop, math.ceil(h * s)), max(crop, math.ceil(w * s))
    rgb = _resize(rgb, (nh, nw), nearest=False)
    maps = [_resize(m, (nh, nw), nearest=True) for m in maps]
    y = int(rng.integers(0, nh - crop + 1))
    x = int(rng.integers(0, nw - crop + 1))
    rgb = rgb[y : y + crop, x : x + crop]
    maps = [m[y : y + crop, x : x + crop] for m in maps]
    if hflip and rng.random() < 0.5:
        rgb = rgb[:, ::-1]
        maps = [m[:, ::-1] for m in maps]
    return np.ascontiguousarray(rgb), [np.ascontiguousarray(m) for m in maps]


def center_resize(rgb: np.ndarray, maps: list[np.ndarray], crop: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Deterministic evaluation view: shorter side to ``crop``, centre crop."""
    h, w = rgb.shape[:2]
    s = crop / min(h, w)
    nh, nw = max(crop, round(h * s)), max(crop, round(w * s))
    rgb = _resize(rgb, (nh, nw), nearest=False)
    maps = [_resize(m, (nh, nw), nearest=True) for m in maps]
    y, x = (nh - crop) // 2, (nw - crop) // 2
    return (
        np.ascontiguousarray(rgb[y : y + crop, x : x + crop]),
        [np.ascontiguousarray(m[y : y + crop, x : x + crop]) for m in maps],
    )


def color_jitter(rng: np.random.Generator, rgb: np.ndarray, strength: float) -> np.ndarray:
    """Brightness, contrast and saturation jitter of +-strength (uint8 in, uint8 out).

    With factors b, c, s drawn in that order: brightness ``x * b``; contrast about the image's mean
    ``m`` (over all pixels and channels), ``(x - m) c + m``; saturation about each pixel's grey (mean
    over channels) ``g``, ``(x - g) s + g``. The three compose into one affine colour map,
    ``z = b c (s I + (1 - s) / 3 J) x + (1 - c) b mean(x)``, applied in one float32 ``cv2.transform``
    pass (about 20x faster than the step-by-step NumPy version at 128 px; the same values except
    where float rounding lands on the other side of .5: tests/test_augment_jitter.py)."""
    if strength <= 0:
        return rgb
    b, c, s = (1.0 + float(rng.uniform(-strength, strength)) for _ in range(3))
    a = np.asarray(rgb)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or not 1 <= a.shape[2] <= 4:
        raise ValueError(f"color_jitter: expected an (H, W) or (H, W, C <= 4) image, got shape {a.shape}")
    k = a.shape[2]
    m = b * float(np.mean(cv2.mean(a)[:k]))
    affine = np.empty((k, k + 1), np.float64)
    affine[:, :k] = b * c * (s * np.eye(k) + (1.0 - s) / k)
    affine[:, k] = (1.0 - c) * m
    # float32 in and out: OpenCV's uint8 path rounds differently on up to 13 % of the pixels
    out = cv2.transform(a.astype(np.float32), affine)
    out += 0.5
    np.clip(out, 0, 255, out=out)
    out = out.astype(np.uint8)
    return out.reshape(np.shape(rgb))
