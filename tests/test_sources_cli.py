"""`bridge sources list` and `bridge sources convert`: every adapter's fixture becomes a shard set that
the shard verifier accepts, with bad frames skipped, counted and reported with their path."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_sources import (
    EXPECTED,
    make_blendedmvs,
    make_hypersim,
    make_irs,
    make_spring,
    make_tartanair,
    make_vkitti2,
)

from bridgedepth.data.shards import iter_samples, verify_dataset
from bridgedepth.data.sources import get_adapter

# name -> (fixture builder, good samples, skipped samples, a file name in the skip report)
CASES = {
    "hypersim": (make_hypersim, 2, 1, "frame.0002.depth_meters.hdf5"),
    "tartanair": (make_tartanair, 1, 2, "000001_left.png"),
    "vkitti2": (make_vkitti2, 3, 1, "depth_00001.png"),
    "irs": (make_irs, 1, 1, "d_2.exr"),
    "blendedmvs": (make_blendedmvs, 1, 1, "00000001_cam.txt"),
    "spring": (make_spring, 2, 1, "disp1_left_0003.dsp5"),
}


def test_sources_list_names_every_adapter_and_layout(run_cli):
    r = run_cli("sources", "list")
    assert r.code == 0, r
    for name in EXPECTED:
        assert f"\n{name}: " in "\n" + r.out
    assert "expected layout:" in r.out and "frames/depth/Camera_0/depth_NNNNN.png" in r.out


@pytest.mark.parametrize("name", list(CASES))
def test_convert_fixture_to_verified_shards(name, tmp_path, run_cli):
    build, good, bad, bad_file = CASES[name]
    root = build(tmp_path / "src")
    out = tmp_path / "shards"
    r = run_cli("sources", "convert", name, "--root", root, "--out", out, "--samples-per-shard", "2")
    assert r.code == 0, r
    assert f"{good} of {good + bad} samples read, {bad} skipped" in r.out and bad_file in r.out

    rep = verify_dataset(out)
    assert rep.ok, rep.to_dict()
    assert rep.num_samples == good and rep.num_skipped == bad

    # what the shards hold is exactly what the adapter reads
    direct = {s["__key__"]: s for s in get_adapter(name, root).iter_samples()}
    stored = {s["__key__"]: s for s in iter_samples(out)}
    assert sorted(stored) == sorted(direct)
    for k, s in stored.items():
        np.testing.assert_array_equal(s["depth"], direct[k]["depth"])
        np.testing.assert_array_equal(s["valid"], direct[k]["valid"])
        np.testing.assert_array_equal(s["rgb"], direct[k]["rgb"])
        np.testing.assert_allclose(s["intrinsics"], direct[k]["intrinsics"])
        assert s["meta"]["dataset"] == name

    report = json.loads((out / "sources_report.json").read_text())
    assert report["skipped"] == bad and any(bad_file in x["path"] for x in report["skipped_samples"])
    assert (out / "config.yaml").exists() and f"name: {name}" in (out / "config.yaml").read_text()

    # a rerun resumes (complete shards are kept) and still reports the earlier skips
    r2 = run_cli("sources", "convert", name, "--root", root, "--out", out, "--samples-per-shard", "2")
    assert r2.code == 0, r2
    assert f"{bad} skipped" in r2.out and bad_file in r2.out
    assert verify_dataset(out).ok


def test_convert_folder_shared_nyu_with_limit_and_options(shared_data, tmp_path, run_cli):
    root = shared_data / "rgbd" / "nyu_sync"
    out = tmp_path / "nyu"
    r = run_cli("sources", "convert", "folder", "--root", root, "--out", out, "--encoding", "png-mm",
                "--opt", "intrinsics=test_annotations.json", "--limit", "2", "--samples-per-shard", "1")
    assert r.code == 0, r
    rep = verify_dataset(out)
    assert rep.ok and rep.num_samples == 2 and rep.num_shards == 2
    s = next(iter(iter_samples(out)))
    assert s["meta"]["encoding"] == "png-mm" and s["intrinsics"].shape == (4,)


def test_convert_into_a_folder_of_another_dataset_is_refused(shared_data, tmp_path, run_cli):
    """Converting KITTI into a folder that held converted NYU frames kept the NYU shards (complete) and
    rewrote the manifest to say KITTI: NYU images under KITTI's depth encoding and metadata."""
    out = tmp_path / "cv"
    nyu = ("sources", "convert", "folder", "--root", shared_data / "rgbd" / "nyu_sync", "--out", out,
           "--encoding", "png-mm")
    assert run_cli(*nyu).code == 0
    assert run_cli(*nyu).code == 0  # the same conversion resumes
    r = run_cli("sources", "convert", "folder", "--root", shared_data / "rgbd" / "kitti_annotated", "--out", out,
                "--encoding", "png-kitti")
    assert r.code == 2 and "converted with other options" in r.err and "kitti_annotated" in r.err, r
    for more, what in ((["--limit", "2"], "frames: 3 in the folder, 2 now"),
                       (["--samples-per-shard", "1"], "samples per shard"),
                       (["--opt", "intrinsics=test_annotations.json"], "options")):
        r = run_cli(*nyu, *more)
        assert r.code == 2 and what in r.err, (more, r)
    assert json.loads((out / "manifest.json").read_text())["meta"]["root"].endswith("nyu_sync")
    other = tmp_path / "scenes"
    assert run_cli("scenes", "--out", other, "--count", "1", "--size", "32x32", "--quiet").code == 0
    r = run_cli("sources", "convert", "folder", "--root", shared_data / "rgbd" / "nyu_sync", "--out", other,
                "--encoding", "png-mm")
    assert r.code == 2 and "not converted from a source" in r.err


