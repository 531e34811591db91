"""Bad files get a typed error (FormatError, an InputError) that names the file and the reason:
truncated, wrong magic, wrong size, NaN-filled, empty; oversized headers are refused as bombs."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from bridgedepth.errors import InputError
from bridgedepth.io import ENCODINGS, FormatError, detect_encoding, read_depth, read_image, write_depth
from bridgedepth.io import codecs as C

PARAMS = {"pfm-disparity": {"focal": 700.0, "baseline": 0.5}, "png-disparity-kitti": {"focal": 700.0, "baseline": 0.5},
          "eth3d-raw": {"shape": "20x30"}}


def _params(enc):
    return dict(PARAMS.get(enc, {}))


def _good_file(tmp_path, enc):
    rng = np.random.default_rng(1)
    lo, hi = (2.0, 60.0) if enc != "png-tum" else (1.0, 13.0)
    d = rng.uniform(lo, hi, (20, 30))
    path = tmp_path / f"good.{enc}"
    write_depth(path, d, enc, **_params(enc))
    return path


def _expect(path, match, fn=None, **kw):
    with pytest.raises(FormatError, match=match) as e:
        (fn or read_depth)(path, **kw)
    assert isinstance(e.value, InputError)
    assert str(path) in str(e.value) and e.value.path == str(path)
    return e.value


WRITABLE_WITH_CONTAINER = ["png-mm", "png-kitti", "png-tum", "png-cm", "png-sun3d", "png-disparity-kitti", "pgm-mm",
                           "pfm", "pfm-disparity", "dpt", "npy", "npz", "exr", "hypersim-hdf5"]


@pytest.mark.parametrize("enc", WRITABLE_WITH_CONTAINER)
def test_truncated(tmp_path, enc):
    good = _good_file(tmp_path, enc)
    data = good.read_bytes()
    bad = tmp_path / f"cut.{enc}"
    bad.write_bytes(data[: len(data) // 2])
    _expect(bad, "truncated|corrupt", encoding=enc, **_params(enc))


def test_truncated_header_and_raw(tmp_path):
    bad = tmp_path / "hdr.pfm"
    bad.write_bytes(b"Pf\n640")
    _expect(bad, "truncated")
    bad = tmp_path / "hdr.dpt"
    bad.write_bytes(C.DPT_MAGIC + b"\x01\x00")
    _expect(bad, "truncated")
    raw = tmp_path / "short.raw"
    raw.write_bytes(np.ones(10, "<f4").tobytes())
    _expect(raw, "truncated", encoding="eth3d-raw", shape="4x4")


@pytest.mark.parametrize("enc", [e for e in ENCODINGS if e != "eth3d-raw"])
def test_wrong_magic(tmp_path, enc):
    bad = tmp_path / f"text.{enc}"
    bad.write_bytes(b"this is a text file, not a depth map at all\n" * 4)
    _expect(bad, "wrong magic", encoding=enc, **_params(enc))


def test_wrong_magic_cross_format(tmp_path):
    pfm = _good_file(tmp_path, "pfm")
    _expect(pfm, "wrong magic", encoding="png-mm")
    png = _good_file(tmp_path, "png-mm")
    _expect(png, "wrong magic", encoding="dpt")
    # an 8-bit PNG is not a depth PNG
    from bridgedepth.io import write_image

    img = tmp_path / "rgb.png"
    write_image(img, np.zeros((4, 4, 3), np.uint8))
    _expect(img, "16-bit", encoding="png-mm")
    _expect(img, "image, not a depth map")


def test_wrong_size(tmp_path):
    for enc in ("pfm", "dpt", "pgm-mm"):
        good = _good_file(tmp_path, enc)
        bad = tmp_path / f"long.{enc}"
        bad.write_bytes(good.read_bytes() + b"\x00" * 8)
        _expect(bad, "wrong size", encoding=enc)
    raw = _good_file(tmp_path, "eth3d-raw")
    _expect(raw, "wrong size", encoding="eth3d-raw", shape="20x20")
    np.save(tmp_path / "cube.npy", np.ones((2, 3, 4), np.float32))
    _expect(tmp_path / "cube.npy", "wrong shape")
    np.savez(tmp_path / "mask.npz", depth=np.ones((2, 3), np.float32), valid=np.ones((3, 2), bool))
    _expect(tmp_path / "mask.npz", "wrong shape")
    colour = tmp_path / "colour.pfm"
    colour.write_bytes(b"PF\n2 2\n-1.0\n" + np.ones(12, "<f4").tobytes())
    _expect(colour, "3-channel")


def test_nan_filled(tmp_path):
    nan = np.full((3, 4), np.nan, np.float32)
    files = {
        "pfm": C.encode_pfm(nan), "dpt": C.encode_dpt(nan), "npy": C.encode_npy(nan),
        "npz": C.encode_npz(depth=nan), "eth3d-raw": C.encode_raw_f32(nan),
    }
    for enc, data in files.items():
        p = tmp_path / f"nan.{enc}"
        p.write_bytes(data)
        params = {"shape": "3x4"} if enc == "eth3d-raw" else {}
        _expect(p, "NaN-filled", encoding=enc, **params)
    p = tmp_path / "nan.exr"
    C.write_exr_file(p, nan)
    _expect(p, "NaN-filled")
    p = tmp_path / "nan.pfm"
    _expect(p, "NaN-filled", encoding="pfm-disparity", focal=1.0, baseline=1.0)


def test_partial_nan_is_invalid_not_an_error(tmp_path):
    a = np.array([[1.0, np.nan], [np.inf, 2.0]], np.float32)
    (tmp_path / "p.pfm").write_bytes(C.encode_pfm(a))
    dm = read_depth(tmp_path / "p.pfm")
    np.testing.assert_array_equal(dm.valid, [[True, False], [False, True]])


def test_negative_depth_is_an_error(tmp_path):
    (tmp_path / "neg.npy").write_bytes(C.encode_npy(np.array([[1.0, -3.0]], np.float32)))
    _expect(tmp_path / "neg.npy", "negative")


@pytest.mark.parametrize("enc", list(ENCODINGS))
def test_empty(tmp_path, enc):
    p = tmp_path / f"empty.{enc}"
    p.write_bytes(b"")
    _expect(p, "empty", encoding=enc, **_params(enc))


def test_empty_missing_and_directory_everywhere(tmp_path):
    p = tmp_path / "empty.png"
    p.write_bytes(b"")
    _expect(p, "empty")
    _expect(p, "empty", fn=read_image)
    _expect(p, "empty", fn=detect_encoding)
    _expect(tmp_path / "nope.png", "no such", fn=read_image)
    _expect(tmp_path / "nope.pfm", "no such")
    _expect(tmp_path, "directory", fn=read_image)


def test_unknown_encoding_and_parameters(tmp_path):
    good = _good_file(tmp_path, "png-mm")
    with pytest.raises(InputError, match="png-kitti"):
        read_depth(good, "png-miles")
    with pytest.raises(InputError, match="baseline"):
        read_depth(good, "png-mm", baseline=0.5)
    with pytest.raises(InputError, match="needs"):
        read_depth(good, "png-disparity-kitti", focal=700.0)
    with pytest.raises(InputError, match="HxW"):
        read_depth(_good_file(tmp_path, "eth3d-raw"), "eth3d-raw", shape="twenty by thirty")
    with pytest.raises(InputError, match="shape"):
        read_depth(_good_file(tmp_path, "eth3d-raw"), "eth3d-raw")


def test_uint16_png_without_encoding_lists_choices(tmp_path):
    err = _expect(_good_file(tmp_path, "png-mm"), "pass an encoding")
    for name in ("png-mm", "png-kitti", "png-tum", "png-cm", "png-sun3d", "png-disparity-kitti"):
        assert name in str(err)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _bomb_png(width: int, height: int, bit_depth: int, colour: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    return C.PNG_MAGIC + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def test_decompression_bomb_refused(tmp_path):
    rgb = tmp_path / "bomb.png"
    rgb.write_bytes(_bomb_png(60000, 60000, 8, 2))  # claims 3.6 G pixels in about 100 bytes
    _expect(rgb, "decompression bomb", fn=read_image)
    depth = tmp_path / "bomb16.png"
    depth.write_bytes(_bomb_png(60000, 60000, 16, 0))
    _expect(depth, "decompression bomb", encoding="png-mm")
    pfm = tmp_path / "bomb.pfm"
    pfm.write_bytes(b"Pf\n100000 100000\n-1.0\n" + b"\x00" * 64)
    _expect(pfm, "decompression bomb")


def test_pixel_limit_is_configurable(tmp_path, monkeypatch):
    from bridgedepth.io import common, write_image

    p = tmp_path / "small.png"
    write_image(p, np.zeros((10, 10, 3), np.uint8))
    monkeypatch.setattr(common, "MAX_IMAGE_PIXELS", 50)
    _expect(p, "exceeds the limit of 50", fn=read_image)


def test_cli_reports_bad_file(tmp_path, run_cli):
    good = _good_file(tmp_path, "dpt")
    bad = tmp_path / "cut.dpt"
    bad.write_bytes(good.read_bytes()[:100])
    r = run_cli("inspect", bad)
    assert r.code == 2 and str(bad) in r.err and "truncated" in r.err
    assert "Traceback" not in r.err


def test_file_stamps_see_files_under_folders_through_links_and_skip_missing(tmp_path):
    import os

    from pathlib import Path

    from bridgedepth.io.common import file_stamps

    ck = tmp_path / "ckpt"
    (ck / "sub").mkdir(parents=True)
    (ck / "model.safetensors").write_bytes(b"abc")
    (ck / "sub" / "config.json").write_text("{}")
    target = tmp_path / "elsewhere.bin"
    target.write_bytes(b"12345")
    (ck / "link.bin").symlink_to(target)
    stamps = file_stamps([ck, tmp_path / "missing"])
    assert [Path(p).name for p, _, _ in stamps] == ["link.bin", "model.safetensors", "config.json"]
    assert [size for _, size, _ in stamps] == [5, 3, 2]  # the link counts with its target's size
    os.utime(target, ns=(0, target.stat().st_mtime_ns + 10**9))
    assert file_stamps([ck]) != stamps  # a target rewritten behind its link is noticed
    assert file_stamps([ck / "model.safetensors"]) == (stamps[1],)
