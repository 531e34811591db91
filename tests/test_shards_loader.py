"""ShardDataset: every sample exactly once per epoch across ranks x workers; deterministic shuffle;
map_dataset resume."""

from __future__ import annotations

import os
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from bridgedepth.data import shards as S
from bridgedepth.data.loader import ShardDataset
from bridgedepth.errors import InputError

N, PER = 22, 3  # 8 shards, the last one short


def tiny(i: int) -> dict:
    return {"__key__": f"k{i:03d}", "x": np.full((2, 2), i, np.float32), "meta": {"i": i}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    d = tmp_path_factory.mktemp("ds")
    S.write_dataset(d, N, tiny, samples_per_shard=PER, progress=False)
    return d


def _epoch_keys(d, world_size, num_workers, epoch, shuffle=True, seed=7):
    seen = []
    per_rank = []
    for rank in range(world_size):
        ds = ShardDataset(d, shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
                          shuffle_buffer=4, transform=lambda s: s["__key__"])
        ds.set_epoch(epoch)
        if num_workers == 0:
            keys = list(ds)
        else:
            dl = DataLoader(ds, batch_size=None, num_workers=num_workers, multiprocessing_context="fork")
            keys = list(dl)
        per_rank.append(keys)
        seen += keys
    return seen, per_rank


@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_each_sample_once_per_epoch(dataset, world_size, num_workers):
    expected = [f"k{i:03d}" for i in range(N)]
    orders = []
    for epoch in (0, 1):
        seen, per_rank = _epoch_keys(dataset, world_size, num_workers, epoch)
        counts = Counter(seen)
        assert sorted(counts) == expected, "some sample missing"
        assert max(counts.values()) == 1, [k for k, c in counts.items() if c > 1]
        if world_size == 2:
            assert all(per_rank), "a rank got nothing"
            assert not set(per_rank[0]) & set(per_rank[1])
        orders.append(seen)
    assert orders[0] != orders[1], "set_epoch must change the order"


def test_shuffle_is_deterministic_and_optional(dataset):
    a, _ = _epoch_keys(dataset, 1, 0, epoch=3)
    b, _ = _epoch_keys(dataset, 1, 0, epoch=3)
    assert a == b
    c, _ = _epoch_keys(dataset, 1, 0, epoch=3, seed=8)
    assert c != a and sorted(c) == sorted(a)
    plain, _ = _epoch_keys(dataset, 1, 0, epoch=0, shuffle=False)
    assert plain == [f"k{i:03d}" for i in range(N)]


def test_shards_for_partitions_shards(dataset):
    ds = ShardDataset(dataset, shuffle=True, seed=1, rank=0, world_size=2)
    parts = [ds.shards_for(r, w, 3) for r in range(2) for w in range(3)]
    flat = [p for part in parts for p in part]
    assert len(flat) == len(set(flat)) == 8
    assert ds.num_samples == N


def test_batches_collate_and_fields(dataset):
    ds = ShardDataset(dataset, fields=["x"], shuffle=False, rank=0, world_size=1)
    dl = DataLoader(ds, batch_size=4)
    batches = list(dl)
    assert sum(len(b["__key__"]) for b in batches) == N
    assert batches[0]["x"].shape == (4, 2, 2) and batches[0]["x"].dtype == torch.float32
    assert "meta" not in batches[0]


def test_multiple_dirs_and_transform_drop(tmp_path, dataset):
    other = tmp_path / "other"
    S.write_dataset(other, 4, lambda i: {"__key__": f"o{i}", "x": np.zeros(1)}, samples_per_shard=2,
                    progress=False)
    ds = ShardDataset([dataset, other], rank=0, world_size=1,
                      transform=lambda s: None if s["__key__"].startswith("o") else s["__key__"])
    assert ds.num_samples == N + 4
    assert len(list(ds)) == N


def test_loader_refuses_incomplete_and_corrupt(tmp_path):
    def crash_at_4(i):
        if i == 4:
            raise RuntimeError("crash")
        return tiny(i)

    with pytest.raises(RuntimeError, match="crash"):
        S.write_dataset(tmp_path, 6, crash_at_4, samples_per_shard=2, progress=False)
    with pytest.raises(S.ShardError, match="incomplete"):
        ShardDataset(tmp_path, rank=0, world_size=1)
    ds = ShardDataset(tmp_path, rank=0, world_size=1, allow_incomplete=True)
    assert len(list(ds)) == 4
    p = tmp_path / "shard-000001.tar"
    data = bytearray(p.read_bytes())
    data[520] ^= 0x55
    p.write_bytes(bytes(data))
    with pytest.raises(S.ShardError, match="shard-000001.tar: checksum mismatch"):
        list(ShardDataset(tmp_path, rank=0, world_size=1, allow_incomplete=True))
    with pytest.raises(InputError, match="rank"):
        ShardDataset(tmp_path, rank=2, world_size=2)


# ------------------------------------------------------------------------------------------ map_dataset


def test_map_dataset_fan_out_skip_and_resume(tmp_path, dataset):
    out = tmp_path / "mapped"

    def fn(s):
        i = s["meta"]["i"]
        if i == 5:
            raise InputError("k005: unusable")
        if i % 4 == 0:
            return []
        return [{"__key__": f"{s['__key__']}_g{g}", "x": s["x"] * 2, "meta": {"source_key": s["__key__"], "seed": g}}
                for g in range(2)]

    calls = []

    def crashing(s):
        calls.append(s["__key__"])
        if s["__key__"] == "k010":  # inside shard 3
            raise RuntimeError("boom")
        return fn(s)

    with pytest.raises(RuntimeError, match="boom"):
        S.map_dataset(dataset, out, crashing, progress=False)
    assert S.temp_files(out) == []
    written = {p.name: os.stat(p) for p in out.glob("shard-*.tar")}
    assert sorted(written) == [S.shard_name(j) for j in range(3)]

    calls.clear()
    m = S.map_dataset(dataset, out, lambda s: calls.append(s["__key__"]) or fn(s), progress=False)
    assert calls[0] == "k009" and len(calls) == N - 9  # resumed at shard 3
    for name, st in written.items():
        st2 = os.stat(out / name)
        assert (st2.st_ino, st2.st_mtime_ns) == (st.st_ino, st.st_mtime_ns)
    assert m.complete and m.kind == "map" and [s.name for s in m.shards] == [S.shard_name(j) for j in range(8)]
    kept = [i for i in range(N) if i != 5 and i % 4 != 0]
    keys = [s["__key__"] for s in S.iter_samples(out)]
    assert keys == [f"k{i:03d}_g{g}" for i in kept for g in range(2)]
    assert m.num_samples == 2 * len(kept)
    skipped = [sk for s in m.shards for sk in s.skipped]
    assert skipped == [{"key": "k005", "reason": "k005: unusable"}]
    assert S.verify_dataset(out).ok

    # parallel ranks each take their own input shards
    out2 = tmp_path / "mapped2"
    for r in range(3):
        m2 = S.map_dataset(dataset, out2, fn, rank=r, world_size=3, progress=False)
    assert m2.complete and [s["__key__"] for s in S.iter_samples(out2)] == keys


def _rank_job(args):
    d, rank, world = args
    S.write_dataset(d, 40, tiny, samples_per_shard=2, rank=rank, world_size=world, progress=False)
    return rank


def test_concurrent_rank_processes_never_clobber(tmp_path):
    import multiprocessing as mp

    world = 4
    with mp.get_context("fork").Pool(world) as pool:
        assert sorted(pool.map(_rank_job, [(tmp_path, r, world) for r in range(world)])) == list(range(world))
    import json

    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["complete"] is True and man["num_shards"] == 20 and man["num_samples"] == 40
    assert [s["__key__"] for s in S.iter_samples(tmp_path, fields=[])] == [f"k{i:03d}" for i in range(40)]
    assert S.verify_dataset(tmp_path).ok


def test_shards_module_stays_torch_free_and_reexports_dataset():
    import subprocess
    import sys

    code = "import sys, bridgedepth.data.shards as S; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.stdout.strip() == "False"
    assert S.ShardDataset is ShardDataset
