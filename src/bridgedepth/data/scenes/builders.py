"""Scene layouts: rooms (indoor), streets / parks / plazas (outdoor), table-top objects (object).

Each builder draws everything from one seeded ``numpy.random.Generator`` and returns a
:class:`~.render.Scene`. Sizes are metric and plausible (doors 2 m, cars 4.5 m, storeys 3 m), so the
metric depth stages learn real scale.
"""

from __future__ import annotations

import math

import numpy as np

from .geometry import (Box, Camera, Cylinder, Ellipsoid, Plane, frame_from_axis, look_at, look_rotation, raycast,
                       rot_z)
from .render import Light, Scene
from .textures import Material, Palette, hsv


class Builder:
    def __init__(self, rng: np.random.Generator, H: int, W: int):
        self.rng = rng
        self.H, self.W = H, W
        self.pal = Palette(rng)
        self.prims: list = []
        self.materials: list[Material] = []
        self.objects: list[dict] = []
        self._group: list | None = None
        self._buf: list = []
        self._k = 0

    # -- bookkeeping --------------------------------------------------------------------------
    def mat(self, m: Material) -> int:
        self.materials.append(m)
        return len(self.materials) - 1

    def add(self, prim):
        self.prims.append(prim)
        if self._group is not None:
            self._group.append(prim)
        return prim

    def begin(self):
        self._group = []

    def end(self, category: str, **info):
        parts = self._group or []
        self._group = None
        if not parts:
            return
        cs = [p.center.tolist() for p in parts]
        mid = [(min(c[k] for c in cs) + max(c[k] for c in cs)) / 2 for k in range(3)]
        entry = {"category": category, "center": [round(v, 3) for v in mid]}
        entry.update(info)
        entry["parts"] = [p.describe() for p in parts]
        self.objects.append(entry)

    def u(self, a, b):
        """Uniform draw from [a, b) (buffered: one generator call per 1024 draws)."""
        if self._k >= len(self._buf):
            self._buf = self.rng.random(1024).tolist()
            self._k = 0
        x = self._buf[self._k]
        self._k += 1
        return a + (b - a) * x

    def chance(self, p):
        return bool(self.rng.random() < p)

    def pick(self, items, p=None):
        return items[int(self.rng.choice(len(items), p=p))]

    # -- cameras ------------------------------------------------------------------------------
    def camera(self, pos, R, fov_deg: float) -> Camera:
        W, H = self.W, self.H
        fx = (W / 2) / math.tan(math.radians(fov_deg) / 2)
        cx = (W - 1) / 2 + self.u(-0.015, 0.015) * W
        cy = (H - 1) / 2 + self.u(-0.015, 0.015) * H
        return Camera(pos, R, fx, fx, cx, cy, H, W)

    def probe_median_depth(self, cam: Camera, n: int = 12, near: float | None = None) -> float:
        """Median depth seen through a coarse n x n version of ``cam`` (misses count as far); with
        ``near``, only unbounded primitives and those within ``near`` metres of the camera are cast."""
        k = n / max(cam.H, cam.W)
        small = Camera(cam.pos, cam.R, cam.fx * k, cam.fy * k, (cam.cx + 0.5) * k - 0.5, (cam.cy + 0.5) * k - 0.5,
                       max(2, round(cam.H * k)), max(2, round(cam.W * k)))
        prims = self.prims
        if near is not None:  # only what could block the view: unbounded shells and nearby things
            bounded = [p for p in prims if p.corners() is not None]
            prims = [p for p in prims if p.corners() is None]
            if bounded:
                C = np.stack([p.corners() for p in bounded])  # (n, 8, 3)
                ctr = C.mean(1)
                rad = np.linalg.norm(C - ctr[:, None], axis=2).max(1)
                close = np.linalg.norm(ctr - cam.pos, axis=1) - rad < near
                prims = prims + [p for p, c in zip(bounded, close) if c]
        t, _, _ = raycast(small, prims)
        return float(np.median(np.where(np.isfinite(t), t, 1e3)))

    # -- materials ----------------------------------------------------------------------------
    def wall_material(self) -> int:
        p = self.pal
        kind = self.pick(["flat", "flat", "flat", "stripes", "brick", "tiles", "noise", "wood"])
        if kind == "flat":
            c = p.neutral(self.u(0.55, 0.92)) if self.chance(0.6) else p.color(v=self.u(0.5, 0.9), s=p.sat * 0.6)
            return self.mat(Material("flat", c))
        if kind == "stripes":
            c0 = p.neutral(self.u(0.6, 0.9))
            return self.mat(Material("stripes", c0, p.color(v=self.u(0.4, 0.8)), scale=self.u(0.05, 0.4),
                                     params={"duty": self.u(0.3, 0.7)}))
        if kind == "brick":
            return self.brick()
        if kind == "tiles":
            c0 = p.neutral(self.u(0.7, 0.95))
            return self.mat(Material("tiles", c0, p.color(v=0.8, s=0.2), p.neutral(0.5), scale=self.u(0.1, 0.3),
                                     gloss=0.3, shininess=40))
        if kind == "wood":
            return self.wood(scale=self.u(0.08, 0.2), angle=math.pi / 2)
        return self.mat(Material("noise", p.neutral(0.8), p.neutral(0.6), scale=self.u(0.3, 2.0)))

    def floor_material(self) -> int:
        p = self.pal
        kind = self.pick(["wood", "wood", "tiles", "checker", "fabric", "noise", "marble"])
        if kind == "wood":
            return self.wood(scale=self.u(0.1, 0.25), angle=self.pick([0.0, math.pi / 2]), gloss=0.25)
        if kind == "tiles":
            return self.mat(Material("tiles", p.neutral(), p.color(v=self.u(0.4, 0.9)), p.neutral(0.35),
                                     scale=self.u(0.2, 0.8), gloss=0.3, shininess=30,
                                     params={"alternate": float(self.chance(0.4))}))
        if kind == "checker":
            return self.mat(Material("checker", p.neutral(0.9), p.color(v=self.u(0.1, 0.5)),
                                     scale=self.u(0.2, 0.6), gloss=0.3, angle=self.u(0, 0.01)))
        if kind == "fabric":
            return self.mat(Material("fabric", p.color(), p.color(accent=True), scale=self.u(0.3, 1.0)))
        if kind == "marble":
            return self.mat(Material("marble", p.neutral(0.9), p.neutral(0.5), scale=self.u(0.3, 1.0), gloss=0.5,
                                     shininess=60))
        return self.mat(Material("noise", p.neutral(0.6), p.neutral(0.4), scale=self.u(0.5, 3.0)))

    def wood(self, scale=0.15, angle=0.0, gloss=0.1) -> int:
        h = self.u(0.05, 0.1)
        c0 = hsv(h, self.u(0.4, 0.7), self.u(0.45, 0.8))
        c1 = hsv(h + self.u(-0.02, 0.02), self.u(0.5, 0.8), self.u(0.2, 0.45))
        return self.mat(Material("wood", c0, c1, scale=scale, angle=angle, gloss=gloss,
                                 offset=(self.u(0, 50), self.u(0, 50)), params={"plank_len": self.u(4, 12)}))

    def brick(self) -> int:
        h = self.u(0.0, 0.08) if self.chance(0.7) else self.u(0.05, 0.15)
        c0 = hsv(h, self.u(0.4, 0.7), self.u(0.35, 0.6))
        c1 = hsv(h, self.u(0.3, 0.6), self.u(0.5, 0.75))
        return self.mat(Material("brick", c0, c1, hsv(0.1, 0.1, self.u(0.6, 0.85)), scale=1 / self.u(0.065, 0.09),
                                 offset=(self.u(0, 9), 0.0), params={"aspect": self.u(2.4, 3.2)}))

    def solid(self, accent=False, gloss=0.0, pattern=None) -> int:
        p = self.pal
        pattern = pattern or self.pick(["flat", "flat", "flat", "noise", "stripes", "checker", "fabric", "wood",
                                        "marble"])
        if pattern == "wood":
            return self.wood(scale=self.u(0.05, 0.15), angle=self.pick([0.0, math.pi / 2]), gloss=gloss)
        c0 = p.color(accent=accent)
        c1 = p.color(accent=not accent) if self.chance(0.5) else p.darker(c0, self.u(0.4, 0.8))
        scale = {"flat": 1.0, "noise": self.u(0.1, 0.6), "stripes": self.u(0.02, 0.2), "checker": self.u(0.03, 0.2),
                 "fabric": self.u(0.2, 0.6), "marble": self.u(0.2, 0.5)}[pattern]
        return self.mat(Material(pattern, c0, c1, scale=scale, gloss=gloss, shininess=self.u(10, 80),
                                 offset=(self.u(0, 50), self.u(0, 50))))

    def metal(self) -> int:
        v = self.u(0.2, 0.8)
        return self.mat(Material("flat", hsv(self.u(0, 1), self.u(0, 0.15), v), gloss=self.u(0.3, 0.8),
                                 shininess=self.u(30, 120)))

    def foliage(self) -> int:
        h = self.u(0.2, 0.38) if self.chance(0.85) else self.u(0.05, 0.12)
        return self.mat(Material("leaves", hsv(h, self.u(0.5, 0.8), self.u(0.15, 0.35)),
                                 hsv(h + 0.03, self.u(0.4, 0.7), self.u(0.4, 0.7)), scale=self.u(0.3, 1.2),
                                 offset=(self.u(0, 80), self.u(0, 80))))

    # -- reusable objects (z0 = floor height) ---------------------------------------------------
    def table(self, x, y, yaw, z0=0.0, mat_top=None, mat_leg=None):
        w, dd, h = self.u(0.6, 1.8), self.u(0.5, 1.0), self.u(0.45, 0.8)
        th = self.u(0.025, 0.06)
        R = rot_z(yaw)
        mat_top = self.solid(pattern=self.pick(["wood", "flat", "marble"]), gloss=0.2) if mat_top is None else mat_top
        mat_leg = self.metal() if mat_leg is None else mat_leg
        self.begin()
        self.add(Box([x, y, z0 + h - th / 2], [w / 2, dd / 2, th / 2], R, material=mat_top, name="table_top"))
        lr = self.u(0.015, 0.035)
        round_legs = self.chance(0.5)
        for sx in (-1, 1):
            for sy in (-1, 1):
                lx, ly = sx * (w / 2 - 0.06), sy * (dd / 2 - 0.06)
                c = np.array([x, y, z0 + (h - th) / 2]) + R @ np.array([lx, ly, 0.0])
                if round_legs:
                    self.add(Cylinder(c, lr, (h - th) / 2, material=mat_leg, name="table_leg"))
                else:
                    self.add(Box(c, [lr, lr, (h - th) / 2], R, material=mat_leg, name="table_leg"))
        self.end("table", size=[round(w, 2), round(dd, 2), round(h, 2)])
        return w, dd, h

    def chair(self, x, y, yaw, z0=0.0):
        s = self.u(0.38, 0.5)
        h = self.u(0.4, 0.48)
        R = rot_z(yaw)
        m = self.solid(pattern=self.pick(["wood", "flat", "fabric"]))
        ml = self.metal() if self.chance(0.5) else m
        self.begin()
        self.add(Box([x, y, z0 + h], [s / 2, s / 2, 0.025], R, material=m, name="seat"))
        back = np.array([x, y, z0 + h + 0.25]) + R @ np.array([0.0, -s / 2 + 0.02, 0.0])
        self.add(Box(back, [s / 2, 0.02, 0.22], R, material=m, name="backrest"))
        for sx in (-1, 1):
            for sy in (-1, 1):
                c = np.array([x, y, z0 + h / 2]) + R @ np.array([sx * (s / 2 - 0.03), sy * (s / 2 - 0.03), 0.0])
                self.add(Cylinder(c, 0.015, h / 2, material=ml, name="chair_leg"))
        self.end("chair")

    def shelf(self, x, y, yaw, z0=0.0):
        w, dd, h = self.u(0.6, 2.0), self.u(0.25, 0.45), self.u(0.8, 2.2)
        R = rot_z(yaw)
        m = self.solid(pattern=self.pick(["wood", "flat"]))
        self.begin()
        t = 0.02
        for sx in (-1, 1):
            c = np.array([x, y, z0 + h / 2]) + R @ np.array([sx * (w / 2 - t), 0.0, 0.0])
            self.add(Box(c, [t, dd / 2, h / 2], R, material=m, name="shelf_side"))
        c = np.array([x, y, z0 + h / 2]) + R @ np.array([0.0, -dd / 2 + 0.005, 0.0])
        self.add(Box(c, [w / 2, 0.005, h / 2], R, material=m, name="shelf_back"))
        n = max(2, int(h / self.u(0.3, 0.45)))
        for k in range(n + 1):
            zc = z0 + t + (h - 2 * t) * k / n
            self.add(Box([x, y, zc], [w / 2 - 2 * t, dd / 2, t], R, material=m, name="shelf_board"))
            if k < n and self.chance(0.7):  # books / boxes on the board
                nb = int(self.rng.integers(2, 8))
                cursor = -w / 2 + 3 * t
                for _ in range(nb):
                    bw = self.u(0.02, 0.08)
                    bh = self.u(0.12, min(0.3, (h - 2 * t) / n - 0.03))
                    if cursor + bw > w / 2 - 3 * t:
                        break
                    c = np.array([x, y, zc + t + bh / 2]) + R @ np.array([cursor + bw / 2, self.u(-0.03, 0.03), 0.0])
                    self.add(Box(c, [bw / 2, dd / 2 - 0.04, bh / 2], R, material=self.solid(accent=self.chance(0.5),
                                 pattern="flat"), name="book"))
                    cursor += bw + self.u(0.0, 0.05)
        self.end("shelf", size=[round(w, 2), round(dd, 2), round(h, 2)])
        return w, dd

    def cabinet(self, x, y, yaw, z0=0.0):
        w, dd, h = self.u(0.5, 1.6), self.u(0.35, 0.6), self.u(0.5, 1.9)
        R = rot_z(yaw)
        self.begin()
        m = self.solid(pattern=self.pick(["wood", "flat", "flat"]), gloss=0.15)
        self.add(Box([x, y, z0 + h / 2], [w / 2, dd / 2, h / 2], R, material=m, name="cabinet"))
        nd = int(self.rng.integers(1, 4))
        mh = self.metal()
        for k in range(nd):
            c = np.array([x, y, z0 + h * (k + 0.6) / nd]) + R @ np.array([0.0, dd / 2 + 0.015, 0.0])
            self.add(Box(c, [min(0.12, w / 4), 0.015, 0.012], R, material=mh, name="handle"))
        self.end("cabinet", size=[round(w, 2), round(dd, 2), round(h, 2)])
        return w, dd

    def sofa(self, x, y, yaw, z0=0.0):
        w, dd = self.u(1.4, 2.4), self.u(0.8, 1.0)
        R = rot_z(yaw)
        m = self.solid(pattern=self.pick(["fabric", "flat", "noise"]))
        self.begin()
        self.add(Box([x, y, z0 + 0.22], [w / 2, dd / 2, 0.22], R, material=m, name="sofa_base"))
        c = np.array([x, y, z0 + 0.6]) + R @ np.array([0.0, -dd / 2 + 0.12, 0.0])
        self.add(Box(c, [w / 2, 0.12, 0.38], R, material=m, name="sofa_back"))
        for sx in (-1, 1):
            c = np.array([x, y, z0 + 0.4]) + R @ np.array([sx * (w / 2 - 0.1), 0.0, 0.0])
            self.add(Box(c, [0.1, dd / 2, 0.18], R, material=m, name="sofa_arm"))
        mc = self.solid(accent=True, pattern=self.pick(["flat", "fabric", "stripes"]))
        for k in range(int(self.rng.integers(0, 3))):
            c = np.array([x, y, z0 + 0.6]) + R @ np.array([self.u(-w / 3, w / 3), -dd / 2 + 0.3, 0.0])
            self.add(Ellipsoid(c, [0.2, 0.08, 0.18], R, material=mc, name="cushion"))
        self.end("sofa", size=[round(w, 2), round(dd, 2)])
        return w, dd

    def lamp(self, x, y, z0=0.0):
        h = self.u(1.2, 1.8)
        self.begin()
        mm = self.metal()
        self.add(Cylinder([x, y, z0 + 0.015], self.u(0.12, 0.2), 0.015, material=mm, name="lamp_base"))
        self.add(Cylinder([x, y, z0 + h / 2], self.u(0.01, 0.02), h / 2, material=mm, name="lamp_pole"))
        shade = self.mat(Material("flat", self.pal.neutral(0.9), emit=self.u(0.2, 0.6)))
        if self.chance(0.5):
            self.add(Cylinder([x, y, z0 + h + 0.1], self.u(0.15, 0.25), 0.12, material=shade, name="lamp_shade"))
        else:
            self.add(Ellipsoid([x, y, z0 + h + 0.1], self.u(0.12, 0.2), material=shade, name="lamp_globe"))
        self.end("lamp")

    def plant(self, x, y, z0=0.0, scale=1.0):
        self.begin()
        pr, ph = self.u(0.1, 0.25) * scale, self.u(0.2, 0.5) * scale
        self.add(Cylinder([x, y, z0 + ph / 2], pr, ph / 2, material=self.solid(pattern="flat"), name="pot"))
        fm = self.foliage()
        n = int(self.rng.integers(2, 6))
        for _ in range(n):
            r = self.u(0.15, 0.35) * scale
            self.add(Ellipsoid([x + self.u(-pr, pr), y + self.u(-pr, pr), z0 + ph + r * self.u(0.6, 1.8)],
                               [r, r, r * self.u(0.8, 1.4)], material=fm, name="foliage"))
        self.end("plant")

    def tree(self, x, y, z0=0.0):
        self.begin()
        h = self.u(2.5, 7.0)
        tr = self.u(0.08, 0.25)
        bark = self.mat(Material("bark", hsv(0.07, 0.4, 0.35), hsv(0.07, 0.3, 0.15), scale=self.u(0.3, 0.8)))
        self.add(Cylinder([x, y, z0 + h / 2], tr, h / 2, material=bark, name="trunk"))
        fm = self.foliage()
        crown = self.u(1.2, 3.0)
        conifer = self.chance(0.2)
        n = int(self.rng.integers(2, 6))
        for _ in range(n):
            if conifer:
                r = crown * self.u(0.4, 0.6)
                self.add(Ellipsoid([x + self.u(-0.3, 0.3), y + self.u(-0.3, 0.3), z0 + h + self.u(-1.0, 0.5) * crown],
                                   [r, r, r * self.u(1.8, 2.6)], material=fm, name="crown"))
            else:
                r = crown * self.u(0.45, 0.8)
                self.add(Ellipsoid([x + self.u(-0.6, 0.6) * crown, y + self.u(-0.6, 0.6) * crown,
                                    z0 + h + self.u(-0.3, 0.6) * crown], [r, r, r * self.u(0.7, 1.0)],
                                   material=fm, name="crown"))
        self.end("tree", height=round(h + crown, 2))

    def car(self, x, y, yaw, z0=0.0):
        L, Wd = self.u(3.8, 4.9), self.u(1.7, 1.95)
        hb = self.u(0.55, 0.75)
        R = rot_z(yaw)
        body = self.mat(Material("flat", self.pick([hsv(self.u(0, 1), self.u(0.5, 0.9), self.u(0.3, 0.8)),
                                                    hsv(0, 0, self.u(0.05, 0.9))]), gloss=self.u(0.4, 0.9),
                                 shininess=self.u(40, 120)))
        glass = self.mat(Material("flat", hsv(0.6, 0.2, 0.12), gloss=0.8, shininess=100))
        tyre = self.mat(Material("flat", (0.02, 0.02, 0.02)))
        self.begin()
        cz = z0 + 0.3 + hb / 2
        self.add(Box([x, y, cz], [Wd / 2, L / 2, hb / 2], R, material=body, name="car_body"))
        ch = self.u(0.4, 0.55)
        c = np.array([x, y, z0 + 0.3 + hb + ch / 2]) + R @ np.array([0.0, self.u(-0.4, 0.0), 0.0])
        self.add(Box(c, [Wd / 2 - 0.1, L * self.u(0.22, 0.3), ch / 2], R, material=glass, name="car_cabin"))
        wheel_R = R @ frame_from_axis([1.0, 0.0, 0.0])
        for sx in (-1, 1):
            for sy in (-1, 1):
                c = np.array([x, y, z0 + 0.33]) + R @ np.array([sx * (Wd / 2 - 0.08), sy * (L / 2 - 0.75), 0.0])
                self.add(Cylinder(c, 0.33, 0.11, wheel_R, material=tyre, name="wheel"))
        self.end("car", size=[round(Wd, 2), round(L, 2)])

    def street_light(self, x, y, toward: float, z0=0.0):
        h = self.u(4.0, 8.0)
        r = self.u(0.05, 0.1)
        m = self.metal()
        self.begin()
        self.add(Cylinder([x, y, z0 + h / 2], r, h / 2, material=m, name="pole"))
        arm = self.u(0.8, 2.0)
        self.add(Box([x + toward * arm / 2, y, z0 + h - 0.05], [arm / 2, 0.04, 0.04], material=m, name="arm"))
        self.add(Box([x + toward * arm, y, z0 + h - 0.12], [0.25, 0.12, 0.06], material=m, name="lamp_head"))
        self.end("street_light", height=round(h, 2))

    def sign(self, x, y, yaw, z0=0.0):
        h = self.u(2.0, 3.0)
        self.begin()
        self.add(Cylinder([x, y, z0 + h / 2], 0.03, h / 2, material=self.metal(), name="sign_pole"))
        plate = self.mat(Material(self.pick(["flat", "stripes", "checker"]),
                                  hsv(self.pick([0.0, 0.6, 0.15, 0.33]), 0.8, 0.8), (0.9, 0.9, 0.9),
                                  scale=self.u(0.1, 0.3)))
        if self.chance(0.5):
            self.add(Cylinder([x, y, z0 + h], self.u(0.3, 0.45), 0.01, rot_z(yaw) @ frame_from_axis([0, 1, 0]),
                              material=plate, name="sign_plate"))
        else:
            self.add(Box([x, y, z0 + h], [self.u(0.3, 0.6), 0.01, self.u(0.25, 0.4)], rot_z(yaw), material=plate,
                         name="sign_plate"))
        self.end("sign")

    def fence(self, x0, y0, x1, y1, z0=0.0):
        h = self.u(0.8, 1.6)
        m = self.metal() if self.chance(0.5) else self.wood(scale=0.1)
        self.begin()
        L = math.hypot(x1 - x0, y1 - y0)
        n = max(2, int(L / self.u(0.12, 2.0)))
        pr = self.u(0.01, 0.04)
        for k in range(n + 1):
            a = k / n
            self.add(Cylinder([x0 + (x1 - x0) * a, y0 + (y1 - y0) * a, z0 + h / 2], pr, h / 2, material=m,
                              name="fence_post"))
        yaw = math.atan2(x1 - x0, y1 - y0)
        for zr in ((0.9,) if n > 12 else (0.35, 0.9)):
            self.add(Box([(x0 + x1) / 2, (y0 + y1) / 2, z0 + h * zr], [0.02, L / 2, 0.02], rot_z(-yaw), material=m,
                         name="fence_rail"))
        self.end("fence", length=round(L, 2))

    def bench(self, x, y, yaw, z0=0.0):
        R = rot_z(yaw)
        w = self.u(1.2, 2.0)
        m = self.wood(scale=0.08)
        ml = self.metal()
        self.begin()
        self.add(Box([x, y, z0 + 0.45], [w / 2, 0.22, 0.03], R, material=m, name="bench_seat"))
        c = np.array([x, y, z0 + 0.75]) + R @ np.array([0.0, -0.22, 0.0])
        self.add(Box(c, [w / 2, 0.02, 0.15], R, material=m, name="bench_back"))
        for sx in (-1, 1):
            c = np.array([x, y, z0 + 0.22]) + R @ np.array([sx * (w / 2 - 0.1), 0.0, 0.0])
            self.add(Box(c, [0.03, 0.2, 0.22], R, material=ml, name="bench_leg"))
        self.end("bench")

    def rock(self, x, y, z0=0.0, size=1.0):
        self.begin()
        r = np.array([self.u(0.5, 1.0), self.u(0.5, 1.0), self.u(0.3, 0.7)]) * size
        m = self.mat(Material("noise", hsv(self.u(0.05, 0.12), self.u(0.05, 0.25), self.u(0.3, 0.6)),
                              hsv(0.08, 0.1, self.u(0.15, 0.3)), scale=self.u(0.1, 0.5) * size))
        self.add(Ellipsoid([x, y, z0 + r[2] * self.u(0.2, 0.6)], r, rot_z(self.u(0, math.pi)), material=m,
                           name="rock"))
        self.end("rock")

    def person(self, x, y, z0=0.0):
        h = self.u(1.5, 1.9)
        self.begin()
        cloth = self.solid(pattern=self.pick(["flat", "fabric", "stripes"]))
        legs = self.solid(pattern="flat")
        self.add(Ellipsoid([x, y, z0 + h * 0.38], [0.16, 0.12, h * 0.38], material=legs, name="legs"))
        self.add(Ellipsoid([x, y, z0 + h * 0.66], [0.22, 0.14, h * 0.17], material=cloth, name="torso"))
        self.add(Ellipsoid([x, y, z0 + h * 0.9], [0.09, 0.1, 0.12], material=self.mat(
            Material("flat", hsv(0.07, self.u(0.2, 0.6), self.u(0.3, 0.9)))), name="head"))
        self.end("person", height=round(h, 2))


