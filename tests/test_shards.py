"""Shard store: encoding round trips, resumable writers, checksums, unsafe tars."""

from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
import pytest

from bridgedepth.data import shards as S
from bridgedepth.errors import InputError


def make_sample(i: int) -> dict:
    r = np.random.default_rng(i)
    h, w = 6 + i % 3, 7
    return {
        "__key__": f"s{i:05d}",
        "rgb": r.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "source_rgb": r.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "depth": r.random((h, w), dtype=np.float32) * 10,
        "valid": r.random((h, w)) > 0.3,
        "mask": r.random((h, w)) > 0.6,
        "intrinsics": np.array([500.0, 501.0, 3.5, 3.0], np.float32),
        "pseudo": r.random((h, w)).astype(np.float16),
        "meta": {"kind": "test", "seed": i, "source": "unit", "nested": {"a": [1, 2.5, None]}},
        "gray": r.integers(0, 256, (h, w), dtype=np.uint8),
        "rgba": r.integers(0, 256, (h, w, 4), dtype=np.uint8),
        "ids": np.arange(5, dtype=np.int64),
        "note": f"sample {i}",
        "raw": bytes([i, 0, 255]),
    }


def assert_same(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k, v in a.items():
        if isinstance(v, np.ndarray):
            assert isinstance(b[k], np.ndarray), k
            assert b[k].dtype == v.dtype, (k, b[k].dtype, v.dtype)
            assert b[k].shape == v.shape, k
            assert np.array_equal(b[k], v), k
        else:
            assert b[k] == v, k


def keys_of(d) -> list[str]:
    return [s["__key__"] for s in S.iter_samples(d, fields=[])]


# ------------------------------------------------------------------------------------------ encoding


def test_encode_decode_every_field_type():
    s = make_sample(3)
    members = S.encode_sample(s)
    exts = {name.split(".")[1]: name.split(".")[2] for name in members}
    assert exts["rgb"] == exts["source_rgb"] == exts["valid"] == exts["mask"] == "png"
    assert exts["gray"] == exts["rgba"] == "png"
    assert exts["depth"] == exts["pseudo"] == exts["intrinsics"] == exts["ids"] == "npy"
    assert exts["meta"] == "json" and exts["note"] == "txt" and exts["raw"] == "bin"
    assert all(name.startswith("s00003.") for name in members)
    assert_same(s, S.decode_sample(members))
    # only the wanted fields are decoded
    part = S.decode_sample(members, fields=["depth"])
    assert set(part) == {"__key__", "depth"}


def test_bool_mask_png_is_one_bit_and_small():
    m = np.zeros((64, 64), bool)
    m[10:30, 5:50] = True
    members = S.encode_sample({"__key__": "k", "mask": m})
    data = members["k.mask.png"]
    from PIL import Image

    assert Image.open(io.BytesIO(data)).mode == "1"
    assert len(data) < 64 * 64 // 8 + 200


@pytest.mark.parametrize("key", ["a.b", "a/b", "", "../x", 3])
def test_bad_keys_refused(key):
    with pytest.raises(InputError, match="key"):
        S.encode_sample({"__key__": key, "x": 1})


def test_unstorable_values_refused():
    with pytest.raises(InputError, match="field 'k.obj'"):
        S.encode_sample({"__key__": "k", "obj": np.array([object()], dtype=object)})
    with pytest.raises(InputError, match="cannot store"):
        S.encode_sample({"__key__": "k", "x": {1, 2}})
    with pytest.raises(InputError, match="field name"):
        S.encode_sample({"__key__": "k", "a.b": 1})


# ------------------------------------------------------------------------------------------ writing


def test_write_and_read_round_trip(tmp_path):
    m = S.write_dataset(tmp_path, 11, make_sample, samples_per_shard=4, meta={"name": "t"}, progress=False)
    assert m.complete and m.num_shards == 3 and m.num_samples == 11
    assert [s.samples for s in m.shards] == [4, 4, 3]
    assert [(s.start, s.stop) for s in m.shards] == [(0, 4), (4, 8), (8, 11)]
    got = list(S.iter_samples(tmp_path))
    assert len(got) == 11
    for i, s in enumerate(got):
        assert_same(make_sample(i), s)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["format"] == "bridgedepth-shards" and man["complete"] is True
    assert man["num_samples"] == 11 and man["meta"] == {"name": "t"}
    for sh in man["shards"]:
        assert sh["sha256"] == S.sha256_file(tmp_path / sh["name"])
    assert S.temp_files(tmp_path) == []
    assert S.verify_dataset(tmp_path).ok


def test_shards_are_reproducible(tmp_path):
    S.write_dataset(tmp_path / "a", 5, make_sample, samples_per_shard=5, progress=False)
    S.write_dataset(tmp_path / "b", 5, make_sample, samples_per_shard=5, progress=False)
    assert S.sha256_file(tmp_path / "a/shard-000000.tar") == S.sha256_file(tmp_path / "b/shard-000000.tar")


def test_tar_is_a_plain_webdataset(tmp_path):
    S.write_dataset(tmp_path, 3, make_sample, samples_per_shard=3, progress=False)
    import webdataset as wds

    ds = wds.WebDataset(str(tmp_path / "shard-000000.tar"), shardshuffle=False)
    recs = list(ds)
    assert [r["__key__"] for r in recs] == ["s00000", "s00001", "s00002"]
    assert "rgb.png" in recs[0] and "depth.npy" in recs[0] and "meta.json" in recs[0]


def test_skipped_samples_recorded(tmp_path):
    def mk(i):
        if i == 2:
            return None
        if i == 5:
            raise InputError(f"input {i}.png: truncated")
        return make_sample(i)

    m = S.write_dataset(tmp_path, 7, mk, samples_per_shard=4, progress=False)
    assert m.complete and m.num_samples == 5 and m.num_skipped == 2
    assert m.shards[0].skipped == [{"index": 2, "reason": "make_sample returned None"}]
    assert m.shards[1].skipped == [{"index": 5, "reason": "input 5.png: truncated"}]
    assert keys_of(tmp_path) == [f"s{i:05d}" for i in (0, 1, 3, 4, 6)]


def test_duplicate_key_in_a_shard_refused(tmp_path):
    with pytest.raises(InputError, match="duplicate sample key"):
        S.write_dataset(tmp_path, 3, lambda i: {"__key__": "same", "x": i}, samples_per_shard=3, progress=False)
    assert S.temp_files(tmp_path) == []


def test_interrupted_writer_then_rerun(tmp_path):
    n, per, crash_at = 23, 4, 13  # crash inside shard 3 (indices 12..15)

    def crashing(i):
        if i == crash_at:
            raise RuntimeError("simulated crash")
        return make_sample(i)

    with pytest.raises(RuntimeError, match="simulated crash"):
        S.write_dataset(tmp_path, n, crashing, samples_per_shard=per, progress=False)
    done = sorted(p.name for p in tmp_path.glob("shard-*.tar"))
    assert done == [S.shard_name(j) for j in range(3)]
    with pytest.raises(S.ShardError, match="incomplete"):
        list(S.iter_samples(tmp_path))
    # a hard kill would also leave a temporary file behind, and a shard renamed but without status
    (tmp_path / f"{S.shard_name(4)}.tmp-deadbeef").write_bytes(b"partial garbage")
    (tmp_path / S.shard_name(5)).write_bytes(b"renamed, never got a status file")
    rep = S.verify_dataset(tmp_path)
    assert not rep.ok and {p.kind for p in rep.problems} >= {"temporary", "incomplete"}
    before = {j: os.stat(tmp_path / S.shard_name(j)) for j in range(3)}

    calls = []

    def counting(i):
        calls.append(i)
        return make_sample(i)

    m = S.write_dataset(tmp_path, n, counting, samples_per_shard=per, progress=False)
    assert m.complete and m.num_samples == n
    assert min(calls) == 12 and sorted(calls) == list(range(12, n))  # complete shards not redone
    for j in range(3):
        st = os.stat(tmp_path / S.shard_name(j))
        assert (st.st_ino, st.st_mtime_ns) == (before[j].st_ino, before[j].st_mtime_ns)
    assert keys_of(tmp_path) == [f"s{i:05d}" for i in range(n)]  # none lost, none duplicated
    assert S.temp_files(tmp_path) == []
    assert S.verify_dataset(tmp_path).ok
    # a third run does nothing
    calls.clear()
    S.write_dataset(tmp_path, n, counting, samples_per_shard=per, progress=False)
    assert calls == []


def test_rerun_rewrites_corrupt_or_statusless_shard(tmp_path):
    S.write_dataset(tmp_path, 8, make_sample, samples_per_shard=4, progress=False)
    (tmp_path / "shard-000001.tar.json").unlink()  # crash between rename and status write
    calls = []
    S.write_dataset(tmp_path, 8, lambda i: calls.append(i) or make_sample(i), samples_per_shard=4, progress=False)
    assert calls == [4, 5, 6, 7]
    p = tmp_path / "shard-000000.tar"
    data = bytearray(p.read_bytes())
    data[700] ^= 0xFF
    p.write_bytes(bytes(data))
    calls.clear()
    S.write_dataset(tmp_path, 8, lambda i: calls.append(i) or make_sample(i), samples_per_shard=4, progress=False)
    assert calls == [0, 1, 2, 3]
    assert keys_of(tmp_path) == [f"s{i:05d}" for i in range(8)]


def test_multi_rank_writers_share_a_directory(tmp_path):
    n, per, world = 10, 3, 3
    for r in (2, 0, 1):
        m = S.write_dataset(tmp_path, n, make_sample, samples_per_shard=per, rank=r, world_size=world,
                            progress=False)
        mine = {S.shard_name(j) for j in range(4) if j % world == r}
        assert all(s.complete for s in m.shards if s.name in mine)
    assert m.complete and m.num_samples == n
    assert keys_of(tmp_path) == [f"s{i:05d}" for i in range(n)]
    with pytest.raises(InputError, match="rank"):
        S.write_dataset(tmp_path, n, make_sample, rank=3, world_size=3)


# ------------------------------------------------------------------------------------------ reading safety


def test_checksum_mismatch_refused(tmp_path):
    S.write_dataset(tmp_path, 8, make_sample, samples_per_shard=4, progress=False)
    p = tmp_path / "shard-000001.tar"
    data = bytearray(p.read_bytes())
    data[600] ^= 0x01
    p.write_bytes(bytes(data))
    with pytest.raises(S.ShardError, match=r"shard-000001\.tar: checksum mismatch"):
        list(S.iter_samples(tmp_path))
    # without verification the caller takes the risk explicitly
    assert len(list(S.iter_samples(tmp_path, verify=False, fields=[]))) == 8


def _tar_with(path, *infos):
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        good = tarfile.TarInfo("k.x.json")
        good.size = 1
        tf.addfile(good, io.BytesIO(b"1"))
        for info, data in infos:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)


