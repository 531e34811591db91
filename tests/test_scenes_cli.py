"""`bridge scenes`: shards (resumable, identical to render_scene), contact sheet, bad options."""

from __future__ import annotations

import os

import numpy as np

from bridgedepth.data.scenes import render_scene
from bridgedepth.data.shards import iter_samples, load_manifest, verify_dataset
from bridgedepth.io import read_image


def test_cli_writes_shards_resumes_and_previews(run_cli, tmp_path):
    out = tmp_path / "scenes"
    r = run_cli("scenes", "--count", 7, "--kind", "mixed", "--size", "24x32", "--seed", 3, "--out", out,
                "--samples-per-shard", 3, "--quiet")
    assert r.code == 0, r
    rep = verify_dataset(out)
    assert rep.ok, rep
    m = load_manifest(out)
    assert m.num_samples == 7 and m.num_shards == 3 and m.complete
    assert m.meta["kind"] == "mixed" and m.meta["seed"] == 3 and m.meta["size"] == [24, 32]
    assert (out / "config.yaml").exists()
    got = list(iter_samples(out))
    assert [s["meta"]["index"] for s in got] == list(range(7))
    for i, s in enumerate(got):
        ref = render_scene(3, "mixed", (24, 32), index=i)
        assert s["__key__"] == ref["__key__"]
        assert np.array_equal(s["rgb"], ref["rgb"])
        assert np.array_equal(s["depth"], ref["depth"]) and s["depth"].dtype == np.float32
        assert np.array_equal(s["valid"], ref["valid"])
        assert np.allclose(s["intrinsics"], ref["intrinsics"])

    # resume: complete shards are kept as they are; a removed shard is rewritten identically
    shard0, shard1 = out / "shard-000000.tar", out / "shard-000001.tar"
    before0 = (shard0.stat().st_mtime_ns, shard0.read_bytes())
    before1 = shard1.read_bytes()
    shard1.unlink()
    r = run_cli("scenes", "--count", 7, "--kind", "mixed", "--size", "24x32", "--seed", 3, "--out", out,
                "--samples-per-shard", 3, "--quiet")
    assert r.code == 0, r
    assert (shard0.stat().st_mtime_ns, shard0.read_bytes()) == before0
    assert shard1.read_bytes() == before1
    assert verify_dataset(out).ok

    # other options into the same folder would mix two datasets: refused
    r = run_cli("scenes", "--count", 7, "--kind", "indoor", "--size", "24x32", "--seed", 3, "--out", out,
                "--samples-per-shard", 3, "--quiet")
    assert r.code == 2 and "different options" in r.err

    sheet = tmp_path / "grid.png"
    r = run_cli("scenes", "--preview", out, "--out", sheet, "--max", 4, "--columns", 2, "--cell", 48)
    assert r.code == 0, r
    img = read_image(sheet)
    assert img.shape == (2 * 48 + 6, 2 * (2 * 48 + 2) + 6, 3)
    assert img.std() > 10  # not blank


def test_cli_workers_give_identical_shards(run_cli, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--count", 4, "--kind", "object", "--size", "16x16", "--seed", 5, "--samples-per-shard", 2, "--quiet"]
    assert run_cli("scenes", *args, "--out", a).code == 0
    assert run_cli("scenes", *args, "--out", b, "--workers", 2).code == 0
    for name in ("shard-000000.tar", "shard-000001.tar"):
        assert (a / name).read_bytes() == (b / name).read_bytes()


def test_cli_config_defaults_and_errors(run_cli, tmp_path):
    out = tmp_path / "d"
    r = run_cli("scenes", "--out", out, "--set", "scenes.train_count=2", "--set", "scenes.size=[16,24]",
                "--set", "scenes.kind=indoor", "--quiet")
    assert r.code == 0, r
    s = next(iter_samples(out))
    assert s["rgb"].shape == (16, 24, 3) and s["meta"]["kind"] == "indoor"
    assert run_cli("scenes", "--out", tmp_path / "e", "--size", "nope").code == 2
    assert run_cli("scenes", "--out", tmp_path / "e", "--count", -1).code == 2
    r = run_cli("scenes", "--preview", tmp_path / "missing", "--out", tmp_path / "x.png")
    assert r.code == 2
    r = run_cli("scenes", "--preview", out, "--out", tmp_path / "x.txt")
    assert r.code == 2 and "png" in r.err
    assert not os.path.exists(tmp_path / "x.txt")


def test_worker_pool_renders_single_shard_sets_identically_and_resumes(tmp_path):
    """Rendering workers render ahead while the parent writes in order: a set of one shard uses every
    worker and gives the same bytes as one process; one pool serves several sets; a rerun that finds
    a complete shard renders only the missing one."""
    from bridgedepth.data.scenes.dataset import scene_pool, write_scenes

    kw = dict(kind="mixed", size=(16, 20), seed=3, progress=False)
    write_scenes(tmp_path / "one", 5, samples_per_shard=8, **kw)
    write_scenes(tmp_path / "two_a", 6, samples_per_shard=3, **kw)
    with scene_pool(2) as pool:
        write_scenes(tmp_path / "pool_one", 5, samples_per_shard=8, pool=pool, **kw)
        m = write_scenes(tmp_path / "pool_two", 6, samples_per_shard=3, pool=pool, **kw)
        pids = set(pool._processes)
        assert m.num_samples == 6
        # the first shard lost: the rerun writes it again, the second is kept as it was
        (tmp_path / "pool_two" / "shard-000000.tar.json").unlink()
        kept = (tmp_path / "pool_two" / "shard-000001.tar").stat().st_mtime_ns
        write_scenes(tmp_path / "pool_two", 6, samples_per_shard=3, pool=pool, **kw)
        assert (tmp_path / "pool_two" / "shard-000001.tar").stat().st_mtime_ns == kept
        assert set(pool._processes) == pids and len(pids) == 2  # the same two workers throughout
    assert (tmp_path / "one" / "shard-000000.tar").read_bytes() == \
        (tmp_path / "pool_one" / "shard-000000.tar").read_bytes()
    for name in ("shard-000000.tar", "shard-000001.tar"):
        assert (tmp_path / "two_a" / name).read_bytes() == (tmp_path / "pool_two" / name).read_bytes()
    assert not [f for f in os.listdir(tmp_path / "pool_two") if ".tmp" in f]