# ------------------------------------------------------------------------------------------------
# indoor
# ------------------------------------------------------------------------------------------------


def build_indoor(b: Builder) -> Scene:
    r = b.rng
    corridor = b.chance(0.18)
    if corridor:
        rw, rd, rh = b.u(1.8, 3.0), b.u(8.0, 20.0), b.u(2.4, 3.2)
    else:
        rw, rd, rh = b.u(3.0, 8.0), b.u(3.0, 9.0), b.u(2.4, 3.6)
    hw, hd = rw / 2, rd / 2
    wall_m = b.wall_material()
    wall2_m = b.wall_material() if b.chance(0.35) else wall_m
    floor_m = b.floor_material()
    ceil_m = b.mat(Material("flat", b.pal.neutral(b.u(0.8, 0.97))))

    holes = []
    # a doorway into a second room, and windows onto a bright outside
    door_wall = int(r.integers(0, 4))
    faces = [(0, -1), (0, 1), (1, -1), (1, 1)]
    ax, sg = faces[door_wall]
    along = hd if ax == 0 else hw
    dw, dh = b.u(0.8, 1.6), b.u(2.0, min(2.3, rh - 0.1))
    dc = b.u(-along + dw / 2 + 0.2, along - dw / 2 - 0.2)
    holes.append((ax, sg, dc - dw / 2, dc + dw / 2, -rh / 2, -rh / 2 + dh))
    n_win = int(r.integers(0, 3))
    win_specs = []
    for k in range(n_win):
        wax, wsg = faces[int(r.integers(0, 4))]
        if (wax, wsg) == (ax, sg):
            continue
        walong = hd if wax == 0 else hw
        ww = b.u(0.6, min(2.5, 2 * walong - 0.4))
        wc = b.u(-walong + ww / 2 + 0.1, walong - ww / 2 - 0.1)
        sill = b.u(0.5, 1.0)
        wh = b.u(0.8, rh - sill - 0.2)
        holes.append((wax, wsg, wc - ww / 2, wc + ww / 2, -rh / 2 + sill, -rh / 2 + sill + wh))
        win_specs.append((wax, wsg, wc, ww, sill, wh))

    b.begin()
    b.add(Box([0, 0, rh / 2], [hw, hd, rh / 2], inside=True, holes=holes, material=wall_m,
                     casts_shadow=False, name="room"))
    # floor/ceiling materials: thin slabs flush with the room's floor and ceiling
    b.add(Box([0, 0, -0.003], [hw + 0.3, hd + 0.3, 0.005], material=floor_m, casts_shadow=False, name="floor"))
    b.add(Box([0, 0, rh + 0.003], [hw + 0.3, hd + 0.3, 0.005], material=ceil_m, casts_shadow=False, name="ceiling"))
    open_faces = {(h[0], h[1]) for h in holes}
    plain = [f for f in faces if f not in open_faces]
    if wall2_m != wall_m and plain:
        # an accent wall: a thin panel covering one wall without openings
        aw = plain[int(r.integers(0, len(plain)))]
        if aw[0] == 0:
            b.add(Box([aw[1] * (hw - 0.004), 0, rh / 2], [0.004, hd, rh / 2], material=wall2_m, casts_shadow=False,
                      name="accent_wall"))
        else:
            b.add(Box([0, aw[1] * (hd - 0.004), rh / 2], [hw, 0.004, rh / 2], material=wall2_m, casts_shadow=False,
                      name="accent_wall"))
    b.end("room", size=[round(rw, 2), round(rd, 2), round(rh, 2)], corridor=corridor)

    # adjacent room behind the doorway
    d2 = b.u(2.0, 6.0)
    w2 = b.u(2.0, 6.0)
    if ax == 0:
        c2 = [sg * (hw + d2 / 2), dc, rh / 2]
        h2 = [d2 / 2, max(w2, dw) / 2, rh / 2]
    else:
        c2 = [dc, sg * (hd + d2 / 2), rh / 2]
        h2 = [max(w2, dw) / 2, d2 / 2, rh / 2]
    b.begin()
    b.add(Box(c2, h2, inside=True, material=b.wall_material(), casts_shadow=False, name="next_room"))
    b.end("next_room")
    b.add(Box([c2[0], c2[1], -0.002], [h2[0], h2[1], 0.004], material=floor_m, casts_shadow=False, name="floor2"))
    # the outside seen through windows: a bright enclosing box with a soft landscape texture
    if win_specs:
        hue = b.u(0.25, 0.6)
        outside = b.mat(Material("noise", hsv(hue, 0.25, 0.9), hsv(hue + 0.05, 0.4, 0.6), scale=b.u(1.0, 4.0),
                                 emit=b.u(1.5, 3.0)))
        b.add(Box([0, 0, 0], [hw + b.u(4, 15), hd + b.u(4, 15), 20.0], inside=True, material=outside,
                  casts_shadow=False, name="outside"))
        # window frames and a cross bar (thin structures)
        fm = b.metal() if b.chance(0.5) else b.mat(Material("flat", b.pal.neutral(0.9)))
        for wax, wsg, wc, ww, sill, wh in win_specs:
            if wax == 0:
                b.add(Box([wsg * hw, wc, sill + wh / 2], [0.05, 0.025, wh / 2], material=fm, name="window_bar"))
                b.add(Box([wsg * hw, wc, sill + wh * 0.6], [0.05, ww / 2, 0.025], material=fm, name="window_bar"))
            else:
                b.add(Box([wc, wsg * hd, sill + wh / 2], [0.025, 0.05, wh / 2], material=fm, name="window_bar"))
                b.add(Box([wc, wsg * hd, sill + wh * 0.6], [ww / 2, 0.05, 0.025], material=fm, name="window_bar"))

    # camera
    cam_xy = np.array([b.u(-hw + 0.5, hw - 0.5), b.u(-hd + 0.5, hd - 0.5)])
    if corridor:
        cam_xy[1] = b.u(-hd + 0.5, -hd + 2.0)
    cam_h = b.u(0.4, 0.8) if b.chance(0.12) else b.u(1.0, 1.9)
    cam_h = min(cam_h, rh - 0.3)
    yaw = b.u(-0.5, 0.5) if corridor else b.u(-math.pi, math.pi)
    if not corridor and b.chance(0.7):
        # look roughly towards the room's far side so it fills the view
        far = -cam_xy + np.array([b.u(-1, 1), b.u(-1, 1)])
        yaw = math.atan2(far[0], far[1]) + b.u(-0.6, 0.6)
    pitch = math.radians(float(np.clip(r.normal(-10, 10), -45, 25)))
    roll = math.radians(float(np.clip(r.normal(0, 3), -10, 10)))
    fov = b.u(55, 100)
    cam_pos = np.array([cam_xy[0], cam_xy[1], cam_h])

    # furniture: wall-aligned pieces and free-standing pieces, kept away from the camera
    placed = [(cam_xy[0], cam_xy[1], 0.5)]

    def free(x, y, rad):
        return all((x - px) ** 2 + (y - py) ** 2 > (rad + pr) ** 2 for px, py, pr in placed)

    n_items = int(r.integers(4, 13 if not corridor else 7))
    wall_items = [b.shelf, b.cabinet, b.sofa]
    free_items = ["table_set", "chair", "lamp", "plant", "ball", "bin", "crate", "column", "table_set"]
    for _ in range(n_items):
        for _try in range(6):
            if b.chance(0.45):
                fn = wall_items[int(r.integers(0, len(wall_items)))]
                wax, wsg = faces[int(r.integers(0, 4))]
                walong = hd if wax == 0 else hw
                pos_along = b.u(-walong + 0.8, walong - 0.8)
                inset = 0.35
                if wax == 0:
                    x, y = wsg * (hw - inset), pos_along
                    yaw_i = wsg * math.pi / 2
                else:
                    x, y = pos_along, wsg * (hd - inset)
                    yaw_i = 0.0 if wsg < 0 else math.pi
                if (wax, wsg) == (ax, sg) and abs(pos_along - dc) < dw / 2 + 1.2:
                    continue
                if not free(x, y, 0.9):
                    continue
                fn(x, y, yaw_i)
                placed.append((x, y, 0.9))
                break
            x, y = b.u(-hw + 0.6, hw - 0.6), b.u(-hd + 0.6, hd - 0.6)
            item = free_items[int(r.integers(0, len(free_items)))]
            rad = {"table_set": 1.0, "chair": 0.4, "lamp": 0.3, "plant": 0.4, "ball": 0.3, "bin": 0.3,
                   "crate": 0.5, "column": 0.4}[item]
            if not free(x, y, rad):
                continue
            placed.append((x, y, rad))
            if item == "table_set":
                yaw_i = b.u(-math.pi, math.pi)
                w, dd, th = b.table(x, y, yaw_i)
                R = rot_z(yaw_i)
                for side in range(int(r.integers(0, 3))):
                    off = R @ np.array([0.0, (dd / 2 + 0.35) * (1 if side == 0 else -1), 0.0])
                    b.chair(x + off[0], y + off[1], yaw_i + (math.pi if side == 0 else 0.0))
                for _k in range(int(r.integers(0, 4))):  # things on the table
                    off = R @ np.array([b.u(-w / 3, w / 3), b.u(-dd / 3, dd / 3), 0.0])
                    _small_object(b, x + off[0], y + off[1], th)
            elif item == "chair":
                b.chair(x, y, b.u(-math.pi, math.pi))
            elif item == "lamp":
                b.lamp(x, y)
            elif item == "plant":
                b.plant(x, y)
            elif item == "ball":
                rr = b.u(0.1, 0.3)
                b.begin()
                b.add(Ellipsoid([x, y, rr], rr, material=b.solid(accent=True, gloss=0.3,
                                                                   pattern=b.pick(["flat", "stripes", "checker"])),
                                name="ball"))
                b.end("ball")
            elif item == "bin":
                rr, hh = b.u(0.12, 0.3), b.u(0.3, 0.8)
                b.begin()
                b.add(Cylinder([x, y, hh / 2], rr, hh / 2, material=b.solid(gloss=0.2), name="bin"))
                b.end("bin")
            elif item == "crate":
                s = [b.u(0.2, 0.5), b.u(0.2, 0.5), b.u(0.15, 0.45)]
                b.begin()
                b.add(Box([x, y, s[2]], s, rot_z(b.u(0, math.pi)), material=b.solid(pattern=b.pick(["wood", "flat"])),
                          name="crate"))
                if b.chance(0.4):
                    s2 = [v * b.u(0.4, 0.8) for v in s]
                    b.add(Box([x, y, 2 * s[2] + s2[2]], s2, rot_z(b.u(0, math.pi)), material=b.solid(), name="crate"))
                b.end("crate")
            elif item == "column":
                b.begin()
                if b.chance(0.5):
                    b.add(Cylinder([x, y, rh / 2], b.u(0.12, 0.3), rh / 2, material=b.wall_material(), name="column"))
                else:
                    s = b.u(0.15, 0.3)
                    b.add(Box([x, y, rh / 2], [s, s, rh / 2], material=b.wall_material(), name="column"))
                b.end("column")
            break

    # wall decorations: pictures, a rug
    for _ in range(int(r.integers(0, 4))):
        wax, wsg = faces[int(r.integers(0, 4))]
        walong = hd if wax == 0 else hw
        pw, ph = b.u(0.3, 1.2), b.u(0.3, 0.9)
        pa = b.u(-walong + pw, walong - pw) if walong > pw + 0.1 else 0.0
        pz = b.u(1.2, min(2.0, rh - ph / 2 - 0.1))
        pm = b.mat(Material(b.pick(["noise", "stripes", "checker", "marble"]), b.pal.color(accent=True),
                            b.pal.color(), scale=b.u(0.05, 0.3)))
        b.begin()
        if wax == 0:
            b.add(Box([wsg * (hw - 0.015), pa, pz], [0.015, pw / 2, ph / 2], material=pm, name="picture"))
        else:
            b.add(Box([pa, wsg * (hd - 0.015), pz], [pw / 2, 0.015, ph / 2], material=pm, name="picture"))
        b.end("picture")
    if b.chance(0.4):
        b.begin()
        b.add(Box([b.u(-hw / 3, hw / 3), b.u(-hd / 3, hd / 3), 0.006], [b.u(0.6, hw * 0.7), b.u(0.6, hd * 0.7), 0.006],
                  rot_z(b.u(-0.3, 0.3)), material=b.mat(Material(b.pick(["fabric", "stripes", "checker", "noise"]),
                                                                  b.pal.color(accent=True), b.pal.color(),
                                                                  scale=b.u(0.1, 0.5))), casts_shadow=False,
                  name="rug"))
        b.end("rug")
    # ceiling light fixture
    lx, ly = b.u(-hw / 2, hw / 2), b.u(-hd / 2, hd / 2)
    lamp_m = b.mat(Material("flat", (0.95, 0.95, 0.9), emit=3.0))
    b.add(Cylinder([lx, ly, rh - 0.02], b.u(0.15, 0.4), 0.02, material=lamp_m, casts_shadow=False, name="ceiling_light"))

    warm = b.u(-0.05, 0.1)
    lc = np.array(hsv(0.1 + warm, b.u(0.0, 0.35), 1.0)) * b.u(1.6, 2.6)
    lights = [Light("point", (lx, ly, rh - 0.08), tuple(lc), shadow=True, softness=b.u(1.5, 3.0),
                    falloff=max(rw, rd) * b.u(0.6, 1.2))]
    if b.chance(0.6):
        fill_dir = (b.u(-1, 1), b.u(-1, 1), b.u(0.2, 1.0))
        lights.append(Light("sun", fill_dir, tuple(np.array(hsv(b.u(0.5, 0.65), b.u(0, 0.3), 1.0)) * b.u(0.2, 0.6)),
                            shadow=False))
    items = placed[1:]
    if items and b.chance(0.65):
        # frame a piece of furniture: aim at it from where the camera stands, slightly jittered
        tx, ty, _ = items[int(r.integers(0, len(items)))]
        dist = math.hypot(tx - cam_xy[0], ty - cam_xy[1])
        if dist > 1.0:
            yaw = math.atan2(tx - cam_xy[0], ty - cam_xy[1]) + b.u(-0.35, 0.35)
            pitch = math.atan2(b.u(0.2, 0.9) - cam_h, dist) + math.radians(b.u(-6, 6))
            pitch = float(np.clip(pitch, math.radians(-50), math.radians(20)))
    cam = b.camera(cam_pos, look_rotation(yaw, pitch, roll), fov)
    for _try in range(8):  # do not stare into a wall from 20 cm: re-aim until the view has some depth
        if b.probe_median_depth(cam) > min(1.5, 0.4 * max(rw, rd)):
            break
        yaw = b.u(-math.pi, math.pi)
        cam = b.camera(cam_pos, look_rotation(yaw, pitch, roll), fov)
    amb = np.array(hsv(b.pal.hue, 0.1, 1.0)) * b.u(0.25, 0.45)
    return Scene("indoor", cam, b.prims, b.materials, lights, ambient=tuple(amb), sky=None, max_depth=80.0,
                 ao_strength=b.u(0.4, 0.7), noise_sigma=b.u(0.003, 0.015), exposure_key=b.u(0.7, 0.95),
                 meta={"layout": "corridor" if corridor else "room", "fov_deg": round(fov, 2)})


