"""Spring (Mehl et al. 2023): Blender renders of the open movie "Spring", 1920x1080 stereo.

Per sequence: ``frame_left/frame_left_NNNN.png`` (RGB, frames numbered from 1),
``disp1_left/disp1_left_NNNN.dsp5`` (HDF5 with dataset ``"disparity"``, float px, stored at twice
the image resolution in each direction, 3840x2160; 0 (sky, also the ``sky`` mask) or NaN = invalid) and
``cam_data/intrinsics.txt`` (one row ``fx fy cx cy`` per frame, row NNNN-1). Depth = fx * B / d with
the published stereo baseline B = 0.065 m. A disparity map at twice the image size is reduced by
taking every second sample (``[::2, ::2]``, the top-left sample of each 2x2 block).
Only the train split ships disparity: point ROOT at ``spring/train`` (test frames have none and are
reported as skipped).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from .base import SampleError, SampleRef, SourceAdapter, check_same_size, finalize_depth, intrinsics_array, make_key
from .readers import read_hdf5_array, read_rgb
from .registry import register

SPRING_BASELINE = 0.065
_IMG = re.compile(r"^frame_left_(\d+)\.png$")
_DSP = re.compile(r"^disp1_left_(\d+)\.dsp5$")


@lru_cache(maxsize=64)
def _intrinsics_rows(path: Path) -> np.ndarray:
    try:
        rows = np.loadtxt(path, ndmin=2, dtype=np.float64)
    except (OSError, ValueError) as e:
        raise SampleError(path, f"unreadable intrinsics file: {e}") from e
    if rows.shape[1] != 4:
        raise SampleError(path, f"expected 4 columns (fx fy cx cy), got {rows.shape[1]}")
    return rows


@register
class SpringAdapter(SourceAdapter):
    name = "spring"
    description = "Spring movie renders: dsp5 (HDF5) disparity at 2x res -> depth (B=0.065 m), intrinsics.txt"
    layout = """\
ROOT/<NNNN sequence>/                         (ROOT = spring/train)
  frame_left/frame_left_NNNN.png              RGB 1920x1080, frames from 0001
  disp1_left/disp1_left_NNNN.dsp5             HDF5 'disparity', px, 3840x2160; 0/NaN = invalid
  cam_data/intrinsics.txt                     'fx fy cx cy' per frame (row NNNN-1)
depth = fx * 0.065 / disparity"""
    encodings = ("dsp5",)
    options = {
        "baseline": "stereo baseline in metres (default 0.065)",
        "max_depth": "depths beyond this many metres are invalid (default: none)",
    }

    def index(self) -> list[SampleRef]:
        seqs = sorted({p.parent for p in self.root.rglob("frame_left") if p.is_dir()}
                      | {p.parent for p in self.root.rglob("disp1_left") if p.is_dir()})
        refs = []
        for seq in seqs:
            frames: dict[str, dict] = {}
            for sub, pat, role in (("frame_left", _IMG, "rgb"), ("disp1_left", _DSP, "disparity")):
                d = seq / sub
                if d.is_dir():
                    for f in sorted(d.iterdir()):
                        m = pat.match(f.name)
                        if m:
                            frames.setdefault(m.group(1), {})[role] = f
            rels = seq.relative_to(self.root)
            for num, files in sorted(frames.items()):
                files.setdefault("rgb", seq / "frame_left" / f"frame_left_{num}.png")
                files.setdefault("disparity", seq / "disp1_left" / f"disp1_left_{num}.dsp5")
                files["intrinsics"] = seq / "cam_data" / "intrinsics.txt"
                refs.append(SampleRef(key=make_key(*rels.parts, num), files=files,
                                      info={"sequence": str(rels), "frame": int(num), "camera": "left"}))
        return refs

    def load(self, ref: SampleRef) -> dict:
        dpath, ipath, kpath = ref.files["disparity"], ref.files["rgb"], ref.files["intrinsics"]
        for p, what in ((dpath, "disparity (.dsp5)"), (ipath, "left RGB"), (kpath, "cam_data/intrinsics.txt")):
            if not p.is_file():
                raise SampleError(p, f"missing {what} file")
        rgb = read_rgb(ipath)
        disp = read_hdf5_array(dpath, "disparity").astype(np.float32)
        h, w = rgb.shape[:2]
        if disp.shape == (2 * h, 2 * w):
            disp = disp[::2, ::2]
        check_same_size(rgb, disp, ipath, dpath)
        rows = _intrinsics_rows(kpath)
        i = ref.info["frame"] - 1
        if not 0 <= i < len(rows):
            raise SampleError(kpath, f"no intrinsics row for frame {ref.info['frame']} ({len(rows)} rows)")
        fx, fy, cx, cy = (float(v) for v in rows[i])
        b = self.opt("baseline", SPRING_BASELINE, float)
        ok = np.isfinite(disp) & (disp > 0)
        sky = np.isfinite(disp) & (disp == 0)  # disparity 0 = infinitely far: Spring's sky
        depth = np.where(ok, fx * b / np.where(ok, disp, 1.0), 0.0)
        depth, valid = finalize_depth(depth, ok, self.opt("max_depth", None, float))
        return {
            "__key__": ref.key, "rgb": rgb, "depth": depth, "valid": valid, "sky": sky,
            "intrinsics": intrinsics_array(fx, fy, cx, cy),
            "meta": self.base_meta(ref, depth_kind="planar (from disparity)", baseline_m=b),
        }
