"""Every real file in ../shared/data/rgbd decodes with its encoding into the documented metre ranges,
and `bridge inspect` describes them (text and JSON)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from bridgedepth.io import FormatError, detect_encoding, read_depth, read_image, read_middlebury_calib

MB = "stereo/MIDDLEBURY_2014/trainingQ/Motorcycle"
SF = "stereo/SCENE_FLOW/disparity/left/A-0032-0006.pfm"
K15 = "stereo/KITTI_2015/training/disp_occ_0/000046_10.png"
KITTI_STEREO = {"focal": 721.5377, "baseline": 0.54}  # KITTI 2015 rectified P2 focal, 0.54 m baseline
SCENE_FLOW = {"focal": 1050.0, "baseline": 1.0}  # FlyingThings3D: f = 1050 px, baseline 1 Blender unit

# (relative path, encoding, params, (min lo, min hi), (max lo, max hi), (valid lo, valid hi), shape)
CASES = [
    *[(f"kitti_annotated/depth/{n}.png", "png-kitti", {}, (5.0, 5.5), (80.0, 85.5), (0.17, 0.22), (375, 1242))
      for n in ("0000000005", "0000000050", "0000000100")],
    *[(f"nyu_sync/depth/sync_depth_{n}.png", "png-mm", {}, (0.7, 1.4), (6.4, 8.3), (0.65, 0.77), (480, 640))
      for n in ("00000", "00050", "00100")],
    *[(f"open3d/depth/0000{i}.png", "png-mm", {}, (0.95, 1.06), (2.67, 2.71), (0.86, 0.88), (480, 640))
      for i in range(5)],
    ("open3d/other_formats/TUM_depth.png", "png-tum", {}, (1.45, 1.48), (9.3, 9.35), (0.80, 0.82), (480, 640)),
    ("open3d/other_formats/SUN_depth.png", "png-sun3d", {}, (1.05, 1.07), (9.85, 9.89), (0.81, 0.83), (480, 640)),
    ("open3d/other_formats/NYU_depth.pgm", "pgm-nyu-raw", {}, (1.38, 1.40), (6.68, 6.70), (0.92, 0.94), (480, 640)),
    (f"{MB}/disp0GT.pfm", "pfm-disparity", {"calib": f"{MB}/calib.txt"}, (2.0, 2.03), (4.58, 4.61), (0.97, 0.99),
     (497, 741)),
    (SF, "pfm-disparity", SCENE_FLOW, (8.0, 8.1), (860.0, 880.0), (1.0, 1.0), (540, 960)),
    (K15, "png-disparity-kitti", KITTI_STEREO, (5.9, 5.95), (79.9, 80.1), (0.11, 0.13), (375, 1242)),
]


@pytest.mark.parametrize("rel,encoding,params,min_rng,max_rng,valid_rng,shape", CASES, ids=[c[0] for c in CASES])
def test_fixture_decodes_in_documented_range(shared_data, rel, encoding, params, min_rng, max_rng, valid_rng, shape):
    root = shared_data / "rgbd"
    params = {k: (str(root / v) if k == "calib" else v) for k, v in params.items()}
    dm = read_depth(root / rel, encoding, **params)
    assert dm.encoding == encoding and dm.path == str(root / rel)
    assert dm.depth.dtype == np.float32 and dm.valid.dtype == bool
    assert dm.shape == shape and dm.valid.shape == shape
    assert np.all(dm.depth[~dm.valid] == 0) and np.all(dm.depth[dm.valid] > 0)
    assert np.isfinite(dm.depth).all()
    s = dm.stats()
    assert min_rng[0] <= s["min_m"] <= min_rng[1]
    assert max_rng[0] <= s["max_m"] <= max_rng[1]
    assert s["min_m"] <= s["median_m"] <= s["max_m"]
    assert valid_rng[0] <= dm.valid_fraction <= valid_rng[1]


def test_png_mm_matches_opencv_reference(shared_data):
    p = shared_data / "rgbd/nyu_sync/depth/sync_depth_00050.png"
    ref = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
    assert ref.dtype == np.uint16
    dm = read_depth(p, "png-mm")
    np.testing.assert_allclose(dm.depth, ref / 1000.0, rtol=1e-6)
    np.testing.assert_array_equal(dm.valid, ref > 0)


def test_sun3d_rotation_matters(shared_data):
    """Read as plain millimetres the SUN frame spans about 0.16-64 m (garbage); rotated, about 1-10 m."""
    p = shared_data / "rgbd/open3d/other_formats/SUN_depth.png"
    plain = read_depth(p, "png-mm").stats()
    assert plain["max_m"] > 60 and plain["min_m"] < 0.2
    raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.uint32)
    expected = (((raw >> 3) | (raw << 13)) & 0xFFFF) / 1000.0
    np.testing.assert_allclose(read_depth(p, "png-sun3d").depth, expected, rtol=1e-6)


def test_nyu_raw_pgm_is_little_endian_disparity(shared_data):
    p = shared_data / "rgbd/open3d/other_formats/NYU_depth.pgm"
    raw = np.frombuffer(p.read_bytes()[-640 * 480 * 2:], "<u2").reshape(480, 640).astype(np.float64)
    dm = read_depth(p, "pgm-nyu-raw")
    ok = raw < 1092.5
    np.testing.assert_array_equal(dm.valid, ok)
    np.testing.assert_allclose(dm.depth[ok], 351.3 / (1092.5 - raw[ok]), rtol=1e-6)
    # Trusting the header (big-endian millimetres) gives garbage, which pgm-mm refuses or shows wildly
    try:
        wrong = read_depth(p, "pgm-mm").stats()
        assert wrong["max_m"] > 20
    except FormatError as e:
        assert "maxval" in str(e)


def test_middlebury_formula(shared_data):
    d = shared_data / "rgbd" / MB
    cal = read_middlebury_calib(d / "calib.txt")
    assert cal == pytest.approx({"focal": 999.421, "baseline": 0.193001, "doffs": 32.778})
    disp = read_depth(d / "disp0GT.pfm")  # auto-detected as plain PFM: the raw disparity values
    assert disp.encoding == "pfm"
    dm = read_depth(d / "disp0GT.pfm", "pfm-disparity", calib=d / "calib.txt")
    np.testing.assert_array_equal(dm.valid, disp.valid)
    v = dm.valid
    np.testing.assert_allclose(dm.depth[v], 999.421 * 193.001 / (disp.depth[v] + 32.778) / 1000, rtol=1e-5)
    # explicit parameters give the same as the calibration file
    dm2 = read_depth(d / "disp0GT.pfm", "pfm-disparity", focal=999.421, baseline=0.193001, doffs=32.778)
    np.testing.assert_allclose(dm2.depth, dm.depth, rtol=1e-6)


def test_pfm_rows_are_bottom_to_top(shared_data):
    """The Motorcycle's non-occluded mask (stored top-down as PNG) lines up with the decoded PFM's valid
    pixels only if the PFM rows were flipped."""
    d = shared_data / "rgbd" / MB
    mask = cv2.imread(str(d / "mask0nocc.png"), cv2.IMREAD_UNCHANGED)
    dm = read_depth(d / "disp0GT.pfm")
    nocc = mask == 255
    assert dm.valid[nocc].mean() > 0.999
    assert dm.valid[::-1][nocc].mean() < dm.valid[nocc].mean()


def test_pfm_both_endiannesses(shared_data):
    """Scene Flow's PFM (little-endian, scale -1) rewritten big-endian decodes identically."""
    p = shared_data / "rgbd" / SF
    data = p.read_bytes()
    header, pixels = data[:18], data[18:]
    assert header.split()[3] == b"-1.0"
    be = b"Pf\n960 540\n1.0\n" + np.frombuffer(pixels, "<f4").astype(">f4").tobytes()
    from bridgedepth.io.codecs import decode_pfm

    np.testing.assert_array_equal(decode_pfm("be", be), decode_pfm("le", data))


