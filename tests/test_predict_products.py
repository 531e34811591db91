"""`bridge predict` for users: the shipped default model, bad inputs among good ones, point clouds,
videos and ONNX (issue 14; multi-input behaviour from issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import bridgedepth
import bridgedepth.zoo
from bridgedepth.errors import InputError
from bridgedepth.io.pointcloud import Intrinsics, backproject, depth_to_ply

plyfile = pytest.importorskip("plyfile")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(30, 40), (36, 48)]):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(d / f"good{i}.png")
    (d / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")
    return d


# ------------------------------------------------------------------------------------------------
# out of the box
# ------------------------------------------------------------------------------------------------


def test_predict_without_model_uses_the_shipped_toy_model(images, tmp_path, run_cli):
    if not bridgedepth.zoo.available("depth"):
        pytest.skip("the shipped toy depth model is not installed")
    r = run_cli("predict", images / "good0.png", "--out", tmp_path, "--outputs", "npy,png16")
    assert r.code == 0, r
    assert "shipped toy depth model" in r.err and "relative disparity" in r.out
    man = json.loads((tmp_path / "predictions.json").read_text())
    assert man["unit"] == "relative" and man["kind"] == "disparity" and "larger = nearer" in man["meaning"]
    assert np.load(tmp_path / "good0_disp.npy").shape == (30, 40)
    res = bridgedepth.load().predict(np.zeros((20, 24, 3), np.uint8))
    assert res.values.shape == (20, 24) and res.meta["unit"] == "relative"


def test_another_model_into_the_same_folder_is_refused_not_mixed(micro_ckpt, images, tmp_path, run_cli):
    """A second `bridge predict` with another model (or colouring) into the same --out counted the first
    model's files as already done and kept them, under a predictions.json naming the second model."""
    from bridgedepth.mde import build_model, save_model

    other = tmp_path / "other"
    save_model(build_model("micro", seed=5), other)
    out = tmp_path / "out"
    one = images / "good0.png"
    assert run_cli("predict", one, "--model", micro_ckpt, "--out", out).code == 0
    # more images, same settings: added (the first one is already done)
    r = run_cli("predict", one, images / "good1.png", "--model", micro_ckpt, "--out", out, "--batch-size", "2")
    assert r.code == 0 and "1 image(s) (1 already done)" in r.out, r
    listed = [Path(e["input"]).name for e in json.loads((out / "predictions.json").read_text())["images"]]
    assert sorted(listed) == ["good0.png", "good1.png"]  # both runs' images, not only the latest
    r = run_cli("predict", one, "--model", other, "--out", out)
    assert r.code == 2 and "other settings" in r.err and "the model's weights" in r.err and "--overwrite" in r.err, r
    r = run_cli("predict", one, "--model", micro_ckpt, "--out", out, "--grayscale")
    assert r.code == 2 and "grayscale: False -> True" in r.err, r
    # the same path retrained (other weights): refused too
    retrained = tmp_path / "retrained"
    import shutil

    shutil.copytree(micro_ckpt, retrained)
    out2 = tmp_path / "out2"
    assert run_cli("predict", one, "--model", retrained, "--out", out2).code == 0
    save_model(build_model("micro", seed=6), retrained)
    r = run_cli("predict", one, "--model", retrained, "--out", out2)
    assert r.code == 2 and "the model's weights" in r.err and "model:" not in r.err, r
    before = (out / "good0_color.png").read_bytes()
    r = run_cli("predict", one, "--model", other, "--out", out, "--overwrite")
    assert r.code == 0 and "1 image(s) (0 already done)" in r.out
    assert (out / "good0_color.png").read_bytes() != before
    man = json.loads((out / "predictions.json").read_text())
    assert man["settings"]["model"] == str(other.resolve())
    assert [Path(e["input"]).name for e in man["images"]] == ["good0.png"]  # good1's files are the old model's


