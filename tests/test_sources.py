"""Source-dataset adapters, each on a tiny fixture built here in the dataset's documented on-disk layout.

Fixture files are written with independent writers (cv2, numpy, h5py, OpenEXR, a hand-written PFM),
not with bridgedepth.io, so a reader bug cannot cancel a writer bug.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bridgedepth.data.sources import SourceReport, adapter_names, describe_adapters, get_adapter
from bridgedepth.errors import InputError

EXPECTED = ["hypersim", "tartanair", "vkitti2", "irs", "blendedmvs", "spring", "folder"]


# ------------------------------------------------------------------------------ file writers
def write_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_png16(path: Path, raw: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), raw.astype(np.uint16))


def write_h5(path: Path, name: str, arr: np.ndarray) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset(name, data=arr)


def write_pfm(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = arr.shape
    with open(path, "wb") as f:
        f.write(f"Pf\n{w} {h}\n-1.0\n".encode())
        f.write(np.ascontiguousarray(arr[::-1].astype("<f4")).tobytes())


def write_exr(path: Path, arr: np.ndarray, channel: str = "G") -> None:
    import OpenEXR

    path.parent.mkdir(parents=True, exist_ok=True)
    hdr = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(hdr, {channel: arr.astype(np.float32)}).write(str(path))


def rand_rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def collect(adapter):
    report = SourceReport(adapter.name)
    samples = {s["__key__"]: s for s in adapter.iter_samples(report)}
    return samples, report


def check_schema(s: dict) -> None:
    h, w = s["depth"].shape
    assert s["rgb"].dtype == np.uint8 and s["rgb"].shape == (h, w, 3)
    assert s["depth"].dtype == np.float32 and s["valid"].dtype == bool and s["valid"].shape == (h, w)
    assert np.all(s["depth"][~s["valid"]] == 0) and np.all(s["depth"][s["valid"]] > 0)
    assert "." not in s["__key__"] and "/" not in s["__key__"]
    json.dumps(s["meta"])
    if "intrinsics" in s:
        assert s["intrinsics"].dtype == np.float32 and s["intrinsics"].shape == (4,)
    if "sky" in s:  # sources that know sky mark it; sky is never valid depth
        assert s["sky"].dtype == bool and s["sky"].shape == (h, w) and not (s["sky"] & s["valid"]).any()


# ------------------------------------------------------------------------------ registry
def test_registry_lists_every_adapter_with_layout():
    assert adapter_names() == EXPECTED
    text = describe_adapters()
    for name in EXPECTED:
        assert f"{name}: " in text
    assert "depth_meters.hdf5" in text and "_left_depth.npy" in text and "disp1_left" in text


def test_unknown_adapter_option_and_encoding_are_errors(tmp_path):
    with pytest.raises(InputError, match="unknown source dataset"):
        get_adapter("nope", tmp_path)
    with pytest.raises(InputError, match="unknown option"):
        get_adapter("tartanair", tmp_path, colour="x")
    with pytest.raises(InputError, match="not one this dataset uses"):
        get_adapter("vkitti2", tmp_path, encoding="png-mm")
    with pytest.raises(InputError, match="unknown depth encoding"):
        get_adapter("folder", tmp_path, encoding="png-furlongs")
    with pytest.raises(InputError, match="no tartanair frames"):
        get_adapter("tartanair", tmp_path).refs()


# ------------------------------------------------------------------------------ Hypersim
HS_W, HS_H = 32, 24
HS_F = 886.81 * HS_W / 1024


def _hypersim_distance(z: float) -> np.ndarray:
    u = np.arange(HS_W) - (HS_W - 1) / 2
    v = np.arange(HS_H) - (HS_H - 1) / 2
    return z * np.sqrt(1 + (u[None] / HS_F) ** 2 + (v[:, None] / HS_F) ** 2)


def make_hypersim(root: Path) -> Path:
    images = root / "ai_001_002" / "images"
    geo, fin, prev = (images / f"scene_cam_00_{k}" for k in ("geometry_hdf5", "final_hdf5", "final_preview"))
    dist = _hypersim_distance(3.0)
    dist[:4, :6] = np.nan  # no geometry (e.g. a window)
    write_h5(geo / "frame.0000.depth_meters.hdf5", "dataset", dist.astype(np.float16))
    write_h5(fin / "frame.0000.color.hdf5", "dataset", np.full((HS_H, HS_W, 3), 0.37, np.float16))
    ids = np.ones((HS_H, HS_W), np.int32)
    write_h5(geo / "frame.0000.render_entity_id.hdf5", "dataset", ids)
    # frame 1: no HDR colour, only the preview jpg
    write_h5(geo / "frame.0001.depth_meters.hdf5", "dataset", _hypersim_distance(1.5).astype(np.float32))
    write_rgb(prev / "frame.0001.tonemap.jpg", rand_rgb(HS_H, HS_W))
    # frame 2: colour but no depth file -> skipped and reported
    write_h5(fin / "frame.0002.color.hdf5", "dataset", np.ones((HS_H, HS_W, 3), np.float16))
    return root


def test_hypersim_distance_to_planar_tonemap_and_missing_depth(tmp_path):
    samples, report = collect(get_adapter("hypersim", make_hypersim(tmp_path)))
    assert sorted(samples) == ["ai_001_002-cam_00-0000", "ai_001_002-cam_00-0001"]
    s0, s1 = samples["ai_001_002-cam_00-0000"], samples["ai_001_002-cam_00-0001"]
    for s in (s0, s1):
        check_schema(s)
    # a fronto-parallel plane at z = 3 m: the distance grows towards the corners, planar depth does not
    assert np.allclose(s0["depth"][s0["valid"]], 3.0, atol=3e-3)  # float16 storage
    assert not s0["valid"][:4, :6].any() and s0["valid"].sum() == HS_H * HS_W - 24
    assert np.allclose(s1["depth"], 1.5, atol=1e-4)
    np.testing.assert_allclose(s0["intrinsics"], [HS_F, HS_F, (HS_W - 1) / 2, (HS_H - 1) / 2], rtol=1e-5)
    # constant grey HDR: the 90th-percentile brightness maps to 0.8 after gamma -> 204 everywhere
    assert np.all(s0["rgb"] == 204)
    assert s0["meta"]["rgb_source"] == "frame.0000.color.hdf5"
    assert s1["meta"]["rgb_source"] == "frame.0001.tonemap.jpg"
    assert s0["meta"]["scene"] == "ai_001_002" and s0["meta"]["camera"] == "cam_00"
    assert report.total == 3 and report.loaded == 2 and len(report.skipped) == 1
    sk = report.skipped[0]
    assert sk.key == "ai_001_002-cam_00-0002" and sk.path.endswith("frame.0002.depth_meters.hdf5")
    assert "missing depth" in sk.reason


def test_hypersim_preview_option_and_missing_preview(tmp_path):
    samples, report = collect(get_adapter("hypersim", make_hypersim(tmp_path), rgb="preview"))
    assert list(samples) == ["ai_001_002-cam_00-0001"]
    reasons = {s.key: s.reason for s in report.skipped}
    assert "tonemap.jpg" in reasons["ai_001_002-cam_00-0000"]


# ------------------------------------------------------------------------------ TartanAir
def make_tartanair(root: Path) -> Path:
    seq = root / "abandonedfactory" / "Easy" / "P000"
    h, w = 48, 64
    d = np.full((h, w), 4.25, np.float32)
    d[:10] = 10000.0  # the sky sphere
    (seq / "depth_left").mkdir(parents=True)
    np.save(seq / "depth_left" / "000000_left_depth.npy", d)
    write_rgb(seq / "image_left" / "000000_left.png", rand_rgb(h, w))
    np.save(seq / "depth_left" / "000001_left_depth.npy", d)  # image missing
    write_rgb(seq / "image_left" / "000002_left.png", rand_rgb(h, w))  # depth missing
    return root


def test_tartanair_depth_sky_intrinsics_and_missing_files(tmp_path):
    samples, report = collect(get_adapter("tartanair", make_tartanair(tmp_path)))
    assert list(samples) == ["abandonedfactory-Easy-P000-000000"]
    s = samples["abandonedfactory-Easy-P000-000000"]
    check_schema(s)
    assert not s["valid"][:10].any() and s["valid"][10:].all()
    assert s["sky"][:10].all() and not s["sky"][10:].any()  # the sky sphere (beyond max_depth)
    assert np.all(s["depth"][10:] == np.float32(4.25))
    np.testing.assert_allclose(s["intrinsics"], [32, 32, 32, 24])  # 320/320/320/240 at 640x480, scaled 0.1
    assert s["meta"]["files"] == {"depth": "abandonedfactory/Easy/P000/depth_left/000000_left_depth.npy",
                                  "rgb": "abandonedfactory/Easy/P000/image_left/000000_left.png"}
    paths = sorted(Path(k.path).name for k in report.skipped)
    assert paths == ["000001_left.png", "000002_left_depth.npy"]
    assert all("missing" in k.reason for k in report.skipped) and report.total == 3


# ------------------------------------------------------------------------------ Virtual KITTI 2
def make_vkitti2(root: Path) -> Path:
    h, w = 20, 30
    for var in ("clone", "fog"):
        rgbd = root / "vkitti_2.0.3_rgb" / "Scene01" / var / "frames" / "rgb" / "Camera_0"
        depd = root / "vkitti_2.0.3_depth" / "Scene01" / var / "frames" / "depth" / "Camera_0"
        tg = root / "vkitti_2.0.3_textgt" / "Scene01" / var
        raw = np.full((h, w), 1234, np.uint16)
        raw[:5] = 65535  # sky: far plane
        raw[5, :3] = 0
        for i in range(2):
            write_rgb(rgbd / f"rgb_{i:05d}.jpg", rand_rgb(h, w, i))
            write_png16(depd / f"depth_{i:05d}.png", raw)
        tg.mkdir(parents=True, exist_ok=True)
        (tg / "intrinsic.txt").write_text(
            "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]\n"
            "0 0 725.0087 725.0087 620.5 187\n0 1 725.0087 725.0087 620.5 187\n"
            "1 0 725.0 725.5 15.0 10.0\n1 1 725.0087 725.0087 620.5 187\n")
        (tg / "extrinsic.txt").write_text(
            "frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1\n"
            "0 0 1 0 0 0.5 0 1 0 1.5 0 0 1 2.5 0 0 0 1\n"
            "1 0 1 0 0 0.6 0 1 0 1.6 0 0 1 2.6 0 0 0 1\n")
    # a fog frame whose depth has the wrong size
    write_png16(root / "vkitti_2.0.3_depth/Scene01/fog/frames/depth/Camera_0/depth_00001.png",
                np.full((h + 2, w), 500, np.uint16))
    return root


def test_vkitti2_cm_depth_sky_intrinsics_extrinsics_and_size_mismatch(tmp_path):
    samples, report = collect(get_adapter("vkitti2", make_vkitti2(tmp_path)))
    assert sorted(samples) == ["Scene01-clone-Camera_0-00000", "Scene01-clone-Camera_0-00001",
                               "Scene01-fog-Camera_0-00000"]
    s = samples["Scene01-clone-Camera_0-00001"]
    check_schema(s)
    assert np.allclose(s["depth"][6:], 12.34) and not s["valid"][:5].any() and not s["valid"][5, :3].any()
    assert s["valid"].sum() == 20 * 30 - 5 * 30 - 3
    assert s["sky"][:5].all() and s["sky"].sum() == 5 * 30  # 65535 cm; the 0 (missing) pixels are not sky
    np.testing.assert_allclose(s["intrinsics"], [725.0, 725.5, 15.0, 10.0])
    np.testing.assert_allclose(samples["Scene01-clone-Camera_0-00000"]["intrinsics"], [725.0087, 725.0087, 620.5, 187])
    assert s["meta"]["world_to_camera"][0] == [1, 0, 0, 0.6] and s["meta"]["variation"] == "clone"
    assert len(report.skipped) == 1
    sk = report.skipped[0]
    assert sk.key == "Scene01-fog-Camera_0-00001" and "size mismatch" in sk.reason and sk.path.endswith("depth_00001.png")


def test_vkitti2_missing_intrinsics_is_reported(tmp_path):
    root = make_vkitti2(tmp_path)
    (root / "vkitti_2.0.3_textgt/Scene01/fog/intrinsic.txt").unlink()
    samples, report = collect(get_adapter("vkitti2", root))
    assert len(samples) == 2
    assert {s.key for s in report.skipped} == {"Scene01-fog-Camera_0-00000", "Scene01-fog-Camera_0-00001"}


# ------------------------------------------------------------------------------ IRS
def make_irs(root: Path) -> Path:
    scene = root / "Home" / "ArchVizInterior03Data"
    h, w = 27, 48
    disp = np.full((h, w), 48.0, np.float32)  # 480 px * 0.1 m / 48 px = 1.0 m
    disp[:, 24:] = 12.0  # 4.0 m
    disp[0, :5] = 0.0  # no disparity -> invalid
    write_exr(scene / "d_1.exr", disp)
    write_rgb(scene / "l_1.png", rand_rgb(h, w))
    write_rgb(scene / "r_1.png", rand_rgb(h, w, 1))
    write_rgb(scene / "l_2.png", rand_rgb(h, w))
    (scene / "d_2.exr").write_bytes(b"not an exr file at all")
    return root


def test_irs_disparity_to_depth_and_unreadable_file(tmp_path):
    samples, report = collect(get_adapter("irs", make_irs(tmp_path)))
    assert list(samples) == ["Home-ArchVizInterior03Data-1"]
    s = samples["Home-ArchVizInterior03Data-1"]
    check_schema(s)
    assert np.allclose(s["depth"][1:, :24], 1.0) and np.allclose(s["depth"][:, 24:], 4.0)
    assert not s["valid"][0, :5].any() and s["valid"].sum() == 27 * 48 - 5
    np.testing.assert_allclose(s["intrinsics"], [480, 480, 23.5, 13.0])
    assert report.skipped[0].path.endswith("d_2.exr") and "EXR" in report.skipped[0].reason


# ------------------------------------------------------------------------------ BlendedMVS
CAM_TXT = """extrinsic
1.0 0.0 0.0 0.1
0.0 1.0 0.0 0.2
0.0 0.0 1.0 0.3
0.0 0.0 0.0 1.0

