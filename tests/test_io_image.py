"""Images (explicit conversions, round trips, refusals), atomic writes and colorize."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from bridgedepth.errors import InputError
from bridgedepth.io import FormatError, atomic_path, atomic_write, colorize, image_info, read_image, write_image


def _rgb(h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".bmp", ".ppm", ".tif", ".tiff"])
def test_lossless_roundtrip(tmp_path, suffix):
    a = _rgb()
    write_image(tmp_path / f"a{suffix}", a)
    np.testing.assert_array_equal(read_image(tmp_path / f"a{suffix}"), a)


@settings(max_examples=15, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3))))
def test_png_roundtrip_property(a):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        write_image(Path(d) / "x.png", a)
        np.testing.assert_array_equal(read_image(Path(d) / "x.png"), a)


def test_jpeg_roundtrip_is_close(tmp_path):
    a = np.zeros((32, 32, 3), np.uint8)
    a[:, :16] = (200, 40, 90)
    write_image(tmp_path / "a.jpg", a)
    b = read_image(tmp_path / "a.jpg")
    assert b.shape == a.shape and np.abs(b.astype(int) - a).mean() < 4


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgba = np.dstack([_rgb(), np.zeros((5, 7), np.uint8)])  # fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])
    la = np.dstack([np.full((3, 3), 77, np.uint8), np.zeros((3, 3), np.uint8)])
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert (read_image(tmp_path / "la.png") == 77).all()


def test_grey_and_palette_and_bilevel(tmp_path):
    g = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (3, 4, 3) and (out == g[..., None]).all()
    Image.fromarray(_rgb()).convert("P").save(tmp_path / "p.png")
    assert read_image(tmp_path / "p.png").shape == (5, 7, 3)
    Image.fromarray(g > 100).save(tmp_path / "b.png")
    assert set(np.unique(read_image(tmp_path / "b.png"))) <= {0, 255}


def test_sixteen_bit_converted_explicitly(tmp_path):
    g = np.array([[0, 257, 65535], [128, 32896, 1000]], np.uint16)
    cv2.imwrite(str(tmp_path / "g16.png"), g)
    expected = np.rint(g / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(read_image(tmp_path / "g16.png")[..., 0], expected)
    c = np.random.default_rng(3).integers(0, 65536, (4, 5, 3), dtype=np.uint16)
    for suffix in (".png", ".tif"):
        cv2.imwrite(str(tmp_path / f"c16{suffix}"), c[..., ::-1])  # OpenCV writes BGR
        np.testing.assert_array_equal(read_image(tmp_path / f"c16{suffix}"), np.rint(c / 257.0).astype(np.uint8))
        assert image_info(tmp_path / f"c16{suffix}")["mode"] == "RGB;16"
    # 16-bit PGM (Pillow mode "I")
    (tmp_path / "g.pgm").write_bytes(b"P5\n3 2\n65535\n" + g.astype(">u2").tobytes())
    np.testing.assert_array_equal(read_image(tmp_path / "g.pgm")[..., 1], expected)


def test_cmyk_jpeg(tmp_path):
    Image.fromarray(_rgb(8, 8)).convert("CMYK").save(tmp_path / "c.jpg")
    assert read_image(tmp_path / "c.jpg").shape == (8, 8, 3)


def test_float_image_refused(tmp_path):
    Image.fromarray(np.ones((3, 3), np.float32), "F").save(tmp_path / "f.tif")
    with pytest.raises(FormatError, match="floating-point") as e:
        read_image(tmp_path / "f.tif")
    assert "f.tif" in str(e.value)


def test_truncated_and_wrong_magic_images(tmp_path):
    write_image(tmp_path / "a.jpg", _rgb(64, 64))
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="truncated") as e:
        read_image(tmp_path / "cut.jpg")
    assert "cut.jpg" in str(e.value)
    write_image(tmp_path / "a.png", _rgb(64, 64))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="truncated|corrupt"):
        read_image(tmp_path / "cut.png")
    (tmp_path / "t.png").write_text("not an image")
    with pytest.raises(FormatError, match="wrong magic"):
        read_image(tmp_path / "t.png")


def test_write_image_refusals(tmp_path):
    with pytest.raises(InputError, match="uint8"):
        write_image(tmp_path / "a.png", np.zeros((2, 2, 3), np.float32))
    with pytest.raises(InputError, match="shape"):
        write_image(tmp_path / "a.png", np.zeros((2, 2, 4), np.uint8))
    with pytest.raises(InputError, match="suffix"):
        write_image(tmp_path / "a.xyz", np.zeros((2, 2, 3), np.uint8))
    assert not list(tmp_path.iterdir())
    write_image(tmp_path / "grey.png", np.full((2, 3), 9, np.uint8))
    assert (read_image(tmp_path / "grey.png") == 9).all()


def test_image_info(tmp_path):
    write_image(tmp_path / "a.bmp", _rgb(4, 6))
    assert image_info(tmp_path / "a.bmp") == {"format": "BMP", "mode": "RGB", "bits": 8, "shape": [4, 6, 3]}


# -------------------------------------------------------------------------------- atomic writes
def test_atomic_write_replaces_and_cleans_up(tmp_path):
    p = tmp_path / "sub" / "out.txt"
    with atomic_write(p, "w") as f:
        f.write("one")
        assert not p.exists()  # nothing visible before the rename
    assert p.read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_write(p, "w") as f:
            f.write("two")
            raise RuntimeError("boom")
    assert p.read_text() == "one"
    assert [x.name for x in p.parent.iterdir()] == ["out.txt"]
    assert (p.stat().st_mode & 0o777) != 0o600  # not mkstemp's private mode
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(p, "a"):
            pass


def test_atomic_path_keeps_suffix_and_cleans_up(tmp_path):
    target = tmp_path / "x.h5"
    with atomic_path(target) as tmp:
        assert tmp.suffix == ".h5" and tmp.parent == tmp_path
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    with pytest.raises(KeyError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyError("boom")
    assert target.read_bytes() == b"data" and [x.name for x in tmp_path.iterdir()] == ["x.h5"]


# -------------------------------------------------------------------------------- colorize
def _warmth(rgb):
    return int(rgb[0]) - int(rgb[2])  # red minus blue


def test_colorize_near_is_warm_for_both_kinds():
    depth = np.array([[1.0, 2.0, 4.0, 8.0]])
    cd = colorize(depth, kind="depth")
    cp = colorize(1.0 / depth, kind="disparity")
    assert cd.dtype == np.uint8 and cd.shape == (1, 4, 3)
    assert _warmth(cd[0, 0]) > 0 > _warmth(cd[0, 3])  # near red, far blue
    assert _warmth(cp[0, 0]) > 0 > _warmth(cp[0, 3])
    np.testing.assert_array_equal(cd[0, [0, 3]], cp[0, [0, 3]])  # same end colours


def test_colorize_invalid_is_black_and_ranges():
    v = np.array([[1.0, np.nan, 3.0], [0.0, 2.0, 5.0]])
    out = colorize(v, kind="depth")
    assert (out[0, 1] == 0).all() and (out[1, 0] == 0).all()  # NaN and 0 depth invalid
    valid = np.array([[True, True, False], [True, True, True]])
    out = colorize(np.nan_to_num(v), valid, kind="disparity")
    assert (out[0, 2] == 0).all() and not (out[1, 0] == 0).all()
    assert (colorize(np.zeros((2, 2)), np.zeros((2, 2), bool)) == 0).all()
    flat = colorize(np.full((2, 2), 3.0), kind="depth")
    assert (flat == flat[0, 0]).all() and flat[0, 0].any()
    clipped = colorize(np.array([[1.0, 100.0]]), kind="depth", vmin=1.0, vmax=10.0)
    assert _warmth(clipped[0, 1]) < 0
    with pytest.raises(InputError):
        colorize(v, kind="inverse")
    with pytest.raises(InputError):
        colorize(np.zeros((2, 2, 2)))


def test_inspect_sixteen_bit_tiff_is_an_image(tmp_path, run_cli):
    import json

    cv2.imwrite(str(tmp_path / "g16.tif"), np.full((3, 4), 4000, np.uint16))
    r = run_cli("inspect", tmp_path / "g16.tif", "--json")
    assert r.code == 0, r
    rec = json.loads(r.out)
    assert rec["kind"] == "image" and rec["shape"] == [3, 4] and rec["mode"].startswith("I;16")


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_applied_on_request_as_pillow_and_opencv_show_it(tmp_path, orientation, suffix):
    """``orient=True`` gives the pixels a photo viewer shows (Pillow's ``exif_transpose``, and OpenCV's
    ``imread``, which applies the tag by default); the default keeps them as stored (paired RGB-D data)."""
    import cv2
    from PIL import Image, ImageOps

    rgb = (np.random.default_rng(orientation).random((12, 20, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = orientation
    p = tmp_path / f"o{orientation}{suffix}"
    im.save(p, exif=exif, **({"quality": 100} if suffix == ".jpg" else {}))
    stored = np.asarray(Image.open(p).convert("RGB"))
    shown = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB"))
    np.testing.assert_array_equal(read_image(p), stored)
    oriented = read_image(p, orient=True)
    np.testing.assert_array_equal(oriented, shown)
    assert oriented.flags.c_contiguous
    if suffix == ".jpg":  # OpenCV reads JPEG EXIF orientation
        np.testing.assert_array_equal(oriented, cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))


def test_predictor_and_predict_read_photographs_upright(tmp_path, run_cli):
    """A phone photo stored sideways (Orientation 6) is predicted upright: ``bridge predict`` writes the
    map in the orientation a viewer shows, and the Python API reads paths the same way."""
    from PIL import Image

    import bridgedepth
    from bridgedepth.mde.predictor import read_rgb

    rgb = (np.random.default_rng(0).random((24, 40, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6
    p = tmp_path / "phone.jpg"
    im.save(p, exif=exif, quality=95)
    assert read_rgb(p).shape == (40, 24, 3)
    assert bridgedepth.load().predict(p).values.shape == (40, 24)
    r = run_cli("predict", str(p), "--out", str(tmp_path / "out"))
    assert r.code == 0, r.err
    assert read_image(tmp_path / "out" / "phone_color.png").shape == (40, 24, 3)


@pytest.mark.parametrize("head", [b"\xff\xd8garbage", b"\x89PNG\r\n\x1a\n\x00\x00", b"RIFF\x00\x00\x00\x00WEBPxx"])
def test_an_image_magic_followed_by_garbage_is_called_corrupt_not_wrong_magic(tmp_path, head):
    p = tmp_path / "bad.img"
    p.write_bytes(head)
    with pytest.raises(FormatError, match="truncated or corrupt (JPEG|PNG|WEBP) header") as e:
        read_image(p)
    assert str(p) in str(e.value)
    p.write_bytes(b"hello, not an image")
    with pytest.raises(FormatError, match="wrong magic"):
        read_image(p)
