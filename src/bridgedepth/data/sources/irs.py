"""IRS (Wang et al. 2019, "IRS: A Large Naturalistic Indoor Robotics Stereo Dataset"): UE4 indoor
stereo renders (Home, Office, Restaurant, Store), 960x540.

Each scene folder holds ``l_N.png`` (left RGB), ``r_N.png`` (right RGB), ``d_N.exr`` (left
disparity in pixels, a float EXR) and ``n_N.exr`` (normals). Depth is derived from the left
disparity with the rig's focal length and baseline: z = f * B / d, f = 480 px, B = 0.1 m
(the values the IRS authors publish for converting their disparity to depth). Disparity <= 0 or
non-finite is invalid. Principal point: the image centre ((W - 1) / 2, (H - 1) / 2).
"""

from __future__ import annotations

import re

from .base import SampleError, SampleRef, SourceAdapter, check_same_size, finalize_depth, intrinsics_array, make_key
from .readers import read_exr_channel, read_rgb
from .registry import register

IRS_FOCAL = 480.0
IRS_BASELINE = 0.1
_FILE = re.compile(r"^([ld])_(\d+)\.(png|exr)$")


@register
class IRSAdapter(SourceAdapter):
    name = "irs"
    description = "IRS indoor stereo renders: EXR left disparity -> depth (f=480 px, B=0.1 m), png RGB"
    layout = """\
ROOT/<Home|Office|Restaurant|Store>/<SceneName>/   (any depth of folders)
  l_N.png     left RGB (960x540)
  d_N.exr     left disparity, float px (one channel; or R of RGB)
  r_N.png, n_N.exr   (right image, normals: not used)
depth = f * B / disparity, f = 480 px, B = 0.1 m"""
    encodings = ("exr-disparity",)
    options = {
        "focal": "focal length in px (default 480)",
        "baseline": "stereo baseline in metres (default 0.1)",
        "max_depth": "depths beyond this many metres are invalid (default: none)",
    }

    def index(self) -> list[SampleRef]:
        groups: dict[tuple, dict] = {}
        for f in sorted(self.root.rglob("*")):
            m = _FILE.match(f.name)
            if not m or not f.is_file():
                continue
            side, num, ext = m.groups()
            if (side, ext) not in (("l", "png"), ("d", "exr")):
                continue
            groups.setdefault((f.parent, int(num)), {})["rgb" if side == "l" else "disparity"] = f
        refs = []
        for (folder, num), files in sorted(groups.items()):
            files.setdefault("rgb", folder / f"l_{num}.png")
            files.setdefault("disparity", folder / f"d_{num}.exr")
            relf = folder.relative_to(self.root)
            refs.append(SampleRef(key=make_key(*relf.parts, str(num)), files=files,
                                  info={"scene": str(relf), "frame": num, "camera": "left"}))
        return refs

    def load(self, ref: SampleRef) -> dict:
        dpath, ipath = ref.files["disparity"], ref.files["rgb"]
        for p, what in ((dpath, "disparity (d_N.exr)"), (ipath, "left RGB (l_N.png)")):
            if not p.is_file():
                raise SampleError(p, f"missing {what} file")
        disp = read_exr_channel(dpath)
        if disp.ndim != 2:
            raise SampleError(dpath, f"expected a 2-D disparity map, got {disp.shape}")
        rgb = read_rgb(ipath)
        check_same_size(rgb, disp, ipath, dpath)
        f = self.opt("focal", IRS_FOCAL, float)
        b = self.opt("baseline", IRS_BASELINE, float)
        ok = disp > 0
        depth = (f * b) / disp.clip(min=1e-12)
        depth, valid = finalize_depth(depth, ok, self.opt("max_depth", None, float))
        h, w = depth.shape
        return {
            "__key__": ref.key, "rgb": rgb, "depth": depth, "valid": valid,
            "intrinsics": intrinsics_array(f, f, (w - 1) / 2.0, (h - 1) / 2.0),
            "meta": self.base_meta(ref, depth_kind="planar (from disparity)", baseline_m=b),
        }
