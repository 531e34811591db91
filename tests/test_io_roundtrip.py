"""Write-then-read for every writable depth encoding: property tests on random shapes, values and
validity masks, plus the refusals (values an encoding cannot hold raise instead of wrapping)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from bridgedepth.errors import InputError
from bridgedepth.io import (
    ENCODINGS,
    FormatError,
    detect_encoding,
    read_depth,
    writable_encodings,
    write_depth,
)
from bridgedepth.io.depth import HYPERSIM_FOCAL_1024, hypersim_ray_norm

# encoding -> scale (stored integer = round(metres * scale)) for the uint16 encodings
QUANTIZED = {"png-mm": 1000.0, "png-kitti": 256.0, "png-tum": 5000.0, "png-cm": 100.0, "png-sun3d": 1000.0,
             "pgm-mm": 1000.0}
FLOATS = ("pfm", "dpt", "eth3d-raw", "exr", "npy", "npz", "hypersim-hdf5", "pfm-disparity")
STEREO = {"focal": 700.0, "baseline": 0.5}
PARAMS = {"pfm-disparity": STEREO, "png-disparity-kitti": STEREO}
DETECTED = {"pfm": "pfm", "pfm-disparity": "pfm", "dpt": "dpt", "exr": "exr", "npy": "npy", "npz": "npz",
            "hypersim-hdf5": "hypersim-hdf5"}

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_every_listed_writer_exists():
    required = {"png-mm", "png-kitti", "png-tum", "png-cm", "png-sun3d", "pgm-mm", "pfm", "dpt", "eth3d-raw", "exr",
                "npy", "npz", "png-disparity-kitti"}
    assert required <= set(writable_encodings())
    assert set(QUANTIZED) | set(FLOATS) | {"png-disparity-kitti"} == set(writable_encodings())
    assert not ENCODINGS["pgm-nyu-raw"].writable


def _params(enc, shape):
    p = dict(PARAMS.get(enc, {}))
    if enc == "eth3d-raw":
        p["shape"] = f"{shape[0]}x{shape[1]}"
    return p


@st.composite
def depth_case(draw, lo: float, hi: float):
    h = draw(st.integers(1, 9))
    w = draw(st.integers(1, 9))
    vals = draw(arrays(np.float64, (h, w), elements=st.floats(lo, hi, allow_nan=False, allow_infinity=False)))
    valid = draw(arrays(np.bool_, (h, w)))
    junk = draw(st.sampled_from([0.0, np.nan, np.inf, -1.0, 3.0]))  # what invalid pixels hold: ignored
    return np.where(valid, vals, junk), valid


def _roundtrip(enc, depth, valid):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"x.{enc}"
        params = _params(enc, depth.shape)
        write_depth(path, depth, enc, valid=valid, **params)
        assert detect_encoding(path) == DETECTED.get(enc)
        assert not [f for f in Path(d).iterdir() if f.name != path.name]  # no temporary left behind
        return read_depth(path, enc, **params)


@pytest.mark.parametrize("enc", sorted(QUANTIZED))
@SETTINGS
@given(data=st.data())
def test_quantized_roundtrip(enc, data):
    s = QUANTIZED[enc]
    depth, valid = data.draw(depth_case(1.0 / s, 65535.0 / s))
    dm = _roundtrip(enc, depth, valid)
    np.testing.assert_array_equal(dm.valid, valid)
    assert np.all(dm.depth[~valid] == 0)
    expected = (np.rint(depth[valid] * s) / s).astype(np.float32)
    np.testing.assert_allclose(dm.depth[valid], expected, rtol=1e-6)
    assert np.all(np.abs(dm.depth[valid] - depth[valid]) <= 0.5 / s + 1e-6 * depth[valid])


@pytest.mark.parametrize("enc", FLOATS)
@SETTINGS
@given(data=st.data())
def test_float_roundtrip(enc, data):
    depth, valid = data.draw(depth_case(1e-3, 1e4))
    dm = _roundtrip(enc, depth, valid)
    np.testing.assert_array_equal(dm.valid, valid)
    assert np.all(dm.depth[~valid] == 0)
    np.testing.assert_allclose(dm.depth[valid], depth[valid], rtol=3e-6)


@SETTINGS
@given(data=st.data())
def test_kitti_disparity_roundtrip(data):
    fb = STEREO["focal"] * STEREO["baseline"]
    depth, valid = data.draw(depth_case(fb * 256 / 65535 * 1.0001, fb * 256))
    dm = _roundtrip("png-disparity-kitti", depth, valid)
    np.testing.assert_array_equal(dm.valid, valid)
    # exact to the stored 1/256 px disparity step
    err = np.abs(fb / dm.depth[valid].astype(np.float64) - fb / depth[valid])
    assert np.all(err <= 0.5 / 256 + 1e-4)


def test_default_valid_is_finite_positive(tmp_path):
    d = np.array([[1.0, 0.0, np.nan], [np.inf, 2.5, 3.0]])
    write_depth(tmp_path / "a.png", d, "png-mm")
    dm = read_depth(tmp_path / "a.png", "png-mm")
    np.testing.assert_array_equal(dm.valid, [[True, False, False], [False, True, True]])
    np.testing.assert_allclose(dm.depth, [[1.0, 0, 0], [0, 2.5, 3.0]])


def test_pfm_invalid_written_as_inf(tmp_path):
    write_depth(tmp_path / "a.pfm", np.array([[1.0, 0.0]]), "pfm")
    raw = np.frombuffer((tmp_path / "a.pfm").read_bytes()[-8:], "<f4")
    assert raw[0] == 1.0 and np.isinf(raw[1])


def test_pfm_disparity_with_doffs(tmp_path):
    d = np.array([[2.0, 3.0], [4.5, 0.0]])
    p = {"focal": 999.421, "baseline": 0.193001, "doffs": 32.778}
    write_depth(tmp_path / "d.pfm", d, "pfm-disparity", **p)
    disp = read_depth(tmp_path / "d.pfm", "pfm").depth
    np.testing.assert_allclose(disp[0, 0], 999.421 * 0.193001 / 2.0 - 32.778, rtol=1e-6)
    np.testing.assert_allclose(read_depth(tmp_path / "d.pfm", "pfm-disparity", **p).depth, d, rtol=1e-5)
    with pytest.raises(FormatError, match="non-positive disparity"):
        write_depth(tmp_path / "far.pfm", np.array([[100.0]]), "pfm-disparity", **p)


@pytest.mark.parametrize("enc,too_big,limit", [("png-mm", 65.536, "65.535"), ("png-kitti", 256.0, "255.996"),
                                                ("png-tum", 13.2, "13.107"), ("png-cm", 656.0, "655.35"),
                                                ("png-sun3d", 70.0, "65.535"), ("pgm-mm", 100.0, "65.535")])
def test_unrepresentable_values_raise_not_wrap(tmp_path, enc, too_big, limit):
    path = tmp_path / f"x.{enc}"
    with pytest.raises(FormatError, match=limit) as e:
        write_depth(path, np.array([[1.0, too_big]]), enc)
    assert str(path) in str(e.value)
    assert not path.exists()
    with pytest.raises(FormatError, match="round to 0"):  # below half a step would read back as invalid
        write_depth(path, np.array([[1.0, 0.1 / QUANTIZED[enc]]]), enc)


def test_kitti_disparity_limits(tmp_path):
    with pytest.raises(FormatError, match="exceeds"):  # too near: disparity > 255.996 px
        write_depth(tmp_path / "d.png", np.array([[1.0]]), "png-disparity-kitti", **STEREO)
    with pytest.raises(FormatError, match="round to 0"):  # too far: disparity < 1/512 px
        write_depth(tmp_path / "d.png", np.array([[1e6]]), "png-disparity-kitti", **STEREO)
    with pytest.raises(InputError, match="focal"):
        write_depth(tmp_path / "d.png", np.array([[10.0]]), "png-disparity-kitti")


def test_bad_depth_values_raise(tmp_path):
    with pytest.raises(FormatError, match="negative"):
        write_depth(tmp_path / "n.pfm", np.array([[1.0, -2.0]]), "pfm")
    write_depth(tmp_path / "n.pfm", np.array([[1.0, -2.0]]), "pfm", valid=np.array([[True, False]]))
    with pytest.raises(FormatError, match="not finite"):
        write_depth(tmp_path / "n.pfm", np.array([[1.0, np.nan]]), "pfm", valid=np.ones((1, 2), bool))
    with pytest.raises(FormatError, match="float32"):
        write_depth(tmp_path / "n.npy", np.array([[1.0, 1e40]]), "npy")
    with pytest.raises(InputError, match="read-only"):
        write_depth(tmp_path / "n.pgm", np.ones((2, 2)), "pgm-nyu-raw")
    with pytest.raises(InputError, match="png-mm"):
        write_depth(tmp_path / "n.png", np.ones((2, 2)), "png-inches")
    with pytest.raises(InputError, match="shape"):
        write_depth(tmp_path / "n.png", np.ones((2, 2, 2)), "png-mm")
    with pytest.raises(InputError, match="does not match"):
        write_depth(tmp_path / "n.raw", np.ones((2, 3)), "eth3d-raw", shape="3x2")


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "keep.png"
    write_depth(path, np.full((2, 2), 1.5), "png-mm")
    before = path.read_bytes()
    with pytest.raises(FormatError):
        write_depth(path, np.full((2, 2), 100.0), "png-mm")
    assert path.read_bytes() == before
    assert sorted(f.name for f in tmp_path.iterdir()) == ["keep.png"]


def test_npz_valid_mask_wins(tmp_path):
    d = np.full((2, 3), 2.0)
    valid = np.array([[True, False, True], [False, True, True]])
    write_depth(tmp_path / "a.npz", d, "npz", valid=valid)
    with np.load(tmp_path / "a.npz") as z:
        assert sorted(z.files) == ["depth", "valid"]
    dm = read_depth(tmp_path / "a.npz")
    assert dm.encoding == "npz"
    np.testing.assert_array_equal(dm.valid, valid)
    np.testing.assert_array_equal(dm.depth, np.where(valid, 2.0, 0.0))


def test_npz_and_npy_variants(tmp_path):
    np.savez(tmp_path / "one.npz", pred=np.full((2, 2), 3.0, np.float32))
    assert read_depth(tmp_path / "one.npz").depth[0, 0] == 3.0
    np.savez(tmp_path / "two.npz", a=np.ones((2, 2)), b=np.ones((2, 2)))
    with pytest.raises(FormatError, match="key"):
        read_depth(tmp_path / "two.npz")
    assert read_depth(tmp_path / "two.npz", key="b").valid.all()
    np.save(tmp_path / "diode.npy", np.full((3, 4, 1), 5.0, np.float32))  # DIODE's (H, W, 1)
    assert read_depth(tmp_path / "diode.npy").shape == (3, 4)
    np.save(tmp_path / "mm.npy", np.full((3, 4), 5000, np.uint16))
    with pytest.raises(FormatError, match="uint16"):
        read_depth(tmp_path / "mm.npy")


def test_hypersim_distance_to_planar(tmp_path):
    import h5py

    h, w, f = 6, 8, 5.0
    planar = np.full((h, w), 2.0)
    dist = planar * hypersim_ray_norm(h, w, f)
    dist[0, 0] = np.nan
    with h5py.File(tmp_path / "frame.depth_meters.hdf5", "w") as fh:
        fh.create_dataset("dataset", data=dist.astype(np.float16))  # Hypersim stores float16
    dm = read_depth(tmp_path / "frame.depth_meters.hdf5", focal=f)
    assert dm.encoding == "hypersim-hdf5"
    assert not dm.valid[0, 0] and dm.valid.sum() == h * w - 1
    np.testing.assert_allclose(dm.depth[dm.valid], 2.0, rtol=2e-3)  # float16 storage
    # the corner ray is the longest: its distance exceeds the planar depth by |ray| / f
    assert dist[-1, -1] == pytest.approx(2.0 * np.sqrt(25 + 3.5**2 + 2.5**2) / 5)
    # default focal: 60 degree horizontal field of view
    assert HYPERSIM_FOCAL_1024 == pytest.approx(886.81, abs=0.01)


def test_exr_channel_choice(tmp_path):
    import OpenEXR

    z = np.full((3, 4), 7.0, np.float32)
    hdr = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(hdr, {"R": z, "G": z * 0 + 1, "B": z * 0 + 2}) as f:
        f.write(str(tmp_path / "rgb.exr"))
    assert read_depth(tmp_path / "rgb.exr").depth[0, 0] == 7.0  # R when no Z / depth channel
    assert read_depth(tmp_path / "rgb.exr", channel="B").depth[0, 0] == 2.0
    with OpenEXR.File(hdr, {"alpha": z, "beta": z}) as f:
        f.write(str(tmp_path / "two.exr"))
    with pytest.raises(FormatError, match="channel"):
        read_depth(tmp_path / "two.exr")
    write_depth(tmp_path / "w.exr", z, "exr", channel="depth")
    assert read_depth(tmp_path / "w.exr", channel="depth").depth[1, 1] == 7.0


def test_exr_missing_package_gives_clear_error(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "OpenEXR":
            raise ImportError("No module named 'OpenEXR'")
        return real_import(name, *a, **k)

    good = tmp_path / "good.exr"
    write_depth(good, np.ones((2, 2)), "exr")
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(FormatError, match="OpenEXR") as e:
        write_depth(tmp_path / "x.exr", np.ones((2, 2)), "exr")
    assert "x.exr" in str(e.value) and "pip install" in str(e.value)
    with pytest.raises(FormatError, match="OpenEXR") as e:
        read_depth(good)
    assert str(good) in str(e.value)
    assert [f.name for f in tmp_path.iterdir()] == ["good.exr"]
