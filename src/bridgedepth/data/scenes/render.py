"""Shading: z-buffer ray cast, textures, Lambert + Blinn lighting, shadow maps, screen-space AO, sky,
aerial perspective, tone mapping. All passes are whole-image NumPy operations.

Three *looks* render the same geometry (the scene description is built before any look is chosen):

* ``standard`` — the full shader (textures, shadows, AO, gloss, fog, sky), the historical default;
* ``synthetic`` — what the toy's source datasets look like: one flat colour per surface snapped to a
  narrow palette, ambient plus one shadowless headlight, a plain gradient sky, aliased edges, no
  camera effects (the analogue of simple synthetic renders);
* ``real`` — stands in for photographs: the full shader followed by a camera model (exposure and
  white-balance error, vignetting, lens blur, chromatic aberration, signal-dependent sensor noise,
  JPEG compression), each drawn per scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .geometry import Camera, frame_from_axis, look_rotation, raycast
from .textures import Material, fbm


@dataclass
class Light:
    kind: str  # "sun" (directional; `vec` points towards the light) or "point" (`vec` is its position)
    vec: tuple
    color: tuple = (1.0, 1.0, 1.0)
    shadow: bool = True
    softness: float = 1.5  # PCF radius in shadow-map texels
    falloff: float = 4.0  # point lights: distance (m) at which intensity halves


@dataclass
class Scene:
    kind: str
    camera: Camera
    prims: list
    materials: list
    lights: list
    ambient: tuple = (0.25, 0.25, 0.28)
    sky: dict | None = None  # {"zenith", "horizon", "clouds", "cloud_color"}
    fog_distance: float = 0.0  # 0 = none
    fog_color: tuple = (0.7, 0.75, 0.8)
    max_depth: float = 80.0
    ao_strength: float = 0.5
    ambient_up: float = 0.0  # hemisphere ambient: 0 uniform, 1 only upward-facing surfaces
    noise_sigma: float = 0.01
    exposure_key: float = 0.8
    meta: dict = field(default_factory=dict)


SHADOW_RES = 192  # shadow-map side in texels


def _shadow_camera(light: Light, pts: np.ndarray, casters: list) -> Camera | None:
    """A camera looking from the light over the receiver points (N, 3)."""
    if light.kind == "sun":
        L = np.asarray(light.vec, float)
        L = L / np.linalg.norm(L)
        R = frame_from_axis(-L)
        q = pts @ R
        lo = q.min(0)
        hi = q.max(0)
        zmin = lo[2]
        cq = np.concatenate([p.corners() for p in casters if p.corners() is not None] or [np.zeros((0, 3))]) @ R
        if len(cq) == 0:
            return None
        # the map only needs to cover where casters and receivers overlap in the light's view
        lo[:2] = np.maximum(lo[:2], cq[:, :2].min(0))
        hi[:2] = np.minimum(hi[:2], cq[:, :2].max(0))
        if np.any(hi[:2] <= lo[:2]):
            return None
        zmin = min(zmin, float(cq[:, 2].min()))
        span = np.maximum(hi[:2] - lo[:2], 0.05)
        fx, fy = (SHADOW_RES - 1) / span[0], (SHADOW_RES - 1) / span[1]
        mid = (lo[:2] + hi[:2]) / 2
        pos = R @ np.array([mid[0], mid[1], zmin - 1.0])
        return Camera(pos, R, fx, fy, (SHADOW_RES - 1) / 2, (SHADOW_RES - 1) / 2, SHADOW_RES, SHADOW_RES, ortho=True)
    R = look_rotation(0.0, -math.pi / 2 + 1e-3)
    # a downward-looking perspective map just wide enough for the receivers below the light
    lp = np.asarray(light.vec, float)
    below = pts[pts[:, 2] < lp[2] - 0.05]
    if len(below) == 0:
        return None
    tan = np.hypot(below[:, 0] - lp[0], below[:, 1] - lp[1]) / (lp[2] - below[:, 2])
    tmax = float(np.clip(np.percentile(tan, 99), 1.0, math.tan(math.radians(80))))
    f = (SHADOW_RES / 2) / tmax
    return Camera(light.vec, R, f, f, (SHADOW_RES - 1) / 2, (SHADOW_RES - 1) / 2, SHADOW_RES, SHADOW_RES)


def shadow_factor(light: Light, pts: np.ndarray, prims: list) -> np.ndarray:
    """Lit fraction in [0, 1] for world points (N, 3) (percentage-closer filtered shadow map)."""
    casters = [p for p in prims if p.casts_shadow]
    if not casters or len(pts) == 0:
        return np.ones(len(pts), np.float32)
    cam = _shadow_camera(light, pts, casters)
    if cam is None:
        return np.ones(len(pts), np.float32)
    tmap, _, _ = raycast(cam, prims, shadow_casters_only=True)
    q = cam.to_camera(pts).astype(np.float32)
    if cam.ortho:
        u = q[:, 0] * cam.fx + cam.cx
        v = q[:, 1] * cam.fy + cam.cy
        z = q[:, 2]
        texel = max(1.0 / cam.fx, 1.0 / cam.fy)
        bias = np.float32(2.5 * texel + 0.02)
        front = np.ones(len(pts), bool)
    else:
        z = q[:, 2]
        front = z > 0.05
        zs = np.where(front, z, 1.0)
        u = q[:, 0] / zs * cam.fx + cam.cx
        v = q[:, 1] / zs * cam.fy + cam.cy
        bias = (0.02 + 3.0 * zs / cam.fx).astype(np.float32)
    r = max(1, int(round(light.softness)))
    taps = [(0, 0), (r, r), (-r, r), (r, -r), (-r, -r)]
    occl = np.zeros(len(pts), np.float32)
    Hs, Ws = tmap.shape
    ui0 = np.rint(u).astype(np.int32)
    vi0 = np.rint(v).astype(np.int32)
    zb = z - bias
    for du, dv in taps:
        ui = np.clip(ui0 + du, 0, Ws - 1)
        vi = np.clip(vi0 + dv, 0, Hs - 1)
        occl += tmap[vi, ui] < zb
    lit = 1.0 - occl / np.float32(len(taps))
    inside = (u >= 0) & (u <= Ws - 1) & (v >= 0) & (v <= Hs - 1)
    return np.where(front & inside, lit, 1.0).astype(np.float32)


def _screen_ao(t: np.ndarray, hit: np.ndarray, strength: float) -> np.ndarray:
    """Ambient occlusion from the depth buffer: pixels farther than their blurred neighbourhood in
    disparity (creases, contact regions) get darker; large discontinuities fade out (no halos)."""
    if strength <= 0:
        return np.ones_like(t)
    disp = np.where(hit, 1.0 / np.maximum(t, 1e-3), 0.0).astype(np.float32)
    H, W = t.shape
    sigma = max(min(H, W) / 60.0, 1.0)
    blur = cv2.GaussianBlur(disp, (0, 0), sigma)
    x = np.maximum(blur - disp, 0.0) / np.maximum(disp, 1e-4)
    f = x / (x + 0.08) / (1.0 + 4.0 * x * x)
    return (1.0 - np.float32(strength) * np.clip(f, 0.0, 1.0)).astype(np.float32)


def _sky(scene: Scene, d: tuple, sun_dir) -> np.ndarray:
    sky = scene.sky or {}
    dx, dy, dz = d
    inv = 1.0 / np.sqrt(dx * dx + dy * dy + dz * dz)
    ez = dz * inv
    zen = np.asarray(sky.get("zenith", (0.2, 0.35, 0.7)), np.float32)[:, None]
    hor = np.asarray(sky.get("horizon", (0.7, 0.75, 0.85)), np.float32)[:, None]
    t = np.sqrt(np.clip(ez, 0.0, 1.0))[None]
    col = hor + (zen - hor) * t
    cl = float(sky.get("clouds", 0.0))
    if cl > 0:
        up = np.maximum(ez, 0.02)
        cu = dx * inv / up * 0.6 + float(sky.get("cloud_offset", 0.0))
        cv = dy * inv / up * 0.6
        n = fbm(cu, cv, 4)
        c = np.clip((n - (1.0 - cl)) * 3.0, 0.0, 1.0) * np.clip(ez * 8.0, 0.0, 1.0)
        ccol = np.asarray(sky.get("cloud_color", (0.95, 0.95, 0.95)), np.float32)[:, None]
        col = col + (ccol * (0.75 + 0.25 * n[None]) - col) * c[None]
    if sun_dir is not None:
        L = np.asarray(sun_dir, np.float32)
        L = L / np.linalg.norm(L)
        cs = np.clip((dx * L[0] + dy * L[1] + dz * L[2]) * inv, 0.0, 1.0)
        col = col + np.float32(0.6) * (cs**64)[None] + np.float32(0.15) * (cs**8)[None]
    return col.astype(np.float32)


LOOKS = ("standard", "synthetic", "real")

# The synthetic look's palette: 8 hues x 3 values at reduced saturation (a "narrow palette").
_PALETTE_HUES = 8
_PALETTE_VALUES = (0.35, 0.55, 0.78)


def _palette_colour(rgb: np.ndarray) -> np.ndarray:
    """Snap one linear RGB colour (3,) to the synthetic look's palette."""
    import colorsys

    h, s, v = colorsys.rgb_to_hsv(*[float(np.clip(c, 0.0, 1.0)) for c in rgb])
    h = round(h * _PALETTE_HUES) % _PALETTE_HUES / _PALETTE_HUES
    s = 0.0 if s < 0.12 else 0.35
    v = min(_PALETTE_VALUES, key=lambda x: abs(x - v))
    return np.asarray(colorsys.hsv_to_rgb(h, s, v), np.float32)


