"""Toy RGB-D scenes for tests and quick experiments when no procedural-scene shards are at hand.

Each scene is a room-like box (floor, back wall, side walls) seen by a pinhole camera, plus a few
axis-aligned boxes in front. Colours are flat per surface with Lambertian-like shading and a depth fog,
so image appearance is strongly tied to geometry: a depth-conditioned model can learn it in minutes.
This is not the project's scene generator (``bridge scenes``); it only needs numpy."""

from __future__ import annotations

import numpy as np


def toy_scene(index: int, size: int = 64, seed: int = 0) -> dict:
    rng = np.random.default_rng([seed, index])
    h = w = size
    f = 0.9 * w
    cx, cy = (w - 1) / 2, (h - 1) / 2
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = (xs - cx) / f, (ys - cy) / f  # ray direction (dx, dy, 1)
    room_w, room_h, room_d = rng.uniform(2.5, 4.0), rng.uniform(1.2, 1.8), rng.uniform(5.0, 9.0)
    cam_h = rng.uniform(0.8, 1.2)
    depth = np.full((h, w), np.inf, np.float32)
    label = np.zeros((h, w), np.int32)
    normal_shade = np.ones((h, w), np.float32)

    def hit(t, lab, shade):
        m = (t > 0.05) & (t < depth)
        depth[m] = t[m]
        label[m] = lab
        normal_shade[m] = shade

    with np.errstate(divide="ignore", invalid="ignore"):
        hit(np.where(dy > 1e-6, cam_h / dy, np.inf), 1, 1.0)  # floor y = +cam_h (image y down)
        hit(np.where(dy < -1e-6, -(room_h * 2 - cam_h) / dy, np.inf), 2, 0.55)  # ceiling
        hit(np.where(dx > 1e-6, room_w / 2 / dx, np.inf), 3, 0.7)
        hit(np.where(dx < -1e-6, -room_w / 2 / dx, np.inf), 4, 0.8)
        hit(np.full((h, w), room_d, np.float32), 5, 0.9)
        for k in range(int(rng.integers(1, 4))):
            z0 = rng.uniform(1.5, room_d - 1)
            x0 = rng.uniform(-room_w / 2 + 0.3, room_w / 2 - 0.6)
            bw, bh = rng.uniform(0.3, 0.9), rng.uniform(0.3, 1.2)
            x, y = dx * z0, dy * z0
            m = (x > x0) & (x < x0 + bw) & (y < cam_h) & (y > cam_h - bh)
            hit(np.where(m, z0, np.inf).astype(np.float32), 6 + k, 1.0)
    palette = rng.uniform(0.15, 0.95, size=(10, 3)).astype(np.float32)
    col = palette[label] * normal_shade[..., None]
    fog = np.exp(-0.08 * depth)[..., None]
    col = col * (0.45 + 0.55 * fog)
    col += rng.normal(0, 0.01, col.shape).astype(np.float32)
    rgb = (np.clip(col, 0, 1) * 255).round().astype(np.uint8)
    valid = np.isfinite(depth)
    depth = np.where(valid, depth, 0).astype(np.float32)
    return {"__key__": f"toy{index:06d}", "rgb": rgb, "depth": depth, "valid": valid,
            "intrinsics": np.array([f, f, cx, cy], np.float32), "meta": {"kind": "toy", "seed": seed}}


def toy_scenes(n: int, size: int = 64, seed: int = 0, start: int = 0) -> list[dict]:
    return [toy_scene(start + i, size, seed) for i in range(n)]