def _member(name, data=b"1", type_=tarfile.REGTYPE, linkname=""):
    ti = tarfile.TarInfo(name)
    ti.type = type_
    ti.linkname = linkname
    ti.size = len(data) if type_ == tarfile.REGTYPE else 0
    return ti, (data if type_ == tarfile.REGTYPE else None)


@pytest.mark.parametrize(
    "member, match",
    [
        (_member("/etc/passwd.x.txt"), "absolute path"),
        (_member("../evil.x.txt"), r"'\.\.'"),
        (_member("a/../../evil.x.txt"), r"'\.\.'"),
        (_member("sub/k2.x.txt"), "flat"),
        (_member("k2.x.txt", type_=tarfile.SYMTYPE, linkname="/etc/passwd"), "symlink"),
        (_member("k2.x.txt", type_=tarfile.LNKTYPE, linkname="k.x.json"), "hard link"),
        (_member("k2.x.txt", type_=tarfile.CHRTYPE), "device"),
        (_member("k2.x.txt", type_=tarfile.FIFOTYPE), "fifo"),
    ],
)
def test_unsafe_members_refused(tmp_path, member, match):
    p = tmp_path / "evil.tar"
    _tar_with(p, member)
    with pytest.raises(S.ShardError, match=match):
        list(S.iter_shard(p))