def test_convert_open3d_color_folder(shared_data, tmp_path, run_cli):
    out = tmp_path / "o3d"
    r = run_cli("sources", "convert", "folder", "--root", shared_data / "rgbd" / "open3d", "--out", out,
                "--encoding", "png-mm", "--opt", "rgb_dir=color", "--opt", "intrinsics=camera_primesense.json")
    assert r.code == 0, r
    assert verify_dataset(out).num_samples == 5


def test_convert_bad_arguments_exit_2(tmp_path, run_cli):
    r = run_cli("sources", "convert", "nosuch", "--root", tmp_path, "--out", tmp_path / "o")
    assert r.code == 2 and "unknown source dataset" in r.err
    r = run_cli("sources", "convert", "folder", "--root", tmp_path / "missing", "--out", tmp_path / "o")
    assert r.code == 2 and "not a folder" in r.err
    r = run_cli("sources", "convert", "tartanair", "--root", tmp_path, "--out", tmp_path / "o", "--opt", "x")
    assert r.code == 2 and "KEY=VALUE" in r.err


def test_convert_everything_skipped_is_a_failure(tmp_path, run_cli):
    seq = tmp_path / "src" / "env" / "Easy" / "P001" / "depth_left"
    seq.mkdir(parents=True)
    np.save(seq / "000000_left_depth.npy", np.ones((4, 4), np.float32))
    r = run_cli("sources", "convert", "tartanair", "--root", tmp_path / "src", "--out", tmp_path / "o")
    assert r.code == 1 and "0 of 1 samples read, 1 skipped" in r.out and "000000_left.png" in r.out


def test_convert_compares_the_fields_both_runs_recorded(tmp_path):
    """A field a later version records is not a difference (an older folder resumes); the adapter
    options compare whole, so an option added to the command line is one."""
    import json

    import pytest

    from bridgedepth.data.shards import MANIFEST
    from bridgedepth.data.sources.convert import _check_existing
    from bridgedepth.errors import InputError

    out = tmp_path / "cv"
    out.mkdir()
    old = {"source": "folder", "root": "/data/nyu", "options": {}}
    (out / MANIFEST).write_text(json.dumps({"meta": old, "num_inputs": 3, "samples_per_shard": 256}))
    _check_existing(out, {**old, "recorded_later": "x"}, 3, 256)
    with pytest.raises(InputError, match=r"options: '\{\}' in the folder, '\{\"stride\": 2\}' now"):
        _check_existing(out, {**old, "options": {"stride": 2}}, 3, 256)
