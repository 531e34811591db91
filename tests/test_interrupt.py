"""Interrupted jobs lose nothing: each job runs as a subprocess and is killed with SIGKILL at a named
point (``BRIDGE_TEST_KILL_AT``, see bridgedepth.faults), then rerun; the result must equal an
uninterrupted run's (shards byte for byte, training weights bitwise on CPU), with every sample once,
no partial shard ever visible to a reader and ``bridge shards verify`` clean. SIGINT / SIGTERM stop
cleanly with a resume hint; a full disk (injected ENOSPC, or a real EFBIG from RLIMIT_FSIZE) names
the path, leaves nothing partial and the rerun finishes the job.

Each case costs a few subprocess starts (2-8 s each on the 2-core machine), so the default run
(``make test``) keeps one case per kind (a kill mid-shard, SIGTERM, ENOSPC, a kill between the two
checkpoint renames); the whole matrix is marked ``slow`` (``pytest -m slow tests/test_interrupt.py``,
or ``make test-all``): about 5 minutes under load, see docs/reliability.md."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bridgedepth.data.shards import TMP_MARK, iter_samples, load_manifest, sha256_file, temp_files, verify_dataset

REPO = Path(__file__).resolve().parents[1]
SCENES = ["scenes", "--count", "6", "--samples-per-shard", "2", "--size", "32x32", "--workers", "1", "--quiet",
          "--kind", "indoor"]
KILLED = -signal.SIGKILL


def bridge(*args, env=None, timeout=120, preexec_fn=None, popen=False):
    e = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
         "TRANSFORMERS_OFFLINE": "1"}
    for k in ("BRIDGE_TEST_KILL_AT", "BRIDGE_TEST_ENOSPC_AT", "BRIDGE_TEST_DELAY_AT"):
        e.pop(k, None)
    e.update(env or {})
    cmd = [sys.executable, "-m", "bridgedepth", *map(str, args)]
    if popen:
        return subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                preexec_fn=preexec_fn)
    return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn)


def shard_digests(d: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(d.glob("shard-*.tar"))}


def assert_nothing_partial_visible(d: Path) -> None:
    """After a kill: every shard a reader would accept (status + checksum) is whole; the rest is
    reported as incomplete or temporary, never read."""
    rep = verify_dataset(d)
    assert {p.kind for p in rep.problems} <= {"incomplete", "missing", "temporary"}, rep.problems
    for s in load_manifest(d).shards:
        if s.complete:
            assert sha256_file(d / s.name) == s.sha256
    list(iter_samples(d, allow_incomplete=True))  # the complete shards decode


def assert_same_as_reference(d: Path, ref: Path, n: int) -> None:
    rep = verify_dataset(d)
    assert rep.ok, rep.problems
    assert not temp_files(d)
    assert shard_digests(d) == shard_digests(ref)
    keys = [s["__key__"] for s in iter_samples(d, fields=["meta"])]
    assert len(keys) == n and len(set(keys)) == n
    m = load_manifest(d)
    assert m.complete and m.num_samples == n
    from contextlib import redirect_stdout
    from io import StringIO

    from bridgedepth.cli import main

    with redirect_stdout(StringIO()):
        assert main(["shards", "verify", str(d)]) == 0  # `bridge shards verify` clean


@pytest.fixture(scope="module")
def scenes_ref(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "scenes"
    r = bridge(*SCENES, "--out", out)
    assert r.returncode == 0, r.stderr
    return out


# ------------------------------------------------------------------------------ bridge scenes

SLOW = pytest.mark.slow
SCENE_POINTS = ["shard-write:3", pytest.param("shard-commit:2", marks=SLOW), pytest.param("shard-done:1", marks=SLOW),
                pytest.param("shard-done:3", marks=SLOW)]


@pytest.mark.parametrize("point", SCENE_POINTS)
def test_scenes_killed_then_resumed(tmp_path, scenes_ref, point):
    out = tmp_path / "scenes"
    r = bridge(*SCENES, "--out", out, env={"BRIDGE_TEST_KILL_AT": point})
    assert r.returncode == KILLED, (r.returncode, r.stderr)
    assert_nothing_partial_visible(out)
    r = bridge(*SCENES, "--out", out)
    assert r.returncode == 0, r.stderr
    assert_same_as_reference(out, scenes_ref, 6)


@SLOW
def test_scenes_workers_killed_then_resumed(tmp_path, scenes_ref):
    """Two rendering processes; one is killed mid-shard; the parent reports it, a rerun completes."""
    out = tmp_path / "scenes"
    args = [a if a != "1" or i != SCENES.index("--workers") + 1 else "2" for i, a in enumerate(SCENES)]
    r = bridge(*args, "--out", out, env={"BRIDGE_TEST_KILL_AT": "scene-render:2"})
    assert r.returncode != 0 and "rerun to resume" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert_nothing_partial_visible(out)
    r = bridge(*args, "--out", out)
    assert r.returncode == 0, r.stderr
    assert_same_as_reference(out, scenes_ref, 6)


def _wait_for(pred, timeout=60.0):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _sigterm_when(p, ready, timeout=120.0) -> str:
    """Send SIGTERM to the running ``bridge`` process ``p`` once ``ready()`` holds; its stderr."""
    try:
        assert _wait_for(ready, timeout=timeout)
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    return err


@pytest.mark.parametrize("sig,code,word", [(signal.SIGTERM, 143, "terminated"),
                                            pytest.param(signal.SIGINT, 130, "interrupted", marks=SLOW)])
def test_scenes_sigterm_sigint_stop_gracefully(tmp_path, scenes_ref, sig, code, word):
    out = tmp_path / "scenes"
    # a shell that runs the tests in the background starts them with SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: give the job the default disposition, as a terminal would
    p = bridge(*SCENES, "--out", out, env={"BRIDGE_TEST_DELAY_AT": "shard-write:0.3"}, popen=True,
               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # wait until shard 0 is complete and shard 1 is being written
        assert _wait_for(lambda: (out / "shard-000000.tar.json").exists() and out.exists()
                         and any("shard-000001.tar.tmp" in f for f in os.listdir(out)))
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == code, err
    assert word in err and "rerun the same command to resume" in err and "Traceback" not in err, err
    assert not temp_files(out), "the shard being written was not discarded"
    m = load_manifest(out)
    assert m.shards[0].complete and not m.shards[1].complete
    assert_nothing_partial_visible(out)
    r = bridge(*SCENES, "--out", out)
    assert r.returncode == 0, r.stderr
    assert_same_as_reference(out, scenes_ref, 6)


def test_scenes_disk_full_injected(tmp_path, scenes_ref):
    out = tmp_path / "scenes"
    r = bridge(*SCENES, "--out", out, env={"BRIDGE_TEST_ENOSPC_AT": "shard-write:3"})
    assert r.returncode == 2, r.stderr
    assert "shard-000001.tar: cannot write (No space left on device)" in r.stderr, r.stderr
    assert "free space and rerun" in r.stderr and "Traceback" not in r.stderr
    assert not temp_files(out)
    assert_nothing_partial_visible(out)
    assert load_manifest(out).shards[0].complete
    r = bridge(*SCENES, "--out", out)
    assert r.returncode == 0, r.stderr
    assert_same_as_reference(out, scenes_ref, 6)


def _file_size_limit(limit):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel then fails the write with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@SLOW
def test_scenes_real_file_size_limit(tmp_path, scenes_ref):
    """A real write failure from the kernel (RLIMIT_FSIZE -> EFBIG), no injection."""
    out = tmp_path / "scenes"
    out.mkdir()
    (out / "config.yaml").write_text("")  # pre-created (the resolved config is written at the end)
    r = bridge(*SCENES, "--out", out, preexec_fn=_file_size_limit(20_000))
    assert r.returncode == 2, r.stderr
    assert "shard-000000.tar: cannot write (File too large)" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not temp_files(out)
    assert_nothing_partial_visible(out)
    r = bridge(*SCENES, "--out", out)
    assert r.returncode == 0, r.stderr
    assert_same_as_reference(out, scenes_ref, 6)


# ------------------------------------------------------------------------------ bridge label


@pytest.fixture(scope="module")
def label_inputs(tmp_path_factory):
    from bridgedepth.data.shards import write_dataset
    from bridgedepth.mde import build_model, save_model

    root = tmp_path_factory.mktemp("label")
    save_model(build_model("micro", seed=0), root / "teacher")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
    write_dataset(root / "gen", 6, lambda i: {"rgb": np.roll(base, i, axis=1), "source_rgb": base,
                                              "meta": {"i": i}}, samples_per_shard=2, progress=False)
    ref = root / "ref"
    r = bridge(*_label_args(root, ref))
    assert r.returncode == 0, r.stderr
    return root, ref


def _label_args(root, out):
    return ["label", "--teacher", root / "teacher", "--generated", root / "gen", "--out", out, "--no-progress",
            "--workers", "1", "--set", "model.input_size=28"]


@SLOW
@pytest.mark.parametrize("point", ["shard-write:3", "shard-commit:1", "shard-done:2"])
def test_label_killed_then_resumed(tmp_path, label_inputs, point):
    root, ref = label_inputs
    out = tmp_path / "lab"
    r = bridge(*_label_args(root, out), env={"BRIDGE_TEST_KILL_AT": point})
    assert r.returncode == KILLED, (r.returncode, r.stderr)
    assert_nothing_partial_visible(out)
    r = bridge(*_label_args(root, out))
    assert r.returncode == 0, r.stderr
    assert_same_as_reference(out, ref, 6)
    assert json.loads((out / "label_summary.json").read_text())["samples"] == 6


def test_label_workers_sigterm_discards_partial_shards(tmp_path, label_inputs):
    """With --workers 2 a SIGTERM terminates the worker processes mid-shard: their temporary files are
    removed, the complete shards stay, and the rerun finishes with the uninterrupted result."""
    root, ref = label_inputs
    out = tmp_path / "lab"
    args = [a if a != "1" else "2" for a in _label_args(root, out)]  # --workers 2
    p = bridge(*args, env={"BRIDGE_TEST_DELAY_AT": "shard-write:0.4"}, popen=True)
    # mid-shard: a worker's shard is being written (not the parent's config or a manifest being saved:
    # a SIGTERM there, before any shard exists, leaves no manifest, as it should)
    err = _sigterm_when(p, lambda: out.exists() and any(f.startswith("shard-") and TMP_MARK in f
                                                        for f in os.listdir(out)))
    assert p.returncode == 143 and "rerun the same command to resume" in err and "Traceback" not in err, err
    assert not temp_files(out), "a worker's partial shard was left behind"
    assert_nothing_partial_visible(out)
    r = bridge(*_label_args(root, out))
    assert r.returncode == 0, r.stderr
    assert_same_as_reference(out, ref, 6)


# ------------------------------------------------------------------------------ bridge train


TRAIN_SET = ["--set", "model.name=micro", "--set", "train.crop_size=28", "--set", "train.batch_size=2",
             "--set", "device=cpu", "--set", "train.save_every=1", "--set", "train.warmup_steps=0"]


def _train_args(data, out):
    return ["train", "--stage", "teacher", "--data", data, "--out", out, "--steps", "4", "--no-progress", *TRAIN_SET]


@pytest.fixture(scope="module")
def train_ref(scenes_ref, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "ref"
    r = bridge(*_train_args(scenes_ref, out))
    assert r.returncode == 0, r.stderr
    return out


def _weights(ckpt: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(ckpt / "model.safetensors"))


def _log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


# point -> the step the rerun resumes from (checkpoints after steps 1, 2, 3 and the final one at 4)
TRAIN_POINTS = {"ckpt-write:2": 1, "ckpt-swap:2": 1, "train-step:3": 2, "ckpt-swap:4": 3}


@pytest.mark.parametrize("point", [p if p == "ckpt-swap:2" else pytest.param(p, marks=SLOW)
                                   for p in sorted(TRAIN_POINTS)])
def test_train_killed_then_resumed_bitwise(tmp_path, scenes_ref, train_ref, point):
    out = tmp_path / "run"
    r = bridge(*_train_args(scenes_ref, out), env={"BRIDGE_TEST_KILL_AT": point})
    assert r.returncode == KILLED, (r.returncode, r.stderr)
    if point.startswith("ckpt-write"):
        assert (out / ".last.tmp").is_dir()  # the half-written checkpoint the rerun must not load
    r = bridge(*_train_args(scenes_ref, out))
    assert r.returncode == 0, r.stderr
    assert f"resumed from {TRAIN_POINTS[point]})" in r.stdout, r.stdout
    got, want = _weights(out / "last"), _weights(train_ref / "last")
    assert got.keys() == want.keys()
    for k in want:
        assert np.array_equal(got[k], want[k]), f"{k} differs from the uninterrupted run"
    assert [rec["step"] for rec in _log(out)] == [1, 2, 3, 4]
    assert [rec["loss"] for rec in _log(out)] == [rec["loss"] for rec in _log(train_ref)]
    assert not (out / ".last.tmp").exists() and not (out / ".last.old").exists()


@SLOW
def test_train_disk_full_keeps_the_last_checkpoint(tmp_path, scenes_ref, train_ref):
    out = tmp_path / "run"
    r = bridge(*_train_args(scenes_ref, out), env={"BRIDGE_TEST_ENOSPC_AT": "ckpt-write:3"})
    assert r.returncode == 2, r.stderr
    assert f"{out / 'last'}: cannot write (No space left on device)" in r.stderr and "Traceback" not in r.stderr
    assert json.loads((out / "last" / "trainer_state.json").read_text())["step"] == 2
    assert not (out / ".last.tmp").exists()
    r = bridge(*_train_args(scenes_ref, out))
    assert r.returncode == 0 and "resumed from 2)" in r.stdout, r.stderr
    got, want = _weights(out / "last"), _weights(train_ref / "last")
    assert all(np.array_equal(got[k], want[k]) for k in want)


@SLOW
def test_train_sigterm_keeps_a_resumable_state(tmp_path, scenes_ref, train_ref):
    out = tmp_path / "run"
    p = bridge(*_train_args(scenes_ref, out), env={"BRIDGE_TEST_DELAY_AT": "train-step:1.0"}, popen=True)
    err = _sigterm_when(p, lambda: (out / "last" / "trainer_state.json").exists())
    assert p.returncode == 143 and "rerun the same command to resume" in err and "Traceback" not in err, err
    r = bridge(*_train_args(scenes_ref, out))
    assert r.returncode == 0, r.stderr
    got, want = _weights(out / "last"), _weights(train_ref / "last")
    assert all(np.array_equal(got[k], want[k]) for k in want)
    assert [rec["step"] for rec in _log(out)] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------ bridge generate

GEN_SET = ["device=cpu", "d2i.resolution=16", "d2i.channels=[8,16]", "d2i.num_steps=2", "d2i.pretrain_batch_size=4",
           "generate.batch_size=3"]


@pytest.fixture(scope="module")
def generate_inputs(tmp_path_factory):
    from bridgedepth.config import load_config
    from bridgedepth.d2i.pretrain import pretrain
    from bridgedepth.d2i.synthetic import toy_scene
    from bridgedepth.data.shards import write_dataset

    root = tmp_path_factory.mktemp("generate")
    write_dataset(root / "src", 5, lambda i: toy_scene(i, 24), samples_per_shard=2, progress=False)
    pretrain(load_config("tiny", GEN_SET), root / "src", root / "d2i", steps=2, progress=False)
    r = bridge(*_generate_args(root, root / "ref"))
    assert r.returncode == 0, r.stderr
    return root, root / "ref"


def _generate_args(root, out):
    return ["generate", "--d2i", root / "d2i", "--source", root / "src", "--out", out, "--images-per-depth", "2",
            "--seed", "7", *[a for o in GEN_SET for a in ("--set", o)]]


@SLOW
@pytest.mark.parametrize("point", ["shard-write:3", "shard-commit:2"])
def test_generate_killed_then_resumed(tmp_path, generate_inputs, point):
    root, ref = generate_inputs
    # beside the reference: generated samples reference their source by a path relative to their
    # folder, so only a folder at the same relative position can be byte-identical to the reference
    out = root / f"gen-{point.replace(':', '-')}"
    r = bridge(*_generate_args(root, out), env={"BRIDGE_TEST_KILL_AT": point})
    assert r.returncode == KILLED, (r.returncode, r.stderr)
    assert_nothing_partial_visible(out)
    r = bridge(*_generate_args(root, out))
    assert r.returncode == 0, r.stderr
    assert_same_as_reference(out, ref, 10)


# ------------------------------------------------------------------------------ bridge d2i finetune

FT_SET = ["device=cpu", "d2i.resolution=16", "d2i.num_steps=2", "finetune.batch_size=2", "finetune.heldout=2",
          "finetune.save_every=1", "finetune.sample_every=0", "finetune.lora_rank=2", "finetune.lora_alpha=2",
          "finetune.lr=1e-2", "finetune.lora_targets=[to_q,to_k,to_v]", "finetune.random_cutoff=true",
          "finetune.grad_steps=2"]


@pytest.fixture(scope="module")
def finetune_inputs(tmp_path_factory, scenes_ref):
    import torch
    from transformers import DepthAnythingForDepthEstimation

    from bridgedepth.d2i.teacher import tiny_teacher_config
    from bridgedepth.d2i.tiny import TinyBackend

    root = tmp_path_factory.mktemp("finetune")
    torch.manual_seed(0)
    TinyBackend.create(16, (8, 16), 1, 2).save(root / "d2i")
    DepthAnythingForDepthEstimation(tiny_teacher_config()).save_pretrained(root / "teacher")
    r = bridge(*_finetune_args(root, scenes_ref, root / "ref"), timeout=300)
    assert r.returncode == 0, r.stderr
    return root, root / "ref"


def _finetune_args(root, scenes, out):
    return ["d2i", "finetune", "--d2i", root / "d2i", "--teacher", root / "teacher", "--source", scenes,
            "--out", out, "--steps", "4", *[a for o in FT_SET for a in ("--set", o)]]


def _lora(out: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(out / "pytorch_lora_weights.safetensors"))


def _ft_log(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "finetune_log.jsonl").read_text().splitlines()]


# point -> the step the rerun resumes from (checkpoints after steps 1, 2 and 3; none after the last)
FT_POINTS = {"ckpt-write:2": 1, "ckpt-swap:2": 1, "train-step:3": 2}


@pytest.mark.parametrize("point", [p if p == "ckpt-swap:2" else pytest.param(p, marks=SLOW) for p in sorted(FT_POINTS)])
def test_d2i_finetune_killed_then_resumed_bitwise(tmp_path, scenes_ref, finetune_inputs, point):
    """Killed while writing a checkpoint, between its two renames, or after a step: the rerun resumes
    from the last complete checkpoint and ends with the uninterrupted run's LoRA, bit for bit (draws,
    flips and noise seeds depend on the step only; the cut-off RNG and AdamW state are checkpointed)."""
    root, ref = finetune_inputs
    out = tmp_path / "ft"
    r = bridge(*_finetune_args(root, scenes_ref, out), env={"BRIDGE_TEST_KILL_AT": point}, timeout=300)
    assert r.returncode == KILLED, (r.returncode, r.stderr[-2000:])
    ckpts = out / "checkpoints"
    if point.startswith("ckpt-swap"):
        assert not (ckpts / "last").exists() and (ckpts / "last.old").is_dir()  # the window being tested
    r = bridge(*_finetune_args(root, scenes_ref, out), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "finetune_summary.json").read_text())
    assert summary["resumed_from"] == FT_POINTS[point]
    got, want = _lora(out), _lora(ref)
    assert got.keys() == want.keys()
    for k in want:
        assert np.array_equal(got[k], want[k]), f"{k} differs from the uninterrupted run"
    assert [rec["step"] for rec in _ft_log(out)] == [1, 2, 3, 4]
    assert [rec["loss"] for rec in _ft_log(out)] == [rec["loss"] for rec in _ft_log(ref)]
    assert not ckpts.exists()
