"""Trivial reference predictors that any trained model must beat.

``VerticalGradientPrior`` says only "the bottom of the picture is near, the top far": a disparity that
grows linearly from the top row to the bottom row. After the protocol's per-image scale-and-shift
alignment it is a surprisingly strong baseline on ground-level imagery (floors and roads fill the
lower half of most photographs).
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
