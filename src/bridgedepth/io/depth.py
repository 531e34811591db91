"""Depth encodings by name: read any of them into metres + an explicit valid mask, write the ones a user
would write. The names in :data:`ENCODINGS` are part of the CLI (``--encoding NAME``).

Every reader returns float32 (H, W) metres with 0 where invalid and a boolean ``valid`` of the same
shape. Every writer refuses values the encoding cannot hold (no wrap-around, no clamping) and writes
atomically (temporary name + rename).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import codecs as C
from .common import FormatError, InputError, atomic_path, atomic_write, read_file_bytes

# NYUv2 raw Kinect disparity -> metres (the constants of the NYU toolbox): m = 351.3 / (1092.5 - raw)
NYU_RAW_A, NYU_RAW_B = 351.3, 1092.5
# Hypersim renders at 1024x768 with a 60 degree horizontal field of view: f = 512 / tan(30 deg) px.
HYPERSIM_FOCAL_1024 = 512.0 / math.tan(math.radians(30.0))


@dataclass
class DepthMap:
    """A decoded depth map: ``depth`` float32 (H, W) metres, 0 where invalid; ``valid`` bool (H, W)."""

    depth: np.ndarray
    valid: np.ndarray
    encoding: str
    path: str

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.depth.shape)  # type: ignore[return-value]

    @property
    def valid_fraction(self) -> float:
        return float(self.valid.mean()) if self.valid.size else 0.0

    def stats(self) -> dict[str, float | None]:
        """min / median / max metres over valid pixels (None when no pixel is valid)."""
        v = self.depth[self.valid]
        if v.size == 0:
            return {"min_m": None, "median_m": None, "max_m": None}
        return {"min_m": float(v.min()), "median_m": float(np.median(v)), "max_m": float(v.max())}


@dataclass(frozen=True)
class Codec:
    """One named depth encoding.

    ``decode(path, data, params) -> (depth float (H, W), valid bool (H, W))`` in metres;
    ``encode(path, depth float64 (H, W), valid bool (H, W), params)`` writes the file atomically
    (``None`` for read-only encodings).
    """

    name: str
    summary: str
    units: str
    invalid: str
    suffixes: tuple[str, ...]
    decode: Callable[[Any, bytes, dict], tuple[np.ndarray, np.ndarray]]
    encode: Callable[[Any, np.ndarray, np.ndarray, dict], None] | None = None
    params: tuple[str, ...] = ()
    detected: bool = False  # recognised from the file's magic bytes
    notes: str = ""

    @property
    def writable(self) -> bool:
        return self.encode is not None


# ------------------------------------------------------------------------------------------ helpers
def _float_param(params: dict, name: str, encoding: str, default: float | None = None) -> float:
    v = params.get(name, default)
    if v is None:
        raise InputError(f"encoding {encoding} needs the parameter {name!r}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise InputError(f"encoding {encoding}: parameter {name!r} must be a number, got {v!r}") from None
    if not math.isfinite(f):
        raise InputError(f"encoding {encoding}: parameter {name!r} must be finite, got {v!r}")
    return f


def parse_shape(value, encoding: str = "eth3d-raw") -> tuple[int, int]:
    """``(H, W)`` from a pair or a string ``"HxW"`` / ``"H,W"``."""
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*[x,X\s]\s*(\d+)\s*", value)
        if not m:
            raise InputError(f"encoding {encoding}: shape must look like HxW (e.g. 4032x6048), got {value!r}")
        h, w = int(m.group(1)), int(m.group(2))
    else:
        try:
            h, w = (int(v) for v in value)
        except (TypeError, ValueError):
            raise InputError(f"encoding {encoding}: shape must be (H, W), got {value!r}") from None
    if h <= 0 or w <= 0:
        raise InputError(f"encoding {encoding}: shape must be positive, got {h}x{w}")
    return h, w


def _nan_filled_check(path, arr: np.ndarray) -> None:
    if arr.size == 0:
        raise FormatError(path, "holds an empty array (no pixels)")
    if np.isnan(arr.flat[0]) and np.isnan(arr).all():  # the first value decides cheaply in the usual case
        raise FormatError(path, "NaN-filled: every value is NaN, no depth at all")


def _metres_from_float(path, arr: np.ndarray, what: str = "depth", nan_is_invalid: bool = False
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Float metres: valid = finite and > 0. Negative values are errors, and so is a NaN-filled file
    unless NaN is the format's own invalid marker (``nan_is_invalid``: then it is simply all invalid)."""
    a = np.asarray(arr)
    if nan_is_invalid:
        if a.size == 0:
            raise FormatError(path, "holds an empty array (no pixels)")
    else:
        _nan_filled_check(path, a)
    finite = np.isfinite(a)
    neg = a < 0  # -inf included; NaN compares False
    if neg.any():
        raise FormatError(path, f"{int(neg.sum())} negative {what} values (smallest {float(a[neg].min()):g}): "
                                f"not a {what} map in this encoding")
    valid = finite & (a > 0)
    out = a.astype(np.float32)  # a copy: callers may hold read-only buffers
    out[~valid] = 0.0
    return out, valid