def _small_object(b: Builder, x, y, z0):
    """A small thing resting on a surface at height z0 (cups, balls, books, boxes, bottles)."""
    kind = b.pick(["sphere", "cup", "box", "bottle", "book", "egg"])
    b.begin()
    if kind == "sphere":
        rr = b.u(0.03, 0.12)
        b.add(Ellipsoid([x, y, z0 + rr], rr, material=b.solid(accent=True, gloss=0.4), name="ball"))
    elif kind == "cup":
        rr, hh = b.u(0.03, 0.06), b.u(0.07, 0.14)
        b.add(Cylinder([x, y, z0 + hh / 2], rr, hh / 2, material=b.solid(gloss=0.5, pattern="flat"), name="cup"))
    elif kind == "box":
        s = [b.u(0.03, 0.15), b.u(0.03, 0.15), b.u(0.02, 0.12)]
        b.add(Box([x, y, z0 + s[2]], s, rot_z(b.u(0, math.pi)), material=b.solid(), name="box"))
    elif kind == "bottle":
        rr, hh = b.u(0.03, 0.05), b.u(0.15, 0.3)
        m = b.solid(gloss=0.7, pattern="flat")
        b.add(Cylinder([x, y, z0 + hh / 2], rr, hh / 2, material=m, name="bottle"))
        b.add(Cylinder([x, y, z0 + hh + 0.04], rr * 0.35, 0.04, material=m, name="bottle_neck"))
    elif kind == "book":
        s = [b.u(0.07, 0.12), b.u(0.1, 0.16), b.u(0.01, 0.03)]
        b.add(Box([x, y, z0 + s[2]], s, rot_z(b.u(0, math.pi)), material=b.solid(pattern="flat"), name="book"))
    else:
        rr = b.u(0.03, 0.08)
        b.add(Ellipsoid([x, y, z0 + rr * 1.3], [rr, rr, rr * 1.3], material=b.solid(pattern="flat"), name="egg"))
    b.end(kind)