def test_malformed_tars_refused(tmp_path):
    p = tmp_path / "bad.tar"
    _tar_with(p, _member("k2.nofield"))
    with pytest.raises(S.ShardError, match="key.field.ext"):
        list(S.iter_shard(p))
    p2 = tmp_path / "split.tar"
    _tar_with(p2, _member("j.x.json"), _member("k.y.json"))
    with pytest.raises(S.ShardError, match="appears twice"):
        list(S.iter_shard(p2))
    p3 = tmp_path / "trunc.tar"
    S.write_dataset(tmp_path / "ok", 2, make_sample, samples_per_shard=2, progress=False)
    p3.write_bytes((tmp_path / "ok/shard-000000.tar").read_bytes()[:1000])
    with pytest.raises(S.ShardError, match="trunc.tar"):
        list(S.iter_shard(p3))
    p4 = tmp_path / "undecodable.tar"
    _tar_with(p4, _member("k2.img.png", b"not a png"))
    with pytest.raises(S.ShardError, match=r"k2\.img\.png: cannot decode"):
        list(S.iter_shard(p4))


def test_not_a_dataset(tmp_path):
    with pytest.raises(InputError, match="not a shard dataset"):
        list(S.iter_samples(tmp_path))
    with pytest.raises(InputError, match="not a directory"):
        S.load_manifest(tmp_path / "nope")


def test_leftover_status_and_manifest_temps_cleaned(tmp_path):
    S.write_dataset(tmp_path, 4, make_sample, samples_per_shard=2, progress=False)
    (tmp_path / "shard-000001.tar.json").unlink()
    (tmp_path / "shard-000001.tar.json.tmp-abc").write_text("{")
    (tmp_path / "manifest.json.tmp-abc").write_text("{")
    assert len(S.temp_files(tmp_path)) == 2
    S.write_dataset(tmp_path, 4, make_sample, samples_per_shard=2, progress=False)
    assert S.temp_files(tmp_path) == [] and S.verify_dataset(tmp_path).ok


def test_empty_dataset(tmp_path):
    m = S.write_dataset(tmp_path, 0, make_sample, progress=False)
    assert m.complete and m.num_shards == 0 and list(S.iter_samples(tmp_path)) == []
    assert S.verify_dataset(tmp_path).ok
