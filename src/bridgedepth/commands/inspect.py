"""`bridge inspect PATH [--encoding NAME] [--json]`: describe a depth file or an image.

Depth when ``--encoding`` is given or the file's magic names a depth format (PFM, DPT, NPY, NPZ, EXR,
HDF5); an image when it is an 8-bit image; a 16-bit PNG or PGM without ``--encoding`` is an error that
lists the encodings (its units cannot be told from the file).
"""

from __future__ import annotations

import json
import math

HELP = "describe a depth file (shape, valid fraction, metre range) or an image"

# flag -> read_depth parameter; only the flags a user gives are passed on (an encoding that does not
# take one says so).
_PARAM_FLAGS = ("calib", "focal", "baseline", "doffs", "shape", "channel", "key")


def add_arguments(p):
    from ..io import ENCODINGS

    p.add_argument("path", help="a depth file or an image")
    p.add_argument("--encoding", "-e", metavar="NAME", default=None,
                   help="depth encoding (needed for PNG/PGM depth): " + ", ".join(ENCODINGS))
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    g = p.add_argument_group("encoding parameters (only for the encodings that take them)")
    g.add_argument("--calib", metavar="FILE", help="pfm-disparity: Middlebury calib.txt (focal, baseline mm, doffs)")
    g.add_argument("--focal", type=float, metavar="PX", help="pfm-disparity, png-disparity-kitti, hypersim-hdf5: focal length in pixels")
    g.add_argument("--baseline", type=float, metavar="M", help="pfm-disparity, png-disparity-kitti: stereo baseline in metres")
    g.add_argument("--doffs", type=float, metavar="PX", help="pfm-disparity: disparity offset in pixels (default 0)")
    g.add_argument("--shape", metavar="HxW", help="eth3d-raw: array shape, e.g. 4032x6048")
    g.add_argument("--channel", metavar="NAME", help="exr: channel holding depth")
    g.add_argument("--key", metavar="NAME", help="npz / hypersim-hdf5: array or dataset holding depth")


def _fmt_m(v: float | None) -> str:
    return "n/a (no valid pixel)" if v is None else f"{v:.4f}"


def describe(path: str, encoding: str | None = None, **params) -> dict:
    """The inspect record for ``path`` (the dict printed by ``--json``)."""
    from ..io import detect_encoding, image_info, read_depth, read_image

    params = {k: v for k, v in params.items() if v is not None}
    if encoding is None:
        encoding = detect_encoding(path)
    if encoding is None and not params:
        info = image_info(path)
        if info["format"] in ("PNG", "PPM") and info["mode"] in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            # a 16-bit greyscale PNG/PGM is a depth map whose units the file does not say
            read_depth(path)  # raises the error that lists the encodings for this container
        read_image(path)  # decodes fully: truncated or corrupt pixel data is an error here too
        return {"path": str(path), "kind": "image", "shape": info["shape"], "mode": info["mode"]}
    dm = read_depth(path, encoding, **params)
    stats = dm.stats()
    rec = {"path": str(path), "kind": "depth", "encoding": dm.encoding, "shape": list(dm.shape),
           "valid_fraction": dm.valid_fraction}
    rec.update(stats)
    for k, v in rec.items():
        if isinstance(v, float) and not math.isfinite(v):  # pragma: no cover - stats exclude invalid
            rec[k] = None
    return rec


def run(args) -> int:
    params = {k: getattr(args, k, None) for k in _PARAM_FLAGS}
    rec = describe(args.path, args.encoding, **params)
    how = "" if args.encoding else " (detected from the file's magic bytes)"
    if how and rec.get("encoding") == "pfm":
        how += "; values read as metres: for a disparity PFM pass --encoding pfm-disparity"
    if args.json:
        print(json.dumps(rec))
        return 0
    if rec["kind"] == "image":
        print(f"path      {rec['path']}")
        print("kind      image")
        print(f"shape     {' x '.join(str(s) for s in rec['shape'])} (H x W{' x C' if len(rec['shape']) == 3 else ''})")
        print(f"mode      {rec['mode']}")
        return 0
    h, w = rec["shape"]
    print(f"path      {rec['path']}")
    print("kind      depth")
    print(f"encoding  {rec['encoding']}{how}")
    print(f"shape     {h} x {w} (H x W)")
    print(f"valid     {rec['valid_fraction']:.4f} ({100 * rec['valid_fraction']:.1f} % of pixels)")
    print(f"min m     {_fmt_m(rec['min_m'])}")
    print(f"median m  {_fmt_m(rec['median_m'])}")
    print(f"max m     {_fmt_m(rec['max_m'])}")
    return 0
