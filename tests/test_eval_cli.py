"""`bridge eval` end to end: folder benchmark on real NYU frames, JSON keys, per-image CSV, suite,
compare, and the errors users see."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bridgedepth.evaluation import METRICS

from test_eval_metrics import reference_numpy

NAMES = ["00000", "00050", "00100"]


def _gt(shared_data, name):
    raw = cv2.imread(str(shared_data / f"rgbd/nyu_sync/depth/sync_depth_{name}.png"), cv2.IMREAD_UNCHANGED)
    return raw.astype(np.float32) / 1000


def _write_predictions(shared_data, out: Path, kind="affine", size=None) -> dict[str, np.ndarray]:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    preds = {}
    for i, n in enumerate(NAMES):
        d = _gt(shared_data, n)
        disp = np.where(d > 0, 1 / np.maximum(d, 1e-3), 0.0)
        if kind == "affine":
            p = 0.4 * (i + 1) * disp + 0.25 * i
        else:  # a realistic, imperfect relative prediction, smooth where the GT has holes
            filled = cv2.inpaint((disp * 1000).astype(np.float32).clip(0, 65535).astype(np.uint16), (d == 0).astype(np.uint8), 3, cv2.INPAINT_NS).astype(np.float32) / 1000
            p = 2.0 * filled * rng.lognormal(0, 0.15, d.shape) + 0.1
        p = p.astype(np.float32)
        if size is not None:
            p = cv2.resize(p, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        np.save(out / f"rgb_{n}.npy", p)
        preds[n] = p
    return preds


def _folder_args(shared_data, pred_dir, *extra):
    return ("eval", "--dataset", "folder", "--root", shared_data / "rgbd/nyu_sync", "--encoding", "png-mm",
            "--predictions", pred_dir, "--prediction-type", "disparity", "--quiet", *extra)


def test_folder_end_to_end_perfect_affine_disparity(run_cli, shared_data, tmp_path):
    _write_predictions(shared_data, tmp_path / "P")
    out = tmp_path / "res.json"
    r = run_cli(*_folder_args(shared_data, tmp_path / "P", "--json", out, "--per-image", tmp_path / "per.csv"))
    assert r.code == 0, r
    assert "AbsRel" in r.out and "δ1" in r.out
    doc = json.loads(out.read_text())
    assert {"dataset", "n_images", "n_skipped", "alignment", "metrics"} <= set(doc)
    assert set(doc["metrics"]) == set(METRICS)
    assert doc["dataset"] == "folder" and doc["n_images"] == 3 and doc["n_skipped"] == 0
    assert doc["alignment"] == "disparity"
    assert doc["metrics"]["abs_rel"] < 1e-6 and doc["metrics"]["delta1"] == 1.0
    rows = list(csv.DictReader((tmp_path / "per.csv").open()))
    assert [r["key"] for r in rows] == [f"rgb_{n}" for n in NAMES]
    assert (tmp_path / "res.config.yaml").is_file()


@pytest.mark.parametrize("alignment", ["disparity", "depth", "median"])
def test_folder_end_to_end_agrees_with_independent_numpy(run_cli, shared_data, tmp_path, alignment):
    preds = _write_predictions(shared_data, tmp_path / "P", kind="noisy")
    out = tmp_path / "res.json"
    r = run_cli(*_folder_args(shared_data, tmp_path / "P", "--alignment", alignment, "--json", out))
    assert r.code == 0, r
    doc = json.loads(out.read_text())
    gt = np.stack([_gt(shared_data, n) for n in NAMES])
    valid = gt > 1e-3
    pred = np.stack([preds[n] for n in NAMES])
    ref = reference_numpy(pred, gt, valid, alignment, "disparity", 1e-3, np.inf)
    for k in METRICS:
        assert doc["metrics"][k] == pytest.approx(float(ref[k].mean()), rel=1e-6, abs=1e-9), k
    assert 0.0 < doc["metrics"]["abs_rel"] < 0.5


def test_low_resolution_predictions_are_resized(run_cli, shared_data, tmp_path):
    _write_predictions(shared_data, tmp_path / "P", kind="noisy", size=(240, 320))
    out = tmp_path / "res.json"
    r = run_cli(*_folder_args(shared_data, tmp_path / "P", "--json", out, "--limit", "2"))
    assert r.code == 0, r
    doc = json.loads(out.read_text())
    assert doc["n_images"] == 2 and doc["metrics"]["delta1"] > 0.5


def test_skipped_images_are_counted(run_cli, shared_data, tmp_path):
    _write_predictions(shared_data, tmp_path / "P")
    out = tmp_path / "res.json"
    r = run_cli(*_folder_args(shared_data, tmp_path / "P", "--json", out, "--set", "eval.min_valid_pixels=300000"))
    assert r.code == 0, r
    doc = json.loads(out.read_text())
    assert doc["n_images"] == 0 and doc["n_skipped"] == 3 and doc["metrics"]["abs_rel"] is None


def test_errors_name_the_file(run_cli, shared_data, tmp_path):
    _write_predictions(shared_data, tmp_path / "P")
    (tmp_path / "P" / "rgb_00050.npy").unlink()
    # a bad input is recorded with its path and reason, the others are evaluated (issue 15) ...
    r = run_cli(*_folder_args(shared_data, tmp_path / "P", "--json", tmp_path / "r.json"))
    assert r.code == 0 and "rgb_00050.npy" in r.err and "1 bad input(s)" in r.err, r
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["n_images"] == 2 and doc["n_bad_inputs"] == 1 and "rgb_00050.npy" in doc["bad_inputs"][0]["reason"]
    # ... and --strict stops at it
    r = run_cli(*_folder_args(shared_data, tmp_path / "P", "--strict"))
    assert r.code == 2 and "rgb_00050.npy" in r.err
    np.save(tmp_path / "P" / "rgb_00050.npy", np.full((4, 4), np.nan, np.float32))
    r = run_cli(*_folder_args(shared_data, tmp_path / "P", "--strict"))
    assert r.code == 2 and "NaN" in r.err
    r = run_cli("eval", "--dataset", "folder", "--root", shared_data / "rgbd/nyu_sync", "--encoding", "png-mm",
                "--predictions", tmp_path / "P")
    assert r.code == 2 and "--prediction-type" in r.err
    r = run_cli("eval", "--dataset", "nyuv2", "--root", tmp_path, "--predictions", tmp_path / "P", "--prediction-type", "depth")
    assert r.code == 2 and "nyuv2" in r.err


def test_model_path_with_a_real_checkpoint(run_cli, shared_data, tmp_path):
    """`--model` with a real (tiny, random) bridgedepth checkpoint, end to end, and a missing one."""
    import json

    from bridgedepth.mde import build_model, save_model

    save_model(build_model("micro", seed=0), tmp_path / "ckpt")
    r = run_cli("eval", "--dataset", "folder", "--root", shared_data / "rgbd/nyu_sync", "--encoding", "png-mm",
                "--model", tmp_path / "ckpt", "--json", tmp_path / "r.json", "--quiet")
    assert r.code == 0, r
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["n_images"] == 3 and res["alignment"] == "disparity"
    assert 0 < res["metrics"]["delta1"] <= 1 and res["metrics"]["abs_rel"] > 0
    bad = run_cli("eval", "--dataset", "folder", "--root", shared_data / "rgbd/nyu_sync", "--encoding", "png-mm",
                  "--model", tmp_path / "missing")
    assert bad.code == 2 and "missing" in bad.err


def test_suite_and_compare(run_cli, shared_data, tmp_path):
    from test_eval_benchmarks import make_da2k

    # predictions per dataset: DIR/<dataset>/...
    preds = _write_predictions(shared_data, tmp_path / "A" / "folder")
    noisy = _write_predictions(shared_data, tmp_path / "B" / "folder", kind="noisy")
    da2k = tmp_path / "DA-2K"
    make_da2k(da2k, shared_data)
    for run_dir, source in (("A", preds), ("B", noisy)):
        for i, (scene, n) in enumerate([("indoor", "00000"), ("indoor", "00050"), ("outdoor", "00100")]):
            p = tmp_path / run_dir / "da2k" / "images" / scene / f"rgb_{n}.npy"
            p.parent.mkdir(parents=True, exist_ok=True)
            np.save(p, source[n] if run_dir == "A" else -source[n])
    roots = tmp_path / "roots.yaml"
    roots.write_text(f"folder: {{root: {shared_data / 'rgbd/nyu_sync'}, encoding: png-mm}}\nda2k: {da2k}\nkitti: null\n")
    for run_dir in ("A", "B"):
        r = run_cli("eval", "--predictions", tmp_path / run_dir, "--prediction-type", "disparity", "--suite", "zero-shot",
                    "--roots", roots, "--json", tmp_path / f"{run_dir}.json", "--quiet")
        assert r.code == 0, r
        assert "DA-2K" in r.out and "folder" in r.out
    a = json.loads((tmp_path / "A.json").read_text())
    assert set(a["results"]) == {"folder", "da2k"} and a["results"]["da2k"]["accuracy"] == 1.0
    assert (tmp_path / "A.md").is_file()
    r = run_cli("eval", "compare", tmp_path / "A.json", tmp_path / "B.json", "--json", tmp_path / "cmp.json")
    assert r.code == 0, r
    lines = [l for l in r.out.splitlines() if l.startswith("| A") or l.startswith("| B")]
    assert lines[0].count("**") == 2 * 3 and "**" not in lines[1]  # A best in δ1, AbsRel, accuracy
    cmp = json.loads((tmp_path / "cmp.json").read_text())
    assert cmp["best"] == [["A"], ["A"], ["A"]]
    assert [c["dataset"] for c in cmp["columns"]] == ["da2k", "folder", "folder"]


def test_model_path_with_a_stand_in_depth_model(run_cli, shared_data, tmp_path, monkeypatch):
    """The --model plumbing against the bridgedepth.mde contract (load_model, Predictor(...).predict ->
    DepthResult(values, kind)), with a stand-in predictor whose output is known: the inverse ground
    truth looked up by the image it is given."""
    from dataclasses import dataclass

    from bridgedepth import mde
    from bridgedepth.commands import eval as eval_cmd

    by_mean = {}
    for n in NAMES:
        rgb = cv2.cvtColor(cv2.imread(str(shared_data / f"rgbd/nyu_sync/rgb/rgb_{n}.jpg")), cv2.COLOR_BGR2RGB)
        d = _gt(shared_data, n)
        by_mean[round(float(rgb.mean()), 6)] = np.where(d > 0, 1 / np.maximum(d, 1e-3), 0).astype(np.float32)

    @dataclass
    class Result:
        values: np.ndarray
        kind: str

    calls = []

    class StandIn:
        def __init__(self, model, input_size=518, device=None):
            self.model, self.input_size = model, input_size

        def predict(self, rgb):
            calls.append(rgb.shape)
            return Result(5.0 * by_mean[round(float(rgb.mean()), 6)] + 1.0, "disparity")

    class Cfg:
        depth_estimation_type = "relative"

    class Model:
        config = Cfg()

    monkeypatch.setattr(mde, "load_model", lambda d: Model(), raising=False)
    monkeypatch.setattr(mde, "Predictor", StandIn, raising=False)
    monkeypatch.setattr(eval_cmd, "_PREDICTOR_CACHE", {})
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    cache = tmp_path / "cache"
    args = ("eval", "--dataset", "folder", "--root", shared_data / "rgbd/nyu_sync", "--encoding", "png-mm",
            "--model", ckpt, "--save-predictions", cache, "--json", tmp_path / "m.json", "--quiet")
    r = run_cli(*args)
    assert r.code == 0, r
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["prediction_type"] == "disparity" and doc["alignment"] == "disparity"
    assert doc["metrics"]["abs_rel"] < 1e-6 and doc["metrics"]["delta1"] == 1.0
    assert calls == [(480, 640, 3)] * 3
    assert sorted(p.name for p in cache.iterdir()) == [f"rgb_{n}.npy" for n in NAMES] + ["settings.json"]
    r = run_cli(*args)  # the rerun reuses the cached predictions
    assert r.code == 0 and len(calls) == 3


def test_model_precision_and_prediction_cache_settings(run_cli, shared_data, tmp_path):
    """`--precision` reaches the predictor (int8: other maps, nearly the same metrics); a
    --save-predictions folder refuses a rerun at another precision (its cached maps would be reused)."""
    import json

    from bridgedepth.mde import build_model, save_model

    save_model(build_model("micro", seed=0), tmp_path / "ckpt")
    base = ("eval", "--dataset", "folder", "--root", shared_data / "rgbd/nyu_sync", "--encoding", "png-mm",
            "--model", tmp_path / "ckpt", "--quiet")
    res = {}
    for p in ("fp32", "int8"):
        r = run_cli(*base, "--precision", p, "--json", tmp_path / f"{p}.json", "--save-predictions", tmp_path / p)
        assert r.code == 0, r
        res[p] = json.loads((tmp_path / f"{p}.json").read_text())["metrics"]["abs_rel"]
        assert json.loads((tmp_path / p / "settings.json").read_text())["precision"] == p
    a, b = (np.load(tmp_path / p / f"rgb_{NAMES[0]}.npy") for p in ("fp32", "int8"))
    assert not np.array_equal(a, b) and abs(res["fp32"] - res["int8"]) < 0.01
    bad = run_cli(*base, "--precision", "int8", "--save-predictions", tmp_path / "fp32")
    assert bad.code == 2 and "other settings" in bad.err and "precision 'fp32' there, 'int8' now" in bad.err


def test_library_prediction_cache_knows_its_model(tmp_path):
    """`ModelPredictions(predictor, cache_dir)` used from Python records the predictor's settings (a
    digest of its weights among them) and refuses another model's predictor on the same folder, as
    the CLI does; the same checkpoint loaded again is accepted, and an older folder that recorded
    fewer keys is completed rather than refused."""
    import json

    from bridgedepth.errors import InputError
    from bridgedepth.evaluation import ModelPredictions, check_prediction_cache, predictor_settings
    from bridgedepth.mde import Predictor, build_model, load_model, save_model

    save_model(build_model("micro", seed=0), tmp_path / "a")
    save_model(build_model("micro", seed=1), tmp_path / "b")
    pa, pb = (Predictor(load_model(tmp_path / n)) for n in "ab")
    cache = tmp_path / "cache"
    ModelPredictions(pa, cache)
    rec = json.loads((cache / "settings.json").read_text())
    assert rec == predictor_settings(pa) and len(rec["weights_sha256"]) == 64 and rec["field"] == "disparity"
    ModelPredictions(Predictor(load_model(tmp_path / "a")), cache)  # the same weights, loaded again
    with pytest.raises(InputError, match="other settings.*weights_sha256"):
        ModelPredictions(pb, cache)
    with pytest.raises(InputError, match="precision 'fp32' there, 'int8' now"):
        ModelPredictions(Predictor(load_model(tmp_path / "a"), precision="int8"), cache)
    with pytest.raises(InputError, match="field 'disparity' there, 'depth' now"):
        ModelPredictions(pa, cache, field_name="depth")
    old = tmp_path / "old"
    old.mkdir()
    (old / "settings.json").write_text(json.dumps({"model": "/x/ckpt", "precision": "fp32"}))
    check_prediction_cache(old, {"model": "/x/ckpt", "precision": "fp32", "input_size": 126})
    assert json.loads((old / "settings.json").read_text())["input_size"] == 126
    with pytest.raises(InputError, match="input_size 126 there, 518 now"):
        check_prediction_cache(old, {"model": "/x/ckpt", "input_size": 518})
    (old / "settings.json").write_text("[1, 2]")
    with pytest.raises(InputError, match="not a settings object"):
        check_prediction_cache(old, {"model": "/x/ckpt"})


def test_save_predictions_refuses_a_retrained_checkpoint(run_cli, shared_data, tmp_path):
    """A checkpoint retrained into the same folder is another model: its --save-predictions folder
    (made by the old weights) is refused by their digest, not reused because the path matches."""
    from bridgedepth.commands import eval as eval_cmd
    from bridgedepth.mde import build_model, save_model

    base = ("eval", "--dataset", "folder", "--root", shared_data / "rgbd/nyu_sync", "--encoding", "png-mm",
            "--model", tmp_path / "ckpt", "--quiet", "--save-predictions", tmp_path / "cache")
    save_model(build_model("micro", seed=0), tmp_path / "ckpt")
    assert run_cli(*base).code == 0
    eval_cmd._PREDICTOR_CACHE.clear()
    save_model(build_model("micro", seed=1), tmp_path / "ckpt")
    bad = run_cli(*base)
    assert bad.code == 2 and "weights_sha256" in bad.err, bad
