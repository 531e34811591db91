"""Predictor: Depth-Anything-V2 preprocessing, differentiable path, results, `bridge predict`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import bridgedepth
from bridgedepth.mde.model import ScaleHead, build_model, save_model
from bridgedepth.mde.predictor import (
    DepthResult,
    Predictor,
    predict_tensor,
    preprocess,
    read_png16,
    target_size,
)


def _da_v2_size(h, w, s=518, m=14):
    """Depth-Anything-V2's Resize(lower_bound, keep_aspect_ratio, ensure_multiple_of=14), re-derived."""
    sh, sw = s / h, s / w
    sc = sw if sw > sh else sh

    def con(x, lo):
        y = int(np.round(x / m) * m)
        return int(np.ceil(x / m) * m) if y < lo else y

    return con(sc * h, s), con(sc * w, s)


@pytest.mark.parametrize("hw", [(480, 640), (375, 1242), (518, 518), (100, 90), (1000, 333), (37, 41)])
def test_target_size_matches_depth_anything_v2(hw):
    h, w = hw
    th, tw = target_size(h, w, 518)
    assert (th, tw) == _da_v2_size(h, w)
    assert th % 14 == 0 and tw % 14 == 0 and min(th, tw) >= 518
    assert target_size(h, w, 140, fixed_size=True) == (140, 140)


