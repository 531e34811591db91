"""Point clouds: pinhole back-projection of metric depth and binary PLY output.

Camera frame: OpenCV's (x right, y down, z forward, metres). Pixel ``(u, v)`` is the centre of
column ``u`` / row ``v`` (integer coordinates), so the default principal point, the image centre, is
``((W - 1) / 2, (H - 1) / 2)``. A point is ``X = (u - cx) Z / fx``, ``Y = (v - cy) Z / fy``, ``Z = depth``.
A horizontal field of view gives ``fx = fy = (W / 2) / tan(fov / 2)``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .common import InputError, atomic_write


@dataclass(frozen=True)
class Intrinsics:
    fx: float
    fy: float
    cx: float
    cy: float
    centre_default: bool = False  # the principal point was not given: the image centre

    @classmethod
    def resolve(cls, width: int, height: int, *, fx: float | None = None, fy: float | None = None,
                cx: float | None = None, cy: float | None = None, fov: float | None = None) -> "Intrinsics":
        """Intrinsics for a (width, height) image from focal lengths *or* a horizontal FOV in degrees;
        a missing principal point is the image centre (``centre_default`` says so)."""
        if fov is not None and (fx is not None or fy is not None):
            raise InputError("give either --fx/--fy or --fov, not both")
        if fov is not None:
            if not 0.0 < fov < 180.0:
                raise InputError(f"--fov must be in (0, 180) degrees, got {fov}")
            fx = fy = (width / 2.0) / math.tan(math.radians(fov) / 2.0)
        if fx is None and fy is None:
            raise InputError("point clouds need the camera: pass --fx (and --fy) or --fov DEG")
        fx = float(fx if fx is not None else fy)
        fy = float(fy if fy is not None else fx)
        if not (fx > 0 and fy > 0 and math.isfinite(fx) and math.isfinite(fy)):
            raise InputError(f"focal lengths must be positive, got fx={fx}, fy={fy}")
        default = cx is None or cy is None
        cx = float((width - 1) / 2.0 if cx is None else cx)
        cy = float((height - 1) / 2.0 if cy is None else cy)
        return cls(fx, fy, cx, cy, default)

    def describe(self) -> str:
        pp = " (principal point: the image centre, not given)" if self.centre_default else ""
        return f"fx={self.fx:.2f} fy={self.fy:.2f} cx={self.cx:.2f} cy={self.cy:.2f}{pp}"


def backproject(depth: np.ndarray, intr: Intrinsics, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Metric depth (H, W) -> (points (N, 3) float32, flat pixel indices (N,)) of the valid pixels
    (finite, > 0, and ``valid`` where given), in row-major order."""
    z = np.asarray(depth, np.float64)
    if z.ndim != 2:
        raise InputError(f"depth must be (H, W), got shape {z.shape}")
    ok = np.isfinite(z) & (z > 0)
    if valid is not None:
        ok &= np.asarray(valid, bool)
    idx = np.flatnonzero(ok)
    v, u = np.divmod(idx, z.shape[1])
    zz = z.reshape(-1)[idx]
    pts = np.stack([(u - intr.cx) * zz / intr.fx, (v - intr.cy) * zz / intr.fy, zz], axis=1)
    return pts.astype(np.float32), idx


def write_ply(path: str | os.PathLike, points: np.ndarray, colors: np.ndarray | None = None,
              comments: list[str] | tuple[str, ...] = ()) -> Path:
    """Binary little-endian PLY (``float x, y, z`` and ``uchar red, green, blue``), written atomically."""
    pts = np.asarray(points, np.float32)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise InputError(f"points must be (N, 3), got {pts.shape}")
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        col = np.asarray(colors)
        if col.shape != pts.shape or col.dtype != np.uint8:
            raise InputError(f"colors must be uint8 (N, 3) like the points, got {col.dtype} {col.shape}")
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    rec = np.empty(len(pts), dtype=fields)
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if colors is not None:
        rec["red"], rec["green"], rec["blue"] = col[:, 0], col[:, 1], col[:, 2]
    head = ["ply", "format binary_little_endian 1.0"]
    head += [f"comment {c}".replace("\n", " ") for c in comments]
    head += [f"element vertex {len(pts)}", "property float x", "property float y", "property float z"]
    if colors is not None:
        head += ["property uchar red", "property uchar green", "property uchar blue"]
    head.append("end_header")
    p = Path(path)
    with atomic_write(p, "wb") as f:
        f.write(("\n".join(head) + "\n").encode("ascii", "replace"))
        f.write(rec.tobytes())
    return p


def depth_to_ply(path: str | os.PathLike, depth: np.ndarray, rgb: np.ndarray | None, intr: Intrinsics,
                 comments: list[str] | tuple[str, ...] = ()) -> int:
    """Back-project ``depth`` (metres) with ``intr``, colour by ``rgb`` and write a binary PLY; returns
    the number of points."""
    pts, idx = backproject(depth, intr)
    col = None
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape[:2] != np.shape(depth):
            raise InputError(f"colour image {rgb.shape[:2]} and depth {np.shape(depth)} differ in size")
        col = rgb.reshape(-1, 3)[idx].astype(np.uint8)
    frame = "camera frame: x right, y down, z forward (OpenCV), metres"
    write_ply(path, pts, col, [frame, "intrinsics " + intr.describe(), *comments])
    return len(pts)