def render(scene: Scene, rng: np.random.Generator, look: str = "standard", *, with_sky: bool = False):
    """Render ``scene`` -> (rgb uint8 (H, W, 3), depth float32 metres (0 where invalid), valid bool)
    and, with ``with_sky``, a fourth bool map: the sky (rays that hit nothing in a scene that has a sky;
    a surface beyond ``max_depth`` is invalid but not sky).

    ``look`` is one of :data:`LOOKS` (module docstring); depth, validity and sky do not depend on it."""
    if look not in LOOKS:
        raise ValueError(f"look {look!r}: expected one of {', '.join(LOOKS)}")
    if look == "synthetic":
        rgb, depth, valid, hit = _render_synthetic(scene)
    else:
        rgb, depth, valid, hit = _render_standard(scene, rng)
        if look == "real":
            rgb = camera_effects(rgb, rng)
    if not with_sky:
        return rgb, depth, valid
    sky = ~hit if scene.sky is not None else np.zeros(hit.shape, bool)
    return rgb, depth, valid, sky


def _cast(scene: Scene):
    """Ray cast of the camera: (t, pid, hit, tt, world points P (3, H, W)) and an iterator over the
    primitives' visible pixels yielding (primitive, flat pixel indices, normals, uv)."""
    cam = scene.camera
    W = cam.W
    t, pid, fps = raycast(cam, scene.prims)
    hit = np.isfinite(t)
    tt = np.where(hit, t, 0.0).astype(np.float32)
    d = cam.dirs
    P = np.stack([np.float32(cam.pos[k]) + tt * d[k] for k in range(3)])  # (3, H, W)
    Pf = P.reshape(3, -1)

    def surfaces():
        for i, p in enumerate(scene.prims):
            fp = fps[i]
            if fp is None:
                continue
            y0, y1, x0, x1 = fp
            ys, xs = np.nonzero(pid[y0:y1, x0:x1] == i)
            if len(ys) == 0:
                continue
            flat = (ys + y0) * W + (xs + x0)
            n, uv = p.surface(Pf[0, flat], Pf[1, flat], Pf[2, flat])
            if p.world_uv:
                uv = Pf[:2, flat]
            yield p, flat, n, uv

    return t, pid, hit, tt, P, surfaces


