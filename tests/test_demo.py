"""`bridge demo --fast`: the whole pipeline at smoke-test size (what CI runs), then a rerun that skips
every stage. Marked integration: it takes a few minutes on 2 cores."""

import json

import pytest

pytestmark = pytest.mark.integration


def test_demo_fast_end_to_end_and_resume(tmp_path, run_cli, shared_data):
    out = tmp_path / "demo"
    r = run_cli("demo", "--fast", "--out", out, "--no-progress", "--fixtures", shared_data / "rgbd")
    assert r.code == 0, r
    report = (out / "report.html").read_text()
    for heading in ("Source data", "Reward fine-tuning", "Generated data", "similarity masks",
                    "Zero-shot relative depth", "Table 2", "Table 3", "Metric depth", "Predictions",
                    "Training curves", "Stage timings"):
        assert heading in report, heading
    assert "figure missing" not in report
    assert report.count("data:image/png;base64,") >= 10
    assert "none of them is the paper" in report
    metrics = json.loads((out / "metrics.json").read_text())
    rel = metrics["relative"]
    assert set(rel) == {"untrained (random init, reference)", "baseline (source data only)", "+ generated data, pseudo-labels",
                        "+ fine-tune, pseudo-labels only", "+ fine-tune, hybrid (BRIDGE)"}
    for row in rel.values():
        assert {"procedural test", "nyu", "kitti", "tum", "sun", "redwood"} <= set(row)
        m = row["procedural test"]["metrics"]
        assert 0 <= m["delta1"] <= 1 and m["abs_rel"] > 0
    assert set(metrics["metric"]) == {"metric fine-tune (SiLog)", "hybrid student + scale head"}
    assert metrics["label"]["samples"] == 16 * 4
    assert "heldout_before" in metrics["d2i_finetune"] and "heldout_after" in metrics["d2i_finetune"]
    assert "| stage | seconds | status |" in r.out

    again = run_cli("demo", "--fast", "--out", out, "--no-progress", "--fixtures", shared_data / "rgbd")
    assert again.code == 0, again
    assert again.out.count("skipped") >= 12