# ------------------------------------------------------------------------------------------------
# outdoor
# ------------------------------------------------------------------------------------------------


def _sky_and_sun(b: Builder):
    mood = b.pick(["clear", "clear", "cloudy", "overcast", "golden"])
    if mood == "golden":
        elev = b.u(5, 20)
        zen, hor = hsv(0.6, 0.5, 0.6), hsv(b.u(0.03, 0.1), 0.5, 0.95)
        sun_col = np.array(hsv(0.08, 0.5, 1.0)) * 3.0
    elif mood == "overcast":
        elev = b.u(30, 70)
        g = b.u(0.6, 0.85)
        zen, hor = hsv(0.6, 0.08, g), hsv(0.6, 0.04, g + 0.1)
        sun_col = np.array([1.0, 1.0, 1.0]) * 0.9
    else:
        elev = b.u(20, 70)
        zen, hor = hsv(b.u(0.56, 0.64), b.u(0.5, 0.8), b.u(0.6, 0.9)), hsv(0.58, b.u(0.1, 0.3), 0.95)
        sun_col = np.array(hsv(0.12, 0.15, 1.0)) * 3.2
    az = b.u(-math.pi, math.pi)
    el = math.radians(elev)
    sun = (math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el))
    clouds = {"clear": b.u(0.0, 0.3), "cloudy": b.u(0.4, 0.7), "overcast": 0.0, "golden": b.u(0.1, 0.5)}[mood]
    sky = {"zenith": zen, "horizon": hor, "clouds": clouds, "cloud_offset": b.u(0, 100)}
    amb = np.array(zen) * 0.5 + np.array(hor) * 0.5
    amb = amb * (1.1 if mood == "overcast" else 0.6)
    soft = 4.0 if mood == "overcast" else b.u(0.8, 2.0)
    return sky, Light("sun", sun, tuple(sun_col), shadow=True, softness=soft), tuple(amb), mood