def _render_synthetic(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flat palette colours, ambient + headlight Lambert, gradient sky; deterministic (no noise)."""
    cam = scene.camera
    H, W = cam.H, cam.W
    t, pid, hit, tt, P, surfaces = _cast(scene)
    d = cam.dirs
    N = np.zeros((3, H * W), np.float32)
    A = np.zeros((3, H * W), np.float32)
    for p, flat, n, uv in surfaces():
        N[:, flat] = n
        A[:, flat] = _palette_colour(scene.materials[p.material].albedo(uv).mean(1))[:, None]
    N = N.reshape(3, H, W)
    A = A.reshape(3, H, W)
    facing = N[0] * d[0] + N[1] * d[1] + N[2] * d[2]
    np.negative(N, out=N, where=(facing > 0)[None])
    # a headlight from above-left of the camera, in world coordinates
    L = np.asarray(cam.R, np.float64) @ np.array([-0.35, -0.5, -0.8])
    L = (L / np.linalg.norm(L)).astype(np.float32)
    ndl = np.maximum(N[0] * L[0] + N[1] * L[1] + N[2] * L[2], 0.0)
    color = A * (np.float32(0.5) + np.float32(0.5) * ndl)[None]
    if scene.sky is not None:
        ez = d[2] / np.sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2])
        zen = _palette_colour(np.asarray(scene.sky.get("zenith", (0.2, 0.35, 0.7))))[:, None, None]
        hor = _palette_colour(np.asarray(scene.sky.get("horizon", (0.7, 0.75, 0.85))))[:, None, None]
        sky = hor + (zen - hor) * np.clip(ez, 0.0, 1.0)[None]
        color = np.where(hit[None], color, sky)
    else:
        color = np.where(hit[None], color, 0.0)
    img = np.sqrt(np.clip(color, 0.0, 1.0)).transpose(1, 2, 0)
    rgb = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    valid = hit & (t <= scene.max_depth)
    depth = np.where(valid, t, 0.0).astype(np.float32)
    return np.ascontiguousarray(rgb), depth, valid, hit


CAMERA_EFFECTS = ("exposure", "vignetting", "blur", "aberration", "noise", "jpeg")


def camera_effects(rgb: np.ndarray, rng: np.random.Generator, skip: tuple | frozenset = ()) -> np.ndarray:
    """A photograph-like camera model applied to an sRGB-ish uint8 render; parameters drawn from ``rng``:
    exposure error (+-0.7 EV) and white balance (+-12 % per channel), vignetting, lens blur,
    lateral chromatic aberration, signal-dependent sensor noise, JPEG compression (quality 55-90).
    ``skip`` names effects of :data:`CAMERA_EFFECTS` to leave out (for studies of the look gap); their
    parameters are still drawn, so the other effects and later draws of ``rng`` stay the same. The
    tone shoulder (`x / (1 + 0.15 x)` in linear light) is the camera's response and always applies."""
    unknown = set(skip) - set(CAMERA_EFFECTS)
    if unknown:
        raise ValueError(f"camera effects {sorted(unknown)}: expected some of {', '.join(CAMERA_EFFECTS)}")
    H, W = rgb.shape[:2]
    lin = (rgb.astype(np.float32) / np.float32(255.0)) ** 2
    ev = float(rng.uniform(-0.7, 0.7))
    wb = rng.uniform(0.88, 1.12, 3).astype(np.float32)
    if "exposure" not in skip:
        lin = lin * np.float32(2.0**ev) * wb[None, None, :]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    r2 = ((xx - (W - 1) / 2) / (W / 2)) ** 2 + ((yy - (H - 1) / 2) / (H / 2)) ** 2
    vig = np.float32(rng.uniform(0.15, 0.45))
    if "vignetting" not in skip:
        lin = lin * (1.0 - vig * r2 / 2.0)[..., None]
    img = np.sqrt(np.clip(lin / (1.0 + 0.15 * lin), 0.0, 1.0)).astype(np.float32)
    sigma = float(rng.uniform(0.25, 0.9)) * min(H, W) / 256.0
    if sigma > 0.2 and "blur" not in skip:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    ca = float(rng.uniform(0.0, 0.6)) * min(H, W) / 256.0
    if ca > 0.05 and "aberration" not in skip:
        for ch, sgn in ((0, 1.0), (2, -1.0)):
            m = np.float32([[1 + sgn * ca / W, 0, -sgn * ca / 2], [0, 1 + sgn * ca / H, -sgn * ca / 2]])
            img[..., ch] = cv2.warpAffine(img[..., ch], m, (W, H), flags=cv2.INTER_LINEAR,
                                          borderMode=cv2.BORDER_REFLECT)
    shot = float(rng.uniform(2e-4, 1.5e-3))
    read = float(rng.uniform(0.002, 0.01))
    noise = rng.standard_normal((H, W, 3), dtype=np.float32)
    if "noise" not in skip:
        img = img + noise * np.sqrt(shot * np.clip(img, 0, 1) + read * read).astype(np.float32)
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    q = int(rng.integers(55, 91))
    ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    if ok and "jpeg" not in skip:
        out = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    return out


def _render_standard(scene: Scene, rng: np.random.Generator):
    cam = scene.camera
    H, W = cam.H, cam.W
    t, pid, hit, tt, P, surfaces = _cast(scene)
    d = cam.dirs
    Pf = P.reshape(3, -1)

    N = np.zeros((3, H * W), np.float32)
    A = np.zeros((3, H * W), np.float32)
    gloss = np.zeros(H * W, np.float32)
    shin = np.ones(H * W, np.float32)
    emit = np.zeros(H * W, np.float32)
    for p, flat, n, uv in surfaces():
        m: Material = scene.materials[p.material]
        N[:, flat] = n
        A[:, flat] = m.albedo(uv)
        if m.gloss:
            gloss[flat] = m.gloss
            shin[flat] = m.shininess
        if m.emit:
            emit[flat] = m.emit

    N = N.reshape(3, H, W)
    A = A.reshape(3, H, W)
    # face the camera (thin and double-sided surfaces, rooms)
    facing = N[0] * d[0] + N[1] * d[1] + N[2] * d[2]
    np.negative(N, out=N, where=(facing > 0)[None])

    amb = np.asarray(scene.ambient, np.float32)[:, None, None]
    ao = _screen_ao(t, hit, scene.ao_strength)
    if scene.ambient_up:
        ao = ao * (np.float32(1.0 - scene.ambient_up) + np.float32(scene.ambient_up) * N[2])
    light_sum = amb * ao[None]
    gidx = np.flatnonzero(gloss)
    spec_sum = np.zeros((3, gidx.size), np.float32)
    if gidx.size:
        dg = [d[k].ravel()[gidx] for k in range(3)]
        dn = np.sqrt(dg[0] * dg[0] + dg[1] * dg[1] + dg[2] * dg[2])
        Vg = [-dg[k] / dn for k in range(3)]
        Ng = [N[k].ravel()[gidx] for k in range(3)]
        gl, sh_exp = gloss[gidx], shin[gidx]
    sun_dir = None
    idx = np.flatnonzero(hit & (t < min(scene.max_depth, 60.0)))
    pts = Pf[:, idx].T.astype(np.float64)
    for light in scene.lights:
        col = np.asarray(light.color, np.float32)[:, None, None]
        if light.kind == "sun":
            L0 = np.asarray(light.vec, np.float32)
            L0 = L0 / np.linalg.norm(L0)
            sun_dir = L0
            L = [np.float32(L0[k]) for k in range(3)]
            ndl = np.maximum(N[0] * L[0] + N[1] * L[1] + N[2] * L[2], 0.0)
        else:
            Lv = [np.float32(light.vec[k]) - P[k] for k in range(3)]
            d2 = Lv[0] * Lv[0] + Lv[1] * Lv[1] + Lv[2] * Lv[2] + np.float32(1e-8)
            inv = 1.0 / np.sqrt(d2)
            L = [Lv[k] * inv for k in range(3)]
            att = 1.0 / (1.0 + d2 * np.float32(1.0 / light.falloff**2))
            ndl = np.maximum(N[0] * L[0] + N[1] * L[1] + N[2] * L[2], 0.0) * att
        if light.shadow and len(idx):
            sh = np.ones(H * W, np.float32)
            sh[idx] = shadow_factor(light, pts, scene.prims)
            ndl *= sh.reshape(H, W)
        light_sum += col * ndl[None]
        if gidx.size:
            Lg = [L[k] if np.ndim(L[k]) == 0 else L[k].ravel()[gidx] for k in range(3)]
            Hx = [Lg[k] + Vg[k] for k in range(3)]
            hn = np.sqrt(Hx[0] * Hx[0] + Hx[1] * Hx[1] + Hx[2] * Hx[2]) + np.float32(1e-6)
            ndh = np.maximum((Ng[0] * Hx[0] + Ng[1] * Hx[1] + Ng[2] * Hx[2]) / hn, 0.0)
            ndl_g = ndl.ravel()[gidx]
            spec = gl * ndh**sh_exp * np.minimum(ndl_g * 4.0, 1.0)
            spec_sum += np.asarray(light.color, np.float32)[:, None] * spec[None]

    color = A * light_sum
    if emit.any():
        color += A * emit.reshape(1, H, W)
    if gidx.size:
        cf = color.reshape(3, -1)
        cf[:, gidx] += spec_sum

    if scene.fog_distance > 0:
        f = (1.0 - np.exp(-tt / np.float32(scene.fog_distance)))[None]
        fogc = np.asarray(scene.fog_color, np.float32)[:, None, None]
        color += (fogc - color) * f
    if scene.sky is not None:
        sky_idx = np.flatnonzero(~hit)
        if sky_idx.size:
            cf = color.reshape(3, -1)
            cf[:, sky_idx] = _sky(scene, tuple(d[k].ravel()[sky_idx] for k in range(3)), sun_dir)
    else:
        color = np.where(hit[None], color, 0.0)

    # exposure from a subsampled luminance percentile, then a soft shoulder and a gamma-2 encode
    lum = (0.2126 * color[0] + 0.7152 * color[1] + 0.0722 * color[2])[::4, ::4].ravel()
    k = max(int(len(lum) * 0.93), 0)
    ref = float(np.partition(lum, k)[k]) if len(lum) else 1.0
    color *= np.float32(scene.exposure_key / max(ref, 1e-3))
    color /= 1.0 + 0.12 * color
    img = np.sqrt(np.clip(color, 0.0, 1.0))
    img = np.ascontiguousarray(img.transpose(1, 2, 0))

    # soften aliased silhouettes: blend a 3x3 blur in where the primitive id changes
    edge = np.zeros((H, W), bool)
    edge[:, 1:] |= pid[:, 1:] != pid[:, :-1]
    edge[1:, :] |= pid[1:, :] != pid[:-1, :]
    edge[:, :-1] |= edge[:, 1:].copy()
    edge[:-1, :] |= edge[1:, :].copy()
    soft = cv2.blur(img, (3, 3))
    img = np.where(edge[..., None], 0.5 * img + 0.5 * soft, img)

    if scene.noise_sigma > 0:
        img = img + rng.standard_normal((H, W, 3), dtype=np.float32) * np.float32(scene.noise_sigma)
    rgb = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)

    valid = hit & (t <= scene.max_depth)
    depth = np.where(valid, t, 0.0).astype(np.float32)
    return rgb, depth, valid, hit
