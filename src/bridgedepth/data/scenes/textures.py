"""Procedural materials: value noise, stripes, checkers, planks, bricks, tiles, facades, roads.

A :class:`Material` maps surface coordinates ``uv`` (metres, shape (2, N)) to linear RGB albedo
(3, N). Everything is vectorised over the hit pixels of one primitive; the noise lattice is a fixed
table, so results depend only on the material's parameters (which come from the scene's seeded
generator) and are bit-for-bit reproducible.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import cv2
import numpy as np

_TBL_N = 128  # lattice period (units)
_TEXELS = 8  # baked texels per lattice unit
_TEX_N = _TBL_N * _TEXELS
_BAKED: dict[str, np.ndarray] = {}


def _upsampled_lattice(rng: np.random.Generator, cells: int, texels: int) -> np.ndarray:
    """A periodic random lattice of ``cells`` x ``cells`` values, bicubically upsampled to
    ``cells * texels`` pixels per side (seamless: the lattice is wrap-padded before resizing)."""
    table = rng.random((cells, cells), dtype=np.float32)
    p = 3
    padded = np.pad(table, p, mode="wrap")
    big = cv2.resize(padded, None, fx=texels, fy=texels, interpolation=cv2.INTER_CUBIC)
    return big[p * texels:(p + cells) * texels, p * texels:(p + cells) * texels]


def _baked(name: str) -> np.ndarray:
    """Tileable noise images, baked once per process from a fixed seed (so output is reproducible):
    ``noise`` one octave of value noise, ``fbm`` three octaves (gain 0.5), both normalised to [0, 1]."""
    tex = _BAKED.get(name)
    if tex is None:
        rng = np.random.default_rng(20240607 if name == "noise" else 20240608)
        if name == "noise":
            tex = _upsampled_lattice(rng, _TBL_N, _TEXELS)
        else:
            tex = np.zeros((_TEX_N, _TEX_N), np.float32)
            amp = 1.0
            for k in range(3):
                tex += np.float32(amp) * _upsampled_lattice(rng, _TBL_N * 2**k, _TEXELS // 2**k)
                amp *= 0.5
        lo, hi = np.percentile(tex[::4, ::4], [0.5, 99.5])
        tex = np.clip((tex - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
        _BAKED[name] = tex
    return tex


def _sample(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of a tileable baked texture at lattice coordinates (u, v) (any shape)."""
    shape = np.shape(u)
    x = np.asarray(u, np.float32).ravel() * np.float32(_TEXELS)
    y = np.asarray(v, np.float32).ravel() * np.float32(_TEXELS)
    x = x - np.floor(x * np.float32(1.0 / _TEX_N)) * np.float32(_TEX_N) - np.float32(0.5)
    y = y - np.floor(y * np.float32(1.0 / _TEX_N)) * np.float32(_TEX_N) - np.float32(0.5)
    n = x.shape[0]
    if n == 0:
        return np.zeros(shape, np.float32)
    w = 512
    rows = -(-n // w)
    if rows * w != n:
        x = np.concatenate([x, np.zeros(rows * w - n, np.float32)])
        y = np.concatenate([y, np.zeros(rows * w - n, np.float32)])
    out = cv2.remap(tex, x.reshape(rows, w), y.reshape(rows, w), cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return out.ravel()[:n].reshape(shape)


def value_noise(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth value noise in [0, 1] on a unit lattice (tiles every 128 units)."""
    return _sample(_baked("noise"), u, v)


def fbm(u, v, octaves: int = 3, gain: float = 0.5) -> np.ndarray:
    """Fractal value noise in [0, 1]: three baked octaves; ``octaves > 3`` adds finer live octaves."""
    out = _sample(_baked("fbm"), u, v)
    if octaves > 3:
        extra = value_noise(u * np.float32(8.0) + np.float32(3.7), v * np.float32(8.0) - np.float32(1.3))
        out = out * np.float32(0.9) + extra * np.float32(0.1)
    return out


def cell_hash(a: np.ndarray, b: np.ndarray, salt: int = 0) -> np.ndarray:
    """Per-cell pseudo-random value in [0, 1) from integer cell coordinates."""
    h = (a.astype(np.int64) * 73856093) ^ (b.astype(np.int64) * 19349663) ^ (salt * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    h = h ^ (h >> 16)
    return ((h & 0xFFFF).astype(np.float32)) / np.float32(65536.0)


def _mix(c0, c1, t):
    c0 = np.asarray(c0, np.float32)[:, None]
    c1 = np.asarray(c1, np.float32)[:, None]
    return c0 + (c1 - c0) * t[None, :]


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


PATTERNS = ("flat", "noise", "stripes", "checker", "wood", "brick", "tiles", "facade", "street", "grass",
            "leaves", "bark", "marble", "fabric")


@dataclass
class Material:
    pattern: str = "flat"
    c0: tuple = (0.5, 0.5, 0.5)
    c1: tuple = (0.3, 0.3, 0.3)
    c2: tuple = (0.8, 0.8, 0.8)
    scale: float = 1.0  # pattern period / cell size in metres
    angle: float = 0.0  # pattern rotation in the uv plane (radians)
    offset: tuple = (0.0, 0.0)
    gloss: float = 0.0  # specular strength
    shininess: float = 20.0
    emit: float = 0.0  # adds albedo * emit regardless of lighting (windows to the outside, lamps)
    params: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {"pattern": self.pattern, "scale": round(self.scale, 3)}

    def albedo(self, uv: np.ndarray) -> np.ndarray:
        u = uv[0].astype(np.float32, copy=False)
        v = uv[1].astype(np.float32, copy=False)
        if self.angle:
            ca, sa = np.float32(np.cos(self.angle)), np.float32(np.sin(self.angle))
            u, v = ca * u - sa * v, sa * u + ca * v
        u = u + np.float32(self.offset[0])
        v = v + np.float32(self.offset[1])
        fn = getattr(self, "_p_" + self.pattern)
        out = fn(u, v, np.float32(1.0 / self.scale))
        return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)

    # -- patterns (u, v in metres; s = 1 / scale) -----------------------------------------------
    def _grain(self, u, v, s, amount=0.12):
        return 1.0 + np.float32(amount) * (value_noise(u * s * 4.0, v * s * 4.0) - 0.5)

    def _p_flat(self, u, v, s):
        n = fbm(u * 2.0, v * 2.0, 2)
        return np.asarray(self.c0, np.float32)[:, None] * (0.93 + 0.14 * n)[None, :]

    def _p_noise(self, u, v, s):
        n = fbm(u * s, v * s, 4)
        return _mix(self.c0, self.c1, _smoothstep(0.25, 0.75, n))

    def _p_stripes(self, u, v, s):
        x = u * s
        w = float(self.params.get("duty", 0.5))
        f = x - np.floor(x)
        t = _smoothstep(w - 0.04, w + 0.04, f) * (1 - _smoothstep(1 - 0.04, 1.0, f))
        return _mix(self.c0, self.c1, t) * self._grain(u, v, s)[None, :]

    def _p_checker(self, u, v, s):
        t = ((np.floor(u * s) + np.floor(v * s)) % 2).astype(np.float32)
        return _mix(self.c0, self.c1, t) * self._grain(u, v, s, 0.08)[None, :]

    def _p_wood(self, u, v, s):
        # planks of width `scale` running along u, per-plank tint, grain rings, dark gaps
        pv = v * s
        row = np.floor(pv)
        fr = pv - row
        plank_len = float(self.params.get("plank_len", 6.0))
        shift = cell_hash(row, row, 3) * plank_len
        col = np.floor((u * s + shift) / plank_len)
        tint = cell_hash(row, col, 1)
        n = value_noise(u * s * 0.7, v * s * 6.0 + row * 3.1)
        grain = 0.5 + 0.5 * np.sin((v * s * 9.0 + n * 6.0 + tint * 20.0) * 3.0)
        base = _mix(self.c0, self.c1, np.clip(0.35 * grain + 0.65 * tint, 0, 1))
        gap = (fr < 0.03) | ((u * s + shift) / plank_len - col < 0.004)
        return base * np.where(gap, 0.45, 1.0).astype(np.float32)[None, :]

    def _p_brick(self, u, v, s):
        bh = 1.0 / s
        bw = bh * float(self.params.get("aspect", 2.6))
        row = np.floor(v / bh)
        x = u / bw + 0.5 * (row % 2)
        col = np.floor(x)
        fx = (x - col) * bw
        fy = (v / bh - row) * bh
        mortar = float(self.params.get("mortar", 0.012))
        m = (fx < mortar) | (fy < mortar)
        tint = cell_hash(row, col, 7)
        base = _mix(self.c0, self.c1, tint) * self._grain(u, v, s * 2.0, 0.2)[None, :]
        return np.where(m[None, :], np.asarray(self.c2, np.float32)[:, None], base)

    def _p_tiles(self, u, v, s):
        x, y = u * s, v * s
        cx, cy = np.floor(x), np.floor(y)
        grout = float(self.params.get("grout", 0.04))
        g = ((x - cx) < grout) | ((y - cy) < grout)
        tint = cell_hash(cx, cy, 11)
        base = _mix(self.c0, self.c1, 0.5 * tint + 0.5 * ((cx + cy) % 2) * float(self.params.get("alternate", 0)))
        base = base * (0.96 + 0.08 * value_noise(u * 6, v * 6))[None, :]
        return np.where(g[None, :], np.asarray(self.c2, np.float32)[:, None], base)

    def _p_facade(self, u, v, s):
        # wall colour c0 with a grid of windows (glass c1, some lit); floors every `scale` metres
        fw = float(self.params.get("window_w", 0.5))
        fh = float(self.params.get("window_h", 0.55))
        spacing = float(self.params.get("spacing", 1.0 / s))
        x = u / spacing
        y = v * s
        cx, cy = np.floor(x), np.floor(y)
        fx, fy = x - cx, y - cy
        win = (np.abs(fx - 0.5) < fw / 2) & (np.abs(fy - 0.55) < fh / 2) & (cy >= 1)
        frame = win & ((np.abs(fx - 0.5) > fw / 2 - 0.04) | (np.abs(fy - 0.55) > fh / 2 - 0.04))
        lit = cell_hash(cx, cy, 5)
        wall = np.asarray(self.c0, np.float32)[:, None] * (0.85 + 0.25 * fbm(u * 0.7, v * 0.7, 3))[None, :]
        glass = _mix(self.c1, self.c2, np.where(lit > 0.85, 1.0, 0.25 * lit + 0.15 * fy).astype(np.float32))
        out = np.where(win[None, :], glass, wall)
        return np.where(frame[None, :], wall * 0.6, out)

    def _p_street(self, u, v, s):
        # u across the road (0 at the centre line), v along it. Asphalt, lane marks, kerb-side stripes.
        half = float(self.params.get("half_width", 4.0))
        x = u
        asphalt = np.asarray(self.c0, np.float32)[:, None] * (0.75 + 0.5 * fbm(u * 3.0, v * 3.0, 3))[None, :]
        patch = fbm(u * 0.15, v * 0.15, 2)
        asphalt = asphalt * (0.85 + 0.3 * patch)[None, :]
        dash = (np.abs(x) < 0.07) & ((v / 6.0 - np.floor(v / 6.0)) < 0.5)
        edge = np.abs(np.abs(x) - (half - 0.35)) < 0.07
        mark = (dash | edge) & (self.params.get("marks", True))
        paint = np.asarray(self.c2, np.float32)[:, None] * (0.8 + 0.2 * value_noise(u * 9, v * 9))[None, :]
        road = np.where(mark[None, :], paint, asphalt)
        side = np.asarray(self.c1, np.float32)[:, None] * (0.7 + 0.6 * fbm(u * 0.8 + 40, v * 0.8, 4))[None, :]
        return np.where((np.abs(x) < half)[None, :], road, side)

    def _p_grass(self, u, v, s):
        n1 = fbm(u * s, v * s, 3)
        n2 = value_noise(u * 25.0, v * 25.0)
        dirt = _smoothstep(0.6, 0.75, fbm(u * s * 0.3 + 5, v * s * 0.3, 3))
        g = _mix(self.c0, self.c1, n1) * (0.8 + 0.4 * n2)[None, :]
        return g + (np.asarray(self.c2, np.float32)[:, None] - g) * dirt[None, :]

    def _p_leaves(self, u, v, s):
        n = fbm(u * s, v * s, 3)
        hi = value_noise(u * s * 5.0, v * s * 5.0)
        t = np.clip(0.6 * n + 0.5 * hi - 0.2, 0, 1)
        return _mix(self.c0, self.c1, t) * np.where(hi < 0.22, 0.5, 1.0).astype(np.float32)[None, :]

    def _p_bark(self, u, v, s):
        n = value_noise(u * s * 6.0, v * s * 0.8)
        return _mix(self.c0, self.c1, n) * (0.8 + 0.3 * value_noise(u * 20, v * 20))[None, :]

    def _p_marble(self, u, v, s):
        n = fbm(u * s, v * s, 4)
        vein = np.abs(np.sin((u * s + 4.0 * n) * 3.0))
        return _mix(self.c1, self.c0, _smoothstep(0.0, 0.35, vein))

    def _p_fabric(self, u, v, s):
        w = 0.5 + 0.25 * (np.sin(u * s * 60.0) + np.sin(v * s * 60.0))
        n = fbm(u * s, v * s, 2)
        return _mix(self.c0, self.c1, 0.3 * w + 0.7 * _smoothstep(0.3, 0.8, n))


# ------------------------------------------------------------------------------------------------
# Palettes
# ------------------------------------------------------------------------------------------------


def hsv(h: float, s: float, v: float) -> tuple:
    """HSV (h wraps) to linear-ish RGB tuple."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    # treat the HSV value as sRGB and go to linear so that shading happens in linear light
    return tuple(float(c) ** 2.2 for c in (r, g, b))


class Palette:
    """Per-scene colour scheme: a base hue, an accent, a saturation level."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.hue = float(rng.random())
        self.accent = (self.hue + rng.choice([0.5, 0.33, -0.33, 0.08])) % 1.0
        self.sat = float(rng.uniform(0.1, 0.7))
        self.warm = float(rng.uniform(-0.05, 0.05))

    def color(self, accent: bool = False, s=None, v=None, hue_jitter: float = 0.06) -> tuple:
        r = self.rng
        h = (self.accent if accent else self.hue) + r.uniform(-hue_jitter, hue_jitter)
        s = self.sat * r.uniform(0.5, 1.3) if s is None else s
        v = r.uniform(0.35, 0.9) if v is None else v
        return hsv(h, s, v)

    def neutral(self, v=None) -> tuple:
        r = self.rng
        return hsv(0.08 + self.warm + r.uniform(-0.03, 0.03), r.uniform(0.0, 0.15), r.uniform(0.45, 0.92) if v is None else v)

    def darker(self, c, f=0.6) -> tuple:
        return tuple(float(x) * f for x in c)
