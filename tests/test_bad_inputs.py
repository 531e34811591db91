"""Bad input never gets past a reader untyped, and never stops a multi-input job.

1. The corpus (tests/bad_inputs.py): every case raises its typed error (our exception classes), whose
   message names the file and matches the reason; the same file on the command line gives
   ``error: ...`` and status 2, never a traceback.
2. Multi-input jobs (`sources convert`, `label`, `eval`): bad inputs are recorded with path and reason,
   the rest is done, the count is reported; exit 1 only if nothing succeeded or with --strict.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from bad_inputs import all_cases  # noqa: E402
from conftest import SHARED_DATA  # noqa: E402

from bridgedepth.config import ConfigError  # noqa: E402
from bridgedepth.errors import BridgeError  # noqa: E402

CASES = all_cases(SHARED_DATA)
OURS = (BridgeError, ConfigError)


def test_corpus_size():
    """The figure quoted in docs/reliability.md."""
    kinds: dict[str, int] = {}
    for c in CASES:
        kinds[c.name.split("/")[0]] = kinds.get(c.name.split("/")[0], 0) + 1
    print(f"bad-input corpus: {len(CASES)} cases {kinds}")
    assert len(CASES) >= 150 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_typed_specific_error(case, shared_data, tmp_path, run_cli):
    path = case.build(tmp_path)
    with pytest.raises(OURS) as e:
        case.read(path)
    err = e.value
    assert isinstance(err, case.error), f"{type(err).__name__}: {err}"
    msg = str(err)
    assert path.name in msg, f"the message does not name the file: {msg}"
    import re

    assert re.search(case.match, msg, re.I), f"unexpected reason: {msg}"
    if case.cli is not None:
        args = list(case.cli)
        if args[0] == "eval":  # the checkpoint is --model's value; a real benchmark folder around it
            args = [*args[:1], "--root", shared_data / "rgbd/nyu_sync", *args[1:], path, "--quiet"]
        else:
            args = [*args, path]
        r = run_cli(*args)
        assert "Traceback" not in r.err, r
        if case.cli[:2] == ("shards", "verify") and r.code != 2:  # a report: exit 1, the problems listed
            assert r.code == 1 and "problem" in r.out + r.err and path.name in r.out + r.err, r
        else:
            assert r.code == 2, r
            assert "error:" in r.err and path.name in r.err, r


# ------------------------------------------------------------------------------ multi-input jobs


def _folder_dataset(tmp_path, shared_data, bad: dict[str, bytes | None]):
    """The real NYU frames (3 pairs) as a folder dataset, with some depth files replaced by ``bad``
    (name -> bytes; None: an RGB of another size, i.e. mismatched RGB/depth)."""
    root = tmp_path / "nyu"
    shutil.copytree(shared_data / "rgbd/nyu_sync/rgb", root / "rgb")
    shutil.copytree(shared_data / "rgbd/nyu_sync/depth", root / "depth")
    for name, data in bad.items():
        if data is None:
            from PIL import Image

            Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(root / "rgb" / name.replace("sync_depth", "rgb")
                                                                  .replace(".png", ".jpg"))
        else:
            (root / "depth" / name).write_bytes(data)
    return root


def test_sources_convert_records_bad_frames_and_continues(tmp_path, shared_data, run_cli):
    good = (shared_data / "rgbd/nyu_sync/depth/sync_depth_00050.png").read_bytes()
    root = _folder_dataset(tmp_path, shared_data, {"sync_depth_00000.png": good[: len(good) // 3],
                                                   "sync_depth_00100.png": None})
    out = tmp_path / "out"
    r = run_cli("sources", "convert", "folder", "--root", root, "--out", out, "--encoding", "png-mm")
    assert r.code == 0, r
    assert "1 of 3 samples read, 2 skipped" in r.out
    assert "sync_depth_00000.png" in r.out and "truncated" in r.out
    assert "size mismatch" in r.out and "Traceback" not in r.err
    rep = json.loads((out / "sources_report.json").read_text())
    assert {s["reason"].split(":")[0] for s in rep["skipped_samples"]} and len(rep["skipped_samples"]) == 2
    assert all(s["path"] for s in rep["skipped_samples"])
    from bridgedepth.data.shards import iter_samples, verify_dataset

    assert [s["__key__"] for s in iter_samples(out)] == ["rgb_00050"] and verify_dataset(out).ok
    r = run_cli("sources", "convert", "folder", "--root", root, "--out", tmp_path / "strict", "--encoding", "png-mm",
                "--strict")
    assert r.code == 1 and "2 frame(s) skipped and --strict" in r.out, r
    # nothing usable: exit 1
    for f in (root / "depth").iterdir():
        f.write_bytes(b"")
    r = run_cli("sources", "convert", "folder", "--root", root, "--out", tmp_path / "none", "--encoding", "png-mm")
    assert r.code == 1 and "every frame was skipped" in r.out and "Traceback" not in r.err, r


def _generated_set(d: Path, bad: dict[int, dict]):
    """A `bridge generate`-like set (rgb + source_rgb) of 4 samples; ``bad`` replaces fields."""
    from bridgedepth.data.shards import write_dataset

    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)

    def make(i):
        s = {"rgb": np.roll(base, i, axis=1), "source_rgb": base, "depth": np.full((48, 48), 2.0, np.float32),
             "meta": {"i": i}}
        s.update(bad.get(i, {}))
        return s

    write_dataset(d, 4, make, samples_per_shard=2, progress=False)
    return d


def test_label_records_bad_samples_and_continues(tmp_path, run_cli):
    from bridgedepth.mde import build_model, save_model

    save_model(build_model("micro", seed=0), tmp_path / "teacher")
    gen = _generated_set(tmp_path / "gen", {1: {"rgb": np.zeros((2, 2, 3), np.uint8)},  # too small
                                            2: {"source_rgb": np.zeros((48, 48), np.float32)}})  # not RGB
    over = ["--set", "model.input_size=28"]
    r = run_cli("label", "--teacher", tmp_path / "teacher", "--generated", gen, "--out", tmp_path / "lab",
                "--no-progress", *over)
    assert r.code == 0, r
    assert "labelled 2 samples" in r.out and "2 skipped" in r.out
    assert "skipped 000000001 (shard-000000.tar)" in r.out and "at least 8x8" in r.out
    assert "skipped 000000002 (shard-000001.tar)" in r.out and "'source_rgb' must be an RGB uint8" in r.out
    summary = json.loads((tmp_path / "lab" / "label_summary.json").read_text())
    assert summary["skipped"] == 2 and len(summary["bad_inputs"]) == 2
    r = run_cli("label", "--teacher", tmp_path / "teacher", "--generated", gen, "--out", tmp_path / "lab2",
                "--no-progress", "--strict", *over)
    assert r.code == 1 and "--strict" in r.err, r


def test_label_skips_undecodable_member_and_reports_unusable_shards(tmp_path, run_cli):
    """A member that does not decode (a corrupt PNG, checksum intact) is one skipped sample; a shard
    whose checksum fails is reported by name while the other shards are labelled (exit 2, resumable)."""
    import io
    import tarfile

    from bridgedepth.data.shards import load_manifest, rebuild_manifest, sha256_file, verify_dataset
    from bridgedepth.mde import build_model, save_model

    save_model(build_model("micro", seed=0), tmp_path / "teacher")
    gen = _generated_set(tmp_path / "gen", {})
    shard = gen / "shard-000000.tar"
    with tarfile.open(shard) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for m, data in members:
            if m.name == "000000000.rgb.png":
                data = data[:40]
                m.size = len(data)
            t.addfile(m, io.BytesIO(data))
    shard.write_bytes(buf.getvalue())
    st = json.loads((gen / "shard-000000.tar.json").read_text())
    st["sha256"] = sha256_file(shard)
    (gen / "shard-000000.tar.json").write_text(json.dumps(st))
    rebuild_manifest(gen)
    over = ["--set", "model.input_size=28", "--no-progress"]
    r = run_cli("label", "--teacher", tmp_path / "teacher", "--generated", gen, "--out", tmp_path / "lab", *over)
    assert r.code == 0 and "labelled 3 samples" in r.out and "cannot decode .png" in r.out, r
    # now corrupt shard 1 after its checksum was recorded
    p = gen / "shard-000001.tar"
    raw = bytearray(p.read_bytes())
    raw[700:720] = b"\xff" * 20  # inside the first member's data
    p.write_bytes(bytes(raw))
    r = run_cli("label", "--teacher", tmp_path / "teacher", "--generated", gen, "--out", tmp_path / "lab3", *over)
    assert r.code == 2 and "1 of 2 input shard(s) unusable" in r.err and "shard-000001.tar" in r.err, r
    assert "Traceback" not in r.err
    m = load_manifest(tmp_path / "lab3")
    assert [s.complete for s in m.shards] == [True, False]
    rep = verify_dataset(tmp_path / "lab3")
    assert [p.kind for p in rep.problems] == ["missing"]  # the unusable shard: no output, no temp file


def test_eval_records_bad_inputs_and_continues(tmp_path, shared_data, run_cli):
    from bridgedepth.io import read_depth

    root = _folder_dataset(tmp_path, shared_data, {"sync_depth_00100.png": b"\x89PNG\r\n\x1a\n broken"})
    preds = tmp_path / "P"
    preds.mkdir()
    for f in sorted((root / "rgb").iterdir()):
        key = f.stem
        d = shared_data / "rgbd/nyu_sync/depth" / f"sync_depth_{key.split('_')[1]}.png"
        dm = read_depth(d, "png-mm")
        np.save(preds / f"{key}.npy", np.where(dm.valid, 1 / np.maximum(dm.depth, 1e-3), 0).astype(np.float32))
    np.save(preds / "rgb_00050.npy", np.zeros((0, 4), np.float32))  # zero-size prediction
    out = tmp_path / "r.json"
    args = ["eval", "--dataset", "folder", "--root", root, "--encoding", "png-mm", "--predictions", preds,
            "--prediction-type", "disparity", "--quiet"]
    r = run_cli(*args, "--json", out)
    assert r.code == 0, r
    doc = json.loads(out.read_text())
    assert doc["n_images"] == 1 and doc["n_bad_inputs"] == 2
    reasons = " ".join(b["reason"] for b in doc["bad_inputs"])
    assert "sync_depth_00100.png" in reasons and "rgb_00050.npy" in reasons and "empty or degenerate" in reasons
    assert "2 bad input(s) left out, 1 image(s) evaluated" in r.err
    r = run_cli(*args, "--strict")
    assert r.code == 2 and "Traceback" not in r.err, r
    np.save(preds / "rgb_00000.npy", np.full((4, 4), np.inf, np.float32))
    r = run_cli(*args)
    assert r.code == 1 and "no image could be evaluated" in r.err, r


def test_generate_skips_undecodable_source_sample(tmp_path, run_cli):
    import io
    import tarfile

    from bridgedepth.config import load_config
    from bridgedepth.d2i.pretrain import pretrain
    from bridgedepth.d2i.synthetic import toy_scene
    from bridgedepth.data.shards import rebuild_manifest, sha256_file, write_dataset

    small = ["device=cpu", "d2i.resolution=16", "d2i.channels=[8,16]", "d2i.num_steps=2",
             "d2i.pretrain_batch_size=4", "generate.batch_size=3"]
    src = tmp_path / "src"
    write_dataset(src, 4, lambda i: toy_scene(i, 24), samples_per_shard=2, progress=False)
    pretrain(load_config("tiny", small), src, tmp_path / "d2i", steps=1, progress=False)
    shard = src / "shard-000001.tar"  # corrupt one sample's depth, keep the checksums consistent
    with tarfile.open(shard) as t:
        members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for m, data in members:
            if m.name.endswith(".depth.npy") and m.name.startswith(members[0][0].name.split(".")[0]):
                data = data[:30]
                m.size = len(data)
            t.addfile(m, io.BytesIO(data))
    shard.write_bytes(buf.getvalue())
    st = json.loads((src / "shard-000001.tar.json").read_text())
    st["sha256"] = sha256_file(shard)
    (src / "shard-000001.tar.json").write_text(json.dumps(st))
    rebuild_manifest(src)
    args = ["generate", "--d2i", tmp_path / "d2i", "--source", src, "--images-per-depth", "1",
            *[a for o in small for a in ("--set", o)]]
    r = run_cli(*args, "--out", tmp_path / "g")
    assert r.code == 0 and "1 bad source sample(s) skipped" in r.err and "cannot decode .npy" in r.err, r
    assert json.loads(r.out)["samples_total"] == 3
    r = run_cli(*args, "--out", tmp_path / "g2", "--strict")
    assert r.code == 1 and "--strict" in r.err, r