def test_missing_default_model_says_how_to_get_one(images, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("BRIDGE_ZOO_DIR", str(tmp_path / "empty"))
    r = run_cli("predict", images / "good0.png", "--out", tmp_path / "o")
    assert r.code == 2 and "bridge zoo build" in r.err and "--model" not in r.out
    with pytest.raises(InputError, match="bridge zoo build"):
        bridgedepth.load()


# ------------------------------------------------------------------------------------------------
# many inputs, some bad (issue 15)
# ------------------------------------------------------------------------------------------------


def test_bad_inputs_are_recorded_and_the_rest_continue(micro_ckpt, images, tmp_path, run_cli):
    out = tmp_path / "o"
    r = run_cli("predict", images / "bad.png", images / "good0.png", tmp_path / "missing.jpg", images / "good1.png",
                "--model", micro_ckpt, "--out", out, "--outputs", "npy")
    assert r.code == 0, r
    assert sorted(p.name for p in out.glob("*.npy")) == ["good0_disp.npy", "good1_disp.npy"]
    assert "2 input(s) failed, 2 succeeded" in r.err
    assert f"failed {images / 'bad.png'}" in r.err and "missing.jpg" in r.err
    man = json.loads((out / "predictions.json").read_text())
    reasons = {Path(f["input"]).name: f["reason"] for f in man["failures"]}
    assert set(reasons) == {"bad.png", "missing.jpg"}
    assert "bad.png" in reasons["bad.png"] and "no such file" in reasons["missing.jpg"]
    assert [Path(d["input"]).name for d in man["images"]] == ["good0.png", "good1.png"]
    # --strict: the same run fails; nothing good: fails
    r = run_cli("predict", images / "bad.png", images / "good0.png", "--model", micro_ckpt, "--out", out,
                "--outputs", "npy", "--overwrite", "--strict")
    assert r.code == 2 and "--strict" in r.err
    r = run_cli("predict", images / "bad.png", "--model", micro_ckpt, "--out", tmp_path / "o2")
    assert r.code == 2 and "no input succeeded" in r.err and "bad.png" in r.err


def test_every_readable_image_format_is_predicted_from_a_folder(micro_ckpt, shared_data, tmp_path, run_cli):
    """A folder of images in every format the readers take is predicted whole: NYUv2's raw colour frames
    are PPM, which `bridge predict` used to skip as "not an image or video file"."""
    from bridgedepth.io.image import IMAGE_SUFFIXES, read_image, write_image

    src = shared_data / "rgbd/open3d/other_formats/NYU_color.ppm"
    rgb = read_image(src)[::8, ::8]
    d = tmp_path / "in"
    d.mkdir()
    for suffix in sorted(IMAGE_SUFFIXES):
        write_image(d / f"nyu{suffix.replace('.', '_')}{suffix}", rgb)
    (d / "notes.txt").write_text("not an image")
    r = run_cli("predict", d, src, "--model", micro_ckpt, "--out", tmp_path / "o", "--outputs", "npy")
    assert r.code == 0 and "failed" not in r.err, r
    man = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert len(man["images"]) == len(IMAGE_SUFFIXES) + 1 and not man["failures"]
    assert {".ppm", ".jpg", ".png", ".webp", ".tif"} <= IMAGE_SUFFIXES


def test_depth_maps_given_as_photographs_are_named(micro_ckpt, images, shared_data, tmp_path, run_cli):
    """A folder of KITTI depth maps (single-channel 16-bit PNGs) given to `bridge predict` by mistake
    is predicted (a grey 16-bit photograph is legal) but named in a note and in the manifest; the
    colour images beside it are not."""
    import shutil

    d = tmp_path / "mixed"
    d.mkdir()
    shutil.copy(shared_data / "rgbd/kitti_annotated/depth/0000000005.png", d / "kitti_depth.png")
    shutil.copy(images / "good0.png", d / "photo.png")
    r = run_cli("predict", d, "--model", micro_ckpt, "--out", tmp_path / "o", "--outputs", "npy")
    assert r.code == 0, r
    assert "1 input(s) look like depth maps" in r.err and "kitti_depth.png" in r.err, r.err
    man = json.loads((tmp_path / "o" / "predictions.json").read_text())
    warned = {Path(e["input"]).name: e.get("warning") for e in man["images"]}
    assert warned["photo.png"] is None
    assert "depth map" in warned["kitti_depth.png"] and "16-bit PNG" in warned["kitti_depth.png"]
    # colour images alone: no note
    r = run_cli("predict", images / "good1.png", "--model", micro_ckpt, "--out", tmp_path / "o2", "--outputs", "npy")
    assert r.code == 0 and "depth map" not in r.err


# ------------------------------------------------------------------------------------------------
# point clouds
# ------------------------------------------------------------------------------------------------


def _plane_depth(h, w, intr, n, d):
    """Depth of the plane n . X = d seen through intr: Z = d / (n . K^-1 [u, v, 1])."""
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    ray = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, np.ones_like(u)], -1)
    return (d / (ray @ n)).astype(np.float32)


