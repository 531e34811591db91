"""Virtual KITTI 2 (Cabon et al. 2020): Unity re-creations of KITTI sequences.

Depth ``depth_NNNNN.png`` is uint16 planar depth in centimetres (png-cm); the far plane 65535
(655.35 m) marks sky: invalid depth, and the sample's ``sky`` mask. RGB ``rgb_NNNNN.jpg``. Per scene and variation,
``intrinsic.txt`` has rows ``frame cameraID fx fy cx cy`` and ``extrinsic.txt`` rows
``frame cameraID r11 r12 r13 t1 r21 r22 r23 t2 r31 r32 r33 t3 0 0 0 1`` (world -> camera).
The three archives (rgb, depth, textgt) may be extracted side by side or merged into one tree.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np

from ...errors import InputError
from .base import SampleError, SampleRef, SourceAdapter, check_same_size, finalize_depth, intrinsics_array, make_key
from .readers import read_depth_file, read_rgb
from .registry import register

VKITTI2_SKY_M = 655.35
_RGB = re.compile(r"^rgb_(\d+)\.jpg$")
_DEPTH = re.compile(r"^depth_(\d+)\.png$")


@lru_cache(maxsize=64)
def _read_table(path: Path, ncols: int) -> dict[tuple[int, int], tuple[float, ...]]:
    table: dict[tuple[int, int], tuple[float, ...]] = {}
    for no, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or not parts[0].lstrip("-").isdigit():
            continue  # header line
        if len(parts) != ncols:
            raise SampleError(path, f"line {no}: expected {ncols} columns, got {len(parts)}")
        table[(int(parts[0]), int(parts[1]))] = tuple(float(x) for x in parts[2:])
    return table


@register
class VKitti2Adapter(SourceAdapter):
    name = "vkitti2"
    description = "Virtual KITTI 2: png-cm depth (655.35 m = sky), jpg RGB, intrinsic/extrinsic.txt per scene"
    layout = """\
ROOT/[vkitti_2.0.3_rgb/]SceneNN/<variation>/frames/rgb/Camera_0/rgb_NNNNN.jpg
ROOT/[vkitti_2.0.3_depth/]SceneNN/<variation>/frames/depth/Camera_0/depth_NNNNN.png  uint16 cm, 65535 = sky
ROOT/[vkitti_2.0.3_textgt/]SceneNN/<variation>/intrinsic.txt   frame cameraID fx fy cx cy
ROOT/[vkitti_2.0.3_textgt/]SceneNN/<variation>/extrinsic.txt   frame cameraID 4x4 world->camera (row-major)
(variation: clone, fog, morning, overcast, rain, sunset, 15-deg-left, ...)"""
    encodings = ("png-cm",)
    options = {"camera": "Camera_0 (left, default) or Camera_1 (right)"}

    def validate(self) -> None:
        super().validate()
        if self.opt("camera", "Camera_0") not in ("Camera_0", "Camera_1"):
            raise InputError(f"vkitti2: option camera={self.opt('camera')!r}: expected Camera_0 or Camera_1")

    def index(self) -> list[SampleRef]:
        cam = self.opt("camera", "Camera_0")
        rgb_dirs, depth_dirs, textgt = {}, {}, {}
        for d in self.root.rglob(cam):
            if d.is_dir() and d.parent.parent.name == "frames":
                sv = (d.parents[3].name, d.parents[2].name)  # (SceneNN, variation)
                if d.parent.name == "rgb":
                    rgb_dirs[sv] = d
                elif d.parent.name == "depth":
                    depth_dirs[sv] = d
        for f in self.root.rglob("intrinsic.txt"):
            textgt[(f.parent.parent.name, f.parent.name)] = f.parent
        refs = []
        camid = int(cam[-1])
        for sv in sorted(set(rgb_dirs) | set(depth_dirs)):
            frames: dict[str, dict] = {}
            for d, pat, role in ((rgb_dirs.get(sv), _RGB, "rgb"), (depth_dirs.get(sv), _DEPTH, "depth")):
                if d is not None:
                    for f in sorted(d.iterdir()):
                        m = pat.match(f.name)
                        if m:
                            frames.setdefault(m.group(1), {})[role] = f
            for num, files in sorted(frames.items()):
                tg = textgt.get(sv)
                files["intrinsic"] = tg / "intrinsic.txt" if tg else None
                files["extrinsic"] = tg / "extrinsic.txt" if tg else None
                refs.append(SampleRef(
                    key=make_key(sv[0], sv[1], cam, num),
                    files=files,
                    info={"scene": sv[0], "variation": sv[1], "camera": cam, "camera_id": camid,
                          "frame": int(num)},
                ))
        return refs

    def load(self, ref: SampleRef) -> dict:
        num = ref.info["frame"]
        anchor = ref.files.get("rgb") or ref.files.get("depth")
        dpath, ipath = ref.files.get("depth"), ref.files.get("rgb")
        if dpath is None or not dpath.is_file():
            raise SampleError(dpath or anchor, f"missing depth file depth_{num:05d}.png for this frame")
        if ipath is None or not ipath.is_file():
            raise SampleError(ipath or anchor, f"missing RGB file rgb_{num:05d}.jpg for this frame")
        intr = ref.files.get("intrinsic")
        if intr is None or not intr.is_file():
            raise SampleError(intr or anchor, "missing intrinsic.txt for this scene/variation")
        depth, valid = read_depth_file(dpath, self.encoding)
        rgb = read_rgb(ipath)
        check_same_size(rgb, depth, ipath, dpath)
        sky = np.isfinite(depth) & (depth >= VKITTI2_SKY_M - 0.005)  # 65535 cm = far plane (sky)
        valid &= ~sky
        depth, valid = finalize_depth(depth, valid)
        row = _read_table(intr, 6).get((num, ref.info["camera_id"]))
        if row is None:
            raise SampleError(intr, f"no row for frame {num} camera {ref.info['camera_id']}")
        extra = {}
        ext = ref.files.get("extrinsic")
        if ext is not None and ext.is_file():
            erow = _read_table(ext, 18).get((num, ref.info["camera_id"]))
            if erow is not None:
                extra["world_to_camera"] = np.asarray(erow, dtype=float).reshape(4, 4).tolist()
        return {
            "__key__": ref.key, "rgb": rgb, "depth": depth, "valid": valid, "sky": sky,
            "intrinsics": intrinsics_array(*row),
            "meta": self.base_meta(ref, depth_kind="planar", **extra),
        }