def test_preprocess_is_cv2_bicubic_plus_imagenet_norm():
    import cv2

    rgb = (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8)
    x = preprocess(rgb, 56)
    assert x.shape == (1, 3, 56, 70) and x.dtype == torch.float32
    ref = cv2.resize(rgb / 255.0, (70, 56), interpolation=cv2.INTER_CUBIC)
    ref = (ref - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    # float32 here vs float64 in Depth-Anything-V2: differences ~1e-5 on normalised values
    assert np.abs(x[0].numpy().transpose(1, 2, 0) - ref).max() < 1e-4


@pytest.fixture(scope="module")
def micro_ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    model = build_model("micro", seed=0)
    head = ScaleHead(32, hidden=8)
    with torch.no_grad():
        head.mlp[2].bias.copy_(torch.tensor([0.0, 0.5]))
    save_model(model, d, scale_head=head, input_size=56)
    return d


def test_predict_tensor_differentiable_and_matches_predictor(micro_ckpt):
    model = bridgedepth.mde.load_model(micro_ckpt)
    img = torch.rand(2, 3, 40, 60, requires_grad=True)
    disp = predict_tensor(model, img)
    assert disp.shape == (2, 40, 60)
    disp.mean().backward()
    assert img.grad is not None and float(img.grad.abs().sum()) > 0
    # the numpy (OpenCV) path and the tensor (torch bicubic) path agree closely
    rgb = (img[0].detach().permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    res = Predictor(model).predict(rgb)
    t = predict_tensor(model, torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255)[0].detach().numpy()
    assert res.values.shape == (40, 60) and res.kind == "disparity"
    rel = np.abs(res.values - t).mean() / (np.abs(t).mean() + 1e-8)
    assert rel < 0.05


def test_predictor_batches_and_metric(micro_ckpt):
    pred = bridgedepth.load(micro_ckpt)
    assert pred.input_size == 56
    rng = np.random.default_rng(1)
    ims = [(rng.random((30 + 5 * i, 50, 3)) * 255).astype(np.uint8) for i in range(3)]
    batch = pred.predict_batch(ims)
    single = [pred.predict(im) for im in ims]
    for a, b, im in zip(batch, single, ims):
        assert a.values.shape == im.shape[:2]
        assert np.allclose(a.values, b.values, atol=1e-5)
    fixed = Predictor(pred.model, fixed_size=True)
    assert fixed.predict_batch(ims)[2].meta["network_size"] == [56, 56]
    metric = bridgedepth.load(micro_ckpt, metric=True)
    m = metric.predict(ims[0])
    assert m.kind == "depth" and float(m.values.min()) > 0 and np.all(np.isfinite(m.values))
    with pytest.raises(bridgedepth.errors.InputError):
        Predictor(build_model("micro"), metric=True)


def test_result_outputs(tmp_path):
    rng = np.random.default_rng(2)
    vals = rng.random((20, 30)).astype(np.float32) + 0.1
    vals[0, 0] = 0  # invalid in a png16 of depth
    r = DepthResult(vals, "disparity", (rng.random((20, 30, 3)) * 255).astype(np.uint8))
    r.save(tmp_path / "a.png16.png", "png16")
    back, meta = read_png16(tmp_path / "a.png16.png")
    assert meta["kind"] == "disparity" and np.abs(back - vals).max() <= vals.max() / 65535
    r.save(tmp_path / "a.npy")
    assert np.array_equal(np.load(tmp_path / "a.npy"), vals)
    col = r.colorize()
    assert col.shape == (20, 30, 3) and col.dtype == np.uint8
    # near (large disparity) is warm: red > blue
    i = np.unravel_index(np.argmax(vals), vals.shape)
    j = np.unravel_index(np.argmin(np.where(vals > 0, vals, 9)), vals.shape)
    assert int(col[i][0]) > int(col[i][2]) and int(col[j][2]) > int(col[j][0])
    g = r.colorize(grayscale=True)
    assert g[i][0] == 255 and np.all(g[..., 0] == g[..., 1])
    assert r.side_by_side().shape == (20, 60, 3)
    # metric depth: near = small depth = warm too
    d = DepthResult(1.0 / np.maximum(vals, 0.1), "depth")
    cd = d.colorize()
    assert int(cd[i][0]) > int(cd[i][2])
    assert np.allclose(d.disparity, np.maximum(vals, 0.1), rtol=1e-5)
    assert not list(tmp_path.glob(".*tmp*"))


def test_cli_predict_all_outputs(micro_ckpt, tmp_path, run_cli):
    from PIL import Image

    rng = np.random.default_rng(3)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        Image.fromarray((rng.random((28 + 7 * i, 42, 3)) * 255).astype(np.uint8)).save(imgs / f"im{i}.png")
    (tmp_path / "list.txt").write_text("# a list\nimgs/im0.png\n")
    out = tmp_path / "out"
    res = run_cli("predict", imgs / "im1.png", str(imgs / "im*.png"), tmp_path / "list.txt", "--model", micro_ckpt,
                  "--out", out, "--outputs", "color,png16,npy,side-by-side", "--batch-size", "2")
    assert res.code == 0, res
    names = sorted(p.name for p in out.iterdir() if p.name != "predictions.json")
    assert len(names) == 12 and "im2_disp16.png" in names and "im0_side.png" in names
    assert np.load(out / "im2_disp.npy").shape == (42, 42)
    res2 = run_cli("predict", imgs, "--model", micro_ckpt, "--out", out, "--outputs", "color,png16,npy,side-by-side")
    assert res2.code == 0 and "0 image(s) (3 already done)" in res2.out
    res3 = run_cli("predict", imgs / "im0.png", "--model", micro_ckpt, "--out", tmp_path / "m", "--metric",
                   "--outputs", "png16", "--grayscale")
    assert res3.code == 0, res3
    _, meta = read_png16(tmp_path / "m" / "im0_depth16.png")
    assert meta["kind"] == "depth" and meta["unit"] == "m"
    for bad in (["--outputs", "jpeg"], ["--input-size", "100"]):
        r = run_cli("predict", imgs, "--model", micro_ckpt, "--out", out, *bad)
        assert r.code == 2 and "error" in r.err
    r = run_cli("predict", tmp_path / "nothing.png", "--model", micro_ckpt)
    assert r.code == 2 and "nothing.png" in r.err
    r = run_cli("predict", imgs, "--model", tmp_path / "no-model", "--out", out)
    assert r.code == 2 and "no-model" in r.err
    json.dumps(res.out)


@pytest.mark.parametrize("swiglu", [False, True])
def test_fast_inference_copy_matches(swiglu):
    import dataclasses

    from bridgedepth.mde.fast import optimize_for_inference
    from bridgedepth.mde.registry import ARCHS

    model = build_model(dataclasses.replace(ARCHS["micro"], swiglu=swiglu), seed=0).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lambda1"):
                p.uniform_(0.5, 1.5)
            elif p.dim() > 1:
                p.normal_(0, 0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = optimize_for_inference(model)
    x = torch.randn(2, 3, 56, 70)
    with torch.no_grad():
        ref = model(pixel_values=x).predicted_depth
        got = fast(pixel_values=x).predicted_depth
    assert float(ref.abs().max()) > 0
    assert float((got - ref).abs().max()) <= 1e-5 * float(ref.abs().max())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
    # in-place ReLUs only where nothing else reads the input: never a residual unit's first one
    units = [m for m in fast.neck.modules() if hasattr(m, "convolution1") and hasattr(m, "activation1")]
    assert units and all(u.activation2.inplace and not u.activation1.inplace for u in units)
    assert fast.head.activation1.inplace
    plain = optimize_for_inference(model, inplace_relu=False)
    with torch.no_grad():
        assert torch.equal(plain(pixel_values=x).predicted_depth, got)


def test_compiled_predictor_matches_eager(micro_ckpt):
    # compile=True: torch.compile with inductor weight freezing (constants folded and prepacked); same
    # outputs as the eager fast path to float rounding, for a metric checkpoint (scale head) too, and the
    # model of the eager predictor is untouched by freezing
    rng = np.random.default_rng(4)
    ims = [(rng.random((42, 70, 3)) * 255).astype(np.uint8) for _ in range(2)]
    eager = bridgedepth.load(micro_ckpt)
    comp = bridgedepth.load(micro_ckpt, compile=True)
    for im in ims:
        a, b = eager.predict(im).values, comp.predict(im).values
        assert a.shape == b.shape == im.shape[:2]
        assert np.abs(a - b).max() <= 1e-4 * (a.max() - a.min())
    # calls from several threads at once leave inductor's process-wide freezing flag as it was
    import threading

    import torch._inductor.config as inductor_config

    ts = [threading.Thread(target=lambda: [comp.predict(ims[0]) for _ in range(3)]) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert inductor_config.freezing is False
    before = {k: v.clone() for k, v in eager.model.state_dict().items()}
    m_comp = bridgedepth.load(micro_ckpt, metric=True, compile=True).predict(ims[0]).values
    m_eager = bridgedepth.load(micro_ckpt, metric=True).predict(ims[0]).values
    assert np.allclose(m_comp, m_eager, rtol=1e-4, atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in eager.model.state_dict().items())
    with pytest.raises(bridgedepth.errors.InputError, match="int8"):
        bridgedepth.load(micro_ckpt, compile=True, precision="int8")


def test_cli_predict_compile(micro_ckpt, tmp_path, capsys):
    import cv2

    from bridgedepth.cli import main

    img = tmp_path / "a.png"
    cv2.imwrite(str(img), (np.random.default_rng(5).random((42, 70, 3)) * 255).astype(np.uint8))
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        assert main(["predict", str(img), "--model", str(micro_ckpt), "--out", str(tmp_path / name),
                     "--outputs", "npy", *extra]) == 0
    a, b = (np.load(tmp_path / n / "a_disp.npy") for n in ("eager", "compiled"))
    assert np.abs(a - b).max() <= 1e-4 * (a.max() - a.min())
    capsys.readouterr()
    assert main(["predict", str(img), "--backend", "onnx", "--model", str(tmp_path / "m.onnx"), "--compile"]) != 0
    assert "--compile: not for --backend onnx" in capsys.readouterr().err