def test_ply_of_an_analytic_plane_read_back_with_plyfile(tmp_path):
    h, w = 48, 64
    intr = Intrinsics.resolve(w, h, fov=70.0)
    assert intr.centre_default and intr.cx == 31.5 and intr.cy == 23.5
    assert np.isclose(intr.fx, 32 / np.tan(np.radians(35)))
    n = np.array([0.2, -0.3, 1.0])
    n /= np.linalg.norm(n)
    depth = _plane_depth(h, w, intr, n, 2.5)
    depth[0, :5] = 0  # invalid pixels are left out
    rgb = np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)
    count = depth_to_ply(tmp_path / "plane.ply", depth, rgb, intr)
    assert count == h * w - 5
    ply = plyfile.PlyData.read(str(tmp_path / "plane.ply"))
    assert ply.text is False and ply.byte_order == "<"
    v = ply["vertex"]
    pts = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float64)
    assert len(pts) == count
    # every point lies on the plane n . X = 2.5 (float32 rounding only)
    assert np.abs(pts @ n - 2.5).max() < 1e-5
    # an independent fit: the smallest singular vector of the centred points is the normal
    c = pts - pts.mean(0)
    normal = np.linalg.svd(c, full_matrices=False)[2][-1]
    assert abs(abs(normal @ n) - 1) < 1e-8
    # colours follow their pixels (row-major, invalid skipped)
    flat = rgb.reshape(-1, 3)[np.flatnonzero(depth > 0)]
    assert np.array_equal(np.stack([v["red"], v["green"], v["blue"]], 1), flat)
    with pytest.raises(InputError, match="--fov"):
        Intrinsics.resolve(w, h)


def test_cli_ply_relative_needs_a_scale_and_metric_works(micro_ckpt, images, tmp_path, run_cli):
    img = images / "good1.png"
    r = run_cli("predict", img, "--model", micro_ckpt, "--out", tmp_path / "a", "--outputs", "ply", "--fx", "40")
    assert r.code == 2 and "relative disparity" in r.err and "--depth-scale" in r.err
    r = run_cli("predict", img, "--model", micro_ckpt, "--out", tmp_path / "a", "--outputs", "ply")
    assert r.code == 2 and "--fov" in r.err
    # --metric on a relative checkpoint without a scale head: names it and says how to get a metric one
    from bridgedepth.mde import build_model, save_model

    save_model(build_model("micro", seed=0), tmp_path / "relative", input_size=56)
    r = run_cli("predict", img, "--model", tmp_path / "relative", "--out", tmp_path / "a", "--metric")
    assert r.code == 2 and str(tmp_path / "relative") in r.err and "--stage scale-head" in r.err, r
    r = run_cli("predict", img, "--model", micro_ckpt, "--out", tmp_path / "b", "--outputs", "ply,npy",
                "--fx", "40", "--fy", "44", "--depth-scale", "2.0")
    assert r.code == 0, r
    assert "principal point = the image centre" in r.err
    disp = np.load(tmp_path / "b" / "good1_disp.npy")
    ply = plyfile.PlyData.read(str(tmp_path / "b" / "good1_points.ply"))
    assert any("--depth-scale" in c for c in ply.comments)
    v = ply["vertex"]
    idx = np.flatnonzero(disp > 0)
    assert len(v["z"]) == idx.size > 0
    rows, cols = np.divmod(idx, disp.shape[1])
    z = 2.0 / disp.reshape(-1)[idx]
    assert np.allclose(v["z"], z, rtol=1e-5)
    assert np.allclose(v["x"], (cols - 23.5) * z / 40, rtol=1e-4, atol=1e-5)
    assert np.allclose(v["y"], (rows - 17.5) * z / 44, rtol=1e-4, atol=1e-5)
    r = run_cli("predict", img, "--model", micro_ckpt, "--out", tmp_path / "m", "--outputs", "ply,npy", "--metric",
                "--fov", "60", "--cx", "20", "--cy", "10")
    assert r.code == 0, r
    depth = np.load(tmp_path / "m" / "good1_depth.npy")
    ply = plyfile.PlyData.read(str(tmp_path / "m" / "good1_points.ply"))
    assert np.allclose(np.sort(ply["vertex"]["z"]), np.sort(depth[depth > 0]), rtol=1e-6)


