"""Ground-truth and image decoding for the benchmark loaders, through :mod:`bridgedepth.io` (the
project's one reader of depth and image files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import InputError
from ...io import read_depth, read_image

ETH3D_SHAPE = (4032, 6048)  # rows, columns of ETH3D's raw float32 ground truth

# extra reader parameters a benchmark encoding needs
ENCODING_PARAMS = {"eth3d-raw": {"shape": ETH3D_SHAPE}}


def read_gt_depth(path: str | Path, encoding: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(depth float32 (H, W) metres with 0 where invalid, valid bool (H, W))``."""
    dm = read_depth(path, encoding, **ENCODING_PARAMS.get(encoding or "", {}))
    return np.asarray(dm.depth, dtype=np.float32), np.asarray(dm.valid, dtype=bool)


def read_rgb(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3)."""
    return read_image(path)


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file, reading only its header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from e
    return h, w
