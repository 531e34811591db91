"""Ground-truth and image decoding for the benchmark loaders.

Depth files are read with :func:`bridgedepth.io.read_depth` (the project's one reader). Until that
module is present in a checkout, a small private decoder for exactly the encodings the benchmarks
use is the fallback, so that the loaders work on their own.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import InputError

ETH3D_SHAPE = (4032, 6048)  # rows, columns of ETH3D's raw float32 ground truth
DPT_TAG = 202021.25


def _io_reader():
    try:
        from ... import io as bio
    except ImportError:  # pragma: no cover - io is a leaf of this package
        return None
    return getattr(bio, "read_depth", None)


def read_gt_depth(path: str | Path, encoding: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(depth float32 (H, W) metres with 0 where invalid, valid bool (H, W))``."""
    path = Path(path)
    reader = _io_reader()
    if reader is not None:
        dm = reader(path, encoding)
        depth = np.asarray(dm.depth, dtype=np.float32)
        valid = np.asarray(dm.valid, dtype=bool)
        return depth, valid
    return _fallback_read(path, encoding)


def _fallback_read(path: Path, encoding: str | None) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if encoding is None:
        raise InputError(f"{path}: no depth encoding given")
    if encoding in ("png-mm", "png-kitti"):
        import cv2

        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise InputError(f"{path}: not a readable PNG")
        if raw.dtype != np.uint16 or raw.ndim != 2:
            raise InputError(f"{path}: expected a single-channel uint16 PNG, got {raw.dtype} {raw.shape}")
        depth = raw.astype(np.float32) / (1000.0 if encoding == "png-mm" else 256.0)
    elif encoding == "eth3d-raw":
        data = np.fromfile(path, dtype="<f4")
        if data.size != ETH3D_SHAPE[0] * ETH3D_SHAPE[1]:
            raise InputError(
                f"{path}: ETH3D raw depth must hold {ETH3D_SHAPE[0]}x{ETH3D_SHAPE[1]} float32 values, "
                f"found {data.size}"
            )
        depth = data.reshape(ETH3D_SHAPE).astype(np.float32)
    elif encoding == "dpt":
        buf = path.read_bytes()
        if len(buf) < 12 or np.frombuffer(buf[:4], "<f4")[0] != np.float32(DPT_TAG):
            raise InputError(f"{path}: not a .dpt file (wrong tag)")
        w, h = (int(v) for v in np.frombuffer(buf[4:12], "<i4"))
        if len(buf) != 12 + 4 * w * h:
            raise InputError(f"{path}: truncated .dpt ({len(buf)} bytes for {w}x{h})")
        depth = np.frombuffer(buf[12:], "<f4").reshape(h, w).astype(np.float32)
    elif encoding == "npy":
        depth = np.load(path, allow_pickle=False)
        depth = np.asarray(depth, dtype=np.float32)
        if depth.ndim == 3 and depth.shape[-1] == 1:
            depth = depth[..., 0]
        if depth.ndim != 2:
            raise InputError(f"{path}: expected a (H, W) depth array, got shape {depth.shape}")
    else:
        raise InputError(f"{path}: unknown depth encoding {encoding!r}")
    valid = np.isfinite(depth) & (depth > 0)
    depth = np.where(valid, depth, 0.0).astype(np.float32)
    return depth, valid


def read_rgb(path: str | Path) -> np.ndarray:
    """RGB uint8 (H, W, 3)."""
    try:
        from ...io import read_image  # type: ignore[attr-defined]
    except ImportError:
        read_image = None
    if read_image is not None:
        return read_image(path)
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) of an image file, reading only its header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable image ({e})") from e
    return h, w
