"""`bridge eval --model` and `bridge label` run the fast inference copy of the model (mde/fast.py);
its outputs agree with the plain model's to 1e-4 (relative to the largest value)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bridgedepth.config import load_config


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A micro model with random (not default-initialised) weights, so every fused path matters."""
    from bridgedepth.mde import build_model, save_model

    model = build_model("micro", seed=0).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lambda1"):
                p.copy_(torch.empty_like(p).uniform_(0.5, 1.5, generator=g))
            elif p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    d = tmp_path_factory.mktemp("fast") / "ckpt"
    save_model(model, d)
    return d


def _rgb(seed=0, hw=(45, 61)):
    return np.random.default_rng(seed).integers(0, 255, (*hw, 3), dtype=np.uint8)


def _close(got, ref):
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    assert np.abs(ref).max() > 0
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_eval_model_predictor_is_the_fast_path(ckpt):
    from bridgedepth.commands import eval as eval_cmd
    from bridgedepth.mde import Predictor, load_model
    from bridgedepth.mde.fast import FusedQKVAttention

    cfg = load_config("tiny", ["device=cpu"])
    eval_cmd._PREDICTOR_CACHE.clear()
    try:
        predictor, ptype = eval_cmd._load_predictor(str(ckpt), cfg)
    finally:
        eval_cmd._PREDICTOR_CACHE.clear()
    assert ptype == "disparity"
    assert any(isinstance(m, FusedQKVAttention) for m in predictor.model.modules())
    plain = Predictor(load_model(ckpt), input_size=predictor.input_size, device="cpu")
    assert not any(isinstance(m, FusedQKVAttention) for m in plain.model.modules())
    for seed in (0, 1):
        rgb = _rgb(seed)
        _close(predictor.predict(rgb).values, plain.predict(rgb).values)


def test_label_pseudo_labels_use_the_fast_path(ckpt, monkeypatch):
    from bridgedepth.labels.label import Labeller
    from bridgedepth.mde import fast, load_model
    from bridgedepth.mde.predictor import predict_tensor

    made = []
    real = fast.optimize_for_inference
    monkeypatch.setattr(fast, "optimize_for_inference", lambda m, **kw: made.append(1) or real(m, **kw))
    cfg = load_config("tiny", ["device=cpu"])
    lab = Labeller(ckpt, cfg.label, device="cpu", input_size=70)
    plain = load_model(ckpt).eval()
    for seed in (0, 1):
        rgb = _rgb(seed, (50, 40))
        got = lab.pseudo_label(rgb)
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255)
        with torch.no_grad():
            ref = predict_tensor(plain, x, 70)[0].numpy()
        assert got.shape == rgb.shape[:2]
        _close(got, ref)
    assert made == [1]  # one fast copy, made on first use


def test_eval_model_predictor_takes_precision_and_compile(ckpt):
    # `bridge eval --precision/--compile` reach the predictor (compilation itself is lazy, at the first
    # call: tests/test_mde_predict.py runs it); each setting is its own cached predictor
    from bridgedepth.commands import eval as eval_cmd

    cfg = load_config("tiny", ["device=cpu"])
    eval_cmd._PREDICTOR_CACHE.clear()
    try:
        plain, _ = eval_cmd._load_predictor(str(ckpt), cfg)
        int8, _ = eval_cmd._load_predictor(str(ckpt), cfg, precision="int8")
        comp, _ = eval_cmd._load_predictor(str(ckpt), cfg, compile=True)
    finally:
        eval_cmd._PREDICTOR_CACHE.clear()
    assert plain.precision == "fp32" and int8.precision == "int8" and comp.precision == "fp32"
    assert plain._forward is plain.model and comp._forward is not comp.model


def test_eval_predictor_cache_knows_a_retrained_checkpoint_and_the_input_size(tmp_path):
    # one Python process (a notebook, a sweep): a checkpoint saved again into the same folder, or another
    # eval.input_size, must not reuse the predictor loaded before
    import os

    from bridgedepth.commands import eval as eval_cmd
    from bridgedepth.mde import build_model, save_model

    ckpt = tmp_path / "ckpt"
    save_model(build_model("micro", seed=0), ckpt)
    cfg = load_config("tiny", ["device=cpu"])
    eval_cmd._PREDICTOR_CACHE.clear()
    try:
        first, _ = eval_cmd._load_predictor(str(ckpt), cfg)
        assert eval_cmd._load_predictor(str(ckpt), cfg)[0] is first  # unchanged: reused
        other_size, _ = eval_cmd._load_predictor(str(ckpt), load_config("tiny", ["device=cpu", "eval.input_size=70"]))
        assert other_size is not first and other_size.input_size == 70
        save_model(build_model("micro", seed=1), ckpt)
        for f in ckpt.rglob("*"):  # a retrain within the file system's timestamp resolution
            if f.is_file():
                os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
        again, _ = eval_cmd._load_predictor(str(ckpt), cfg)
    finally:
        eval_cmd._PREDICTOR_CACHE.clear()
    assert again is not first
    rgb = _rgb(0)
    assert not np.allclose(again.predict(rgb).values, first.predict(rgb).values)
