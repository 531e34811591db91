import pytest

from bridgedepth.data.sources.pairing import pair_files
from bridgedepth.errors import InputError


def touch(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_pairs_by_identical_stem(tmp_path):
    for n in ("0001", "0002"):
        touch(tmp_path / "rgb" / f"{n}.jpg")
        touch(tmp_path / "depth" / f"{n}.png")
    pairs = pair_files(tmp_path / "rgb", tmp_path / "depth")
    assert [(a.stem, b.stem) for a, b in pairs] == [("0001", "0001"), ("0002", "0002")]


def test_pairs_by_digits_on_real_nyu(shared_data):
    pairs = pair_files(shared_data / "rgbd/nyu_sync/rgb", shared_data / "rgbd/nyu_sync/depth")
    assert [(a.name, b.name) for a, b in pairs] == [
        ("rgb_00000.jpg", "sync_depth_00000.png"),
        ("rgb_00050.jpg", "sync_depth_00050.png"),
        ("rgb_00100.jpg", "sync_depth_00100.png"),
    ]


def test_ambiguity_is_an_error(tmp_path):
    touch(tmp_path / "rgb" / "img_5.jpg")
    touch(tmp_path / "rgb" / "frame_5.jpg")
    touch(tmp_path / "depth" / "d_5.png")
    with pytest.raises(InputError, match="ambiguous"):
        pair_files(tmp_path / "rgb", tmp_path / "depth")


def test_list_file(tmp_path):
    touch(tmp_path / "rgb" / "a.jpg")
    touch(tmp_path / "depth" / "b.png")
    lst = tmp_path / "pairs.txt"
    lst.write_text("# comment\na.jpg b.png\n")
    assert pair_files(tmp_path / "rgb", tmp_path / "depth", lst) == [(tmp_path / "rgb/a.jpg", tmp_path / "depth/b.png")]
    lst.write_text("a.jpg missing.png\n")
    with pytest.raises(InputError, match="pairs.txt:1"):
        pair_files(tmp_path / "rgb", tmp_path / "depth", lst)


def test_no_match_is_an_error(tmp_path):
    touch(tmp_path / "rgb" / "abc.jpg")
    touch(tmp_path / "depth" / "xyz.png")
    with pytest.raises(InputError, match="cannot pair"):
        pair_files(tmp_path / "rgb", tmp_path / "depth")
