"""Reduced-precision inference: bf16 autocast and int8 dynamic quantisation against fp32."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import bridgedepth
from bridgedepth.errors import InputError
from bridgedepth.mde.predictor import Predictor, bf16_native, cast_bf16_weights, quantize_int8

ZOO_DEPTH = Path(bridgedepth.__file__).parent / "zoo/models/depth"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture(scope="module")
def items(shared_data):
    from bench_precision import fixtures

    return fixtures(shared_data)


def test_precision_modules_replace_what_they_say():
    model = bridgedepth.load(ZOO_DEPTH).model  # fp32 fast copy
    q = quantize_int8(model)
    kinds = {type(m).__name__ for m in q.modules()}
    assert "Linear" in {type(m).__name__ for m in model.modules()}
    assert not any(type(m) is torch.nn.Linear for m in q.modules())
    assert any("Linear" in k and k != "Linear" for k in kinds)  # torch's dynamic quantised linear
    assert all(type(m) is not torch.nn.Linear or m.weight.dtype == torch.float32 for m in model.modules())
    b = cast_bf16_weights(model)
    assert all(m.weight.dtype == torch.bfloat16 for m in b.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    assert all(m.weight.dtype == torch.float32 for m in b.modules() if isinstance(m, torch.nn.LayerNorm))
    assert isinstance(bf16_native("cpu"), bool)


def test_agreement_with_fp32_on_real_fixtures(items):
    """AbsRel (disparity-aligned, 9 real fixtures) moves by at most 0.002 from fp32's."""
    from bench_precision import agreement

    res = agreement(ZOO_DEPTH, items)
    for p in ("bf16", "int8"):
        assert res[p]["absrel_change"] <= 0.002, (p, res[p])
        assert res[p]["worst_image_change"] <= 0.01, (p, res[p])
    # and they are not simply the fp32 model again
    one = items[0][1]
    outs = {p: bridgedepth.load(ZOO_DEPTH, precision=p).predict(one).values for p in ("fp32", "bf16", "int8")}
    rng = float(outs["fp32"].max() - outs["fp32"].min())
    for p in ("bf16", "int8"):
        d = float(np.abs(outs[p] - outs["fp32"]).max()) / rng
        assert 0.0 < d < 0.05, (p, d)


def test_bf16_without_native_support_warns(monkeypatch):
    import warnings

    import bridgedepth.mde.predictor as P

    model = bridgedepth.load(ZOO_DEPTH).model
    monkeypatch.setattr(P, "bf16_native", lambda device="cpu": False)
    with pytest.warns(RuntimeWarning, match="emulated"):
        P.Predictor(model, precision="bf16")
    monkeypatch.setattr(P, "bf16_native", lambda device="cpu": True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        P.Predictor(model, precision="bf16")


def test_bad_precision_is_refused(tmp_path):
    with pytest.raises(InputError, match="precision must be one of"):
        bridgedepth.load(ZOO_DEPTH, precision="fp8")


def test_cli_predict_precision(tmp_path, shared_data):
    from bridgedepth.cli import main

    img = shared_data / "rgbd/nyu_sync/rgb/rgb_00000.jpg"
    for p in ("fp32", "int8"):
        out = tmp_path / p
        assert main(["predict", str(img), "--model", str(ZOO_DEPTH), "--out", str(out), "--precision", p,
                     "--outputs", "npy"]) == 0
    a, b = np.load(next((tmp_path / "fp32").glob("*.npy"))), np.load(next((tmp_path / "int8").glob("*.npy")))
    assert a.shape == b.shape and not np.array_equal(a, b)
    with pytest.raises(SystemExit):
        main(["predict", str(img), "--model", str(ZOO_DEPTH), "--precision", "fp16"])


def test_bench_row_format(tmp_path, monkeypatch):
    monkeypatch.setenv("BRIDGE_BENCH_DIR", str(tmp_path))
    import importlib

    import bench_common

    importlib.reload(bench_common)
    p = bench_common.write_row("x", ours=2.0, reference=4.0, unit="s", goal=1.5, higher_is_better=False)
    row = json.loads(p.read_text())
    assert row["ratio"] == 2.0 and row["met"] is True and row["benchmark"] == "x"
    assert {"benchmark", "ours", "reference", "ratio", "goal", "met"} <= set(row)
    bench_common.write_row("y", ours=1.0, reference=1.0, unit="img/s", goal=2.5)
    t = bench_common.table(tmp_path)
    assert "x" in t and "NO" in t and "yes" in t


def test_bench_spread_over_runs(tmp_path, monkeypatch):
    """`make bench BENCH_RUNS=3`: one line per benchmark with the ratio's median, range and runs met."""
    import importlib

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_common

    folders = []
    for k, ours in enumerate((1.0, 3.0, 2.0)):
        monkeypatch.setenv("BRIDGE_BENCH_DIR", str(tmp_path / f"run{k}"))
        importlib.reload(bench_common)
        bench_common.write_row("x", ours=ours, reference=1.0, unit="img/s", goal=1.5)
        folders.append(tmp_path / f"run{k}")
    line = [ln for ln in bench_common.spread(folders).splitlines() if ln.startswith("x ")][0].split()
    assert line[1] == "3" and line[2] == "2"  # runs, median of ours
    assert line[-5:] == ["2.00x", "1.00x", "3.00x", "1.50x", "2/3"]
