"""The trainer's data path: worker processes, shuffle groups, exact resume without re-decoding, and the
per-rank state that goes into a checkpoint."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from bridgedepth.config import ConfigError, load_config
from bridgedepth.data import shards as S
from bridgedepth.data.loader import ShardDataset, ShardStream
from bridgedepth.mde.trainer import MixtureLoader, TrainData, train

H = W = 16


def _depth_sample(i: int) -> dict:
    """Four consecutive samples share one depth map (like `bridge generate`'s seeds): d0007g0..g3."""
    rng = np.random.default_rng(i)
    depth = np.full((H, W), 1.0 + (i // 4) % 7, np.float32)
    rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    return {"__key__": f"d{i // 4:04d}g{i % 4}", "rgb": rgb, "depth": depth, "valid": np.ones((H, W), bool)}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    S.write_dataset(root / "a", 40, _depth_sample, samples_per_shard=4, progress=False)  # 10 shards
    S.write_dataset(root / "b", 27, lambda i: {**_depth_sample(i), "__key__": f"b{i:03d}"},
                    samples_per_shard=5, progress=False)  # 6 shards, the last one short
    return root


def _cfg(**extra):
    over = ["model.name=micro", "train.crop_size=14", "train.batch_size=4", "device=cpu", "train.steps=2",
            "train.warmup_steps=0"]
    return load_config("tiny", over + [f"{k}={v}" for k, v in extra.items()])


def _keys(ds_dir, rank, world, workers, start, n, group=3, seed=1, chunk=1):
    ds = ShardDataset(ds_dir, shuffle=True, seed=seed, rank=rank, world_size=world, shuffle_group=group)
    stream = ShardStream(ds, start=start, num_workers=workers, transform=lambda s, e: f"{e} {s['__key__']}",
                         chunk=chunk, pack=None if chunk == 1 else tuple)
    if workers == 0:
        it = iter(stream)
    else:
        it = iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=workers,
                                              multiprocessing_context="fork"))
    out = []
    while len(out) < n:
        item = next(it)
        out += list(item) if chunk > 1 else [item]
    del it
    return out[:n]


@pytest.mark.parametrize("workers,chunk", [(0, 1), (2, 1), (3, 4)])
def test_stream_covers_every_sample_once_per_epoch_and_resumes_anywhere(sets, workers, chunk):
    world = 2 if workers < 3 else 1
    n = 40 // world
    per_rank = [_keys(sets / "a", r, world, workers, 0, 2 * n, chunk=chunk) for r in range(world)]
    for epoch in ("0", "1"):
        seen = [k.split()[1] for keys in per_rank for k in keys if k.split()[0] == epoch]
        counts = Counter(seen)
        if epoch == "0":  # all of epoch 0 is among the first 2 epochs of items
            assert sorted(counts) == sorted(f"d{i // 4:04d}g{i % 4}" for i in range(40))
        assert max(counts.values()) == 1
    assert per_rank[0][: n // 2] != per_rank[0][n: n + n // 2]  # a new order every epoch
    for start in (7, 13, 23):  # mid-epoch (and mid-chunk), and inside the next epoch
        assert _keys(sets / "a", world - 1, world, workers, start, 10, chunk=chunk) == \
            per_rank[world - 1][start:start + 10]


def test_stream_opens_only_the_shards_it_still_needs(sets, monkeypatch):
    ds = ShardDataset(sets / "a", shuffle=True, seed=1, shuffle_group=3)
    plan = ds.epoch_plan(0, 0, 1)
    start = 17
    needed = {str(ds.shards[j][0]) for j in plan[start:, 0]}
    opened, decoded = [], []
    real_init, real_decode = S.IndexedShard.__init__, S.decode_sample

    def spy_init(self, path, **kw):
        opened.append(str(path))
        real_init(self, path, **kw)

    monkeypatch.setattr(S.IndexedShard, "__init__", spy_init)
    monkeypatch.setattr(S, "decode_sample", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    it = iter(ShardStream(ds, start=start))
    for _ in range(len(plan) - start):
        next(it)
    assert sorted(opened) == sorted(needed) and len(needed) < len(ds.shards)
    assert len(decoded) == len(plan) - start


def test_resume_does_not_decode_what_was_consumed(sets, monkeypatch):
    cfg = _cfg()
    data = [TrainData(str(sets / "a"))]
    first = MixtureLoader(data, cfg, num_workers=0)
    for _ in range(6):  # 24 of the epoch's 40 samples: several shards used up
        first.next_batch()
    state = first.state()
    first.close()
    decoded = []
    real = S.decode_sample
    monkeypatch.setattr(S, "decode_sample", lambda *a, **k: decoded.append(1) or real(*a, **k))
    MixtureLoader(data, cfg, state=state, num_workers=0).next_batch()
    assert len(decoded) == cfg.train.batch_size


def test_workers_and_resume_give_identical_batches(sets):
    cfg = _cfg()
    data = [TrainData(str(sets / "a"), "gt", 1.0), TrainData(str(sets / "b"), "gt", 1.0)]

    def batches(loader, n):
        out = [loader.next_batch() for _ in range(n)]
        return out

    ref = MixtureLoader(data, cfg, num_workers=2)
    full = batches(ref, 6)
    ref.close()
    one = MixtureLoader(data, cfg, num_workers=1)  # 0 and 1 worker read in the same order
    inproc = MixtureLoader(data, cfg, num_workers=0)
    for a, b in zip(batches(one, 2), batches(inproc, 2)):
        assert all(torch.equal(a[k], b[k]) for k in a)
    one.close()
    part = MixtureLoader(data, cfg, num_workers=2)
    head = batches(part, 2)
    state = part.state()
    part.close()
    assert [s["num_workers"] for s in state["sources"]] == [2, 2]
    rest = MixtureLoader(data, cfg, state=state, num_workers=2)
    tail = batches(rest, 4)
    rest.close()
    for a, b in zip(full, head + tail):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_batches_rarely_hold_two_seeds_of_one_depth_map(tmp_path, monkeypatch):
    """Neighbours in a shard share a depth map (4 seeds each); with the default shuffle group most
    batches of 8 hold 8 different depth maps (expected sibling pairs ~ 28 * 3 / 511 = 0.16 per batch;
    a 64-sample streaming buffer would give ~1.3)."""
    monkeypatch.setenv("BRIDGE_TRACE_KEYS", "1")
    S.write_dataset(tmp_path / "gen", 1024, _depth_sample, samples_per_shard=32, progress=False)
    cfg = _cfg(**{"train.batch_size": 8})
    assert cfg.data.shuffle_group == 16
    loader = MixtureLoader([TrainData(str(tmp_path / "gen"))], cfg, num_workers=0)
    for _ in range(64):
        loader.next_views()
    keys = [line.split()[1] for line in loader.sources[0].trace]
    batches = [keys[i:i + 8] for i in range(0, len(keys), 8)]
    clean = [len({k[:5] for k in b}) == 8 for b in batches]
    pairs = [sum(c * (c - 1) // 2 for c in Counter(k[:5] for k in b).values()) for b in batches]
    assert np.mean(clean) >= 0.75, np.mean(clean)
    assert np.mean(pairs) < 0.35, np.mean(pairs)


def test_crop_size_must_be_a_multiple_of_the_patch_size(sets, tmp_path):
    with pytest.raises(ConfigError, match=r"train.crop_size: 40 .* patch size 14; use 28 or 42"):
        train(_cfg(**{"train.crop_size": 40}), [TrainData(str(sets / "a"))], tmp_path / "x", progress=False)
    with pytest.raises(ConfigError, match="use 14"):
        _cfg(**{"train.crop_size": 9}).train.check_crop(14)


def test_too_few_shards_for_the_ranks_is_an_error(sets):
    ds = ShardDataset(sets / "b", rank=0, world_size=7)  # 6 shards
    with pytest.raises(Exception, match="no training samples"):
        ShardStream(ds)
    assert ShardStream.max_workers(ShardDataset(sets / "a", rank=0, world_size=2)) == 5


def test_unused_parameters_are_frozen_so_ddp_needs_no_search():
    """The dry pass finds the parameters without gradient; with them frozen, DDP with
    find_unused_parameters=False trains (without freezing it fails on the second step). The DDP part
    runs in a fresh interpreter (tests/_ddp_unused.py), whose gloo teardown cannot hang this one."""
    import json
    import subprocess
    import sys

    from bridgedepth.mde import build_model
    from bridgedepth.mde.trainer import _unused_parameters

    m = build_model("micro", seed=0)
    unused = _unused_parameters(m, 14)
    assert "backbone.embeddings.mask_token" in unused
    assert all(p.grad is None for p in m.parameters())
    helper = Path(__file__).parent / "_ddp_unused.py"
    r = subprocess.run([sys.executable, str(helper), json.dumps(sorted(unused))], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    results = json.loads(r.stdout.strip().splitlines()[-1])
    assert results["True"] == "ok" and "finished reduction" in results["False"]


def test_rank_tensors_round_trip_rng_and_grad_scaler():
    from types import SimpleNamespace

    from bridgedepth.mde.trainer import _rank_tensors, _restore_rank_tensors

    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=3)
    scaler.scale(torch.ones(()))
    scaler.update(new_scale=256.0)
    acc = SimpleNamespace(device=torch.device("cpu"), scaler=scaler)
    st = _rank_tensors(acc)
    expect = torch.rand(3)
    blob_path = __import__("io").BytesIO()
    torch.save(st, blob_path)
    blob_path.seek(0)
    st = torch.load(blob_path, weights_only=True)
    fresh = torch.amp.GradScaler("cpu", init_scale=1.0)
    _restore_rank_tensors(SimpleNamespace(device=torch.device("cpu"), scaler=fresh), st)
    assert torch.equal(torch.rand(3), expect)
    assert fresh.get_scale() == 256.0 and fresh.get_growth_interval() == 3


def test_scale_head_init_runs_on_device_under_autocast(tmp_path, sets, monkeypatch):
    from bridgedepth.mde import build_model, save_model
    from bridgedepth.mde import trainer as T

    teacher = build_model("micro", seed=0)
    save_model(teacher, tmp_path / "teacher")
    calls = []
    real = T.forward_with_features

    def spy(model, image):
        calls.append((torch.is_autocast_enabled("cpu"), image.device.type))
        return real(model, image)

    monkeypatch.setattr(T, "forward_with_features", spy)
    cfg = _cfg(**{"train.stage": "scale-head", "train.steps": 1, "train.mixed_precision": "bf16",
                  "model.max_depth": 10})
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)  # the process-wide state fixes mixed precision once
    try:
        train(cfg, [TrainData(str(sets / "a"), "metric")], tmp_path / "s", init_from=str(tmp_path / "teacher"),
              progress=False)
    finally:
        AcceleratorState._reset_state(True)
    assert calls[:4] == [(True, "cpu")] * 4  # the initialising pass over 4 batches
    assert len(calls) == 5  # that pass once, then one training step


def test_scale_head_init_runs_on_the_main_process_only(tmp_path, sets, monkeypatch):
    """Other ranks skip the initialising pass (they receive the head by broadcast): a process that is
    not the main one does not run it."""
    import accelerate

    from bridgedepth.mde import build_model, save_model
    from bridgedepth.mde import trainer as T

    save_model(build_model("micro", seed=0), tmp_path / "teacher")
    calls = []
    real = T._init_scale_from_data
    monkeypatch.setattr(T, "_init_scale_from_data", lambda *a, **k: calls.append(1) or real(*a, **k))
    cfg = _cfg(**{"train.stage": "scale-head", "train.steps": 1, "model.max_depth": 10})
    data = [TrainData(str(sets / "a"), "metric")]
    train(cfg, data, tmp_path / "main", init_from=str(tmp_path / "teacher"), progress=False)
    assert calls == [1]

    class NotMain(accelerate.Accelerator):
        is_main_process = property(lambda self: False)

    monkeypatch.setattr(accelerate, "Accelerator", NotMain)
    train(cfg, data, tmp_path / "other", init_from=str(tmp_path / "teacher"), progress=False)
    assert calls == [1]


def test_metric_stage_from_a_relative_model_calibrates_once_and_not_on_resume(tmp_path, sets, monkeypatch):
    """`bridge train --stage metric --init-from RELATIVE`: the converted head is calibrated on data once
    (main process), and a resumed run (its checkpoint is already metric) does not calibrate again."""
    from bridgedepth.mde import build_model, save_model
    from bridgedepth.mde import trainer as T

    save_model(build_model("micro", seed=0), tmp_path / "rel")
    calls = []
    real = T._calibrate_metric_head
    monkeypatch.setattr(T, "_calibrate_metric_head", lambda *a, **k: calls.append(k) or real(*a, **k))
    cfg = _cfg(**{"train.stage": "metric", "train.steps": 1, "model.max_depth": 10})
    data = [TrainData(str(sets / "a"), "metric")]
    train(cfg, data, tmp_path / "m", init_from=str(tmp_path / "rel"), progress=False)
    assert calls == [{"batches": 4}]
    train(_cfg(**{"train.stage": "metric", "train.steps": 2, "model.max_depth": 10}), data, tmp_path / "m",
          init_from=str(tmp_path / "rel"), progress=False)  # resumes from m/last
    assert calls == [{"batches": 4}]


def test_grouped_dataset_epoch_and_indexed_shard_checks(sets, tmp_path):
    ds = ShardDataset(sets / "b", shuffle=True, seed=3, shuffle_group=2, transform=lambda s: s["__key__"])
    keys = list(ds)
    assert sorted(keys) == [f"b{i:03d}" for i in range(27)] and keys != sorted(keys)
    path, sha, n = ds.shards[0]
    with S.IndexedShard(path, sha256=sha, expected=n) as shard:
        assert len(shard) == n and shard.sample(2)["__key__"] == "b002"
    with pytest.raises(S.ShardError, match="manifest says 4"):
        S.IndexedShard(path, expected=4)
    bad = tmp_path / "shard-000000.tar"
    data = bytearray(path.read_bytes())
    data[700] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(S.ShardError, match="checksum mismatch"):
        S.IndexedShard(bad, sha256=sha, cache_checksum=False)
