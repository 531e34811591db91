"""BlendedMVS (Yao et al. 2020): rendered-and-blended images of textured 3D reconstructions.

Per scene (a 24-hex-digit id): ``blended_images/NNNNNNNN.jpg`` (``*_masked.jpg`` are ignored),
``rendered_depth_maps/NNNNNNNN.pfm`` (float32 depth, 0 = no surface) and ``cams/NNNNNNNN_cam.txt``
(``extrinsic`` 4x4 world -> camera, ``intrinsic`` 3x3 K, then ``depth_min depth_interval ...``).
Depth units are those of each scene's reconstruction: *not* metres in general (meta ``metric``
is false); depth is planar z in that unit.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .base import SampleError, SampleRef, SourceAdapter, check_same_size, finalize_depth, intrinsics_array, make_key
from .readers import read_depth_file, read_rgb
from .registry import register

_IMG = re.compile(r"^(\d+)\.jpg$")
_DEPTH = re.compile(r"^(\d+)\.pfm$")
_CAM = re.compile(r"^(\d+)_cam\.txt$")


def read_cam_txt(path: Path) -> dict:
    """Parse an MVSNet-style cam file: extrinsic (4x4), intrinsic (3x3), depth range line."""
    try:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
    except OSError as e:
        raise SampleError(path, f"unreadable cam file: {e}") from e
    try:
        i = lines.index("extrinsic")
        ext = np.array([[float(x) for x in lines[i + 1 + r].split()] for r in range(4)])
        j = lines.index("intrinsic")
        k = np.array([[float(x) for x in lines[j + 1 + r].split()] for r in range(3)])
        rest = [ln for ln in lines[j + 4:] if ln]
        drange = [float(x) for x in rest[0].split()] if rest else []
    except (ValueError, IndexError) as e:
        raise SampleError(path, f"not a cam file (extrinsic 4x4, intrinsic 3x3 expected): {e}") from e
    if ext.shape != (4, 4) or k.shape != (3, 3):
        raise SampleError(path, f"bad matrix shapes: extrinsic {ext.shape}, intrinsic {k.shape}")
    return {"extrinsic": ext, "K": k, "depth_range": drange}


@register
class BlendedMVSAdapter(SourceAdapter):
    name = "blendedmvs"
    description = "BlendedMVS: pfm rendered depth (scene units, 0 = invalid), jpg blended images, cams/*_cam.txt"
    layout = """\
ROOT/<scene id>/
  blended_images/NNNNNNNN.jpg             (NNNNNNNN_masked.jpg ignored)
  rendered_depth_maps/NNNNNNNN.pfm        float32 planar depth, scene units, 0 = invalid
  cams/NNNNNNNN_cam.txt                   extrinsic 4x4, intrinsic 3x3, depth_min depth_interval"""
    encodings = ("pfm",)
    metric = False
    options = {}

    def index(self) -> list[SampleRef]:
        scenes = sorted({p.parent for p in self.root.rglob("blended_images") if p.is_dir()}
                        | {p.parent for p in self.root.rglob("rendered_depth_maps") if p.is_dir()})
        refs = []
        for scene in scenes:
            frames: dict[str, dict] = {}
            for sub, pat, role in (("blended_images", _IMG, "rgb"), ("rendered_depth_maps", _DEPTH, "depth"),
                                   ("cams", _CAM, "cam")):
                d = scene / sub
                if d.is_dir():
                    for f in sorted(d.iterdir()):
                        m = pat.match(f.name)
                        if m:
                            frames.setdefault(m.group(1), {})[role] = f
            for num, files in sorted(frames.items()):
                if "rgb" not in files and "depth" not in files:
                    continue  # a camera without an image is not a frame
                files.setdefault("rgb", scene / "blended_images" / f"{num}.jpg")
                files.setdefault("depth", scene / "rendered_depth_maps" / f"{num}.pfm")
                files.setdefault("cam", scene / "cams" / f"{num}_cam.txt")
                rels = scene.relative_to(self.root)
                refs.append(SampleRef(key=make_key(*rels.parts, num), files=files,
                                      info={"scene": str(rels), "frame": int(num)}))
        return refs

    def load(self, ref: SampleRef) -> dict:
        dpath, ipath, cpath = ref.files["depth"], ref.files["rgb"], ref.files["cam"]
        for p, what in ((dpath, "depth (.pfm)"), (ipath, "image (.jpg)"), (cpath, "camera (_cam.txt)")):
            if not p.is_file():
                raise SampleError(p, f"missing {what} file")
        depth, valid = read_depth_file(dpath, self.encoding)
        rgb = read_rgb(ipath)
        check_same_size(rgb, depth, ipath, dpath)
        depth, valid = finalize_depth(depth, valid)
        cam = read_cam_txt(cpath)
        k = cam["K"]
        return {
            "__key__": ref.key, "rgb": rgb, "depth": depth, "valid": valid,
            "intrinsics": intrinsics_array(k[0, 0], k[1, 1], k[0, 2], k[1, 2]),
            "meta": self.base_meta(ref, depth_kind="planar", depth_unit="scene units (not metres)",
                                   world_to_camera=cam["extrinsic"].tolist(), depth_range=cam["depth_range"]),
        }