def _outdoor_camera(b: Builder, x, y, ground=0.0, yaw0=0.0):
    mode = b.pick(["street", "street", "street", "high", "drone"], p=[0.3, 0.3, 0.15, 0.15, 0.1])
    if mode == "street":
        h, pitch = b.u(1.2, 2.2), b.u(-10, 6)
    elif mode == "high":
        h, pitch = b.u(2.5, 6.0), b.u(-20, 0)
    else:
        h, pitch = b.u(8.0, 25.0), b.u(-45, -15)
    yaw = yaw0 + math.radians(float(np.clip(b.rng.normal(0, 18), -60, 60)))
    roll = math.radians(float(np.clip(b.rng.normal(0, 2.5), -8, 8)))
    fov = b.u(50, 100)
    pos = np.array([x, y, ground + h])
    return b.camera(pos, look_rotation(yaw, math.radians(pitch), roll), fov), mode, fov


def _building(b: Builder, x0, x1, y0, y1, facing: float):
    """A building occupying [x0, x1] x [y0, y1] with its facade towards -facing*x... (facing = side)."""
    h = b.u(4.0, 35.0) if b.chance(0.8) else b.u(35, 60)
    style = b.pick(["facade", "facade", "brick", "flat"])
    if style == "facade":
        c0 = b.pal.neutral(b.u(0.4, 0.9)) if b.chance(0.6) else b.pal.color(v=b.u(0.4, 0.85))
        m = b.mat(Material("facade", c0, hsv(0.6, 0.2, b.u(0.08, 0.25)), hsv(0.12, 0.4, 0.9), scale=b.u(2.8, 3.6),
                           params={"window_w": b.u(0.3, 0.75), "window_h": b.u(0.4, 0.7), "spacing": b.u(1.5, 4.0)},
                           offset=(b.u(0, 10), 0.0), gloss=0.1))
    elif style == "brick":
        m = b.brick()
    else:
        m = b.mat(Material("noise", b.pal.neutral(), b.pal.neutral(0.4), scale=b.u(1, 5)))
    b.begin()
    b.add(Box([(x0 + x1) / 2, (y0 + y1) / 2, h / 2], [(x1 - x0) / 2, (y1 - y0) / 2, h / 2], material=m,
              name="building"))
    if b.chance(0.4):
        # a roof structure or upper setback
        s = b.u(0.4, 0.8)
        h2 = b.u(2.0, 8.0)
        b.add(Box([(x0 + x1) / 2, (y0 + y1) / 2, h + h2 / 2], [(x1 - x0) / 2 * s, (y1 - y0) / 2 * s, h2 / 2],
                  material=m, name="building_top"))
    if b.chance(0.3):
        # an awning / balcony slab along the street side
        xf = x0 if facing > 0 else x1
        b.add(Box([xf - facing * 0.6, (y0 + y1) / 2, b.u(2.8, 3.5)], [0.6, (y1 - y0) / 2 * 0.9, 0.05],
                  material=b.solid(accent=True, pattern=b.pick(["flat", "stripes"])), name="awning"))
    b.end("building", height=round(h, 2))


