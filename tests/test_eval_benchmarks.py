"""Benchmark loaders on tiny fixtures built in each official layout: discovery, masks, crops."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from bridgedepth.data.benchmarks import (
    SPLITS_DIR,
    get_benchmark,
    read_split,
    split_path,
)
from bridgedepth.errors import InputError
from bridgedepth.evaluation import FolderPredictions, evaluate

NYU_DEPTHS = ["sync_depth_00000.png", "sync_depth_00050.png", "sync_depth_00100.png"]


def _png16(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr.astype(np.uint16))


def _rgb(path: Path, h=8, w=8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def _dpt(path: Path, depth: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = depth.shape
    path.write_bytes(np.float32(202021.25).tobytes() + np.array([w, h], "<i4").tobytes() + depth.astype("<f4").tobytes())


def _nyu_raw(shared_data, i=0) -> np.ndarray:
    return cv2.imread(str(shared_data / "rgbd/nyu_sync/depth" / NYU_DEPTHS[i]), cv2.IMREAD_UNCHANGED)


# ------------------------------------------------------------------ shipped splits
def test_shipped_split_counts_and_licences():
    counts = {
        "marigold/data_split/nyu_depth/labeled/filename_list_test.txt": 654,
        "zoedepth/train_test_inputs/nyudepthv2_test_files_with_gt.txt": 654,
        "marigold/data_split/kitti_depth/eigen_test_files_with_gt.txt": 697,
        "marigold/data_split/eth3d_depth/eth3d_filename_list.txt": 454,
        "marigold/data_split/scannet_depth/scannet_val_sampled_list_800_1.txt": 800,
        "marigold/data_split/diode_depth/diode_val_all_filename_list.txt": 771,
        "sintel_training_sequences.txt": 23,
    }
    for rel, n in counts.items():
        assert len(read_split(split_path(rel))) == n, rel
    kitti = read_split(split_path("marigold/data_split/kitti_depth/eigen_test_files_with_gt.txt"))
    assert sum(r[1] != "None" for r in kitti) == 652
    for lic in ("marigold/LICENSE.txt", "zoedepth/LICENSE", "depth_anything_v2/LICENSE"):
        assert (SPLITS_DIR / lic).is_file()


# ------------------------------------------------------------------ NYUv2
def test_nyuv2_marigold_layout_and_eigen_crop(tmp_path, shared_data):
    rows = read_split(split_path("marigold/data_split/nyu_depth/labeled/filename_list_test.txt"))[:2]
    raw = _nyu_raw(shared_data)
    for r in rows:
        _rgb(tmp_path / r[0])
        _png16(tmp_path / r[1], raw)
        _png16(tmp_path / r[2], np.full_like(raw, 3000))
    b = get_benchmark("nyuv2", tmp_path)
    items = b.items(limit=2)
    assert b.layout == "marigold"
    assert [it.key for it in items] == ["test/kitchen_0004/rgb_0001", "test/kitchen_0004/rgb_0002"]
    gt = b.load_gt(items[0])
    np.testing.assert_allclose(gt.depth, raw.astype(np.float32) / 1000, rtol=1e-7)
    expect = (raw > 0) & (raw / 1000 > 1e-3) & (raw / 1000 < 10)
    crop = np.zeros_like(expect)
    crop[45:471, 41:601] = True
    np.testing.assert_array_equal(gt.valid, expect & crop)


def test_nyuv2_eigen_crop_selects_exactly_the_documented_pixels(tmp_path):
    rows = read_split(split_path("marigold/data_split/nyu_depth/labeled/filename_list_test.txt"))[:1]
    _rgb(tmp_path / rows[0][0])
    _png16(tmp_path / rows[0][1], np.full((480, 640), 2000))
    b = get_benchmark("nyuv2", tmp_path)
    gt = b.load_gt(b.items(limit=1)[0])
    rr, cc = np.nonzero(gt.valid)
    assert (rr.min(), rr.max(), cc.min(), cc.max()) == (45, 470, 41, 600)
    assert gt.valid.sum() == 426 * 560


def test_nyuv2_sync_layout(tmp_path, shared_data):
    rows = read_split(split_path("zoedepth/train_test_inputs/nyudepthv2_test_files_with_gt.txt"))[:3]
    base = tmp_path / "official_splits" / "test"
    for i, r in enumerate(rows):
        _rgb(base / r[0])
        _png16(base / r[1], _nyu_raw(shared_data, i))
    b = get_benchmark("nyuv2", tmp_path)
    items = b.items(limit=3)
    assert b.layout == "sync"
    assert items[0].key == "bathroom/rgb_00045" and items[0].depth_path == base / "bathroom/sync_depth_00045.png"
    gt = b.load_gt(items[2])
    assert gt.depth.shape == (480, 640) and gt.valid[:45].sum() == 0


def test_nyuv2_unknown_layout_and_missing_files_are_errors(tmp_path):
    with pytest.raises(InputError, match="no known layout"):
        get_benchmark("nyuv2", tmp_path).items()
    rows = read_split(split_path("marigold/data_split/nyu_depth/labeled/filename_list_test.txt"))[:1]
    _rgb(tmp_path / rows[0][0])  # the depth file is missing
    with pytest.raises(InputError, match="missing"):
        get_benchmark("nyuv2", tmp_path).items(limit=1)


# ------------------------------------------------------------------ KITTI
def _kitti_fixture(tmp_path: Path, n=2, h=375, w=1242) -> list[list[str]]:
    rows = [r for r in read_split(split_path("marigold/data_split/kitti_depth/eigen_test_files_with_gt.txt")) if r[1] != "None"][:n]
    yy, xx = np.mgrid[0:h, 0:w]
    raw = (1 + xx + (yy % 8) * 1300).astype(np.uint16)  # encodes the column (and row mod 8) of every pixel
    for r in rows:
        _rgb(tmp_path / "raw_data" / r[0], h, w)
        _png16(tmp_path / "data_depth_annotated" / "val" / r[1], raw)
    return rows


def test_kitti_eigen_test_652_with_gt_kb_and_garg_crops(tmp_path):
    rows = _kitti_fixture(tmp_path)
    b = get_benchmark("kitti", tmp_path)
    assert len(b._list(None)) == 652  # lines with None skipped
    items = b.items(limit=2)
    assert items[0].key == Path(rows[0][0]).with_suffix("").as_posix()
    gt = b.load_gt(items[0])
    assert gt.crop == (23, 13, 352, 1216) and gt.full_shape == (375, 1242)
    yy, xx = np.mgrid[0:375, 0:1242]
    raw = (1 + xx + (yy % 8) * 1300).astype(np.float32)
    np.testing.assert_allclose(gt.depth, raw[23:375, 13:1229] / 256)
    # Garg crop on the 352x1216 frame: rows [143, 349), cols [43, 1172); 80 m cap
    expect = np.zeros((352, 1216), bool)
    expect[143:349, 43:1172] = True
    expect &= gt.depth < 80
    np.testing.assert_array_equal(gt.valid, expect)
    rgb = b.load_rgb(items[0])
    assert rgb.shape == (352, 1216, 3)


def test_kitti_eigen_crop_option_and_no_kb_crop(tmp_path):
    _kitti_fixture(tmp_path, n=1)
    b = get_benchmark("kitti", tmp_path, crop="eigen")
    gt = b.load_gt(b.items(limit=1)[0])
    rr, cc = np.nonzero(gt.valid | (gt.depth >= 80))
    assert (rr.min(), rr.max() + 1, cc.min(), cc.max() + 1) == (117, 321, 43, 1172)
    b = get_benchmark("kitti", tmp_path, kb_crop=False, crop="none")
    gt = b.load_gt(b.items(limit=1)[0])
    assert gt.crop is None and gt.depth.shape == (375, 1242)


def test_kitti_absolute_paths_of_depth_anything_list_are_rerooted(tmp_path):
    rows = _kitti_fixture(tmp_path, n=1)
    b = get_benchmark("kitti", tmp_path, split=split_path("depth_anything_v2/metric_depth/dataset/splits/kitti/val.txt"))
    it = b.items(limit=1)[0]
    assert it.rgb_path == tmp_path / "raw_data" / rows[0][0]
    assert it.key == Path(rows[0][0]).with_suffix("").as_posix()


# ------------------------------------------------------------------ ETH3D
def test_eth3d_raw_float32_inf_invalid(tmp_path):
    rows = read_split(split_path("marigold/data_split/eth3d_depth/eth3d_filename_list.txt"))[:1]
    _rgb(tmp_path / rows[0][0])
    depth = np.full((4032, 6048), 3.5, "<f4")
    depth[:10] = np.inf
    depth[-1, -1] = 0.0
    (tmp_path / rows[0][1]).parent.mkdir(parents=True, exist_ok=True)
    depth.tofile(tmp_path / rows[0][1])
    b = get_benchmark("eth3d", tmp_path)
    it = b.items(limit=1)[0]
    assert it.key == "rgb/office/images/dslr_images/DSC_0219"
    gt = b.load_gt(it)
    assert gt.depth.shape == (4032, 6048)
    assert gt.valid.sum() == 4032 * 6048 - 10 * 6048 - 1
    assert gt.depth[0, 0] == 0.0 and gt.depth[100, 100] == 3.5
    del gt
    (tmp_path / rows[0][1]).write_bytes(b"\0" * 100)
    with pytest.raises(InputError, match="4032x6048"):
        b.load_gt(it)


# ------------------------------------------------------------------ ScanNet
def test_scannet_mm_and_10m_cap(tmp_path):
    rows = read_split(split_path("marigold/data_split/scannet_depth/scannet_val_sampled_list_800_1.txt"))[:2]
    raw = np.full((480, 640), 2500, np.uint16)
    raw[0, :5] = 12000  # 12 m: beyond the cap
    raw[1, :5] = 0
    for r in rows:
        _rgb(tmp_path / r[0])
        _png16(tmp_path / r[1], raw)
    b = get_benchmark("scannet", tmp_path)
    items = b.items(limit=2)
    assert items[0].key == "scene0406_02/color/000300"
    gt = b.load_gt(items[1])
    assert gt.valid.sum() == 480 * 640 - 10 and gt.depth[5, 5] == pytest.approx(2.5)


# ------------------------------------------------------------------ Sintel
def test_sintel_final_pass_all_frames_dpt_70m(tmp_path):
    for seq in ("alley_1", "market_2"):
        for f in (1, 2, 3):
            _rgb(tmp_path / "training/final" / seq / f"frame_{f:04d}.png", 4, 6)
            d = np.full((4, 6), 5.0 * f, np.float32)
            d[0, 0] = 1e6  # sky
            _dpt(tmp_path / "training/depth" / seq / f"frame_{f:04d}.dpt", d)
    split = tmp_path / "seqs.txt"
    split.write_text("alley_1\nmarket_2\n")
    b = get_benchmark("sintel", tmp_path, split=split)
    items = b.items()
    assert len(items) == 6 and items[0].key == "final/alley_1/frame_0001" and items[3].extra["scene"] == "market_2"
    gt = b.load_gt(items[2])
    assert gt.depth[1, 1] == 15.0 and not gt.valid[0, 0] and gt.valid.sum() == 23
    with pytest.raises(InputError, match="no frames"):
        get_benchmark("sintel", tmp_path).items()  # the default list names 23 sequences


# ------------------------------------------------------------------ DIODE
def test_diode_npy_with_mask_and_range(tmp_path):
    rows = read_split(split_path("marigold/data_split/diode_depth/diode_val_all_filename_list.txt"))[:2]
    base = tmp_path / "val"
    depth = np.full((6, 8, 1), 4.0, np.float32)
    depth[0, 0, 0] = 0.5  # below 0.6 m
    mask = np.ones((6, 8), np.float32)
    mask[5] = 0
    for r in rows:
        _rgb(base / r[0])
        np.save(base / r[1], depth)
        np.save(base / r[2], mask)
    b = get_benchmark("diode", tmp_path)
    items = b.items(limit=2)
    assert items[0].key == Path(rows[0][0]).with_suffix("").as_posix() and items[0].extra["scene"] == "indoors"
    gt = b.load_gt(items[0])
    assert gt.depth.shape == (6, 8) and gt.valid.sum() == 6 * 8 - 8 - 1


# ------------------------------------------------------------------ folder
def test_folder_pairs_and_encoding(shared_data):
    b = get_benchmark("folder", shared_data / "rgbd/nyu_sync", encoding="png-mm")
    items = b.items()
    assert [it.key for it in items] == ["rgb_00000", "rgb_00050", "rgb_00100"]
    gt = b.load_gt(items[0])
    raw = _nyu_raw(shared_data, 0)
    np.testing.assert_array_equal(gt.valid, raw > 1)  # > 1e-3 m
    with pytest.raises(InputError, match="--encoding"):
        get_benchmark("folder", shared_data / "rgbd/nyu_sync")


# ------------------------------------------------------------------ DA-2K from real pairs
def make_da2k(root: Path, shared_data: Path, pairs_per_image=12, seed=0) -> dict:
    """A DA-2K layout from the NYU fixture: points on valid pixels whose depths differ by > 25 %."""
    rng = np.random.default_rng(seed)
    ann = {}
    for i, (scene, name) in enumerate([("indoor", "rgb_00000"), ("indoor", "rgb_00050"), ("outdoor", "rgb_00100")]):
        rel = f"images/{scene}/{name}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / "rgbd/nyu_sync/rgb" / f"{name}.jpg", root / rel)
        depth = _nyu_raw(shared_data, i).astype(np.float64) / 1000
        rr, cc = np.nonzero(depth > 0)
        pairs = []
        while len(pairs) < pairs_per_image:
            a, b = rng.integers(0, rr.size, 2)
            d1, d2 = depth[rr[a], cc[a]], depth[rr[b], cc[b]]
            if max(d1, d2) / min(d1, d2) < 1.25:
                continue
            pairs.append({"point1": [int(rr[a]), int(cc[a])], "point2": [int(rr[b]), int(cc[b])],
                          "closer_point": "point1" if d1 < d2 else "point2"})
        ann[rel] = pairs
    (root / "annotations.json").write_text(json.dumps(ann))
    return ann


def test_da2k_accuracy_overall_and_per_scene(tmp_path, shared_data):
    root = tmp_path / "DA-2K"
    make_da2k(root, shared_data)
    b = get_benchmark("da2k", root)
    items = b.items()
    assert [it.scene for it in items] == ["indoor", "indoor", "outdoor"]
    assert items[0].key == "images/indoor/rgb_00000" and items[0].points.shape == (12, 4)
    preds = tmp_path / "pred"
    for i, it in enumerate(items):
        depth = _nyu_raw(shared_data, i).astype(np.float32) / 1000
        disp = np.where(depth > 0, 1 / np.maximum(depth, 1e-3), 0).astype(np.float32)
        if it.scene == "outdoor":
            disp = -disp  # reversed ordering: every pair wrong
        (preds / it.key).parent.mkdir(parents=True, exist_ok=True)
        np.save(preds / f"{it.key}.npy", disp)
    res = evaluate(b, FolderPredictions(preds), prediction_type="disparity", progress=False).to_json()
    assert res["accuracy"] == pytest.approx(24 / 36) and res["n_pairs"] == 36
    assert res["per_scene"]["indoor"]["accuracy"] == 1.0 and res["per_scene"]["outdoor"]["accuracy"] == 0.0
    # the same maps read as depth invert every answer
    res = evaluate(b, FolderPredictions(preds), prediction_type="depth", progress=False).to_json()
    assert res["accuracy"] == pytest.approx(12 / 36)


def test_da2k_malformed_annotations(tmp_path, shared_data):
    root = tmp_path / "DA-2K"
    make_da2k(root, shared_data)
    ann = json.loads((root / "annotations.json").read_text())
    first = next(iter(ann))
    ann[first][0]["closer_point"] = "point3"
    (root / "annotations.json").write_text(json.dumps(ann))
    with pytest.raises(InputError, match="closer_point"):
        get_benchmark("da2k", root).items()