def test_backproject_rejects_bad_shapes():
    with pytest.raises(InputError):
        backproject(np.zeros((2, 2, 2)), Intrinsics(1, 1, 0, 0))


# ------------------------------------------------------------------------------------------------
# video
# ------------------------------------------------------------------------------------------------


def _static_clip(path, frames=10, h=48, w=64, noise=6.0, exposure=0.1, seed=0, base=None):
    """A static scene (a lit box in front of a wall, or ``base``) filmed with sensor noise and exposure
    jitter."""
    from bridgedepth.io.video import video_writer

    rng = np.random.default_rng(seed)
    if base is None:
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.zeros((h, w, 3), np.float64)
        base[...] = [70, 90, 120]
        base[(yy > h // 4) & (yy < 3 * h // 4) & (xx > w // 3) & (xx < 2 * w // 3)] = [200, 150, 60]
        base += (yy / h * 40)[..., None]
    h, w = base.shape[:2]
    with video_writer(path, 10.0, (w, h)) as write:
        for _ in range(frames):
            f = base * rng.uniform(1 - exposure, 1 + exposure) + rng.normal(0, noise, base.shape)
            write(np.clip(f, 0, 255).astype(np.uint8))


def test_video_clip_normalisation_flickers_less(micro_ckpt, tmp_path, run_cli):
    """On the shipped toy model (a random micro model reacts to noise alone)."""
    from bridgedepth.io.video import read_frames, video_info

    clip = tmp_path / "clip.mp4"
    _static_clip(clip)
    assert video_info(clip).frames == 10
    r = run_cli("predict", clip, "--out", tmp_path / "depth.mp4", "--batch-size", "4")
    assert r.code == 0, r
    assert "audio" in r.err and "dropped" in r.err
    frames = list(read_frames(tmp_path / "depth.mp4"))
    assert len(frames) == 10 and frames[0].shape == (48, 64, 3)
    s = json.loads((tmp_path / "depth.mp4.json").read_text())
    assert s["frames"] == 10 and s["unit"] == "relative" and s["audio"] == "dropped"
    assert s["flicker_clip_normalisation"] < s["flicker_per_frame_normalisation"]
    # side by side, smoothed: twice as wide, and smoothing does not add flicker
    r = run_cli("predict", clip, "--out", tmp_path / "o", "--side-by-side", "--smooth", "0.6")
    assert r.code == 0, r
    sbs = list(read_frames(tmp_path / "o" / "clip_depth.mp4"))
    assert len(sbs) == 10 and sbs[0].shape == (48, 128, 3)
    assert "predicted 1 video(s) ->" in r.out and "image(s)" not in r.out  # no "0 image(s)" for a video
    s2 = json.loads((tmp_path / "o" / "clip_depth.mp4.json").read_text())
    assert s2["flicker_clip_normalisation"] <= s["flicker_clip_normalisation"]
    assert not list(tmp_path.glob(".*")) and not list((tmp_path / "o").glob(".*"))
    r = run_cli("predict", clip, "--model", micro_ckpt, "--out", tmp_path / "x", "--smooth", "1.5")
    assert r.code == 2 and "--smooth" in r.err


def test_video_bad_file_is_a_recorded_failure(micro_ckpt, images, tmp_path, run_cli):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    r = run_cli("predict", tmp_path / "broken.mp4", images / "good0.png", "--model", micro_ckpt,
                "--out", tmp_path / "o")
    assert r.code == 0, r
    assert "failed" in r.err and "broken.mp4" in r.err


# ------------------------------------------------------------------------------------------------
# ONNX
# ------------------------------------------------------------------------------------------------


def test_onnx_export_verified_and_predict_backend(micro_ckpt, images, tmp_path, run_cli, shared_data):
    pytest.importorskip("onnxruntime")
    fixture = shared_data / "rgbd" / "open3d" / "color" / "00000.jpg"
    out = tmp_path / "m.onnx"
    r = run_cli("export", "--model", micro_ckpt, "--format", "onnx", "--out", out, "--input-size", "56",
                "--fixture", fixture)
    assert r.code == 0, r
    assert "max |diff| random" in r.out and "fixture0" in r.out
    diffs = [float(x) for x in __import__("re").findall(r"(?:random|fixture0) ([0-9.e+-]+)", r.out)]
    assert len(diffs) == 2 and max(diffs) <= 1e-4
    # the onnx backend matches the torch predictor fed the same squares
    a = run_cli("predict", images / "good1.png", "--backend", "onnx", "--model", out, "--out", tmp_path / "a",
                "--outputs", "npy")
    b = run_cli("predict", images / "good1.png", "--model", micro_ckpt, "--fixed-size", "--input-size", "56",
                "--out", tmp_path / "b", "--outputs", "npy")
    assert a.code == 0 and b.code == 0, (a, b)
    va, vb = np.load(tmp_path / "a" / "good1_disp.npy"), np.load(tmp_path / "b" / "good1_disp.npy")
    assert va.shape == (36, 48)
    assert np.abs(va - vb).max() <= 1e-4 * max(1.0, np.abs(vb).max())
    # dynamic batch and size + metric (scale head inside the graph): checked at other sizes too
    r = run_cli("export", "--model", micro_ckpt, "--out", tmp_path / "d.onnx", "--input-size", "56", "--dynamic",
                "--metric", "--fixture", fixture)
    assert r.code == 0 and "depth in metres" in r.out and "(B dynamic" in r.out, r
    assert "random_wide" in r.out and "random_small" in r.out
    diffs = [float(x) for x in __import__("re").findall(r"(?:random\w*|fixture0) ([0-9.e+-]+)", r.out)]
    assert len(diffs) == 4 and max(diffs) <= 1e-4, r.out
    pred = bridgedepth.load(tmp_path / "d.onnx")
    assert pred.kind == "depth" and pred.dynamic_batch and pred.dynamic_size
    # a dynamic graph keeps the aspect like the torch predictor: the same metric depth on a wide image
    import bridgedepth.mde.predictor as P

    rgb = np.random.default_rng(3).integers(0, 255, (30, 75, 3), dtype=np.uint8)
    ref = P.Predictor.from_pretrained(micro_ckpt, input_size=56, metric=True).predict(rgb).values
    got = pred.predict(rgb).values
    assert got.shape == ref.shape == (30, 75)
    assert np.abs(got - ref).max() <= 1e-3 * max(1.0, np.abs(ref).max()), np.abs(got - ref).max()
    res = pred.predict_batch([np.full((20, 30, 3), 128, np.uint8), np.zeros((10, 12, 3), np.uint8)])
    assert [x.values.shape for x in res] == [(20, 30), (10, 12)] and res[0].meta["unit"] == "m"
    # refusals
    r = run_cli("export", "--model", micro_ckpt, "--out", tmp_path / "e.onnx", "--input-size", "50")
    assert r.code == 2 and "multiple of the model's patch size" in r.err
    r = run_cli("export", "--model", micro_ckpt, "--out", tmp_path / "t.onnx", "--input-size", "56",
                "--tolerance", "0")
    assert (r.code == 2 and "not written" in r.err and not (tmp_path / "t.onnx").exists()) or r.code == 0
    r = run_cli("predict", images / "good1.png", "--backend", "onnx", "--model", micro_ckpt)
    assert r.code == 2 and "FILE.onnx" in r.err
