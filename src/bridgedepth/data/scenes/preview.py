"""Contact sheet: each sample's RGB next to its colourised depth, tiled into one image."""

from __future__ import annotations

import math

import cv2
import numpy as np


def colorize_depth(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Colourised depth for people: ``bridgedepth.io.colorize`` on disparity (near = warm, invalid
    black), stretched between the 2nd and 98th percentile so near and far both keep contrast."""
    from ...io import colorize

    valid = valid & (depth > 0)
    if not valid.any():
        return np.zeros(depth.shape + (3,), np.uint8)
    disp = np.where(valid, 1.0 / np.maximum(depth, 1e-6), 0.0)
    lo, hi = np.percentile(disp[valid], [2, 98])
    return colorize(disp, valid, kind="disparity", vmin=float(lo), vmax=float(max(hi, lo + 1e-9)))


def _label(img: np.ndarray, text: str) -> np.ndarray:
    img = img.copy()
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def contact_sheet(samples, cell: int = 192, columns: int = 4, labels: bool = True) -> np.ndarray:
    """Tile (RGB | depth) pairs, ``columns`` pairs per row, each image fitted into a cell x cell box."""
    tiles = []
    for s in samples:
        rgb, depth, valid = s["rgb"], s["depth"], s["valid"]
        col = colorize_depth(depth, valid)
        h, w = rgb.shape[:2]
        k = cell / max(h, w)
        size = (max(1, int(round(w * k))), max(1, int(round(h * k))))
        pair = []
        for im, interp in ((rgb, cv2.INTER_AREA), (col, cv2.INTER_NEAREST)):
            r = cv2.resize(im, size, interpolation=interp)
            canvas = np.zeros((cell, cell, 3), np.uint8)
            y0, x0 = (cell - r.shape[0]) // 2, (cell - r.shape[1]) // 2
            canvas[y0:y0 + r.shape[0], x0:x0 + r.shape[1]] = r
            pair.append(canvas)
        if labels:
            m = s.get("meta", {})
            rng = m.get("depth_range")
            txt = str(s.get("__key__", m.get("kind", "")))
            pair[0] = _label(pair[0], txt[:30])
            if rng:
                pair[1] = _label(pair[1], f"{rng[0]:.2f}-{rng[1]:.1f} m")
        tiles.append(np.concatenate([pair[0], np.full((cell, 2, 3), 255, np.uint8), pair[1]], axis=1))
    if not tiles:
        raise ValueError("no samples for the contact sheet")
    columns = max(1, min(columns, len(tiles)))
    rows = math.ceil(len(tiles) / columns)
    th, tw = tiles[0].shape[:2]
    gap = 6
    sheet = np.full((rows * th + (rows - 1) * gap, columns * tw + (columns - 1) * gap, 3), 40, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, columns)
        sheet[r * (th + gap):r * (th + gap) + th, c * (tw + gap):c * (tw + gap) + tw] = t
    return sheet