def test_all_rgb_fixtures_decode(shared_data):
    root = shared_data / "rgbd"
    files = [f for ext in ("*.jpg", "*.ppm") for f in root.rglob(ext)]
    files += [f for f in root.rglob("*.png") if "depth" not in f.parts and "disp_occ_0" not in f.parts]
    assert len(files) >= 20
    for f in files:
        rgb = read_image(f)
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, f
    # the RGBA Scene Flow frame: alpha dropped, colours kept
    sf = root / "stereo/SCENE_FLOW/RGB_cleanpass/left/A-0032-0006.png"
    bgra = cv2.imread(str(sf), cv2.IMREAD_UNCHANGED)
    assert bgra.shape[2] == 4
    np.testing.assert_array_equal(read_image(sf), bgra[..., 2::-1])
    # the NYU PPM matches OpenCV's decoding
    ppm = root / "open3d/other_formats/NYU_color.ppm"
    np.testing.assert_array_equal(read_image(ppm), cv2.imread(str(ppm))[..., ::-1])


def test_detect_encoding_on_fixtures(shared_data):
    root = shared_data / "rgbd"
    assert detect_encoding(root / SF) == "pfm"
    assert detect_encoding(root / MB / "disp0GT.pfm") == "pfm"
    assert detect_encoding(root / "nyu_sync/depth/sync_depth_00000.png") is None
    assert detect_encoding(root / "open3d/other_formats/NYU_depth.pgm") is None


