"""Procedural RGB-D scenes: the embedded default source data.

``render_scene(seed, kind, size)`` returns one sample in the shared schema (``__key__``, ``rgb``,
``depth`` (planar z, metres, 0 where invalid), ``valid``, ``sky`` (bool: rays that hit nothing in a
scene with a sky; all false indoors), ``intrinsics`` [fx, fy, cx, cy], ``meta``).
The whole image is ray-cast with NumPy against analytic primitives (planes, oriented boxes, rooms with
openings, cylinders, spheres/ellipsoids); see docs/scenes.md.
"""

from __future__ import annotations

import math

import numpy as np

from ...errors import InputError
from .builders import BUILDERS, Builder
from .render import LOOKS, Scene, render

KINDS = ("indoor", "outdoor", "object", "mixed")
_KIND_CODE = {"indoor": 1, "outdoor": 2, "object": 3, "mixed": 4}
MIXED_WEIGHTS = {"indoor": 0.4, "outdoor": 0.4, "object": 0.2}

__all__ = ["KINDS", "LOOKS", "render_scene", "build_scene", "scene_rng", "parse_size"]


def parse_size(text) -> tuple[int, int]:
    """``"256x320"`` / ``"256"`` / ``[256, 320]`` -> (H, W)."""
    if isinstance(text, (list, tuple)):
        vals = list(text)
    else:
        s = str(text).lower().strip()
        vals = s.split("x") if "x" in s else [s, s]
    try:
        h, w = (int(v) for v in vals)
    except (TypeError, ValueError):
        raise InputError(f"size {text!r}: expected HxW, e.g. 256x256") from None
    if h < 8 or w < 8 or h > 8192 or w > 8192:
        raise InputError(f"size {text!r}: each side must be between 8 and 8192 pixels")
    return h, w


def scene_rng(seed: int, index: int, kind: str) -> np.random.Generator:
    """The generator for one scene: seeded from (seed, index, kind), independent of every other scene."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), int(index), _KIND_CODE[kind]]))


def _check(seed, kind, index):
    if kind not in _KIND_CODE:
        raise InputError(f"scene kind {kind!r}: expected one of {', '.join(KINDS)}")
    if int(seed) < 0 or int(index) < 0:
        raise InputError(f"seed {seed} / index {index}: must be non-negative integers")


def _resolve(rng: np.random.Generator, kind: str) -> str:
    if kind != "mixed":
        return kind
    names = list(MIXED_WEIGHTS)
    p = np.array([MIXED_WEIGHTS[n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def _sizes(rng: np.random.Generator, size, aspect_range):
    H, W = parse_size(size)
    if aspect_range is None:
        return H, W
    lo, hi = aspect_range
    a = math.exp(rng.uniform(math.log(lo), math.log(hi)))  # width / height
    area = H * W
    W2 = max(8, int(round(math.sqrt(area * a) / 2)) * 2)
    H2 = max(8, int(round(math.sqrt(area / a) / 2)) * 2)
    return H2, W2


def build_scene(seed: int, kind: str = "mixed", size=(256, 256), *, index: int = 0,
                aspect_range=None) -> tuple[Scene, np.random.Generator]:
    """The scene description (camera, primitives, materials, lights) before rendering."""
    _check(seed, kind, index)
    rng = scene_rng(seed, index, kind)
    resolved = _resolve(rng, kind)
    H, W = _sizes(rng, size, aspect_range)
    b = Builder(rng, H, W)
    scene = BUILDERS[resolved](b)
    scene.meta["objects"] = b.objects
    return scene, rng


def render_scene(seed: int, kind: str = "mixed", size=(256, 256), *, index: int = 0, aspect_range=None,
                 look: str = "standard") -> dict:
    """Render one procedural RGB-D scene.

    Same (seed, kind, size, index, aspect_range, look) -> byte-identical arrays. ``size`` is (H, W)
    or "HxW"; ``aspect_range=(lo, hi)`` draws a width/height ratio per scene at about the same pixel
    count. ``look`` (``standard``, ``synthetic``, ``real``; see :mod:`.render`) changes only the
    image: the geometry, depth and key of a (seed, kind, index) are the same in every look.
    Returns the shared sample dict (docs/architecture.md)."""
    if look not in LOOKS:
        raise InputError(f"look {look!r}: expected one of {', '.join(LOOKS)}")
    scene, rng = build_scene(seed, kind, size, index=index, aspect_range=aspect_range)
    rgb, depth, valid, sky = render(scene, rng, look, with_sky=True)
    cam = scene.camera
    v = depth[valid]
    meta = {
        "source": "procedural",
        "look": look,
        "kind": scene.kind,
        "requested_kind": kind,
        "seed": int(seed),
        "index": int(index),
        "size": [cam.H, cam.W],
        "camera": {
            "position": [round(float(x), 4) for x in cam.pos],
            "rotation": [[round(float(x), 6) for x in row] for row in cam.R],
            "convention": "camera-to-world; camera x right, y down, z forward; world z up",
        },
        "max_depth": scene.max_depth,
        "valid_fraction": round(float(valid.mean()), 4),
        "sky_fraction": round(float(sky.mean()), 4),
        "depth_range": [round(float(v.min()), 4), round(float(v.max()), 4)] if v.size else [0.0, 0.0],
        "num_primitives": len(scene.prims),
        "lights": [{"kind": li.kind, "shadow": li.shadow} for li in scene.lights],
    }
    meta.update({k: val for k, val in scene.meta.items() if k != "objects"})
    meta["objects"] = scene.meta.get("objects", [])
    return {
        "__key__": f"{scene.kind}_{int(seed)}_{int(index):07d}",
        "rgb": rgb,
        "depth": depth,
        "valid": valid,
        "sky": sky,
        "intrinsics": cam.intrinsics,
        "meta": meta,
    }
