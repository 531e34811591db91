"""TartanAir (Wang et al. 2020): AirSim renders of many environments; left camera only.

Depth ``NNNNNN_left_depth.npy`` is float32 planar depth in metres (640x480). Unreal's sky sphere sits
at a large finite distance (about 10000 m), so depth beyond ``max_depth`` (default 1000 m) is invalid
and marked ``sky``.
Pinhole: fx = fy = 320, cx = 320, cy = 240 at 640x480 (90 degree FOV); scaled if the files differ.
"""

from __future__ import annotations

import re

import numpy as np

from .base import SampleError, SampleRef, SourceAdapter, check_same_size, finalize_depth, intrinsics_array, make_key
from .readers import read_depth_file, read_rgb
from .registry import register

TARTANAIR_INTRINSICS = (320.0, 320.0, 320.0, 240.0)  # at 640x480
TARTANAIR_SIZE = (640, 480)
_DEPTH = re.compile(r"^(\d+)_left_depth\.npy$")
_IMAGE = re.compile(r"^(\d+)_left\.png$")


@register
class TartanAirAdapter(SourceAdapter):
    name = "tartanair"
    description = "TartanAir AirSim renders: left camera, npy planar depth in metres, png RGB"
    layout = """\
ROOT/<env>/<Easy|Hard>/<Pnnn>/          (any depth of folders above depth_left/)
  depth_left/NNNNNN_left_depth.npy      float32 metres, planar; sky ~1e4 m
  image_left/NNNNNN_left.png            RGB
pinhole: fx = fy = 320, cx = 320, cy = 240 at 640x480"""
    encodings = ("npy",)
    options = {"max_depth": "depths beyond this many metres (the sky sphere) are invalid (default 1000)"}

    def index(self) -> list[SampleRef]:
        seqs = sorted({p.parent for p in self.root.rglob("depth_left") if p.is_dir()}
                      | {p.parent for p in self.root.rglob("image_left") if p.is_dir()})
        refs = []
        for seq in seqs:
            frames: dict[str, dict] = {}
            ddir, idir = seq / "depth_left", seq / "image_left"
            for d, pat, role in ((ddir, _DEPTH, "depth"), (idir, _IMAGE, "rgb")):
                if d.is_dir():
                    for f in sorted(d.iterdir()):
                        m = pat.match(f.name)
                        if m:
                            frames.setdefault(m.group(1), {})[role] = f
            relseq = seq.relative_to(self.root)
            for num, files in sorted(frames.items()):
                files.setdefault("depth", ddir / f"{num}_left_depth.npy")
                files.setdefault("rgb", idir / f"{num}_left.png")
                refs.append(SampleRef(
                    key=make_key(*relseq.parts, num),
                    files=files,
                    info={"sequence": str(relseq), "frame": int(num), "camera": "left"},
                ))
        return refs

    def load(self, ref: SampleRef) -> dict:
        dpath, ipath = ref.files["depth"], ref.files["rgb"]
        for p, what in ((dpath, "depth (_left_depth.npy)"), (ipath, "RGB (_left.png)")):
            if not p.is_file():
                raise SampleError(p, f"missing {what} file")
        depth, valid = read_depth_file(dpath, self.encoding)
        rgb = read_rgb(ipath)
        check_same_size(rgb, depth, ipath, dpath)
        max_depth = self.opt("max_depth", 1000.0, float)
        sky = np.isfinite(depth) & (depth > max_depth)  # the sky sphere
        depth, valid = finalize_depth(depth, valid, max_depth)
        h, w = depth.shape
        sx, sy = w / TARTANAIR_SIZE[0], h / TARTANAIR_SIZE[1]
        fx, fy, cx, cy = TARTANAIR_INTRINSICS
        return {
            "__key__": ref.key, "rgb": rgb, "depth": depth, "valid": valid, "sky": sky,
            "intrinsics": intrinsics_array(fx * sx, fy * sy, cx * sx, cy * sy),
            "meta": self.base_meta(ref, depth_kind="planar"),
        }