def build_outdoor(b: Builder) -> Scene:
    layout = b.pick(["street", "street", "park", "plaza"])
    sky, sun, amb, mood = _sky_and_sun(b)
    r = b.rng
    if layout == "street":
        hw = b.u(3.0, 7.5)
        sw = b.u(1.5, 4.5)
        ground = b.mat(Material("street", hsv(0.6, 0.05, b.u(0.25, 0.45)), hsv(0.25, 0.3, b.u(0.3, 0.5)),
                                (0.9, 0.9, 0.85), params={"half_width": hw, "marks": b.chance(0.85)}))
        b.add(Plane(0.0, material=ground, casts_shadow=False, name="ground"))
        side_m = b.mat(Material("tiles", b.pal.neutral(b.u(0.5, 0.8)), b.pal.neutral(b.u(0.4, 0.7)),
                                b.pal.neutral(0.35), scale=b.u(1.5, 4.0)))
        kerb = b.u(0.1, 0.18)
        for s in (-1, 1):
            b.add(Box([s * (hw + sw / 2), 60.0, kerb / 2], [sw / 2, 120.0, kerb / 2], material=side_m,
                      casts_shadow=False, name="sidewalk"))
        def redraw():
            return _outdoor_camera(b, b.u(-hw + 1.0, hw - 1.0), 0.0, yaw0=0.0 if b.chance(0.85) else math.pi)

        cam, mode, fov = redraw()
        for s in (-1, 1):
            y = b.u(-40.0, -5.0)
            while y < 160.0:
                wlen = b.u(6.0, 30.0)
                if b.chance(0.85):
                    x0 = hw + sw + b.u(0.0, 4.0)
                    depth = b.u(8.0, 25.0)
                    xa, xb = (x0, x0 + depth) if s > 0 else (-x0 - depth, -x0)
                    _building(b, xa, xb, y, y + wlen, s)
                y += wlen + (b.u(0.0, 1.0) if b.chance(0.7) else b.u(3.0, 15.0))
            # street furniture on this side
            gap = b.u(12.0, 30.0)
            y = b.u(-10.0, 5.0)
            while y < 100.0:
                b.street_light(s * (hw + 0.4), y, -s, z0=kerb)
                y += gap
            y = b.u(-5.0, 10.0)
            if b.chance(0.6):
                while y < 90.0:
                    b.tree(s * (hw + sw * b.u(0.4, 0.7)), y, z0=kerb)
                    y += b.u(8.0, 25.0)
            for _ in range(int(r.integers(0, 6))):
                b.car(s * (hw - 1.2), b.u(-5.0, 70.0), b.pick([0.0, math.pi]))
            for _ in range(int(r.integers(0, 3))):
                b.sign(s * (hw + 0.5), b.u(0.0, 60.0), b.u(-0.5, 0.5))
            for _ in range(int(r.integers(0, 4))):
                b.person(s * (hw + b.u(0.5, sw)), b.u(2.0, 50.0), z0=kerb)
            if b.chance(0.3):
                b.fence(s * (hw + sw - 0.2), b.u(0, 20), s * (hw + sw - 0.2), b.u(25, 60), z0=kerb)
            for _ in range(int(r.integers(0, 4))):
                b.begin()
                b.add(Cylinder([s * (hw + 0.3), b.u(0, 40), kerb + 0.45], 0.07, 0.45, material=b.metal(),
                               name="bollard"))
                b.end("bollard")
        for _ in range(int(r.integers(0, 4))):  # moving traffic
            lane = b.pick([-1, 1])
            b.car(lane * hw * b.u(0.2, 0.6), b.u(6.0, 80.0), 0.0 if lane > 0 else math.pi)
    else:
        if layout == "park":
            ground = b.mat(Material("grass", hsv(b.u(0.18, 0.3), b.u(0.4, 0.7), b.u(0.25, 0.45)),
                                    hsv(b.u(0.15, 0.25), b.u(0.4, 0.7), b.u(0.35, 0.6)), hsv(0.08, 0.35, 0.45),
                                    scale=b.u(0.1, 0.5), offset=(b.u(0, 100), b.u(0, 100))))
        else:
            ground = b.mat(Material("tiles", b.pal.neutral(b.u(0.5, 0.85)), b.pal.color(v=b.u(0.4, 0.8)),
                                    b.pal.neutral(0.3), scale=b.u(0.3, 1.5), angle=b.u(0, 1.5),
                                    params={"alternate": float(b.chance(0.5))}))
        b.add(Plane(0.0, material=ground, casts_shadow=False, name="ground"))
        def redraw():
            return _outdoor_camera(b, 0.0, 0.0, yaw0=b.u(-math.pi, math.pi))

        cam, mode, fov = redraw()
        fwd = cam.R[:, 2]
        fwd2 = fwd[:2] / max(np.linalg.norm(fwd[:2]), 1e-6)

        def ahead(dmin, dmax, spread):
            dist = b.u(dmin, dmax)
            lat = b.u(-spread, spread) * dist
            side = np.array([fwd2[1], -fwd2[0]])
            p = fwd2 * dist + side * lat
            return float(p[0]), float(p[1])

        if layout == "park":
            for _ in range(int(r.integers(2, 7))):  # relief: buried ellipsoid mounds
                x, y = ahead(8, 70, 1.0)
                rx, rz = b.u(4, 20), b.u(0.8, 4.0)
                b.begin()
                b.add(Ellipsoid([x, y, -rz * b.u(0.2, 0.6)], [rx, rx * b.u(0.6, 1.4), rz], rot_z(b.u(0, 3)),
                                material=ground, casts_shadow=True, name="mound", world_uv=True))
                b.end("mound")
            for _ in range(int(r.integers(3, 14))):
                x, y = ahead(4, 60, 1.0)
                b.tree(x, y)
            for _ in range(int(r.integers(0, 8))):
                x, y = ahead(3, 30, 1.0)
                b.begin()
                fm = b.foliage()
                for _k in range(int(r.integers(1, 4))):
                    rr = b.u(0.3, 0.9)
                    b.add(Ellipsoid([x + b.u(-0.6, 0.6), y + b.u(-0.6, 0.6), rr * 0.6], [rr, rr, rr * 0.8],
                                    material=fm, name="bush"))
                b.end("bush")
            for _ in range(int(r.integers(0, 6))):
                x, y = ahead(3, 40, 1.0)
                b.rock(x, y, size=b.u(0.3, 2.0))
            for _ in range(int(r.integers(0, 3))):
                x, y = ahead(3, 20, 0.7)
                b.bench(x, y, b.u(-math.pi, math.pi))
            if b.chance(0.5):
                x, y = ahead(4, 15, 0.5)
                a = b.u(-math.pi, math.pi)
                L = b.u(8, 30)
                b.fence(x, y, x + L * math.sin(a), y + L * math.cos(a))
            if b.chance(0.5):  # a path
                a = b.u(-math.pi, math.pi)
                pm = b.mat(Material("noise", hsv(0.08, 0.25, b.u(0.5, 0.75)), hsv(0.08, 0.2, 0.4), scale=0.3))
                b.add(Box([0, 0, 0.005], [b.u(0.8, 2.0), 80.0, 0.005], rot_z(a), material=pm, casts_shadow=False,
                          name="path"))
            for _ in range(int(r.integers(0, 4))):
                x, y = ahead(40, 90, 1.2)
                _building(b, x - 10, x + 10, y - 8, y + 8, 1)
        else:  # plaza surrounded by buildings
            R0 = b.u(15, 40)
            n = int(r.integers(6, 14))
            for k in range(n):
                a = 2 * math.pi * k / n + b.u(-0.1, 0.1)
                cx, cy = R0 * math.sin(a), R0 * math.cos(a)
                s = b.u(6, 14)
                _building(b, cx - s, cx + s, cy - s, cy + s, 1)
            for _ in range(int(r.integers(2, 10))):
                x, y = ahead(3, 25, 1.0)
                kind = b.pick(["column", "sculpture", "tree", "light", "planter", "person", "bench"])
                if kind == "column":
                    h = b.u(3, 10)
                    b.begin()
                    b.add(Cylinder([x, y, h / 2], b.u(0.2, 0.6), h / 2, material=b.solid(pattern=b.pick(
                        ["marble", "flat", "noise"])), name="column"))
                    b.end("column")
                elif kind == "sculpture":
                    b.begin()
                    base = b.u(0.5, 1.5)
                    m = b.solid(pattern=b.pick(["marble", "flat", "noise"]))
                    b.add(Box([x, y, base / 2], [b.u(0.4, 1.0), b.u(0.4, 1.0), base / 2], material=m, name="plinth"))
                    rr = b.u(0.4, 1.2)
                    b.add(Ellipsoid([x, y, base + rr], [rr, rr * b.u(0.6, 1.3), rr * b.u(0.7, 1.5)],
                                    rot_z(b.u(0, 3)), material=b.metal(), name="sculpture"))
                    b.end("sculpture")
                elif kind == "tree":
                    b.tree(x, y)
                elif kind == "light":
                    b.street_light(x, y, b.pick([-1, 1]))
                elif kind == "planter":
                    b.begin()
                    s = b.u(0.5, 1.5)
                    b.add(Box([x, y, 0.3], [s, s, 0.3], material=b.solid(pattern="flat"), name="planter"))
                    b.end("planter")
                    b.plant(x, y, z0=0.6, scale=b.u(1.5, 3.0))
                elif kind == "person":
                    b.person(x, y)
                else:
                    b.bench(x, y, b.u(-math.pi, math.pi))
    for _try in range(5):  # not from inside or right behind a car, tree or wall
        if b.probe_median_depth(cam, near=4.0) > 2.5:
            break
        cam, mode, fov = redraw()
    fog = b.u(150, 600) if mood != "overcast" else b.u(80, 250)
    return Scene("outdoor", cam, b.prims, b.materials, [sun], ambient=amb, sky=sky, fog_distance=fog, ambient_up=0.3,
                 fog_color=tuple(sky["horizon"]), max_depth=80.0, ao_strength=b.u(0.3, 0.6),
                 noise_sigma=b.u(0.003, 0.012), exposure_key=b.u(0.75, 0.95),
                 meta={"layout": layout, "camera_mode": mode, "sky": mood, "fov_deg": round(fov, 2)})


