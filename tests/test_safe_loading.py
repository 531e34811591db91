"""Loading is safe: no pickle that would run code is ever unpickled, YAML goes through a safe loader,
and no archive member is written anywhere (shards are read into memory; unsafe members refused).

Each malicious file here *would* create a sentinel file when loaded unsafely; the control line
(``_unsafe_load_would_run``) proves it, then every bridgedepth loader is shown to refuse it with a
typed error while the sentinel never appears."""

from __future__ import annotations

import io
import json
import pickle
import tarfile

import numpy as np
import pytest
import torch

from bridgedepth.config import ConfigError, load_config
from bridgedepth.data.shards import IndexedShard, ShardError, iter_shard, verify_dataset, write_dataset
from bridgedepth.errors import BridgeError, InputError


class _Evil:
    """Unpickling this object calls ``open(sentinel, "w")``: a stand-in for arbitrary code."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _evil_torch_file(path, sentinel, payload=None):
    obj = payload if payload is not None else {"optimizer": {"state": {}}, "scheduler": {}}
    obj = dict(obj)
    obj["x"] = _Evil(sentinel)
    torch.save(obj, path)
    return path


def _unsafe_load_would_run(path, sentinel):
    """Control: the file really is malicious (an unsafe load runs its code)."""
    assert not sentinel.exists()
    torch.load(path, map_location="cpu", weights_only=False)
    assert sentinel.exists(), "the malicious pickle did not run code under an unsafe load: the test is void"
    sentinel.unlink()


# ------------------------------------------------------------------------------ checkpoints


def test_train_resume_refuses_malicious_optimizer_state(tmp_path, run_cli):
    from bridgedepth.mde.trainer import TrainData, train

    def scene(i):
        rng = np.random.default_rng(i)
        d = rng.uniform(1, 5, (32, 32)).astype(np.float32)
        return {"rgb": rng.integers(0, 255, (32, 32, 3), dtype=np.uint8), "depth": d, "valid": d > 0}

    write_dataset(tmp_path / "src", 4, scene, samples_per_shard=4, progress=False)
    over = ["train.steps=2", "model.name=micro", "train.crop_size=28", "train.batch_size=2", "device=cpu",
            "train.warmup_steps=0", "train.save_every=1"]
    cfg = load_config("tiny", over)
    out = tmp_path / "run"
    train(cfg, [TrainData(str(tmp_path / "src"))], out, stop_after=1, progress=False)
    sentinel = tmp_path / "PWNED"
    blob = out / "last" / "optimizer.pt"
    _evil_torch_file(blob, sentinel)
    _unsafe_load_would_run(blob, sentinel)
    with pytest.raises(InputError, match="optimizer.pt: refused: not a tensors-only"):
        train(cfg, [TrainData(str(tmp_path / "src"))], out, progress=False)
    assert not sentinel.exists()
    r = run_cli("train", "--data", tmp_path / "src", "--out", out, "--no-progress",
                *[a for o in over for a in ("--set", o)])
    assert r.code == 2 and "refused: not a tensors-only" in r.err and "Traceback" not in r.err, r
    assert not sentinel.exists()


def test_convert_checkpoint_refuses_malicious_pth(tmp_path, run_cli):
    sentinel = tmp_path / "PWNED"
    pth = _evil_torch_file(tmp_path / "depth_anything_v2_vits.pth", sentinel, {"w": torch.zeros(2)})
    _unsafe_load_would_run(pth, sentinel)
    r = run_cli("convert-checkpoint", pth, tmp_path / "out", "--encoder", "vits")
    assert r.code == 2 and "not a weights-only PyTorch checkpoint" in r.err and str(pth) in r.err, r
    assert not sentinel.exists() and not (tmp_path / "out").exists()


def test_aesthetic_head_refuses_malicious_pth(tmp_path):
    from bridgedepth.d2i.rewards import load_aesthetic_head

    sentinel = tmp_path / "PWNED"
    pth = _evil_torch_file(tmp_path / "head.pth", sentinel, {"layers.0.weight": torch.zeros(1, 4)})
    _unsafe_load_would_run(pth, sentinel)
    with pytest.raises(InputError, match="head.pth"):
        load_aesthetic_head(pth)
    assert not sentinel.exists()


def test_model_folder_with_only_a_pickle_is_refused_unread(tmp_path):
    from bridgedepth.mde import build_model, load_model

    d = tmp_path / "ckpt"
    d.mkdir()
    build_model("micro").config.save_pretrained(d)
    sentinel = tmp_path / "PWNED"
    _evil_torch_file(d / "pytorch_model.bin", sentinel, {"w": torch.zeros(1)})
    with pytest.raises(InputError, match="only safetensors"):
        load_model(d)
    assert not sentinel.exists()


def test_tiny_d2i_with_a_pickled_unet_is_refused(tmp_path):
    """diffusers falls back to a .bin when no .safetensors is present; it loads with weights_only=True."""
    from bridgedepth.d2i.tiny import TinyBackend

    d = tmp_path / "d2i"
    TinyBackend.create(16, (8, 8), 1, 2).save(d)
    for f in (d / "unet").glob("*.safetensors"):
        f.unlink()
    sentinel = tmp_path / "PWNED"
    _evil_torch_file(d / "unet" / "diffusion_pytorch_model.bin", sentinel, {"w": torch.zeros(1)})
    with pytest.raises(Exception) as e:
        TinyBackend.load(d)
    assert "weights" in str(e.value).lower() or "pickle" in str(e.value).lower() or isinstance(e.value, OSError)
    assert not sentinel.exists()


def test_npy_with_pickled_objects_is_refused_everywhere(tmp_path):
    from bridgedepth.data.shards import decode_field
    from bridgedepth.evaluation.runner import load_prediction
    from bridgedepth.io import FormatError, read_depth

    sentinel = tmp_path / "PWNED"
    arr = np.empty(1, dtype=object)
    arr[0] = _Evil(sentinel)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    p = tmp_path / "evil.npy"
    p.write_bytes(buf.getvalue())
    np.load(p, allow_pickle=True)  # control: the file runs code under an unsafe load
    assert sentinel.exists()
    sentinel.unlink()
    with pytest.raises(FormatError, match="pickle"):
        read_depth(p, "npy")
    with pytest.raises(InputError, match="evil.npy"):
        load_prediction(p)
    with pytest.raises(ShardError, match="cannot decode"):
        decode_field("npy", p.read_bytes(), where="k.depth.npy")
    assert not sentinel.exists()


# ------------------------------------------------------------------------------ YAML


PYTHON_TAGS = [
    "!!python/object/apply:builtins.open ['{s}', 'w']",
    "!!python/object/new:builtins.open ['{s}', 'w']",
    "!!python/name:builtins.open",
]


@pytest.mark.parametrize("tag", PYTHON_TAGS)
def test_yaml_python_tags_refused_in_presets(tmp_path, run_cli, tag):
    import yaml

    sentinel = tmp_path / "PWNED"
    text = f"base: tiny\nseed: {tag.format(s=sentinel)}\n"
    if "apply" in tag:  # control: an unsafe loader would run it
        yaml.unsafe_load(text)
        assert sentinel.exists()
        sentinel.unlink()
    preset = tmp_path / "evil.yaml"
    preset.write_text(text)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(preset)
    r = run_cli("config", "show", preset)
    assert r.code == 2 and "not valid YAML" in r.err and "Traceback" not in r.err, r
    # in a dotted override the tag is never constructed either (kept as a plain string, then rejected)
    with pytest.raises((ConfigError, BridgeError)):
        load_config("tiny", [f"seed={tag.format(s=sentinel)}"])
    assert not sentinel.exists()


def test_yaml_python_tag_refused_in_eval_roots(tmp_path, run_cli):
    sentinel = tmp_path / "PWNED"
    roots = tmp_path / "roots.yaml"
    roots.write_text(f"nyuv2: !!python/object/apply:builtins.open ['{sentinel}', 'w']\n")
    r = run_cli("eval", "--suite", "zero-shot", "--roots", roots, "--predictions", tmp_path,
                "--prediction-type", "disparity")
    assert r.code == 2 and "not valid YAML" in r.err and "Traceback" not in r.err, r
    assert not sentinel.exists()


# ------------------------------------------------------------------------------ archives


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data, kind, link in members:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = kind, link
            ti.size = len(data) if kind == tarfile.REGTYPE else 0
            tar.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)
    return path


def _dataset_with(tmp_path, members):
    """A dataset directory whose one shard is the given tar, with a matching status file and manifest
    (so the checksum passes and only the member checks stand between the tar and the reader)."""
    from bridgedepth.data.shards import rebuild_manifest, sha256_file

    d = tmp_path / "ds"
    d.mkdir()
    shard = _tar(d / "shard-000000.tar", members)
    status = {"name": shard.name, "complete": True, "samples": 1, "sha256": sha256_file(shard),
              "bytes": shard.stat().st_size, "start": 0, "stop": 1, "skipped": []}
    (d / "shard-000000.tar.json").write_text(json.dumps(status))
    rebuild_manifest(d, [shard.name], kind="write", samples_per_shard=1, num_inputs=1)
    return d, shard


SECRET = b"do-not-read"
UNSAFE = {
    "dotdot": [("k.a.txt", b"1", tarfile.REGTYPE, ""), ("../escaped.x.txt", b"evil", tarfile.REGTYPE, "")],
    "deep-dotdot": [("a/../../escaped.x.txt", b"evil", tarfile.REGTYPE, "")],
    "absolute": [("{abs}", b"evil", tarfile.REGTYPE, "")],
    "symlink": [("k.secret.txt", b"", tarfile.SYMTYPE, "{secret}")],
    "hardlink": [("k.secret.txt", b"", tarfile.LNKTYPE, "{secret}")],
    "hardlink-inside": [("k.a.txt", b"1", tarfile.REGTYPE, ""), ("k.b.txt", b"", tarfile.LNKTYPE, "k.a.txt")],
    "directory": [("k", b"", tarfile.DIRTYPE, "")],
    "device": [("k.dev.bin", b"", tarfile.CHRTYPE, "")],
}
MATCH = {"dotdot": r"'\.\.'", "deep-dotdot": r"'\.\.'", "absolute": "absolute path", "symlink": "symlink",
         "hardlink": "hard link", "hardlink-inside": "hard link", "directory": "directory", "device": "device"}


@pytest.mark.parametrize("case", sorted(UNSAFE))
def test_unsafe_tar_members_never_leave_the_folder(tmp_path, run_cli, case):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    escaped_abs = tmp_path / "abs_escaped.x.txt"
    members = [(n.format(abs=escaped_abs, secret=secret), data, kind, link.format(secret=secret))
               for n, data, kind, link in UNSAFE[case]]
    d, shard = _dataset_with(tmp_path, members)
    before = sorted(p for p in tmp_path.rglob("*"))
    readers = [
        lambda: list(iter_shard(shard)),
        lambda: IndexedShard(shard),
    ]
    for read in readers:
        with pytest.raises(ShardError, match=MATCH[case]) as e:
            read()
        assert str(shard) in str(e.value)
    rep = verify_dataset(d)
    assert not rep.ok and any(MATCH[case].strip("r'\\") in p.message or p.kind == "unreadable" for p in rep.problems)
    r = run_cli("shards", "verify", d)
    assert r.code != 0 and "Traceback" not in r.err, r
    # nothing was created anywhere, the symlink / hard-link target was never read back
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "escaped.x.txt").exists() and not escaped_abs.exists()
    assert SECRET not in (r.out + r.err).encode()


def test_torch_shard_dataset_refuses_unsafe_member(tmp_path):
    from bridgedepth.data.loader import ShardDataset

    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    d, _ = _dataset_with(tmp_path, [("k.rgb.txt", b"", tarfile.SYMTYPE, str(secret))])
    with pytest.raises(ShardError, match="symlink"):
        ds = ShardDataset(d)
        for _ in ds:
            pass


def test_no_code_path_extracts_archives():
    """Audit: the package never calls an extraction API or an unsafe loader (a new call site fails here
    and must be reviewed: extraction needs the same member checks, loads need weights_only / safe_load)."""
    import re
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "bridgedepth"
    bad = []
    for f in src.rglob("*.py"):
        text = f.read_text()
        for pat in (r"\.extractall\(", r"\.extract\(", r"unpack_archive", r"yaml\.load\(", r"yaml\.unsafe_load",
                    r"yaml\.full_load", r"pickle\.loads?\(", r"allow_pickle=True", r"weights_only=False",
                    r"marshal\.loads", r"dill\."):
            bad += [f"{f.relative_to(src)}: {pat}" for _ in re.finditer(pat, text)]
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                bad.append(f"{f.relative_to(src)}: torch.load without weights_only=True")
    assert not bad, bad
