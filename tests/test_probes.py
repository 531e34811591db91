"""The study scripts of docs/results.md run and report what they claim to (tiny sizes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_mask_ceiling_reports_fractions_with_and_without_camera_effects(tmp_path):
    full = _run("mask_ceiling.py", "--scenes", 6, "--size", 64, cwd=tmp_path)
    quiet = _run("mask_ceiling.py", "--scenes", 6, "--size", 64, "--without", "noise,jpeg", cwd=tmp_path)
    assert "real-look render vs synthetic-look render" in full and "without noise,jpeg" in quiet
    fractions = [float(x) for x in re.findall(r"final mask fraction mean ([0-9.]+)", full + quiet)]
    assert len(fractions) == 2 and all(0 <= f <= 1 for f in fractions)
    assert re.search(r"accepted \d of 6", full)


def test_depth_curve_scores_every_checkpoint_on_both_looks(tmp_path):
    out = _run("depth_curve.py", "--preset", "zoo-fast", "--steps", 6, "--every", 3, "--val", 4,
               "--out", tmp_path / "dc", cwd=tmp_path)
    log = [json.loads(x) for x in (tmp_path / "dc/synthetic/model/log.jsonl").read_text().splitlines()]
    val = [r for r in log if "val_heldout_real_abs_rel" in r]
    assert [r["step"] for r in val] == [3, 6]
    for r in val:
        assert {"val_heldout_synthetic_abs_rel", "val_demo_val_real_abs_rel"} <= set(r)
        assert round(r["val_abs_rel"], 4) == r["val_heldout_synthetic_abs_rel"]  # best/ follows the training look
    assert "trained 6 steps" in out
    again = _run("depth_curve.py", "--preset", "zoo-fast", "--steps", 6, "--every", 3, "--val", 4,
                 "--out", tmp_path / "dc", cwd=tmp_path)  # a rerun resumes: nothing left to train
    assert "[scenes] done already" in again


def test_bench_masks_workers_share_the_mix_evenly():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_masks import KINDS, worker_share

    kinds = [KINDS[i % len(KINDS)] for i in range(24)]  # make_pairs' kinds
    split = [worker_share(kinds, k, 2, whole=False) for k in range(2)]
    assert sorted(split[0] + split[1]) == sorted(kinds)
    assert "unrelated" not in split[0]  # the parity split: every cheap unregistered pair on one side
    whole = [worker_share(kinds, k, 2, whole=True) for k in range(2)]
    for share in whole:
        assert sorted(share) == sorted(kinds)
    starts = [worker_share(list(range(24)), k, 2, whole=True)[0] for k in range(2)]
    assert starts == [0, 12]  # each starts at its own place in the mix


def test_metric_probe_reports_bounds_probe_and_offline_head(tmp_path):
    from bridgedepth.data.scenes.dataset import write_scenes
    from bridgedepth.mde import build_model, save_model
    from bridgedepth.mde.model import relative_to_metric

    kw = dict(kind="mixed", size=(48, 48), progress=False)
    write_scenes(tmp_path / "train", 9, seed=0, look="synthetic", **kw)
    write_scenes(tmp_path / "val", 6, seed=1, look="synthetic", **kw)
    save_model(build_model("micro", seed=0), tmp_path / "rel")
    save_model(relative_to_metric(build_model("micro", seed=0), max_depth=80), tmp_path / "metric")
    out = _run("metric_probe.py", "--model", tmp_path / "rel", "--train", tmp_path / "train", "--eval-dir",
               tmp_path / "val", "--metric", tmp_path / "metric", "--input-size", 42, "--steps", 4, cwd=tmp_path)
    assert re.search(r"metric checkpoint .*metric: AbsRel [0-9.]+; per kind: ", out), out
    refs = re.findall(r"^affine reference, .*: AbsRel ([0-9.]+)", out, re.M)
    assert len(refs) == 3 and all(float(v) >= 0 for v in refs), out
    assert re.search(r"linear probe .* train accuracy [0-9.]+, held-out [0-9.]+", out)
    assert len(re.findall(r"step \d+: held-out AbsRel", out)) == 2  # step 0 and the last
    assert "(the factor with the lowest training AbsRel)" in out
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "metric_probe.py"), "--eval", "test"],
                       cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, capture_output=True, text=True)
    assert r.returncode == 2 and "not for choosing" in r.stderr


def test_scorer_variant_trains_the_requested_target(tmp_path):
    from bridgedepth.d2i.scorer import load_scorer

    out = _run("scorer_variant.py", "--target", "quality", "--scenes", 8, "--generated", 4, "--steps", 2,
               "--size", 64, "--threads", 1, "--out", tmp_path / "sv", cwd=tmp_path)
    assert "scorer" in out and '"d2i_samples"' in out
    dest = tmp_path / "sv" / "aesthetic_quality"
    assert json.loads((dest / "scorer.json").read_text())["target"] == "quality"
    assert load_scorer(dest).size == 64
