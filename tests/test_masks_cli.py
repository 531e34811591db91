"""`bridge mask` end to end (in-process)."""

from __future__ import annotations

import json

import cv2
import numpy as np

from bridgedepth.cli import SUBCOMMANDS
from bridgedepth.commands import mask as mask_cmd
from bridgedepth.io import read_image, write_image

KEYS = {"orb_matches", "inliers", "registered_fraction", "direct_fraction", "final_fraction", "accepted", "crop"}


def make_pair(shared_data, tmp_path):
    img = read_image(shared_data / "rgbd/nyu_sync/rgb/rgb_00050.jpg")
    orig = np.ascontiguousarray(img[40:340, 100:460])
    gen = np.ascontiguousarray(img[47:347, 111:471])  # shifted 11 px right, 7 down
    gen = cv2.resize(gen, (720, 600))  # and twice the size
    po, pg = tmp_path / "orig.png", tmp_path / "gen.png"
    write_image(po, orig)
    write_image(pg, gen)
    return pg, po, orig


def test_help_string_matches_registry():
    assert mask_cmd.HELP == SUBCOMMANDS["mask"][1]


def test_json_and_mask_file(shared_data, tmp_path, run_cli):
    pg, po, orig = make_pair(shared_data, tmp_path)
    out, ov = tmp_path / "m" / "mask.png", tmp_path / "overlay.png"
    out.parent.mkdir()
    res = run_cli("mask", "--generated", pg, "--original", po, "--out", out, "--overlay", ov, "--json")
    assert res.code == 0, res
    stats = json.loads(res.out)
    assert KEYS <= set(stats)
    assert isinstance(stats["crop"], list) and len(stats["crop"]) == 4
    assert all(isinstance(v, int) for v in stats["crop"])
    assert stats["accepted"] is True and stats["registered_fraction"] > 0.7
    assert stats["direct_fraction"] < stats["registered_fraction"]
    assert stats["size"] == [300, 360] and stats["generated_size"] == [600, 720]
    m = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert m.shape == (300, 360) and set(np.unique(m)) <= {0, 255}
    assert abs((m > 0).mean() - stats["final_fraction"]) < 1e-6
    assert read_image(ov).shape == orig.shape
    assert not [p for p in out.parent.iterdir() if p.name != "mask.png"]  # no temp files left


def test_text_output_and_overrides(shared_data, tmp_path, run_cli):
    pg, po, _ = make_pair(shared_data, tmp_path)
    res = run_cli("mask", "-g", pg, "-r", po)
    assert res.code == 0, res
    assert "final fraction" in res.out and "accepted" in res.out
    res = run_cli("mask", "-g", pg, "-r", po, "--json", "--set", "label.accept_fraction=0.999",
                  "--set", "label.crop_size=128")
    stats = json.loads(res.out)
    assert stats["accepted"] is False and stats["crop"][2:] == [128, 128]
    assert "not accepted" in stats["reason"]


def test_bad_inputs(shared_data, tmp_path, run_cli):
    _, po, _ = make_pair(shared_data, tmp_path)
    res = run_cli("mask", "-g", tmp_path / "missing.png", "-r", po)
    assert res.code == 2 and "missing.png" in res.err
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    res = run_cli("mask", "-g", junk, "-r", po)
    assert res.code == 2 and "junk.png" in res.err
    res = run_cli("mask", "-g", po, "-r", po, "--set", "label.nope=1")
    assert res.code == 2 and "nope" in res.err
    # a one-colour image is a per-sample outcome, not an error: empty mask with a reason
    flat = tmp_path / "flat.png"
    write_image(flat, np.full((300, 360, 3), 90, np.uint8))
    res = run_cli("mask", "-g", flat, "-r", po, "--json", "--out", tmp_path / "e.png")
    assert res.code == 0, res
    stats = json.loads(res.out)
    assert stats["final_fraction"] == 0.0 and "one colour" in stats["reason"]
    assert not cv2.imread(str(tmp_path / "e.png"), cv2.IMREAD_UNCHANGED).any()