# ------------------------------------------------------------------------------------------------
# object (close range, table-top)
# ------------------------------------------------------------------------------------------------


def build_object(b: Builder) -> Scene:
    r = b.rng
    support = b.pick(["table", "table", "floor"])
    top_m = (b.wood(scale=b.u(0.05, 0.2), gloss=0.2) if b.chance(0.4) else
             b.mat(Material(b.pick(["marble", "fabric", "checker", "noise", "flat"]), b.pal.neutral(),
                            b.pal.color(v=b.u(0.3, 0.8)), scale=b.u(0.03, 0.3), gloss=b.u(0, 0.4))))
    room_w = b.u(3.0, 7.0)
    room_d = room_w * b.u(0.8, 1.3)
    wall_m = b.wall_material()
    if support == "table":
        tw, td, th = b.u(0.8, 2.0), b.u(0.6, 1.2), b.u(0.65, 0.8)
        floor_z = -th
    else:
        floor_z = 0.0
    ox, oy = b.u(-0.3, 0.3) * room_w, b.u(-0.3, 0.3) * room_d
    rh = b.u(2.4, 3.2)
    b.add(Box([ox, oy, floor_z + rh / 2], [room_w / 2, room_d / 2, rh / 2], inside=True, material=wall_m,
              casts_shadow=False, name="room"))
    floor_m = b.floor_material() if support == "table" else top_m
    b.add(Box([ox, oy, floor_z - 0.003], [room_w / 2 + 0.1, room_d / 2 + 0.1, 0.005], material=floor_m,
              casts_shadow=False, name="floor"))
    if support == "table":
        b.begin()
        b.add(Box([0, 0, -0.02], [tw / 2, td / 2, 0.02], material=top_m, name="table_top"))
        ml = b.metal()
        for sx in (-1, 1):
            for sy in (-1, 1):
                b.add(Box([sx * (tw / 2 - 0.05), sy * (td / 2 - 0.05), -th / 2], [0.025, 0.025, th / 2 - 0.04],
                          material=ml, name="table_leg"))
        b.end("table")
        reach = min(tw, td) / 2 - 0.05
    else:
        reach = 0.6
    spread = b.u(0.15, reach)
    n = int(r.integers(2, 9))
    for _ in range(n):
        x, y = b.u(-spread, spread), b.u(-spread, spread)
        kind = b.pick(["sphere", "cylinder", "box", "ellipsoid", "stack", "rod", "bottle", "torus_like"])
        b.begin()
        if kind == "sphere":
            rr = b.u(0.02, 0.15)
            b.add(Ellipsoid([x, y, rr], rr, material=b.solid(gloss=b.u(0, 0.8)), name="sphere"))
        elif kind == "cylinder":
            rr, hh = b.u(0.02, 0.1), b.u(0.03, 0.3)
            if b.chance(0.3):  # lying on its side
                R = rot_z(b.u(0, math.pi)) @ frame_from_axis([1.0, 0.0, 0.0])
                b.add(Cylinder([x, y, rr], rr, hh / 2, R, material=b.solid(gloss=0.3), name="cylinder"))
            else:
                b.add(Cylinder([x, y, hh / 2], rr, hh / 2, material=b.solid(gloss=0.3), name="cylinder"))
        elif kind == "box":
            s = [b.u(0.02, 0.15), b.u(0.02, 0.15), b.u(0.01, 0.12)]
            b.add(Box([x, y, s[2]], s, rot_z(b.u(0, math.pi)), material=b.solid(), name="box"))
        elif kind == "ellipsoid":
            rr = np.array([b.u(0.02, 0.1), b.u(0.02, 0.1), b.u(0.02, 0.1)])
            b.add(Ellipsoid([x, y, rr[2]], rr, rot_z(b.u(0, math.pi)), material=b.solid(gloss=0.3), name="ellipsoid"))
        elif kind == "stack":
            z = 0.0
            for _k in range(int(r.integers(2, 5))):
                s = [b.u(0.03, 0.1), b.u(0.03, 0.1), b.u(0.01, 0.05)]
                b.add(Box([x + b.u(-0.01, 0.01), y + b.u(-0.01, 0.01), z + s[2]], s, rot_z(b.u(0, math.pi)),
                          material=b.solid(), name="block"))
                z += 2 * s[2]
        elif kind == "rod":  # pencils, chopsticks: thin structures
            L = b.u(0.1, 0.35)
            rr = b.u(0.003, 0.008)
            R = rot_z(b.u(0, math.pi)) @ frame_from_axis([1.0, 0.0, 0.0])
            b.add(Cylinder([x, y, rr], rr, L / 2, R, material=b.solid(accent=True, pattern="flat"), name="rod"))
        elif kind == "bottle":
            rr, hh = b.u(0.025, 0.05), b.u(0.12, 0.3)
            m = b.solid(gloss=0.7, pattern="flat")
            b.add(Cylinder([x, y, hh / 2], rr, hh / 2, material=m, name="bottle"))
            b.add(Cylinder([x, y, hh + 0.035], rr * 0.35, 0.035, material=m, name="bottle_neck"))
            b.add(Cylinder([x, y, hh + 0.075], rr * 0.42, 0.008, material=b.solid(accent=True, pattern="flat"),
                           name="cap"))
        else:  # a ring of small spheres (a torus-like necklace)
            R0 = b.u(0.04, 0.1)
            rr = b.u(0.006, 0.015)
            m = b.solid(accent=True, gloss=0.6, pattern="flat")
            k = int(2 * math.pi * R0 / (1.9 * rr))
            for j in range(min(k, 60)):
                a = 2 * math.pi * j / k
                b.add(Ellipsoid([x + R0 * math.cos(a), y + R0 * math.sin(a), rr], rr, material=m, name="bead"))
        b.end(kind)
    # camera on a sphere around the cluster
    dist = b.u(0.35, 1.5)
    elev = math.radians(b.u(12, 65))
    az = b.u(-math.pi, math.pi)
    target = np.array([b.u(-0.05, 0.05), b.u(-0.05, 0.05), b.u(0.0, 0.06)])
    pos = target + dist * np.array([math.sin(az) * math.cos(elev), math.cos(az) * math.cos(elev), math.sin(elev)])
    roll = math.radians(float(np.clip(r.normal(0, 4), -12, 12)))
    fov = b.u(35, 75)
    cam = b.camera(pos, look_at(pos, target, roll), fov)
    for _try in range(4):  # back off when the camera would sit inside or against an object
        if b.probe_median_depth(cam) > 0.2:
            break
        dist *= 1.4
        pos = target + dist * np.array([math.sin(az) * math.cos(elev), math.cos(az) * math.cos(elev), math.sin(elev)])
        cam = b.camera(pos, look_at(pos, target, roll), fov)
    key_el, key_az = math.radians(b.u(25, 75)), b.u(-math.pi, math.pi)
    key = Light("sun", (math.sin(key_az) * math.cos(key_el), math.cos(key_az) * math.cos(key_el), math.sin(key_el)),
                tuple(np.array(hsv(b.u(0.05, 0.15), b.u(0, 0.3), 1.0)) * b.u(1.5, 2.5)), shadow=True,
                softness=b.u(1.0, 3.0))
    lights = [key]
    if b.chance(0.6):
        lights.append(Light("point", tuple(pos + np.array([b.u(-1, 1), b.u(-1, 1), b.u(0.3, 1.0)])),
                            tuple(np.array(hsv(b.u(0.5, 0.65), b.u(0, 0.3), 1.0)) * b.u(0.4, 1.0)), shadow=False,
                            falloff=2.0))
    amb = np.array(hsv(b.pal.hue, 0.1, 1.0)) * b.u(0.15, 0.35)
    return Scene("object", cam, b.prims, b.materials, lights, ambient=tuple(amb), sky=None, max_depth=80.0,
                 ao_strength=b.u(0.4, 0.7), noise_sigma=b.u(0.003, 0.012), exposure_key=b.u(0.7, 0.95),
                 meta={"layout": support, "fov_deg": round(fov, 2)})


BUILDERS = {"indoor": build_indoor, "outdoor": build_outdoor, "object": build_object}
