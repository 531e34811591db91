"""Cameras and analytic ray-primitive intersection, vectorised over whole pixel blocks.

World frame: x east, y north, z up, metres. Camera frame (OpenCV): x right, y down, z forward.
Ray directions are *not* normalised: a perspective camera's ray through pixel (u, v) is
``R @ ((u - cx) / fx, (v - cy) / fy, 1)``, so the ray parameter ``t`` of a hit is exactly the planar
z-depth of that hit. Pixel centres sit at integer coordinates (the OpenCV convention).

Every primitive implements ``intersect(o, d) -> t`` (float32, ``inf`` on a miss) for a block of rays
and ``surface(px, py, pz) -> (normal (3, N), uv (2, N))`` for hit points. ``o`` is either one origin,
an ndarray of shape (3,), or a tuple of three arrays (orthographic cameras); ``d`` is a tuple of three
float32 arrays. Cameras cull each primitive to the pixel rectangle its bounding box projects to, so a
small or distant object costs only the pixels it can cover.
"""

from __future__ import annotations

import math

import numpy as np

EPS = 1e-4
_EYE = np.eye(3)
INF = np.float32(np.inf)


# ------------------------------------------------------------------------------------------------
# Rotations
# ------------------------------------------------------------------------------------------------


def rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def look_rotation(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """Camera-to-world rotation (columns: camera x right, y down, z forward in world coordinates).

    yaw 0 looks along +y (north), positive yaw turns towards +x; positive pitch looks up; roll turns
    the image clockwise about the optical axis."""
    cp, sp = math.cos(pitch), math.sin(pitch)
    f = np.array([math.sin(yaw) * cp, math.cos(yaw) * cp, sp])
    right = np.cross(f, [0.0, 0.0, 1.0])
    n = np.linalg.norm(right)
    right = np.array([1.0, 0.0, 0.0]) if n < 1e-9 else right / n
    down = -np.cross(right, f)
    cr, sr = math.cos(roll), math.sin(roll)
    r2 = cr * right + sr * down
    d2 = -sr * right + cr * down
    return np.stack([r2, d2, f], axis=1)


def look_at(pos, target, roll: float = 0.0) -> np.ndarray:
    v = np.asarray(target, float) - np.asarray(pos, float)
    yaw = math.atan2(v[0], v[1])
    pitch = math.atan2(v[2], math.hypot(v[0], v[1]))
    return look_rotation(yaw, pitch, roll)


# ------------------------------------------------------------------------------------------------
# Cameras
# ------------------------------------------------------------------------------------------------


class Camera:
    """Pinhole (or orthographic) ray generator over an H x W pixel grid."""

    def __init__(self, pos, R, fx, fy, cx, cy, H, W, ortho: bool = False):
        self.pos = np.asarray(pos, dtype=np.float64)
        self.R = np.asarray(R, dtype=np.float64)
        self.fx, self.fy, self.cx, self.cy = float(fx), float(fy), float(cx), float(cy)
        self.H, self.W = int(H), int(W)
        self.ortho = ortho
        xs = ((np.arange(self.W) - self.cx) / self.fx).astype(np.float32)
        ys = ((np.arange(self.H) - self.cy) / self.fy).astype(np.float32)
        R32 = self.R.astype(np.float32)
        if ortho:
            # fx, fy are pixels per metre; all rays share the direction R[:, 2].
            self.dirs = tuple(np.full((self.H, self.W), R32[k, 2], np.float32) for k in range(3))
            self.origins = tuple(
                (np.float32(self.pos[k]) + R32[k, 0] * xs[None, :] + R32[k, 1] * ys[:, None]).astype(np.float32)
                for k in range(3)
            )
        else:
            self.dirs = tuple(
                (R32[k, 0] * xs[None, :] + R32[k, 1] * ys[:, None] + R32[k, 2]).astype(np.float32)
                for k in range(3)
            )
            self.origins = None

    @property
    def intrinsics(self) -> np.ndarray:
        return np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float32)

    def to_camera(self, pts: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> camera coordinates (N, 3)."""
        return (np.asarray(pts, float) - self.pos) @ self.R

    def footprint(self, corners) -> tuple[int, int, int, int] | None:
        """Pixel rectangle (y0, y1, x0, x1) that can see a box with these world corners, or None."""
        if corners is None:
            return (0, self.H, 0, self.W)
        q = self.to_camera(corners)
        if self.ortho:
            us = q[:, 0] * self.fx + self.cx
            vs = q[:, 1] * self.fy + self.cy
        else:
            z = q[:, 2]
            if np.all(z <= EPS):
                return None
            if np.any(z <= 1e-3):
                return (0, self.H, 0, self.W)
            us = q[:, 0] / z * self.fx + self.cx
            vs = q[:, 1] / z * self.fy + self.cy
        x0 = max(int(math.floor(us.min())) - 1, 0)
        x1 = min(int(math.ceil(us.max())) + 2, self.W)
        y0 = max(int(math.floor(vs.min())) - 1, 0)
        y1 = min(int(math.ceil(vs.max())) + 2, self.H)
        if x0 >= x1 or y0 >= y1:
            return None
        return (y0, y1, x0, x1)

    def footprints(self, prims) -> list:
        """:meth:`footprint` for many primitives at once (one projection of all their corners)."""
        out: list = [(0, self.H, 0, self.W)] * len(prims)
        idx = [i for i, p in enumerate(prims) if p.corners() is not None]
        if not idx:
            return out
        C = np.concatenate([prims[i].corners() for i in idx])  # (8n, 3)
        q = ((C - self.pos) @ self.R).reshape(len(idx), 8, 3)
        if self.ortho:
            us = q[..., 0] * self.fx + self.cx
            vs = q[..., 1] * self.fy + self.cy
            behind = np.zeros(len(idx), bool)
            straddle = behind
        else:
            z = q[..., 2]
            behind = np.all(z <= EPS, axis=1)
            straddle = np.any(z <= 1e-3, axis=1)
            zs = np.where(z > 1e-3, z, 1.0)
            us = q[..., 0] / zs * self.fx + self.cx
            vs = q[..., 1] / zs * self.fy + self.cy
        x0 = np.maximum(np.floor(us.min(1)) - 1, 0)
        x1 = np.minimum(np.ceil(us.max(1)) + 2, self.W)
        y0 = np.maximum(np.floor(vs.min(1)) - 1, 0)
        y1 = np.minimum(np.ceil(vs.max(1)) + 2, self.H)
        empty = (x0 >= x1) | (y0 >= y1)
        for k, i in enumerate(idx):
            if behind[k]:
                out[i] = None
            elif straddle[k]:
                out[i] = (0, self.H, 0, self.W)
            elif empty[k]:
                out[i] = None
            else:
                out[i] = (int(y0[k]), int(y1[k]), int(x0[k]), int(x1[k]))
        return out

    def rays(self, fp):
        y0, y1, x0, x1 = fp
        d = tuple(a[y0:y1, x0:x1] for a in self.dirs)
        o = self.pos if self.origins is None else tuple(a[y0:y1, x0:x1] for a in self.origins)
        return o, d


# ------------------------------------------------------------------------------------------------
# Primitives
# ------------------------------------------------------------------------------------------------


_SIGNS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)


def _box_corners(center, R, half) -> np.ndarray:
    local = _SIGNS * np.asarray(half, float)
    return local @ np.asarray(R, float).T + np.asarray(center, float)


class Primitive:
    """Base: a local frame (centre, rotation local->world) and a material index."""

    kind = "primitive"

    def __init__(self, center, R=None, material: int = 0, casts_shadow: bool = True, name: str = "",
                 world_uv: bool = False):
        self.center = np.asarray(center, dtype=np.float64)
        self.R = None if R is None else np.asarray(R, dtype=np.float64)
        if self.R is not None and float(np.abs(self.R - _EYE).max()) < 1e-12:
            self.R = None
        self.material = int(material)
        self.casts_shadow = casts_shadow
        self.name = name or self.kind
        self.world_uv = world_uv  # texture with world (x, y), seamless with the ground (terrain mounds)
        self._corners = None
        if self.R is not None:
            self._RT = [[float(v) for v in row] for row in self.R.T]

    # -- frames -------------------------------------------------------------------------------
    def to_local(self, o, d):
        c = self.center
        if isinstance(o, np.ndarray):
            v = o - c
            if self.R is not None:
                v = self.R.T @ v
            ol = (float(v[0]), float(v[1]), float(v[2]))
        else:
            ox, oy, oz = o[0] - np.float32(c[0]), o[1] - np.float32(c[1]), o[2] - np.float32(c[2])
            if self.R is None:
                ol = (ox, oy, oz)
            else:
                M = self._RT
                ol = tuple(M[k][0] * ox + M[k][1] * oy + M[k][2] * oz for k in range(3))
        if self.R is None:
            dl = d
        else:
            M = self._RT
            dl = tuple(M[k][0] * d[0] + M[k][1] * d[1] + M[k][2] * d[2] for k in range(3))
        return ol, dl

    def points_to_local(self, px, py, pz):
        c = self.center
        x, y, z = px - np.float32(c[0]), py - np.float32(c[1]), pz - np.float32(c[2])
        if self.R is None:
            return x, y, z
        M = self._RT
        return tuple(M[k][0] * x + M[k][1] * y + M[k][2] * z for k in range(3))

    def normal_to_world(self, n):
        if self.R is None:
            return n
        R = self.R.astype(np.float32)
        return R @ n

    def corners(self):
        return None

    def describe(self) -> dict:
        d = {"type": self.kind, "name": self.name, "center": [round(float(v), 3) for v in self.center]}
        return d


class Plane(Primitive):
    """The horizontal plane z = height (infinite), normal +z."""

    kind = "plane"

    def __init__(self, height: float = 0.0, **kw):
        super().__init__([0.0, 0.0, height], None, **kw)
        self.height = float(height)

    def intersect(self, o, d):
        oz = o[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (np.float32(self.height) - oz) / d[2]
        return np.where(t > EPS, t, INF).astype(np.float32, copy=False)

    def surface(self, px, py, pz):
        n = np.zeros((3, px.shape[0]), np.float32)
        n[2] = 1.0
        return n, np.stack([px, py])


class Box(Primitive):
    """Oriented box with half extents ``half``. ``inside=True`` makes it a room seen from within:
    the ray's exit point is the hit and normals point inwards. ``holes`` are openings in a room's
    faces: (axis, sign, u0, u1, v0, v1) in the face's two other local coordinates (increasing axis
    order); a ray leaving through a hole passes on."""

    kind = "box"

    def __init__(self, center, half, R=None, inside: bool = False, holes=(), **kw):
        super().__init__(center, R, **kw)
        self.half = np.asarray(half, dtype=np.float64)
        self.inside = inside
        self.holes = list(holes)

    def corners(self):
        if self.inside:
            return None
        if self._corners is None:
            self._corners = _box_corners(self.center, _EYE if self.R is None else self.R, self.half)
        return self._corners

    def intersect(self, o, d):
        ol, dl = self.to_local(o, d)
        tn = tf = None
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            for k in range(3):
                inv = np.float32(1.0) / dl[k]
                h = float(self.half[k])
                t1 = (-h - ol[k]) * inv
                t2 = (h - ol[k]) * inv
                lo = np.minimum(t1, t2)
                hi = np.maximum(t1, t2)
                tn = lo if tn is None else np.maximum(tn, lo)
                tf = hi if tf is None else np.minimum(tf, hi)
            if self.inside:
                t = np.where((tn <= tf) & (tf > EPS), tf, INF)
                for axis, sign, u0, u1, v0, v1 in self.holes:
                    a, b = [k for k in range(3) if k != axis]
                    pa = ol[a] + t * dl[a]
                    pb = ol[b] + t * dl[b]
                    pk = ol[axis] + t * dl[axis]
                    on_face = (pk * sign) > (self.half[axis] * 0.999)
                    hole = on_face & (pa > u0) & (pa < u1) & (pb > v0) & (pb < v1)
                    t = np.where(hole, INF, t)
            else:
                t = np.where((tn <= tf) & (tn > EPS), tn, INF)
        return t.astype(np.float32, copy=False)

    def surface(self, px, py, pz):
        x, y, z = self.points_to_local(px, py, pz)
        h = self.half.astype(np.float32)
        a = np.stack([np.abs(x) / h[0], np.abs(y) / h[1], np.abs(z) / h[2]])
        k = np.argmax(a, axis=0)
        loc = (x, y, z)
        n = np.zeros((3, x.shape[0]), np.float32)
        for ax in range(3):
            m = k == ax
            s = np.sign(loc[ax][m]).astype(np.float32)
            n[ax, m] = -s if self.inside else s
        u = np.where(k == 0, y + h[1], x + h[0])
        v = np.where(k == 2, y + h[1], z + h[2])
        return self.normal_to_world(n), np.stack([u, v])

    def describe(self):
        d = super().describe()
        d["size"] = [round(float(v) * 2, 3) for v in self.half]
        if self.R is not None:
            d["yaw_deg"] = round(math.degrees(math.atan2(self.R[1, 0], self.R[0, 0])), 1)
        if self.inside:
            d["inside"] = True
        if self.holes:
            d["openings"] = len(self.holes)
        return d


class Cylinder(Primitive):
    """Capped cylinder along the local z axis: radius, half height."""

    kind = "cylinder"

    def __init__(self, center, radius: float, half_height: float, R=None, **kw):
        super().__init__(center, R, **kw)
        self.radius = float(radius)
        self.hz = float(half_height)

    def corners(self):
        if self._corners is None:
            self._corners = _box_corners(self.center, _EYE if self.R is None else self.R,
                                         [self.radius, self.radius, self.hz])
        return self._corners

    def intersect(self, o, d):
        (ox, oy, oz), (dx, dy, dz) = self.to_local(o, d)
        r, hz = self.radius, self.hz
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # closest approach to the axis first (numerically stable for thin, distant cylinders)
            a = dx * dx + dy * dy
            tc = -(ox * dx + oy * dy) / a
            px = ox + tc * dx
            py = oy + tc * dy
            h2 = r * r - (px * px + py * py)
            ts = tc - np.sqrt(np.maximum(h2, 0) / a)
            zs = oz + ts * dz
            t = np.where((h2 >= 0) & (ts > EPS) & (np.abs(zs) <= hz), ts, INF)
            zc = np.where(np.asarray(oz) > 0, hz, -hz)
            tc = (zc - oz) / dz
            xc = ox + tc * dx
            yc = oy + tc * dy
            capok = (tc > EPS) & (xc * xc + yc * yc <= r * r)
            t = np.where(capok & (tc < t), tc, t)
        return t.astype(np.float32, copy=False)

    def surface(self, px, py, pz):
        x, y, z = self.points_to_local(px, py, pz)
        rad = np.sqrt(x * x + y * y)
        cap = (self.hz - np.abs(z)) < (self.radius - rad)
        n = np.zeros((3, x.shape[0]), np.float32)
        inv = 1.0 / np.maximum(rad, 1e-6)
        n[0] = np.where(cap, 0.0, x * inv)
        n[1] = np.where(cap, 0.0, y * inv)
        n[2] = np.where(cap, np.sign(z), 0.0)
        ang = np.arctan2(y, x) * np.float32(self.radius)
        u = np.where(cap, x, ang)
        v = np.where(cap, y, z + self.hz)
        return self.normal_to_world(n), np.stack([u, v]).astype(np.float32)

    def describe(self):
        d = super().describe()
        d["radius"] = round(self.radius, 3)
        d["height"] = round(2 * self.hz, 3)
        if self.R is not None:
            d["axis"] = [round(float(v), 3) for v in self.R[:, 2]]
        return d


class Ellipsoid(Primitive):
    """Ellipsoid with local semi-axes ``radii``; a sphere when all three are equal."""

    kind = "ellipsoid"

    def __init__(self, center, radii, R=None, **kw):
        super().__init__(center, R, **kw)
        r = np.asarray(radii, dtype=np.float64)
        r = np.array([float(r)] * 3) if r.ndim == 0 else r.astype(np.float64).reshape(3)
        self.radii = r
        if r[0] == r[1] == r[2]:
            self.kind = "sphere"

    def corners(self):
        if self._corners is None:
            self._corners = _box_corners(self.center, _EYE if self.R is None else self.R, self.radii)
        return self._corners

    def intersect(self, o, d):
        ol, dl = self.to_local(o, d)
        ir = [1.0 / float(v) for v in self.radii]
        ox, oy, oz = ol[0] * ir[0], ol[1] * ir[1], ol[2] * ir[2]
        dx, dy, dz = dl[0] * ir[0], dl[1] * ir[1], dl[2] * ir[2]
        with np.errstate(divide="ignore", invalid="ignore"):
            a = dx * dx + dy * dy + dz * dz
            tc = -(ox * dx + oy * dy + oz * dz) / a  # closest approach to the centre (stable)
            px, py, pz = ox + tc * dx, oy + tc * dy, oz + tc * dz
            h2 = 1.0 - (px * px + py * py + pz * pz)
            t = tc - np.sqrt(np.maximum(h2, 0) / a)
            t = np.where((h2 >= 0) & (t > EPS), t, INF)
        return t.astype(np.float32, copy=False)

    def surface(self, px, py, pz):
        x, y, z = self.points_to_local(px, py, pz)
        r = self.radii.astype(np.float32)
        n = np.stack([x / (r[0] * r[0]), y / (r[1] * r[1]), z / (r[2] * r[2])])
        n /= np.maximum(np.sqrt((n * n).sum(0)), 1e-9)
        rm = np.float32(np.mean(r))
        u = np.arctan2(y, x) * rm
        return self.normal_to_world(n.astype(np.float32)), np.stack([u, z]).astype(np.float32)

    def describe(self):
        d = super().describe()
        if self.kind == "sphere":
            d["radius"] = round(float(self.radii[0]), 3)
        else:
            d["radii"] = [round(float(v), 3) for v in self.radii]
        return d


def frame_from_axis(axis) -> np.ndarray:
    """A rotation whose local z axis points along ``axis``."""
    zx, zy, zz = (float(v) for v in axis)
    n = math.sqrt(zx * zx + zy * zy + zz * zz)
    zx, zy, zz = zx / n, zy / n, zz / n
    if abs(zz) < 0.9:  # x = (0, 0, 1) x z
        xx, xy, xz = -zy, zx, 0.0
    else:  # x = (1, 0, 0) x z
        xx, xy, xz = 0.0, -zz, zy
    m = math.sqrt(xx * xx + xy * xy + xz * xz)
    xx, xy, xz = xx / m, xy / m, xz / m
    yx, yy, yz = zy * xz - zz * xy, zz * xx - zx * xz, zx * xy - zy * xx
    return np.array([[xx, yx, zx], [xy, yy, zy], [xz, yz, zz]])


# ------------------------------------------------------------------------------------------------
# Z-buffer
# ------------------------------------------------------------------------------------------------


def raycast(cam: Camera, prims, shadow_casters_only: bool = False):
    """Nearest hit per pixel: t (H, W) float32 (inf on a miss), primitive index (H, W) int32 (-1), and
    each primitive's pixel rectangle (None where culled)."""
    tbest = np.full((cam.H, cam.W), INF, np.float32)
    pid = np.full((cam.H, cam.W), -1, np.int32)
    fps = cam.footprints(prims)
    for i, p in enumerate(prims):
        if shadow_casters_only and not p.casts_shadow:
            fps[i] = None
            continue
        fp = fps[i]
        if fp is None:
            continue
        o, d = cam.rays(fp)
        t = p.intersect(o, d)
        y0, y1, x0, x1 = fp
        tb = tbest[y0:y1, x0:x1]
        m = t < tb
        np.copyto(tb, t, where=m)
        np.copyto(pid[y0:y1, x0:x1], i, where=m)
    return tbest, pid, fps
