"""Procedural scenes: determinism, depth against analytic geometry, intrinsics round trip, sky, diversity."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bridgedepth.data.scenes import build_scene, render_scene
from bridgedepth.data.scenes.geometry import (Box, Camera, Cylinder, Ellipsoid, Plane, look_rotation, raycast)
from bridgedepth.data.scenes.render import Light, Scene, render
from bridgedepth.data.scenes.textures import Material
from bridgedepth.errors import InputError


def _cam(pos, R, H=48, W=64, fov=70.0, cx=None, cy=None):
    fx = (W / 2) / math.tan(math.radians(fov) / 2)
    return Camera(pos, R, fx, fx * 1.02, (W - 1) / 2 if cx is None else cx, (H - 1) / 2 if cy is None else cy, H, W)


def _scene(cam, prims, sky=None):
    mats = [Material("noise", (0.6, 0.5, 0.4), (0.2, 0.3, 0.4), scale=0.3)]
    return Scene("test", cam, prims, mats, [Light("sun", (0.3, -0.5, 1.0))], sky=sky, max_depth=80.0)


def _pixel_rays(cam):
    """Unnormalised world ray directions (H, W, 3), camera-z component 1, computed in float64."""
    v, u = np.mgrid[0:cam.H, 0:cam.W].astype(np.float64)
    d_cam = np.stack([(u - cam.cx) / cam.fx, (v - cam.cy) / cam.fy, np.ones_like(u)], -1)
    return d_cam @ cam.R.T


# ----------------------------------------------------------------------------------------------


def test_deterministic_byte_identical():
    a = render_scene(7, "mixed", (40, 56), index=3)
    b = render_scene(7, "mixed", (40, 56), index=3)
    for k in ("rgb", "depth", "valid", "intrinsics"):
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    assert json.dumps(a["meta"], sort_keys=True) == json.dumps(b["meta"], sort_keys=True)
    assert a["__key__"] == b["__key__"]
    c = render_scene(8, "mixed", (40, 56), index=3)
    d = render_scene(7, "mixed", (40, 56), index=4)
    assert c["rgb"].tobytes() != a["rgb"].tobytes() and d["rgb"].tobytes() != a["rgb"].tobytes()
    assert c["depth"].tobytes() != a["depth"].tobytes()


@pytest.mark.parametrize("kind", ["indoor", "outdoor", "object"])
def test_sample_schema(kind):
    s = render_scene(1, kind, (33, 47), index=2)
    assert s["rgb"].shape == (33, 47, 3) and s["rgb"].dtype == np.uint8
    assert s["depth"].shape == (33, 47) and s["depth"].dtype == np.float32
    assert s["valid"].dtype == bool
    assert s["intrinsics"].dtype == np.float32 and s["intrinsics"].shape == (4,)
    assert np.all(s["depth"][~s["valid"]] == 0)
    assert np.all(s["depth"][s["valid"]] > 0) and np.all(s["depth"][s["valid"]] <= 80.0)
    m = s["meta"]
    assert m["kind"] == kind and m["seed"] == 1 and m["index"] == 2
    assert isinstance(m["objects"], list) and m["objects"], "object list missing"
    assert all("category" in o and o["parts"] for o in m["objects"])
    json.dumps(m)  # JSON-able
    assert "." not in s["__key__"] and "/" not in s["__key__"]


def test_plane_at_known_distance():
    # looking straight down from 3.25 m: every pixel sees the ground at planar depth 3.25
    cam = _cam([0.4, -1.0, 3.25], look_rotation(0.3, -math.pi / 2 + 1e-9))
    rgb, depth, valid = render(_scene(cam, [Plane(0.0)]), np.random.default_rng(0))
    assert valid.all()
    np.testing.assert_allclose(depth, 3.25, rtol=1e-5)
    # a fronto-parallel wall 5 m ahead (box face at y = 5)
    cam = _cam([0.0, 0.0, 1.5], look_rotation(0.0, 0.0))
    wall = Box([0.0, 5.1, 1.5], [50.0, 0.1, 50.0])
    _, depth, valid = render(_scene(cam, [wall]), np.random.default_rng(0))
    assert valid.all()
    np.testing.assert_allclose(depth, 5.0, rtol=1e-5)


def test_tilted_ground_plane_matches_analytic():
    cam = _cam([1.0, 2.0, 1.6], look_rotation(0.7, math.radians(-25), math.radians(8)), H=40, W=60)
    _, depth, valid = render(_scene(cam, [Plane(0.0)], sky={}), np.random.default_rng(0))
    d = _pixel_rays(cam)
    below = d[..., 2] < 0
    t = np.where(below, -1.6 / np.where(below, d[..., 2], -1), 0.0)  # planar depth of the ground hit
    expect_valid = below & (t <= 80.0)
    assert np.array_equal(valid, expect_valid)
    np.testing.assert_allclose(depth[valid], t[valid], rtol=1e-4)
    assert (~valid).any() and valid.any()  # horizon in view: sky above is invalid


def test_sphere_depth_profile_matches_analytic():
    c = np.array([0.3, 4.0, 1.2])
    r = 0.9
    cam = _cam([0.0, 0.0, 1.0], look_rotation(0.05, 0.03), H=64, W=64, fov=40)
    _, depth, valid = render(_scene(cam, [Ellipsoid(c, r)]), np.random.default_rng(0))
    d = _pixel_rays(cam)
    o = cam.pos
    a = (d * d).sum(-1)
    b = (d * (o - c)).sum(-1)
    cc = ((o - c) ** 2).sum() - r * r
    disc = b * b - a * cc
    hit = disc >= 0
    t = np.where(hit, (-b - np.sqrt(np.maximum(disc, 0))) / a, 0.0)
    # silhouette identical except possibly for grazing pixels
    border = hit & (disc < 1e-3 * a * r * r)
    assert np.array_equal(valid & ~border, hit & ~border)
    inner = hit & ~border
    assert inner.sum() > 200
    np.testing.assert_allclose(depth[inner], t[inner], rtol=2e-5, atol=1e-5)
    # nearest point of the sphere: planar depth at the minimum is close to (|c - o| - r) projected
    assert depth[valid].min() >= (np.linalg.norm(c - o) - r) * 0.99 * cam.R[:, 2] @ ((c - o) / np.linalg.norm(c - o))


def test_cylinder_and_oriented_box_depth():
    cam = _cam([0.0, 0.0, 1.0], look_rotation(0.0, 0.0), H=40, W=40, fov=50)
    cyl = Cylinder([0.0, 3.0, 1.0], 0.5, 0.5)  # vertical, axis through the optical axis
    _, depth, valid = render(_scene(cam, [cyl]), np.random.default_rng(0))
    cy_, cx_ = int(round(cam.cy)), int(round(cam.cx))
    assert valid[cy_, cx_]
    d = _pixel_rays(cam)[cy_, cx_]
    # ray hits x^2 + (y-3)^2 = 0.25 at y = 3 - sqrt(0.25 - x^2) with x = t d_x, y = t d_y
    f = lambda t: (t * d[0]) ** 2 + (t * d[1] - 3.0) ** 2 - 0.25  # noqa: E731
    lo, hi = 1.0, 3.0
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if f(mid) > 0 else (lo, mid)
    assert depth[cy_, cx_] == pytest.approx(lo, rel=1e-5)
    # a box rotated 45 degrees about z shows its vertical edge nearest at the centre column
    from bridgedepth.data.scenes.geometry import rot_z

    box = Box([0.0, 4.0, 1.0], [0.5, 0.5, 0.5], rot_z(math.pi / 4))
    _, depth, valid = render(_scene(cam, [box]), np.random.default_rng(0))
    row = depth[cy_]
    assert valid[cy_, cx_]
    # front faces in world coordinates: x + (y - 4) = -a and -x + (y - 4) = -a with a = sqrt(1/2);
    # along the ray (x, y) = t (dx, 1) the entry point is t = (4 - a) / (1 - |dx|)
    a = math.sqrt(0.5)
    for col in (cx_ - 3, cx_, cx_ + 2):
        dx = (col - cam.cx) / cam.fx
        assert depth[cy_, col] == pytest.approx((4.0 - a) / (1 - abs(dx)), rel=1e-5)
    assert row[valid[cy_]].min() == pytest.approx((4.0 - a) / (1 - 0.5 / cam.fx), rel=1e-5)


def _implicit_residual(p, pts):
    """Distance-like residual of world points (N, 3) from the surface of primitive p."""
    x, y, z = p.points_to_local(*(pts.T.astype(np.float32)))
    loc = np.stack([x, y, z], 1).astype(np.float64)
    if isinstance(p, Plane):
        return np.abs(pts[:, 2] - p.height)
    if isinstance(p, Box):
        return np.abs(np.max(np.abs(loc) - p.half, axis=1))
    if isinstance(p, Cylinder):
        rad = np.hypot(loc[:, 0], loc[:, 1])
        return np.minimum(np.abs(rad - p.radius), np.abs(np.abs(loc[:, 2]) - p.hz))
    if isinstance(p, Ellipsoid):
        q = np.sqrt(((loc / p.radii) ** 2).sum(1))
        return np.abs(q - 1.0) * p.radii.min()
    raise AssertionError(type(p))


@pytest.mark.parametrize("kind,index", [("indoor", 0), ("outdoor", 1), ("object", 2)])
def test_backprojection_lands_on_the_hit_surfaces(kind, index):
    size = (36, 52)
    s = render_scene(4, kind, size, index=index)
    scene, _ = build_scene(4, kind, size, index=index)
    cam = scene.camera
    fx, fy, cx, cy = (float(v) for v in s["intrinsics"])
    # the metadata pose agrees with the camera used for rendering
    np.testing.assert_allclose(s["meta"]["camera"]["position"], cam.pos, atol=1e-3)
    np.testing.assert_allclose(s["meta"]["camera"]["rotation"], cam.R, atol=1e-5)
    _, pid, _ = raycast(cam, scene.prims)
    v, u = np.nonzero(s["valid"])
    z = s["depth"][v, u].astype(np.float64)
    pc = np.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], 1)  # camera coordinates from intrinsics
    pw = pc @ cam.R.T + cam.pos
    ids = pid[v, u]
    assert (ids >= 0).all()
    worst = 0.0
    for i in np.unique(ids):
        sel = ids == i
        res = _implicit_residual(scene.prims[i], pw[sel])
        tol = 2e-3 + 2e-5 * z[sel]  # float32 ray casting
        assert np.all(res <= tol), (scene.prims[i].describe(), float(res.max()))
        worst = max(worst, float(res.max()))
    assert worst < 0.05


def test_outdoor_sky_is_invalid():
    found = 0
    for i in range(6):
        s = render_scene(11, "outdoor", (40, 40), index=i)
        valid, depth = s["valid"], s["depth"]
        assert np.all(depth[~valid] == 0)
        if (~valid).mean() > 0.05:
            found += 1
            rows = np.arange(40)[:, None].repeat(40, 1)
            assert rows[~valid].mean() < rows[valid].mean()  # sky sits above the ground
            top = s["rgb"][~valid].astype(float)
            assert top.mean() > 60  # sky is not black
    assert found >= 2
    # closed rooms are valid everywhere
    s = render_scene(11, "indoor", (32, 32), index=0)
    assert s["valid"].mean() > 0.99


def test_sky_mask_marks_rays_that_hit_nothing():
    from bridgedepth.data.scenes import build_scene
    from bridgedepth.data.scenes.render import raycast

    seen = 0
    for i in range(6):
        s = render_scene(11, "outdoor", (40, 40), index=i)
        sky = s["sky"]
        assert sky.dtype == bool and sky.shape == (40, 40)
        assert not (sky & s["valid"]).any() and np.all(s["depth"][sky] == 0)
        scene, _ = build_scene(11, "outdoor", (40, 40), index=i)
        np.testing.assert_array_equal(sky, ~np.isfinite(raycast(scene.camera, scene.prims)[0]))
        assert s["meta"]["sky_fraction"] == round(float(sky.mean()), 4)
        seen += int(sky.any())
        if sky.any():
            assert s["rgb"][sky].mean() > 60  # what the sky shader painted
    assert seen >= 2
    for kind in ("indoor", "object"):  # no sky in these scenes: the mask is there, and empty
        s = render_scene(11, kind, (32, 32), index=0)
        assert s["sky"].dtype == bool and not s["sky"].any()


def _summary(s):
    d = s["depth"][s["valid"]]
    hist = np.histogram(np.log(d), bins=12, range=(np.log(0.1), np.log(80.0)))[0] / max(d.size, 1)
    rgb = s["rgb"].reshape(-1, 3).astype(float)
    return hist, np.concatenate([rgb.mean(0), rgb.std(0)])


def test_diversity_across_seeds():
    samples = [render_scene(seed, "mixed", (40, 40), index=0) for seed in range(10)]
    kinds = {s["meta"]["kind"] for s in samples}
    assert len(kinds) >= 2
    hists, colors = zip(*(_summary(s) for s in samples))
    pair_h = [np.abs(hists[i] - hists[j]).sum() for i in range(10) for j in range(i + 1, 10)]
    pair_c = [np.abs(colors[i] - colors[j]).max() for i in range(10) for j in range(i + 1, 10)]
    assert min(pair_c) > 1.0 and np.median(pair_c) > 10
    assert np.median(pair_h) > 0.3
    medians = [np.median(s["depth"][s["valid"]]) for s in samples]
    assert max(medians) / min(medians) > 3
    # camera parameters vary too
    fovs = {round(2 * math.degrees(math.atan(20 / float(s["intrinsics"][0]))), 1) for s in samples}
    assert len(fovs) == 10


def test_any_resolution_and_aspect_range():
    s = render_scene(2, "object", (17, 91), index=0)
    assert s["rgb"].shape == (17, 91, 3)
    shapes = {render_scene(2, "object", (32, 32), index=i, aspect_range=(0.5, 2.0))["rgb"].shape for i in range(4)}
    assert len(shapes) > 1
    for h, w, _ in shapes:
        assert 0.8 * 1024 < h * w < 1.25 * 1024


def test_bad_arguments():
    with pytest.raises(InputError, match="kind"):
        render_scene(0, "forest", (16, 16))
    with pytest.raises(InputError, match="size"):
        render_scene(0, "indoor", "big")
    with pytest.raises(InputError):
        render_scene(-1, "indoor", (16, 16))


def test_tiny_and_extreme_sizes_render():
    for kind in ("indoor", "outdoor", "object"):
        for size in ((8, 8), (9, 120), (120, 9)):
            s = render_scene(3, kind, size, index=1)
            assert s["rgb"].shape == size + (3,) and s["depth"].shape == size
            assert np.all(s["depth"][~s["valid"]] == 0)
