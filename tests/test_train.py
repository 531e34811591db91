"""The trainer: every stage runs from configs, resumption is exact, two CPU processes split the data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bridgedepth.config import load_config
from bridgedepth.data.shards import write_dataset
from bridgedepth.mde.trainer import MixtureLoader, TrainData, read_log, train

H, W = 48, 64


def _scene(i: int) -> dict:
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:H, 0:W]
    depth = (1.0 + 3.0 * yy / H + rng.uniform(0, 2)).astype(np.float32)
    valid = np.ones((H, W), bool)
    valid[:4] = False
    depth[~valid] = 0
    rgb = np.stack([(depth * 50) % 255, (xx * 4) % 255, np.full_like(depth, rng.integers(0, 255))], -1).astype(np.uint8)
    return {"__key__": f"s{i:04d}", "rgb": rgb, "depth": depth, "valid": valid, "meta": {"i": i}}


def _labelled(i: int) -> dict:
    s = _scene(i)
    disp = np.where(s["valid"], 1.0 / np.maximum(s["depth"], 1e-3), 0)
    s["pseudo"] = (3.0 * disp + 0.2).astype(np.float16)  # an affine function of GT disparity
    mask = np.zeros((H, W), bool)
    mask[:, : W // 2] = True
    s["mask"] = mask
    s["meta"]["accepted"] = i % 2 == 0
    return s


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_dataset(root / "src", 16, _scene, samples_per_shard=4, desc="src")
    write_dataset(root / "gen", 12, _labelled, samples_per_shard=4, desc="gen")
    return root


def _cfg(stage="teacher", steps=4, **extra):
    over = [f"train.stage={stage}", f"train.steps={steps}", "model.name=micro", "train.crop_size=42",
            "train.batch_size=2", "train.lr=1e-4", "device=cpu", "model.max_depth=10",
            "train.warmup_steps=0"]
    over += [f"{k}={v}" for k, v in extra.items()]
    return load_config("tiny", over)


def test_teacher_trains_writes_checkpoint_log_and_curves(shards, tmp_path):
    from bridgedepth.mde import load_model

    res = train(_cfg(), [TrainData(str(shards / "src"))], tmp_path / "t", progress=False)
    assert res.steps == 4 and np.isfinite(res.final_loss)
    model = load_model(tmp_path / "t" / "last")
    assert model.config.depth_estimation_type == "relative"
    recs = read_log(res.log_path)
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    assert all({"loss", "lr", "samples_per_s", "data_wait_frac"} <= r.keys() for r in recs)
    assert recs[0]["lr"] > recs[-1]["lr"]  # poly decay
    assert (tmp_path / "t" / "curves.png").stat().st_size > 1000
    assert (tmp_path / "t" / "config.yaml").exists()
    state = json.loads((tmp_path / "t" / "last" / "trainer_state.json").read_text())
    assert state["step"] == 4


def test_resume_reproduces_uninterrupted_losses(shards, tmp_path):
    data = [TrainData(str(shards / "src"), "gt", 1.0), TrainData(str(shards / "gen"), "gt", 1.0)]
    cfg = _cfg(steps=6)
    full = train(cfg, data, tmp_path / "full", progress=False)
    first = train(cfg, data, tmp_path / "resumed", stop_after=3, progress=False)
    assert first.steps == 3
    second = train(cfg, data, tmp_path / "resumed", progress=False)
    assert second.resumed_from == 3 and second.steps == 6
    a = [r["loss"] for r in read_log(full.log_path)]
    b = [r["loss"] for r in read_log(second.log_path)]
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_resume_with_other_settings_is_refused_and_steps_may_grow(shards, tmp_path, run_cli):
    """Rerunning into the same --out with another learning rate or data mixture resumed the old
    checkpoint silently (a model trained half with each, its card naming the new settings)."""
    from bridgedepth.errors import InputError

    data = [TrainData(str(shards / "src"), "gt", 1.0)]
    out = tmp_path / "run"
    train(_cfg(steps=3), data, out, progress=False)
    before = (out / "config.yaml").read_text()
    with pytest.raises(InputError, match=r"other settings \(train.lr: 0.0001 -> 0.001\).*--init-from"):
        train(_cfg(steps=3, **{"train.lr": "1e-3"}), data, out, progress=False)
    assert (out / "config.yaml").read_text() == before  # the refused run left the folder's record alone
    with pytest.raises(InputError, match="the mixture"):
        train(_cfg(steps=3), data + [TrainData(str(shards / "gen"), "gt", 1.0)], out, progress=False)
    with pytest.raises(InputError, match="train.loss.trim"):
        train(_cfg(steps=3, **{"train.loss.trim": "0.2"}), data, out, progress=False)
    # a longer run, another validation cadence or memory layout: resumed (extends the run)
    longer = train(_cfg(steps=5, **{"train.save_every": "2", "train.channels_last": "false"}), data, out,
                   progress=False)
    assert longer.resumed_from == 3 and longer.steps == 5
    r = run_cli("train", "--preset", "tiny", "--stage", "teacher", "--data", f"{shards / 'src'}:gt", "--out", out,
                "--steps", "6", "--no-progress", "--set", "model.name=micro", "--set", "train.crop_size=42",
                "--set", "train.batch_size=3", "--set", "device=cpu")
    assert r.code == 2 and "train.batch_size: 2 -> 3" in r.err and "Traceback" not in r.err


def test_channels_last_decoder_trains_the_same_as_nchw(shards, tmp_path):
    """train.channels_last (the default) changes the memory layout of the DPT neck/head only: the same
    gradients as NCHW, the same training losses, and a checkpoint that loads as a contiguous one."""
    import torch

    from bridgedepth.mde import build_model, decoder_channels_last, load_model

    x = torch.rand(2, 3, 42, 42, generator=torch.Generator().manual_seed(0))
    grads = []
    for cl in (False, True):
        m = build_model("micro", seed=0)
        if cl:
            decoder_channels_last(m)
            convs = [mod.weight for mod in list(m.neck.modules()) + list(m.head.modules())
                     if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size != (1, 1)]
            assert convs and all(w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
                                 for w in convs)
        (m(pixel_values=x).predicted_depth ** 2).mean().backward()
        grads.append({k: p.grad for k, p in m.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], rtol=1e-4, atol=1e-7)
    data = [TrainData(str(shards / "src"), "gt", 1.0)]
    runs = {}
    for flag in ("true", "false"):
        r = train(_cfg(steps=5, **{"train.channels_last": flag}), data, tmp_path / flag, progress=False)
        runs[flag] = [rec["loss"] for rec in read_log(r.log_path)]
    np.testing.assert_allclose(runs["true"], runs["false"], rtol=1e-4, atol=1e-6)
    assert all(v.is_contiguous() for v in load_model(tmp_path / "true" / "last").state_dict().values())


def test_hybrid_and_pseudo_stages_and_wrong_target(shards, tmp_path):
    from bridgedepth.errors import InputError

    res = train(_cfg("student-hybrid", steps=2), [TrainData(str(shards / "gen"), "hybrid"),
                                                   TrainData(str(shards / "src"), "gt", 0.5)],
                tmp_path / "h", progress=False)
    assert np.isfinite(res.final_loss)
    with pytest.raises(InputError, match="takes targets"):
        train(_cfg("teacher", steps=1), [TrainData(str(shards / "gen"), "pseudo")], tmp_path / "x", progress=False)


def test_metric_stage_and_scale_head(shards, tmp_path):
    from bridgedepth.mde import load_model, load_scale_head

    teacher = train(_cfg(steps=2), [TrainData(str(shards / "src"))], tmp_path / "t", progress=False)
    metric = train(_cfg("metric", steps=2), [TrainData(str(shards / "src"), "metric")], tmp_path / "m",
                   init_from=str(teacher.out_dir / "last"), progress=False)
    m = load_model(metric.out_dir / "last")
    assert m.config.depth_estimation_type == "metric" and m.config.max_depth == 10
    seen = {}

    def validate(model):
        import torch

        x = torch.zeros(1, 3, 42, 42)
        seen["depth"] = model(pixel_values=x).predicted_depth
        return {"abs_rel": 0.5}

    sh = train(_cfg("scale-head", steps=3, **{"train.lr": 1e-2}), [TrainData(str(shards / "src"), "metric")],
               tmp_path / "s", init_from=str(teacher.out_dir / "last"), validate=validate, progress=False)
    head = load_scale_head(sh.out_dir / "last")
    assert head is not None
    assert (sh.out_dir / "best" / "scale_head.safetensors").exists() and sh.best_score == 0.5
    assert seen["depth"].shape == (1, 42, 42) and float(seen["depth"].min()) > 0
    # the frozen model's weights did not move
    import torch

    base = load_model(teacher.out_dir / "last").state_dict()
    after = load_model(sh.out_dir / "last").state_dict()
    assert all(torch.equal(base[k], after[k]) for k in base)


def test_poly_schedule_with_warmup():
    from bridgedepth.mde.trainer import poly_lambda

    f = poly_lambda(total=10, warmup=2, power=1.0)
    assert [round(f(s), 3) for s in range(4)] == [0.5, 1.0, 1.0, 0.875]
    assert f(10) == 0.0


def test_mixture_weights_are_respected(shards):
    cfg = _cfg(**{"train.batch_size": 1})
    loader = MixtureLoader([TrainData(str(shards / "src"), "gt", 3.0), TrainData(str(shards / "gen"), "gt", 1.0)], cfg)
    counts = [0, 0]
    for _ in range(200):
        i = int(loader.rng.choice(2, p=loader.p))
        counts[i] += 1
    assert 0.65 < counts[0] / 200 < 0.85


def test_cli_train(shards, tmp_path, run_cli):
    r = run_cli("train", "--stage", "teacher", "--data", f"{shards / 'src'}:gt:1.0", "--out", tmp_path / "c",
                "--steps", "1", "--set", "model.name=micro", "--set", "train.crop_size=42",
                "--set", "train.batch_size=2", "--no-progress")
    assert r.code == 0, r
    assert (tmp_path / "c" / "last" / "model.safetensors").exists()
    bad = run_cli("train", "--data", str(tmp_path / "nope"), "--out", tmp_path / "d", "--steps", "1")
    assert bad.code == 2 and "does not exist" in bad.err


def test_two_processes_split_the_data(shards, tmp_path):
    """torchrun with 2 CPU processes (gloo): trains, every sample once per epoch across ranks,
    one checkpoint written."""
    out = tmp_path / "ddp"
    env = dict(os.environ, BRIDGE_TRACE_KEYS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "bridgedepth", "train", "--stage", "teacher", "--data", str(shards / "src"), "--out", str(out),
           "--steps", "4", "--no-progress", "--set", "model.name=micro", "--set", "train.crop_size=42",
           "--set", "train.batch_size=2", "--set", "device=cpu"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # 16 samples, 2 ranks x 2 per step x 4 steps = one epoch
    keys = []
    for rank in (0, 1):
        lines = (out / f"trace_rank{rank}_source0.txt").read_text().split()
        keys.append([lines[i + 1] for i in range(0, len(lines), 2)])
    assert len(keys[0]) == len(keys[1]) == 8
    assert not set(keys[0]) & set(keys[1])
    assert sorted(keys[0] + keys[1]) == [f"s{i:04d}" for i in range(16)]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["last"]
    assert len(read_log(out / "log.jsonl")) == 4  # only the main process logs


def test_two_processes_resume_exactly_on_every_rank(shards, tmp_path):
    """torchrun, 2 CPU processes, 2 sources, one DataLoader worker each: stopped after 2 steps and
    resumed, every rank's sample trace (per source) and the losses equal an uninterrupted run's."""
    out = tmp_path / "ddp"
    env = dict(os.environ, BRIDGE_TRACE_KEYS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534",
           str(Path(__file__).with_name("_ddp_resume.py")), str(out), str(shards / "src"), str(shards / "gen")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    traces = {}
    for run in ("full", "resumed"):
        for rank in (0, 1):
            for src in (0, 1):
                traces[run, rank, src] = (out / run / f"trace_rank{rank}_source{src}.txt").read_text().splitlines()
    for rank in (0, 1):
        assert sum(len(traces["full", rank, s]) for s in (0, 1)) == 8
        for src in (0, 1):
            assert traces["resumed", rank, src] == traces["full", rank, src], (rank, src)
    assert traces["full", 0, 0] != traces["full", 1, 0]
    a = [r["loss"] for r in read_log(out / "full" / "log.jsonl")]
    b = [r["loss"] for r in read_log(out / "resumed" / "log.jsonl")]
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    state = json.loads((out / "resumed" / "last" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["ranks"][0] != state["ranks"][1]


def test_fresh_relative_model_is_not_dead():
    """A from-scratch relative model must start with positive, non-vanishing output (no dead ReLU)."""
    import torch

    from bridgedepth.mde import build_model

    for name in ("micro", "tiny"):
        m = build_model(name, seed=0).eval()
        with torch.no_grad():
            p = m(pixel_values=torch.randn(2, 3, 56, 56)).predicted_depth
        assert float((p > 0).float().mean()) > 0.9 and float(p.mean()) > 1e-3, name
