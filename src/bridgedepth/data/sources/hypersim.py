"""Hypersim (Roberts et al. 2021, apple/ml-hypersim): photorealistic indoor renders.

Depth: ``frame.IIII.depth_meters.hdf5`` (HDF5 dataset ``"dataset"``) holds the Euclidean *distance*
from the camera centre in metres, NaN where no geometry was hit. ``bridgedepth.io``'s ``hypersim-hdf5``
encoding converts it to planar z-depth
with the pinhole the dataset renders with: 60 degree horizontal field of view, so
fx = fy = (W / 2) / tan(30 deg) = 886.81 px at 1024x768, principal point at the image centre
((W - 1) / 2, (H - 1) / 2 in pixel-index coordinates):

    z = distance * f / sqrt((u - cx)^2 + (v - cy)^2 + f^2)

RGB: the HDR ``frame.IIII.color.hdf5`` tone-mapped with Hypersim's own exposure rule (scale so the
90th-percentile brightness 0.3 R + 0.59 G + 0.11 B of the valid pixels becomes 0.8 after gamma
1/2.2, then ``clip(scale * rgb, 0) ** (1/2.2)`` clipped to [0, 1]); valid pixels are those with a
render entity (``render_entity_id != -1``) when that file is present, else those with finite depth.
``rgb=preview`` reads the shipped ``frame.IIII.tonemap.jpg`` instead.

Note: a few Hypersim scenes were rendered with non-standard (tilt-shift) cameras; their true
projection is in ``metadata_camera_parameters.csv`` and is not applied here (use ``focal=`` to
override the focal length for a scene whose field of view differs).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ...errors import InputError
from .base import SampleError, SampleRef, SourceAdapter, check_same_size, finalize_depth, intrinsics_array, make_key
from .readers import read_depth_file, read_hdf5_array, read_rgb
from .registry import register

HYPERSIM_FOCAL_1024 = 886.81  # (1024 / 2) / tan(60deg / 2)

_FRAME = re.compile(r"^frame\.(\d+)\.")
_CAM = re.compile(r"^scene_cam_(\w+?)_(final_hdf5|geometry_hdf5|final_preview)$")


def hypersim_tonemap(rgb_hdr: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Hypersim's exposure-and-gamma tone map: HDR float (H, W, 3) -> uint8 RGB."""
    gamma = 1.0 / 2.2
    percentile, target = 90, 0.8
    x = np.nan_to_num(np.asarray(rgb_hdr, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if valid is None:
        valid = np.ones(x.shape[:2], dtype=bool)
    brightness = 0.3 * x[..., 0] + 0.59 * x[..., 1] + 0.11 * x[..., 2]
    if not valid.any():
        scale = 1.0
    else:
        current = np.percentile(brightness[valid], percentile)
        scale = 0.0 if current < 1e-4 else target ** (1.0 / gamma) / current
    out = np.clip(np.power(np.maximum(scale * x, 0.0), gamma), 0.0, 1.0)
    return np.round(out * 255.0).astype(np.uint8)


@register
class HypersimAdapter(SourceAdapter):
    name = "hypersim"
    description = "Hypersim indoor renders: HDF5 distance -> planar depth, tone-mapped HDF5 colour (or preview jpg)"
    layout = """\
ROOT/ai_VVV_NNN/images/
  scene_cam_XX_geometry_hdf5/frame.IIII.depth_meters.hdf5   distance to camera centre, m, NaN = invalid
  scene_cam_XX_geometry_hdf5/frame.IIII.render_entity_id.hdf5  (optional: tone-map exposure mask)
  scene_cam_XX_final_hdf5/frame.IIII.color.hdf5             HDR linear RGB (tone-mapped here)
  scene_cam_XX_final_preview/frame.IIII.tonemap.jpg         (used with rgb=preview, or if no color.hdf5)
pinhole: 60 deg horizontal FOV (fx = fy = 886.81 px at 1024x768), centred principal point"""
    encodings = ("hypersim-hdf5",)
    options = {
        "rgb": "auto (color.hdf5, else tonemap.jpg) | hdf5 | preview",
        "focal": "focal length in px at the file's width (default: 60 deg horizontal FOV)",
        "max_depth": "depths beyond this many metres are invalid (default: none)",
    }

    def validate(self) -> None:
        super().validate()
        if self.opt("rgb", "auto") not in ("auto", "hdf5", "preview"):
            raise InputError(f"hypersim: option rgb={self.opt('rgb')!r}: expected auto, hdf5 or preview")

    def index(self) -> list[SampleRef]:
        frames: dict[tuple[Path, str, str], dict[str, Path]] = {}
        for d in sorted(self.root.rglob("scene_cam_*")):
            m = _CAM.match(d.name)
            if not d.is_dir() or not m or d.parent.name != "images":
                continue
            cam, kind = m.group(1), m.group(2)
            for f in sorted(d.iterdir()):
                fm = _FRAME.match(f.name)
                if not fm:
                    continue
                role = {
                    ("geometry_hdf5", ".depth_meters.hdf5"): "depth",
                    ("geometry_hdf5", ".render_entity_id.hdf5"): "entity",
                    ("final_hdf5", ".color.hdf5"): "color",
                    ("final_preview", ".tonemap.jpg"): "preview",
                }.get((kind, f.name[len(fm.group(0)) - 1 :]))
                if role:
                    frames.setdefault((d.parent.parent, cam, fm.group(1)), {})[role] = f
        refs = []
        for (scene_dir, cam, frame), files in sorted(frames.items()):
            if "depth" not in files and "color" not in files and "preview" not in files:
                continue
            images = scene_dir / "images"
            files.setdefault(
                "depth", images / f"scene_cam_{cam}_geometry_hdf5" / f"frame.{frame}.depth_meters.hdf5"
            )
            scene = scene_dir.name
            refs.append(
                SampleRef(
                    key=make_key(scene, f"cam_{cam}", frame),
                    files=files,
                    info={"scene": scene, "camera": f"cam_{cam}", "frame": int(frame)},
                )
            )
        return refs

    def _rgb(self, ref: SampleRef, valid_for_exposure: np.ndarray) -> tuple[np.ndarray, Path]:
        mode = self.opt("rgb", "auto")
        color, preview = ref.files.get("color"), ref.files.get("preview")
        if mode == "preview" or (mode == "auto" and color is None):
            if preview is None:
                want = "tonemap.jpg" if mode == "preview" else "color.hdf5 or tonemap.jpg"
                raise SampleError(ref.files["depth"], f"missing RGB file ({want}) for this frame")
            return read_rgb(preview), preview
        if color is None:
            raise SampleError(ref.files["depth"], "missing RGB file (color.hdf5) for this frame")
        hdr = read_hdf5_array(color, "dataset")
        if hdr.ndim != 3 or hdr.shape[2] != 3:
            raise SampleError(color, f"expected an (H, W, 3) colour array, got {hdr.shape}")
        mask = valid_for_exposure
        entity = ref.files.get("entity")
        if entity is not None:
            ids = read_hdf5_array(entity, "dataset")
            if ids.shape == hdr.shape[:2]:
                mask = ids != -1
        if mask.shape != hdr.shape[:2]:
            mask = None
        return hypersim_tonemap(hdr, mask), color

    def load(self, ref: SampleRef) -> dict:
        dpath = ref.files["depth"]
        if not dpath.is_file():
            raise SampleError(dpath, "missing depth file (depth_meters.hdf5)")
        focal = self.opt("focal", None, float)
        params = {} if focal is None else {"focal": focal}
        depth, valid = read_depth_file(dpath, self.encoding, **params)  # io: distance -> planar z
        h, w = depth.shape
        f = focal if focal is not None else HYPERSIM_FOCAL_1024 * w / 1024.0
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        finite = valid.copy()
        depth, valid = finalize_depth(depth, valid, self.opt("max_depth", None, float))
        rgb, rgb_path = self._rgb(ref, finite)
        check_same_size(rgb, depth, rgb_path, dpath)
        return {
            "__key__": ref.key,
            "rgb": rgb,
            "depth": depth,
            "valid": valid,
            "intrinsics": intrinsics_array(f, f, cx, cy),
            "meta": self.base_meta(ref, depth_kind="planar (converted from distance)", rgb_source=rgb_path.name),
        }