def _as_2d_float(path, arr: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.ndim == 3 and 1 in (a.shape[0], a.shape[-1]):
        a = a.reshape(a.shape[1:] if a.shape[0] == 1 else a.shape[:-1])
    if a.ndim != 2:
        raise FormatError(path, f"wrong shape: {what} has shape {a.shape}, expected (H, W)")
    if a.dtype.kind != "f":
        raise FormatError(path, f"{what} has dtype {a.dtype}; expected floating-point metres "
                                "(integer depth is millimetres or counts: use a png-*/pgm-* encoding or convert)")
    return a


def _check_writable(path, encoding: str, depth: np.ndarray, valid: np.ndarray) -> None:
    d = depth[valid]
    bad = ~np.isfinite(d)
    if bad.any():
        raise FormatError(path, f"cannot write {encoding}: {int(bad.sum())} pixels marked valid are not finite")
    if (d <= 0).any():
        raise FormatError(path, f"cannot write {encoding}: {int((d <= 0).sum())} pixels marked valid are <= 0 m "
                                f"(smallest {float(d.min()):g}); depth must be positive")


def _to_float32_checked(path, encoding: str, depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore", under="ignore"):
        d32 = depth.astype(np.float32)
    lost = valid & ~(np.isfinite(d32) & (d32 > 0))
    if lost.any():
        raise FormatError(path, f"cannot write {encoding}: {int(lost.sum())} values overflow or underflow float32")
    return d32


def _quantize(path, encoding: str, values: np.ndarray, valid: np.ndarray, scale: float, unit: str) -> np.ndarray:
    """values * scale rounded to uint16 (0 where invalid); refuses anything that would wrap or vanish."""
    q = np.zeros(values.shape, dtype=np.float64)
    q[valid] = np.rint(values[valid] * scale)
    if valid.any():
        qmax = q[valid].max()
        if qmax > 65535:
            raise FormatError(path, f"cannot write {encoding}: value {values[valid].max():g} {unit} exceeds "
                                    f"{65535 / scale:g} {unit}, the largest this encoding holds")
        small = valid & (q < 1)
        if small.any():
            raise FormatError(path, f"cannot write {encoding}: {int(small.sum())} valid values round to 0 "
                                    f"(smallest {values[small].min():g} {unit}; resolution {1 / scale:g} {unit}) "
                                    "and would read back as invalid")
    return q.astype(np.uint16)


def _rotate_right3(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.uint32)
    return (((v >> 3) | (v << 13)) & 0xFFFF).astype(np.uint16)


def _rotate_left3(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.uint32)
    return (((v << 3) | (v >> 13)) & 0xFFFF).astype(np.uint16)


def _write_bytes(path, data: bytes) -> None:
    with atomic_write(path, "wb") as f:
        f.write(data)


# ------------------------------------------------------------------------------------------ PNG / PGM
def _scaled(raw: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """uint16 -> float32 metres (0 stays 0: invalid)."""
    return np.divide(raw, np.float32(scale), dtype=np.float32), raw > 0


def _png_codec(name: str, scale: float, summary: str, units: str) -> Codec:
    def decode(path, data, params):
        return _scaled(C.decode_png16(path, data), scale)

    def encode(path, depth, valid, params):
        _write_bytes(path, C.encode_png16(_quantize(path, name, depth, valid, scale, "m")))

    return Codec(name, summary, units, "0", (".png",), decode, encode)


def _sun3d_decode(path, data, params):
    return _scaled(_rotate_right3(C.decode_png16(path, data)), 1000.0)


def _sun3d_encode(path, depth, valid, params):
    mm = _quantize(path, "png-sun3d", depth, valid, 1000.0, "m")
    _write_bytes(path, C.encode_png16(_rotate_left3(mm)))


def _pgm_mm_decode(path, data, params):
    raw, maxval = C.decode_pgm16(path, data, byteorder=">")
    if raw.max() > maxval:
        raise FormatError(path, f"samples up to {int(raw.max())} exceed the header's maxval {maxval}: "
                                "not a big-endian PGM in millimetres (raw NYUv2 Kinect frames are pgm-nyu-raw)")
    return _scaled(raw, 1000.0)


def _pgm_mm_encode(path, depth, valid, params):
    _write_bytes(path, C.encode_pgm16(_quantize(path, "pgm-mm", depth, valid, 1000.0, "m")))


def _nyu_raw_decode(path, data, params):
    raw, _ = C.decode_pgm16(path, data, byteorder="<")
    valid = raw < NYU_RAW_B
    depth = np.zeros(raw.shape, dtype=np.float32)
    np.divide(np.float32(NYU_RAW_A), np.float32(NYU_RAW_B) - raw.astype(np.float32), out=depth, where=valid)
    return depth, valid


# ------------------------------------------------------------------------------------------ floats
def _pfm_decode(path, data, params):
    arr = C.decode_pfm(path, data)
    if arr.ndim != 2:
        raise FormatError(path, "wrong shape: a 3-channel PFM ('PF') is a colour image, not a depth map")
    return _metres_from_float(path, arr)


def _pfm_encode(path, depth, valid, params):
    d32 = _to_float32_checked(path, "pfm", depth, valid)
    _write_bytes(path, C.encode_pfm(np.where(valid, d32, np.float32(np.inf))))


def read_middlebury_calib(path) -> dict[str, float]:
    """Parse a Middlebury ``calib.txt``: focal (px, from cam0), baseline (metres; the file says mm),
    doffs (px)."""
    text = read_file_bytes(path, "calibration file").decode("utf-8", "replace")
    kv = {}
    for line in text.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            kv[k.strip()] = v.strip()
    try:
        cam0 = [float(t) for t in kv["cam0"].strip("[]").replace(";", " ").split()]
        focal, baseline_mm = cam0[0], float(kv["baseline"])
        doffs = float(kv.get("doffs", 0.0))
    except (KeyError, ValueError, IndexError) as e:
        raise FormatError(path, f"not a Middlebury calib.txt (needs cam0=[f 0 cx; ...], baseline=, doffs=): {e}") \
            from None
    if focal <= 0 or baseline_mm <= 0:
        raise FormatError(path, f"calibration has non-positive focal ({focal}) or baseline ({baseline_mm})")
    return {"focal": focal, "baseline": baseline_mm / 1000.0, "doffs": doffs}


def _stereo_params(path, params: dict, encoding: str, allow_calib: bool) -> tuple[float, float, float]:
    if allow_calib and params.get("calib") is not None:
        cal = read_middlebury_calib(params["calib"])
        for k in ("focal", "baseline", "doffs"):
            if params.get(k) is not None:
                cal[k] = _float_param(params, k, encoding)
        focal, baseline, doffs = cal["focal"], cal["baseline"], cal["doffs"]
    else:
        if params.get("focal") is None or params.get("baseline") is None:
            hint = ""
            if allow_calib and path is not None and (Path(path).parent / "calib.txt").exists():
                hint = f"; a calib.txt sits beside this file: --calib {Path(path).parent / 'calib.txt'}"
            need = ("calib (--calib FILE, a Middlebury calib.txt) or focal and baseline (--focal PX --baseline M)"
                    if allow_calib else "focal and baseline (--focal PX --baseline M)")
            raise InputError(f"{path}: encoding {encoding} converts disparity to depth and needs {need}{hint}")
        focal = _float_param(params, "focal", encoding)
        baseline = _float_param(params, "baseline", encoding)
        doffs = _float_param(params, "doffs", encoding, 0.0)
    if focal <= 0 or baseline <= 0:
        raise InputError(f"encoding {encoding}: focal and baseline must be positive, got {focal}, {baseline}")
    return focal, baseline, doffs


def _disparity_to_depth(path, disp: np.ndarray, focal: float, baseline: float, doffs: float):
    d = np.asarray(disp, dtype=np.float32)
    _nan_filled_check(path, d)
    finite = np.isfinite(d)
    neg = finite & (d < 0)
    if neg.any():
        raise FormatError(path, f"{int(neg.sum())} negative disparities (smallest {float(d[neg].min()):g})")
    shifted = d + np.float32(doffs)
    valid = finite & (d > 0) & (shifted > 0)
    depth = np.zeros(d.shape, dtype=np.float32)
    np.divide(np.float32(focal * baseline), shifted, out=depth, where=valid)
    return depth, valid


def _pfm_disp_decode(path, data, params):
    focal, baseline, doffs = _stereo_params(path, params, "pfm-disparity", True)
    disp = C.decode_pfm(path, data)
    if disp.ndim != 2:
        raise FormatError(path, "wrong shape: a 3-channel PFM ('PF') is a colour image, not a disparity map")
    return _disparity_to_depth(path, disp, focal, baseline, doffs)


def _pfm_disp_encode(path, depth, valid, params):
    focal, baseline, doffs = _stereo_params(path, params, "pfm-disparity", True)
    disp = np.full(depth.shape, np.inf, dtype=np.float64)
    disp[valid] = focal * baseline / depth[valid] - doffs
    if valid.any() and (disp[valid] <= 0).any():
        raise FormatError(path, f"cannot write pfm-disparity: depth beyond {focal * baseline / max(doffs, 1e-30):g} m "
                                f"gives a non-positive disparity with doffs={doffs}")
    _write_bytes(path, C.encode_pfm(disp.astype(np.float32)))


def _kitti_disp_decode(path, data, params):
    focal, baseline, _ = _stereo_params(path, params, "png-disparity-kitti", False)
    raw = C.decode_png16(path, data)
    return _disparity_to_depth(path, raw / 256.0, focal, baseline, 0.0)


def _kitti_disp_encode(path, depth, valid, params):
    focal, baseline, _ = _stereo_params(path, params, "png-disparity-kitti", False)
    disp = np.zeros(depth.shape)
    disp[valid] = focal * baseline / depth[valid]
    _write_bytes(path, C.encode_png16(_quantize(path, "png-disparity-kitti", disp, valid, 256.0, "px disparity")))


def _dpt_decode(path, data, params):
    return _metres_from_float(path, C.decode_dpt(path, data))


def _dpt_encode(path, depth, valid, params):
    d32 = _to_float32_checked(path, "dpt", depth, valid)
    _write_bytes(path, C.encode_dpt(np.where(valid, d32, np.float32(0))))


def _eth3d_decode(path, data, params):
    if params.get("shape") is None:
        n = len(data) // 4
        hint = " (4032x6048 for ETH3D's full-resolution depth)" if n == 4032 * 6048 else ""
        raise InputError(f"{path}: encoding eth3d-raw is headerless and needs shape (--shape HxW){hint}")
    return _metres_from_float(path, C.decode_raw_f32(path, data, parse_shape(params["shape"])))


def _eth3d_encode(path, depth, valid, params):
    if params.get("shape") is not None and parse_shape(params["shape"]) != depth.shape:
        raise InputError(f"{path}: shape={params['shape']} does not match the array's {depth.shape}")
    d32 = _to_float32_checked(path, "eth3d-raw", depth, valid)
    _write_bytes(path, C.encode_raw_f32(np.where(valid, d32, np.float32(np.inf))))


def _exr_decode(path, data, params):
    return _metres_from_float(path, C.decode_exr(path, data, params.get("channel")))


def _exr_encode(path, depth, valid, params):
    d32 = _to_float32_checked(path, "exr", depth, valid)
    arr = np.where(valid, d32, np.float32(0))
    C._openexr(path)  # clear error before creating any temporary file
    with atomic_path(path) as tmp:
        C.write_exr_file(tmp, arr, params.get("channel") or "Z")


def hypersim_ray_norm(h: int, w: int, focal: float) -> np.ndarray:
    """|ray| / focal per pixel: distance_to_centre = planar_depth * this (pixel centres, principal
    point at the image centre)."""
    x = np.arange(w, dtype=np.float64) + 0.5 - w / 2.0
    y = np.arange(h, dtype=np.float64) + 0.5 - h / 2.0
    return np.sqrt(focal * focal + x[None, :] ** 2 + y[:, None] ** 2) / focal


def _hypersim_focal(params, w: int) -> float:
    if params.get("focal") is None:
        return HYPERSIM_FOCAL_1024 * w / 1024.0
    f = _float_param(params, "focal", "hypersim-hdf5")
    if f <= 0:
        raise InputError(f"encoding hypersim-hdf5: focal must be positive, got {f}")
    return f


def _hypersim_decode(path, data, params):
    dist = C.decode_hdf5_dataset(path, data, params.get("key"))
    if dist.dtype.kind != "f":
        raise FormatError(path, f"Hypersim distance has dtype {dist.dtype}; expected floating-point metres")
    dist, valid = _metres_from_float(path, dist.astype(np.float64), "distance", nan_is_invalid=True)
    h, w = dist.shape
    depth = dist / hypersim_ray_norm(h, w, _hypersim_focal(params, w))
    return np.where(valid, depth, 0).astype(np.float32), valid


def _hypersim_encode(path, depth, valid, params):
    h, w = depth.shape
    dist = np.full(depth.shape, np.nan, dtype=np.float64)
    dist[valid] = (depth * hypersim_ray_norm(h, w, _hypersim_focal(params, w)))[valid]
    d32 = _to_float32_checked(path, "hypersim-hdf5", np.nan_to_num(dist, nan=1.0), valid)
    C._h5py(path)
    with atomic_path(path) as tmp:
        C.write_hdf5_file(tmp, np.where(valid, d32, np.float32(np.nan)), params.get("key") or "dataset")


def _npy_decode(path, data, params):
    return _metres_from_float(path, _as_2d_float(path, C.decode_npy(path, data), "the .npy array"))


def _npy_encode(path, depth, valid, params):
    d32 = _to_float32_checked(path, "npy", depth, valid)
    _write_bytes(path, C.encode_npy(np.where(valid, d32, np.float32(0))))


def _npz_decode(path, data, params):
    arrays = C.decode_npz(path, data)
    key = params.get("key")
    if key is None:
        if "depth" in arrays:
            key = "depth"
        elif len([k for k in arrays if k != "valid"]) == 1:
            key = next(k for k in arrays if k != "valid")
        else:
            raise FormatError(path, f"cannot tell which array is depth among {sorted(arrays)}; pass key=NAME")
    if key not in arrays:
        raise FormatError(path, f"no array {key!r} in the .npz; arrays: {sorted(arrays)}")
    depth, valid = _metres_from_float(path, _as_2d_float(path, arrays[key], f"array {key!r}"))
    if "valid" in arrays:
        v = np.asarray(arrays["valid"])
        if v.shape != depth.shape:
            raise FormatError(path, f"wrong shape: 'valid' has shape {v.shape}, depth has {depth.shape}")
        if v.dtype != np.bool_:
            raise FormatError(path, f"'valid' has dtype {v.dtype}; expected bool")
        bad = v & ~valid
        if bad.any():
            raise FormatError(path, f"{int(bad.sum())} pixels marked valid hold no positive finite depth")
        valid = v.copy()
        depth = np.where(valid, depth, 0).astype(np.float32)
    return depth, valid


def _npz_encode(path, depth, valid, params):
    d32 = _to_float32_checked(path, "npz", depth, valid)
    _write_bytes(path, C.encode_npz(depth=np.where(valid, d32, np.float32(0)), valid=valid))


# ------------------------------------------------------------------------------------------ registry
def _reg(*codecs: Codec) -> dict[str, Codec]:
    return {c.name: c for c in codecs}


ENCODINGS: dict[str, Codec] = _reg(
    _png_codec("png-mm", 1000.0, "uint16 PNG in millimetres (NYUv2 sync, ScanNet, Redwood, DIODE-style RGB-D)",
               "m = v / 1000"),
    _png_codec("png-kitti", 256.0, "uint16 PNG, metres x 256 (KITTI depth benchmark)", "m = v / 256"),
    _png_codec("png-tum", 5000.0, "uint16 PNG, metres x 5000 (TUM RGB-D)", "m = v / 5000"),
    _png_codec("png-cm", 100.0, "uint16 PNG in centimetres (Virtual KITTI 2)", "m = v / 100"),
    Codec("png-sun3d", "uint16 PNG whose bits are rotated left by 3 (SUN3D / SUN RGB-D)",
          "m = ror3(v) / 1000, ror3(v) = ((v >> 3) | (v << 13)) & 0xFFFF", "0", (".png",),
          _sun3d_decode, _sun3d_encode),
    Codec("pgm-nyu-raw", "raw NYUv2 Kinect disparity counts in a PGM (little-endian despite the header)",
          "m = 351.3 / (1092.5 - raw)", "raw >= 1092.5 (2047 = no return)", (".pgm",), _nyu_raw_decode),
    Codec("pgm-mm", "standard binary 16-bit PGM (big-endian) in millimetres", "m = v / 1000", "0", (".pgm",),
          _pgm_mm_decode, _pgm_mm_encode),
    Codec("pfm", "PFM float depth in metres (either byte order; rows stored bottom-to-top)", "metres",
          "inf, NaN or <= 0 (written as inf)", (".pfm",), _pfm_decode, _pfm_encode, detected=True),
    Codec("pfm-disparity", "PFM disparity in pixels (Middlebury, Scene Flow) converted to depth",
          "m = focal * baseline / (d + doffs)", "inf, NaN or d <= 0 (written as inf)", (".pfm",),
          _pfm_disp_decode, _pfm_disp_encode, params=("calib", "focal", "baseline", "doffs"),
          notes="calib= a Middlebury calib.txt (focal from cam0, baseline in mm there, doffs), or focal= px, "
                "baseline= metres, doffs= px (default 0)"),
    Codec("png-disparity-kitti", "uint16 PNG disparity, px x 256 (KITTI 2012/2015 stereo)",
          "m = focal * baseline / (v / 256)", "0", (".png",), _kitti_disp_decode, _kitti_disp_encode,
          params=("focal", "baseline"),
          notes="focal= px, baseline= metres (KITTI: about 721 px and 0.54 m)"),
    Codec("dpt", "MPI-Sintel .dpt: float32 tag 202021.25, int32 width, int32 height, float32 depth (LE)",
          "metres", "inf, NaN or <= 0 (written as 0)", (".dpt",), _dpt_decode, _dpt_encode, detected=True),
    Codec("eth3d-raw", "headerless little-endian float32 (ETH3D), shape given explicitly", "metres",
          "inf, NaN or <= 0 (written as inf)", (), _eth3d_decode, _eth3d_encode, params=("shape",),
          notes="shape=HxW (ETH3D full resolution: 4032x6048)"),
    Codec("exr", "OpenEXR, one float channel (Z, depth, Y or R, else the only channel)", "metres",
          "inf, NaN or <= 0 (written as 0)", (".exr",), _exr_decode, _exr_encode, params=("channel",),
          detected=True, notes="channel= picks a channel; needs the OpenEXR package"),
    Codec("hypersim-hdf5", "Hypersim HDF5 distance to the camera centre, converted to planar depth",
          "m = distance * f / sqrt(f^2 + x^2 + y^2)", "NaN, inf or <= 0 (written as NaN)", (".hdf5", ".h5"),
          _hypersim_decode, _hypersim_encode, params=("focal", "key"), detected=True,
          notes="focal= px (default: 60 deg horizontal field of view, 886.81 px at 1024 wide); key= dataset "
                "name (default 'dataset'); needs h5py"),
    Codec("npy", "NumPy .npy float array (H, W) in metres ((1, H, W) and (H, W, 1) accepted)", "metres",
          "inf, NaN or <= 0 (written as 0)", (".npy",), _npy_decode, _npy_encode, detected=True),
    Codec("npz", "NumPy .npz with 'depth' (metres) and optional bool 'valid'", "metres",
          "valid == False, else inf, NaN or <= 0", (".npz",), _npz_decode, _npz_encode, params=("key",),
          detected=True, notes="key= names the depth array if it is not 'depth'"),
)


# ------------------------------------------------------------------------------------------ API
def _choices(names) -> str:
    return ", ".join(names)


_PNG_CHOICES = ("png-mm", "png-kitti", "png-tum", "png-cm", "png-sun3d", "png-disparity-kitti")
_PGM_CHOICES = ("pgm-mm", "pgm-nyu-raw")


def detect_encoding(path) -> str | None:
    """The encoding named by the file's magic bytes (PFM, DPT, NPY, NPZ, EXR, HDF5), else ``None``.

    PNG and PGM depth files carry no unit: their encoding must be given (``None`` here).
    """
    p = Path(path)
    if not p.exists():
        raise FormatError(p, "no such file")
    if p.is_dir():
        raise FormatError(p, "is a directory, not a file")
    with open(p, "rb") as f:
        head = f.read(4096)
    if not head:
        raise FormatError(p, "empty file (0 bytes)")
    if head[:2] in (b"Pf", b"PF") and len(head) > 2 and head[2] in C._WHITESPACE:
        return "pfm"
    if head.startswith(C.DPT_MAGIC):
        return "dpt"
    if head.startswith(C.NPY_MAGIC):
        return "npy"
    if head.startswith(C.ZIP_MAGIC):
        return "npz"
    if head.startswith(C.EXR_MAGIC):
        return "exr"
    if C.is_hdf5(head):
        return "hypersim-hdf5"
    return None


def _undetected_error(path) -> FormatError:
    with open(path, "rb") as f:
        head = f.read(32)
    if head.startswith(C.PNG_MAGIC) and len(head) >= 26 and (head[24], head[25]) != (16, 0):
        return FormatError(path, f"a {head[24]}-bit PNG of colour type {head[25]} is an image, not a depth map "
                                 "(depth PNGs are single-channel 16-bit)")
    if head.startswith(C.PNG_MAGIC):
        return FormatError(path, "a 16-bit PNG does not say its depth units; pass an encoding (--encoding NAME), one of: "
                                 f"{_choices(_PNG_CHOICES)} (all encodings: {_choices(ENCODINGS)})")
    if head[:2] == b"P5":
        return FormatError(path, f"a PGM does not say its depth units; pass an encoding (--encoding NAME), one of: "
                                 f"{_choices(_PGM_CHOICES)}")
    return FormatError(path, f"cannot tell the depth encoding from the file's first bytes ({head[:8]!r}); pass an "
                             f"encoding (--encoding NAME), one of: {_choices(ENCODINGS)}")


def get_codec(encoding: str) -> Codec:
    try:
        return ENCODINGS[encoding]
    except (KeyError, TypeError):
        raise InputError(f"unknown depth encoding {encoding!r}; choose one of: {_choices(ENCODINGS)}") from None


def _check_params(codec: Codec, params: dict) -> dict:
    params = {k: v for k, v in params.items() if v is not None}
    unknown = sorted(set(params) - set(codec.params))
    if unknown:
        allowed = _choices(codec.params) if codec.params else "none"
        raise InputError(f"encoding {codec.name} does not take {', '.join(unknown)} (parameters: {allowed})")
    return params


def read_depth(path, encoding: str | None = None, **params) -> DepthMap:
    """Decode a depth file into metres. ``encoding`` may be omitted only where the file's magic says
    it (PFM -> ``pfm``, DPT, NPY, NPZ, EXR, HDF5 -> ``hypersim-hdf5``); a PNG or PGM without one is an
    error listing the choices. Extra ``params`` are the encoding's (``calib``, ``focal``, ``baseline``,
    ``doffs``, ``shape``, ``key``, ``channel``)."""
    p = Path(path)
    if encoding is None:
        encoding = detect_encoding(p)
        if encoding is None:
            raise _undetected_error(p)
    codec = get_codec(encoding)
    params = _check_params(codec, params)
    data = read_file_bytes(p)
    depth, valid = codec.decode(str(p), data, params)
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    valid = np.ascontiguousarray(valid, dtype=bool)
    depth[~valid] = 0.0
    return DepthMap(depth=depth, valid=valid, encoding=encoding, path=str(p))


def write_depth(path, depth, encoding: str, valid=None, **params) -> None:
    """Encode metres into ``encoding`` at ``path`` (atomically). ``valid`` defaults to finite and > 0;
    invalid pixels get the encoding's invalid value. Values the encoding cannot hold raise
    :class:`FormatError` (nothing wraps or is clamped)."""
    codec = get_codec(encoding)
    if not codec.writable:
        writable = [n for n, c in ENCODINGS.items() if c.writable]
        raise InputError(f"encoding {encoding} is read-only; writable encodings: {_choices(writable)}")
    params = _check_params(codec, params)
    d = np.asarray(depth)
    if d.ndim != 2 or d.size == 0:
        raise InputError(f"{path}: depth must be a non-empty (H, W) array, got shape {d.shape}")
    if d.dtype.kind not in "fiu":
        raise InputError(f"{path}: depth must be numeric metres, got dtype {d.dtype}")
    d = d.astype(np.float64)
    if valid is None:
        finite = np.isfinite(d)
        if (finite & (d < 0)).any():
            raise FormatError(path, f"cannot write {encoding}: negative depth values "
                                    f"(smallest {float(d[finite].min()):g} m); pass valid= to mark them invalid")
        v = finite & (d > 0)
    else:
        v = np.asarray(valid)
        if v.shape != d.shape:
            raise InputError(f"{path}: valid has shape {v.shape}, depth has {d.shape}")
        v = v.astype(bool)
    _check_writable(path, encoding, d, v)
    codec.encode(str(path), d, v, params)


def encoding_names() -> list[str]:
    return list(ENCODINGS)


def writable_encodings() -> list[str]:
    return [n for n, c in ENCODINGS.items() if c.writable]


__all__ = [
    "DepthMap", "Codec", "ENCODINGS", "detect_encoding", "read_depth", "write_depth", "get_codec",
    "read_middlebury_calib", "parse_shape", "encoding_names", "writable_encodings", "hypersim_ray_norm",
]