# ------------------------------------------------------------------------------------- bridge inspect
DEPTH_KEYS = ["path", "kind", "encoding", "shape", "valid_fraction", "min_m", "median_m", "max_m"]
IMAGE_KEYS = ["path", "kind", "shape", "mode"]


def test_inspect_text_sun3d(shared_data, run_cli):
    p = shared_data / "rgbd/open3d/other_formats/SUN_depth.png"
    r = run_cli("inspect", p, "--encoding", "png-sun3d")
    assert r.code == 0, r
    assert "png-sun3d" in r.out and "480 x 640" in r.out
    assert "1.0570" in r.out and "9.8700" in r.out


def test_inspect_json_middlebury(shared_data, run_cli):
    d = shared_data / "rgbd" / MB
    r = run_cli("inspect", d / "disp0GT.pfm", "--encoding", "pfm-disparity", "--calib", d / "calib.txt", "--json")
    assert r.code == 0, r
    rec = json.loads(r.out)
    assert list(rec) == DEPTH_KEYS
    assert rec["kind"] == "depth" and rec["encoding"] == "pfm-disparity" and rec["shape"] == [497, 741]
    assert 2.0 < rec["min_m"] < 2.1 and 4.5 < rec["max_m"] < 4.7 and 0.97 < rec["valid_fraction"] < 0.99


def test_inspect_json_kitti_disparity_flags(shared_data, run_cli):
    r = run_cli("inspect", shared_data / "rgbd" / K15, "-e", "png-disparity-kitti", "--focal", "721.5377",
                "--baseline", "0.54", "--json")
    assert r.code == 0, r
    rec = json.loads(r.out)
    assert 79 < rec["max_m"] < 81 and rec["shape"] == [375, 1242]


def test_inspect_nyu_raw_and_auto_pfm(shared_data, run_cli):
    r = run_cli("inspect", shared_data / "rgbd/open3d/other_formats/NYU_depth.pgm", "-e", "pgm-nyu-raw", "--json")
    rec = json.loads(r.out)
    assert 1.38 < rec["min_m"] < 1.40 and 6.68 < rec["max_m"] < 6.70
    r = run_cli("inspect", shared_data / "rgbd" / SF, "--json")  # magic says PFM: depth without --encoding
    assert r.code == 0, r
    assert json.loads(r.out)["encoding"] == "pfm"


def test_inspect_images(shared_data, run_cli):
    r = run_cli("inspect", shared_data / "rgbd/nyu_sync/rgb/rgb_00000.jpg", "--json")
    assert r.code == 0, r
    rec = json.loads(r.out)
    assert list(rec) == IMAGE_KEYS and rec["kind"] == "image" and rec["shape"] == [480, 640, 3] and rec["mode"] == "RGB"
    r = run_cli("inspect", shared_data / "rgbd/stereo/SCENE_FLOW/RGB_cleanpass/left/A-0032-0006.png")
    assert r.code == 0, r
    assert "image" in r.out and "RGBA" in r.out and "540 x 960 x 4" in r.out
    r = run_cli("inspect", shared_data / "rgbd/stereo/MIDDLEBURY_2014/trainingQ/Motorcycle/mask0nocc.png", "--json")
    assert json.loads(r.out)["mode"] == "L"


def test_inspect_uint16_png_without_encoding_lists_choices(shared_data, run_cli):
    p = shared_data / "rgbd/nyu_sync/depth/sync_depth_00000.png"
    r = run_cli("inspect", p)
    assert r.code == 2
    assert str(p) in r.err
    for name in ("png-mm", "png-kitti", "png-tum", "png-cm", "png-sun3d"):
        assert name in r.err
    r = run_cli("inspect", shared_data / "rgbd/open3d/other_formats/NYU_depth.pgm")
    assert r.code == 2 and "pgm-nyu-raw" in r.err and "pgm-mm" in r.err


def test_inspect_bad_arguments(shared_data, run_cli, tmp_path):
    p = shared_data / "rgbd/nyu_sync/depth/sync_depth_00000.png"
    r = run_cli("inspect", p, "--encoding", "png-furlongs")
    assert r.code == 2 and "png-furlongs" in r.err and "png-mm" in r.err
    r = run_cli("inspect", p, "--encoding", "png-mm", "--focal", "500")
    assert r.code == 2 and "focal" in r.err
    r = run_cli("inspect", shared_data / "rgbd" / MB / "disp0GT.pfm", "--encoding", "pfm-disparity")
    assert r.code == 2 and "calib" in r.err
    r = run_cli("inspect", tmp_path / "missing.png")
    assert r.code == 2 and "missing.png" in r.err
