"""`bridge demo --fast`: the whole pipeline at smoke-test size (what CI runs), then a rerun that skips
every stage. Marked integration: it takes a few minutes on 2 cores.

It starts from the shipped toy foundations when they are installed; otherwise (a checkout whose zoo
has not been built yet) it builds the smoke-test foundations first (``--from-scratch``)."""

import json
import os

import pytest

from bridgedepth.pipeline import METRIC_ROWS, REAL_LOOK_TEST, RELATIVE_ROWS

pytestmark = pytest.mark.integration

ROW_IDS = {"untrained", "source_only", "generated_pseudo", "finetune_pseudo", "finetune_hybrid", "no_rl_d2i",
           "dav2_style", "oracle"}


def test_demo_fast_end_to_end_and_resume(tmp_path, run_cli, shared_data, monkeypatch):
    from bridgedepth.pipeline import rerun_free
    from bridgedepth.zoo import MODELS, available

    from config_reads import stage_reads

    out = tmp_path / "demo"
    extra = [] if all(available(n) for n in MODELS) else ["--from-scratch"]
    # stage_workers 2: the generations and trained rows run in spawned worker processes (their
    # arguments must pickle; the reruns below must skip them like any stage). The first run keeps
    # every stage in this process, where the configuration values each stage reads are recorded.
    args = ["demo", "--fast", "--out", out, "--no-progress", "--fixtures", shared_data / "rgbd",
            "--set", "demo.stage_workers=2", *extra]
    with stage_reads(monkeypatch) as (reads, declared):
        r = run_cli(*args[:-2 - len(extra)], "--set", "demo.stage_workers=1", *extra)
    assert r.code == 0, r
    # every stage declares each value it reads as one of its settings (or the value is free): a rerun
    # with another value remakes it and what reads its outputs, instead of keeping old work
    assert len(reads) >= 17 and all(declared[n] is not None for n in declared), declared
    undeclared = {n: sorted(k for k in keys if not rerun_free(k) and k not in declared[n]) for n, keys in reads.items()}
    assert not any(undeclared.values()), undeclared
    report = (out / "report.html").read_text()
    for heading in ("claims at a glance", "domain gap", "Reward fine-tuning", "Generated data", "similarity masks",
                    "Zero-shot relative depth", "Table 2", "Table 3", "RL ablation", "upper bound", "Metric depth",
                    "Predictions", "Training curves", "Stage timings"):
        assert heading in report, heading
    assert "figure missing" not in report
    assert report.count("data:image/png;base64,") >= 10
    assert "none of them is the paper" in report
    assert "The BRIDGE student (hybrid fine-tune) beats the source-only baseline" in report
    assert "colour jitter of ±0.2 (train.color_jitter)" in report  # the tiny preset's rows all jitter
    metrics = json.loads((out / "metrics.json").read_text())
    # the contract for scripts: stable row ids, dataset keys, three numbers each
    assert ROW_IDS <= set(metrics["rows"]) <= set(RELATIVE_ROWS)
    for rid, per in metrics["rows"].items():
        assert {REAL_LOOK_TEST, "nyu", "kitti", "tum", "sun", "redwood"} <= set(per), rid
        m = per[REAL_LOOK_TEST]
        assert set(m) >= {"absrel", "delta1", "n"} and m["n"] == 12
        assert 0 <= m["delta1"] <= 1 and m["absrel"] > 0
    assert set(metrics["metric_rows"]) == set(METRIC_ROWS)
    for k in ("depth_reward_before", "depth_reward_after", "aesthetic_before", "aesthetic_after",
              "teacher_absrel_generated", "teacher_absrel_real_look"):
        assert isinstance(metrics["d2i"][k], float), k
    assert 0 <= metrics["label"]["accepted_fraction"] <= 1 and 0 <= metrics["label"]["gt_pixel_fraction"] <= 1
    assert metrics["label"]["samples"] == 8 * 4
    # the human-readable tables stay, keyed by the row labels
    assert RELATIVE_ROWS["source_only"][0] in metrics["relative"]
    assert [c["verdict"] for c in metrics["claims"]]
    assert "| stage | seconds | cores busy | status |" in r.out
    stages = json.loads((out / "stages.json").read_text())
    # where the cores idle: every stage run in this process has its busy cores
    assert 0 < stages["1 scenes"]["cores_busy"] <= os.cpu_count() + 0.5
    assert set(metrics["stage_cores_busy"]) == set(metrics["stages"])

    figs = {n: (out / "figures" / n).stat().st_mtime_ns
            for n in ("d2i_before_after.png", "predictions_real_look_test.png", "predictions_fixtures.png")}
    again = run_cli(*args)
    assert again.code == 0, again
    assert again.out.count("skipped") >= 18
    # the model figures were drawn from these very checkpoints: the rerun's report keeps them
    assert {n: (out / "figures" / n).stat().st_mtime_ns for n in figs} == figs

    # the same folder with --seeds 2: the seed-0 rows are reused, seed 1 trains, the evaluation reruns
    two = run_cli(*args, "--seeds", 2)
    assert two.code == 0, two
    agg = json.loads((out / "metrics.json").read_text())["rows"]["source_only"][REAL_LOOK_TEST]
    assert agg["seeds"] == 2 and "absrel_std" in agg
    stages = json.loads((out / "stages.json").read_text())
    assert "5 row source_only (seed 1)" in stages
    # seed 1's rows ran in the worker processes, and the group has its busy cores
    assert stages["5 row oracle (seed 1)"].get("overlapped") and "5-6 trained rows (2 processes)" in stages
    assert stages["5-6 trained rows (2 processes)"]["cpu_seconds"] > 0

    # a deleted row is retrained, and so is what starts from it or reads it (the fine-tunes, the metric
    # rows, the evaluation); the other rows and earlier stages stay skipped
    import shutil

    shutil.rmtree(out / "rows" / "seed0" / "generated_pseudo")
    redo = run_cli(*args, "--seeds", 2)
    assert redo.code == 0, redo
    assert "[5 row generated_pseudo (seed 0)] done before, but" in redo.out and "is missing: running it again" in redo.out
    for name in ("5 row finetune_pseudo (seed 0)", "5 row finetune_hybrid (seed 0)", "6a metric fine-tune",
                 "6b scale head", "7a evaluate (2 seeds)"):
        assert f"[{name}] done before, but its input" in redo.out, name
        assert f"[{name}] removing" in redo.out or name.startswith("7a"), name
    for name in ("1 scenes", "4a label", "5 row source_only (seed 0)", "5 row generated_pseudo (seed 1)",
                 "5 row finetune_hybrid (seed 1)", "7b D2I geometric consistency on the test depth maps"):
        assert f"[{name}] done already" in redo.out, name
    assert (out / "rows" / "seed0" / "generated_pseudo" / "last").is_dir()

    # benchmarks/mask_threshold.py on the finished folder: Table 3 at a threshold that admits images
    study = _study("mask_threshold.py", "--demo", out, "--thresholds", "0.85", "0.0", "--seeds", "0", "--val", "4",
                   "--out", tmp_path / "mt", cwd=tmp_path)
    res = json.loads((tmp_path / "mt" / "results.json").read_text())
    assert res["labels"]["0.85"]["samples"] == 8 * 4 and res["labels"]["0"]["accepted"] > res["labels"]["0.85"]["accepted"]
    assert res["labels"]["0"]["gt_pixel_fraction"] > 0 and "hybrid 0" in res["rows"] and "pseudo" in res["rows"]
    assert "| 0 |" in study and "vs finetune_pseudo" in study

    # another mask setting in the same folder: the labels are made again, and the hybrid fine-tunes, the
    # metric stages and the evaluation that read the masks; the scenes, the D2I fine-tune, the generated
    # images, the rows that do not read the labels and those that read only their pseudo-labels (the
    # same images and labels as before) are kept
    pseudo_before = json.loads((out / "stages.json").read_text())["4a label"]["summary"]["pseudo_labels"]
    relabel = run_cli(*args, "--seeds", 2, "--set", "label.ssim_threshold=0.0")
    assert relabel.code == 0, relabel
    assert json.loads((out / "stages.json").read_text())["4a label"]["summary"]["pseudo_labels"] == pseudo_before
    for name in ("4a label", "4b label (untuned D2I)"):
        assert f"[{name}] done before with other settings (label.ssim_threshold: 0.85 -> 0.0)" in relabel.out, name
    for name in ("5 row finetune_hybrid (seed 0)", "5 row finetune_hybrid (seed 1)", "6a metric fine-tune",
                 "6b scale head", "7a evaluate (2 seeds)"):
        assert f"[{name}] done before, but its input" in relabel.out, name
    for name in ("1 scenes", "2 D2I reward fine-tune (depth 0.9 + aesthetic 0.1)", "3a generate (reward-tuned D2I)",
                 "4c teacher pseudo-labels for real-look images (DA-V2 style)", "5 row source_only (seed 0)",
                 "5 row oracle (seed 1)", "5 row dav2_style (seed 0)", "5 row generated_pseudo (seed 0)",
                 "5 row finetune_pseudo (seed 1)", "5 row no_rl_d2i (seed 1)",
                 "7b D2I geometric consistency on the test depth maps"):
        assert f"[{name}] done already" in relabel.out, name
    lab = json.loads((out / "metrics.json").read_text())["label"]
    assert lab["accepted_fraction"] > 0 and lab["gt_pixel_fraction"] > 0  # SSIM > 0 admits the images


def _study(script, *args, cwd):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    r = subprocess.run([sys.executable, str(root / "benchmarks" / script), *map(str, args)], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


def test_demo_seeds_report_mean_and_spread(tmp_path):
    """--seeds N: the aggregate of N per-seed evaluations carries mean, std, min and max."""
    from bridgedepth.pipeline import _aggregate

    per = [{"metrics": {"abs_rel": a, "delta1": 0.5}, "n_images": 3} for a in (0.1, 0.2, 0.3)]
    agg = _aggregate(per)
    assert agg["absrel"] == pytest.approx(0.2) and agg["absrel_min"] == 0.1 and agg["absrel_max"] == 0.3
    assert agg["absrel_std"] == pytest.approx(0.0816, abs=1e-4) and agg["n"] == 3 and agg["seeds"] == 3
    one = _aggregate(per[:1])
    assert "absrel_std" not in one
