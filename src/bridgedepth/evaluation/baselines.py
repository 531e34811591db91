"""Trivial reference predictors that any trained model must beat.

``VerticalGradientPrior`` says only "the bottom of the picture is near, the top far": a disparity that
grows linearly from the top row to the bottom row. After the protocol's per-image scale-and-shift
alignment it is a surprisingly strong baseline on ground-level imagery (floors and roads fill the
lower half of most photographs).

``ConstantDepthPrior`` says the same depth (metres) everywhere, e.g. the median depth of the training
scenes: the reference a *metric* model (no alignment) must beat.
"""

from __future__ import annotations

import numpy as np


class VerticalGradientPrior:
    """``predict(rgb) -> disparity (H, W)``: ``lo`` at the top row rising linearly to 1 at the bottom."""

    kind = "disparity"

    def __init__(self, lo: float = 0.05):
        self.lo = float(lo)

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        h, w = np.asarray(rgb).shape[:2]
        col = np.linspace(self.lo, 1.0, h, dtype=np.float32)[:, None]
        return np.ascontiguousarray(np.broadcast_to(col, (h, w)))


class ConstantDepthPrior:
    """``predict(rgb) -> depth (H, W)`` in metres: ``depth`` everywhere."""

    kind = "depth"

    def __init__(self, depth: float):
        depth = float(depth)
        if not (depth > 0 and np.isfinite(depth)):
            raise ValueError(f"depth must be a positive number of metres, got {depth}")
        self.depth = depth

    def predict(self, rgb: np.ndarray) -> np.ndarray:
        h, w = np.asarray(rgb).shape[:2]
        return np.full((h, w), self.depth, np.float32)


def median_depth(depths, valids, max_depth: float | None = None) -> float:
    """The median of the valid depths (metres) over several maps, optionally below ``max_depth``."""
    vals = []
    for d, v in zip(depths, valids):
        d = np.asarray(d, np.float32)
        m = np.asarray(v, bool) & (d > 0) & np.isfinite(d)
        if max_depth:
            m &= d <= max_depth
        vals.append(d[m])
    allv = np.concatenate(vals) if vals else np.zeros(0, np.float32)
    if allv.size == 0:
        raise ValueError("no valid depth to take the median of")
    return float(np.median(allv))