intrinsic
30.5 0.0 16.0
0.0 31.0 12.0
0.0 0.0 1.0

425.0 2.5 192 905.0
"""


def make_blendedmvs(root: Path) -> Path:
    scene = root / "5a3ca9cb270f0e3f14d0eddb"
    h, w = 24, 32
    d = np.full((h, w), 512.5, np.float32)
    d[:, :4] = 0.0
    write_pfm(scene / "rendered_depth_maps" / "00000000.pfm", d)
    write_pfm(scene / "rendered_depth_maps" / "00000001.pfm", d)
    for i in range(2):
        write_rgb(scene / "blended_images" / f"{i:08d}.jpg", rand_rgb(h, w, i))
        write_rgb(scene / "blended_images" / f"{i:08d}_masked.jpg", rand_rgb(h, w, i))
    (scene / "cams").mkdir()
    (scene / "cams" / "00000000_cam.txt").write_text(CAM_TXT)  # 00000001 has no cam file
    (scene / "cams" / "pair.txt").write_text("2\n")
    return root


def test_blendedmvs_pfm_depth_cam_file_and_missing_cam(tmp_path):
    samples, report = collect(get_adapter("blendedmvs", make_blendedmvs(tmp_path)))
    assert list(samples) == ["5a3ca9cb270f0e3f14d0eddb-00000000"]
    s = samples["5a3ca9cb270f0e3f14d0eddb-00000000"]
    check_schema(s)
    assert np.all(s["depth"][:, 4:] == np.float32(512.5)) and not s["valid"][:, :4].any()
    np.testing.assert_allclose(s["intrinsics"], [30.5, 31.0, 16.0, 12.0])
    assert s["meta"]["metric"] is False and s["meta"]["depth_range"][:2] == [425.0, 2.5]
    assert s["meta"]["world_to_camera"][2] == [0, 0, 1, 0.3]
    assert len(report.skipped) == 1 and report.skipped[0].path.endswith("00000001_cam.txt")


# ------------------------------------------------------------------------------ Spring
def make_spring(root: Path) -> Path:
    seq = root / "0004"
    h, w = 8, 12
    hi = np.full((2 * h, 2 * w), np.nan, np.float32)  # odd samples are garbage the reader must not take
    hi[::2, ::2] = 26.0  # fx 400 * 0.065 / 26 = 1.0 m
    hi[0, 0] = 0.0  # sky
    hi[2, 2] = np.nan
    write_h5(seq / "disp1_left" / "disp1_left_0001.dsp5", "disparity", hi)
    write_h5(seq / "disp1_left" / "disp1_left_0002.dsp5", "disparity", hi[::2, ::2] * 2)  # image-size map
    write_h5(seq / "disp1_left" / "disp1_left_0003.dsp5", "flow", hi)  # wrong dataset name
    for i in (1, 2, 3):
        write_rgb(seq / "frame_left" / f"frame_left_{i:04d}.png", rand_rgb(h, w, i))
    (seq / "cam_data").mkdir()
    (seq / "cam_data" / "intrinsics.txt").write_text("400 400 5.5 3.5\n520 520 6.0 4.0\n400 400 5.5 3.5\n")
    return root


def test_spring_double_resolution_disparity_to_depth(tmp_path):
    samples, report = collect(get_adapter("spring", make_spring(tmp_path)))
    assert sorted(samples) == ["0004-0001", "0004-0002"]
    s = samples["0004-0001"]
    check_schema(s)
    assert s["depth"].shape == (8, 12)
    assert not s["valid"][0, 0] and not s["valid"][1, 1] and s["valid"].sum() == 96 - 2
    assert s["sky"][0, 0] and s["sky"].sum() == 1  # disparity 0 is sky; NaN is only invalid
    assert np.allclose(s["depth"][s["valid"]], 1.0)
    np.testing.assert_allclose(s["intrinsics"], [400, 400, 5.5, 3.5])
    s2 = samples["0004-0002"]  # row 2 of intrinsics.txt: 520 * 0.065 / 52
    assert np.allclose(s2["depth"][s2["valid"]], 0.65)
    assert report.skipped[0].key == "0004-0003" and "no dataset 'disparity'" in report.skipped[0].reason


# ------------------------------------------------------------------------------ folder
def test_folder_on_shared_nyu_sync(shared_data):
    root = shared_data / "rgbd" / "nyu_sync"
    samples, report = collect(get_adapter("folder", root, encoding="png-mm", intrinsics="test_annotations.json"))
    assert sorted(samples) == ["rgb_00000", "rgb_00050", "rgb_00100"] and not report.skipped
    for s in samples.values():
        check_schema(s)
        d = s["depth"][s["valid"]]
        assert 0.5 < d.min() and d.max() < 10.0 and 0.5 < s["valid"].mean() < 0.95  # Kinect holes
        np.testing.assert_allclose(s["intrinsics"], [518.8579, 519.46961, 325.58245, 253.73617], rtol=1e-6)
    assert samples["rgb_00050"]["meta"]["files"]["depth"] == "depth/sync_depth_00050.png"


def test_folder_on_shared_kitti_annotated(shared_data):
    root = shared_data / "rgbd" / "kitti_annotated"
    samples, report = collect(get_adapter("folder", root, encoding="png-kitti", intrinsics="test_annotations.json"))
    assert sorted(samples) == ["0000000005", "0000000050", "0000000100"] and not report.skipped
    for s in samples.values():
        check_schema(s)
        assert s["depth"].shape == (375, 1242)
        d = s["depth"][s["valid"]]
        assert 1.0 < d.min() and d.max() < 90.0 and 0.05 < s["valid"].mean() < 0.4  # sparse LiDAR
        np.testing.assert_allclose(s["intrinsics"], [707.0493, 707.0493, 604.0814, 180.5066])


def test_folder_on_shared_open3d_color_depth(shared_data):
    root = shared_data / "rgbd" / "open3d"
    adapter = get_adapter("folder", root, encoding="png-mm", rgb_dir="color", intrinsics="camera_primesense.json")
    samples, report = collect(adapter)
    assert sorted(samples) == [f"{i:05d}" for i in range(5)] and not report.skipped
    for s in samples.values():
        check_schema(s)
        d = s["depth"][s["valid"]]
        assert 0.5 < d.min() and d.max() < 5.0
        np.testing.assert_allclose(s["intrinsics"], [525, 525, 319.5, 239.5])


def test_folder_numbers_intrinsics_unpaired_and_list_file(tmp_path):
    rgb, dep = tmp_path / "rgb", tmp_path / "depth"
    for i in range(3):
        write_rgb(rgb / f"img_{i}.png", rand_rgb(6, 8, i))
    write_png16(dep / "d_0.png", np.full((6, 8), 2000))
    write_png16(dep / "d_1.png", np.full((6, 9), 2000))  # wrong size
    write_png16(dep / "d_7.png", np.full((6, 8), 2000))  # no image
    samples, report = collect(get_adapter("folder", tmp_path, encoding="png-mm", intrinsics="10,11,3.5,2.5"))
    assert list(samples) == ["img_0"] and np.allclose(samples["img_0"]["depth"], 2.0)
    np.testing.assert_allclose(samples["img_0"]["intrinsics"], [10, 11, 3.5, 2.5])
    reasons = {Path(s.path).name: s.reason for s in report.skipped}
    assert set(reasons) == {"d_1.png", "img_2.png", "d_7.png"} and report.total == 4
    assert "size mismatch" in reasons["d_1.png"] and "no depth file" in reasons["img_2.png"]
    assert "no image" in reasons["d_7.png"]

    (tmp_path / "pairs.txt").write_text("# rgb depth\nimg_2.png d_0.png\nimg_1.png d_9.png\n")
    samples, report = collect(get_adapter("folder", tmp_path, encoding="png-mm", list_file="pairs.txt"))
    assert list(samples) == ["img_2"] and "intrinsics" not in samples["img_2"]
    assert len(report.skipped) == 1 and report.skipped[0].path.endswith("d_9.png")
    assert "pairs.txt:3" in report.skipped[0].reason


def test_folder_detects_encoding_from_magic_and_refuses_png_without_one(tmp_path):
    write_rgb(tmp_path / "rgb" / "a.png", rand_rgb(4, 5))
    write_pfm(tmp_path / "depth" / "a.pfm", np.full((4, 5), 1.25, np.float32))
    samples, _ = collect(get_adapter("folder", tmp_path))
    assert np.allclose(samples["a"]["depth"], 1.25) and samples["a"]["meta"]["encoding"] == "pfm"
    write_rgb(tmp_path / "rgb" / "b.png", rand_rgb(4, 5))
    write_png16(tmp_path / "depth" / "b.png", np.full((4, 5), 7))
    samples, report = collect(get_adapter("folder", tmp_path))
    assert list(samples) == ["a"] and "encoding" in report.skipped[0].reason


def test_pair_files_report_lists_what_did_not_pair(tmp_path):
    from bridgedepth.data.sources import pair_files, pair_files_report

    for name in ("rgb/rgb_00001.jpg", "rgb/rgb_00002.jpg", "depth/sync_depth_00001.png", "depth/sync_depth_00009.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    res = pair_files_report(tmp_path / "rgb", tmp_path / "depth")
    assert [(r.name, d.name) for r, d in res.pairs] == [("rgb_00001.jpg", "sync_depth_00001.png")]
    assert [p.name for p in res.unpaired_rgb] == ["rgb_00002.jpg"]
    assert [p.name for p in res.unpaired_depth] == ["sync_depth_00009.png"]
    assert res.pairs == pair_files(tmp_path / "rgb", tmp_path / "depth")  # the strict API is unchanged

    lst = tmp_path / "list.txt"
    lst.write_text("rgb_00001.jpg sync_depth_00001.png\nrgb_00003.jpg sync_depth_00009.png\n")
    res = pair_files_report(tmp_path / "rgb", tmp_path / "depth", lst)
    assert len(res.pairs) == 1 and [(line.split(":")[-1], p.name) for line, p in res.missing] == [("2", "rgb_00003.jpg")]
    with pytest.raises(InputError, match="does not exist"):
        pair_files(tmp_path / "rgb", tmp_path / "depth", lst)


def test_bad_option_values_fail_up_front(tmp_path):
    with pytest.raises(InputError, match="rgb="):
        get_adapter("hypersim", tmp_path, rgb="exr")
    with pytest.raises(InputError, match="Camera_0 or Camera_1"):
        get_adapter("vkitti2", tmp_path, camera="Camera_2")
    with pytest.raises(InputError, match="not a valid float"):
        get_adapter("hypersim", tmp_path, focal="wide")
    with pytest.raises(InputError, match="must be positive"):
        get_adapter("spring", tmp_path, baseline="-0.065")
    with pytest.raises(InputError, match="must be positive"):
        get_adapter("tartanair", tmp_path, max_depth="0")
