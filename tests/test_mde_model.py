"""Model registry, heads, DINOv2 encoder init, checkpoint save/load, transformers pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bridgedepth.errors import InputError
from bridgedepth.mde.model import (
    ScaleHead,
    apply_scale,
    build_model,
    forward_with_features,
    load_model,
    load_scale_head,
    make_config,
    read_metadata,
    save_model,
)
from bridgedepth.mde.registry import ARCHS


def test_registry_matches_depth_anything_v2():
    expect = {
        "vits": (384, 12, 6, 64, (48, 96, 192, 384), (2, 5, 8, 11), False),
        "vitb": (768, 12, 12, 128, (96, 192, 384, 768), (2, 5, 8, 11), False),
        "vitl": (1024, 24, 16, 256, (256, 512, 1024, 1024), (4, 11, 17, 23), False),
        "vitg": (1536, 40, 24, 384, (1536,) * 4, (9, 19, 29, 39), True),
    }
    for name, (hid, layers, heads, feat, oc, taps, swiglu) in expect.items():
        cfg = make_config(name)
        b = cfg.backbone_config
        assert (b.hidden_size, b.num_hidden_layers, b.num_attention_heads) == (hid, layers, heads)
        assert cfg.fusion_hidden_size == feat and tuple(cfg.neck_hidden_sizes) == oc
        assert tuple(b.out_indices) == tuple(t + 1 for t in taps)
        assert b.use_swiglu_ffn is swiglu and b.patch_size == 14 and b.image_size == 518
        assert cfg.head_hidden_size == 32 and cfg.reassemble_hidden_size == hid
    # vits has DA-V2-Small's 24.8 M parameters (counted on the meta device: no allocation)
    with torch.device("meta"):
        m = build_model("vits")
    assert abs(sum(p.numel() for p in m.parameters()) / 1e6 - 24.8) < 0.2


def test_heads_relative_and_metric():
    x = torch.rand(2, 3, 56, 70)
    rel = build_model("micro", seed=0).eval()
    met = build_model("micro", head="metric", max_depth=7, seed=0).eval()
    with torch.no_grad():
        r = rel(pixel_values=x).predicted_depth
        d = met(pixel_values=x).predicted_depth
    assert r.shape == (2, 56, 70) and float(r.min()) >= 0
    assert float(d.min()) > 0 and float(d.max()) < 7
    assert rel.config.max_depth == 1 and met.config.depth_estimation_type == "metric"
    with pytest.raises(InputError):
        build_model("nope")
    with pytest.raises(InputError):
        build_model("micro", head="banana")


def test_random_init_is_alive():
    x = torch.rand(2, 3, 56, 56)
    for seed in range(4):
        with torch.no_grad():
            p = build_model("micro", seed=seed).eval()(pixel_values=x).predicted_depth
        assert bool((p > 0).all()) and float(p.std()) > 0


def test_seed_reproducible():
    a = build_model("micro", seed=3)
    b = build_model("micro", seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_encoder_init_from_local_dinov2(tmp_path):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, image_size=98, patch_size=14)
    enc = Dinov2Model(cfg)
    enc.save_pretrained(tmp_path / "dinov2")
    model = build_model("micro", encoder_init=tmp_path / "dinov2")
    src = enc.state_dict()
    dst = model.backbone.state_dict()
    for k in ("encoder.layer.3.mlp.fc2.weight", "embeddings.cls_token", "layernorm.bias"):
        assert torch.equal(src[k], dst[k])
    # 7x7 grid resized to micro's 4x4 grid
    assert dst["embeddings.position_embeddings"].shape == (1, 17, 32)
    bad = Dinov2Model(Dinov2Config(hidden_size=48, num_hidden_layers=4, num_attention_heads=2))
    bad.save_pretrained(tmp_path / "bad")
    with pytest.raises(InputError, match="hidden_size"):
        build_model("micro", encoder_init=tmp_path / "bad")


def test_save_load_roundtrip_and_pipeline(tmp_path):
    from PIL import Image
    from transformers import pipeline

    model = build_model("micro", seed=1).eval()
    head = ScaleHead(32, hidden=8)
    torch.nn.init.normal_(head.mlp[2].weight)
    out = save_model(model, tmp_path / "ckpt", extra={"stage": "teacher", "step": 5}, scale_head=head, input_size=56)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "bridge.json", "config.json", "model.safetensors", "preprocessor_config.json",
                     "scale_head.safetensors"]
    meta = read_metadata(out)
    assert meta["arch"] == "micro" and meta["extra"]["step"] == 5 and meta["input_size"] == 56
    loaded = load_model(out)
    x = torch.rand(1, 3, 56, 56)
    with torch.no_grad():
        assert torch.equal(model(pixel_values=x).predicted_depth, loaded(pixel_values=x).predicted_depth)
    h2 = load_scale_head(out)
    tokens = torch.randn(2, 17, 32)
    assert all(torch.equal(a, b) for a, b in zip(head(tokens), h2(tokens)))
    # transformers' own pipeline loads it
    pipe = pipeline("depth-estimation", model=str(out), device="cpu")
    img = Image.fromarray((np.random.default_rng(0).random((40, 60, 3)) * 255).astype(np.uint8))
    res = pipe(img)
    assert res["predicted_depth"].shape[-2:] == (40, 60) or res["depth"].size == (60, 40)
    # re-saving without a scale head removes the stale one
    save_model(model, out)
    assert not (out / "scale_head.safetensors").exists() and load_scale_head(out) is None


def test_load_refuses_pickles_and_garbage(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError):
        load_model(tmp_path / "empty")
    d = tmp_path / "pickled"
    d.mkdir()
    build_model("micro").config.save_pretrained(d)
    torch.save({}, d / "pytorch_model.bin")
    with pytest.raises(InputError, match="safetensors"):
        load_model(d)
    with pytest.raises(InputError):
        load_model(tmp_path / "missing")
    (tmp_path / "bj").mkdir()
    (tmp_path / "bj" / "bridge.json").write_text("{not json")
    with pytest.raises(InputError):
        read_metadata(tmp_path / "bj")
    json.dumps(read_metadata(tmp_path / "empty"))


def test_forward_with_features_and_scale():
    model = build_model("micro", seed=0).eval()
    x = torch.rand(2, 3, 56, 56)
    with torch.no_grad():
        pred, feats = forward_with_features(model, x)
        ref = model(pixel_values=x).predicted_depth
    assert torch.allclose(pred, ref) and len(feats) == 4 and feats[-1].shape == (2, 17, 32)
    head = ScaleHead(32)
    with torch.no_grad():
        log_s, shift = head(feats[-1])
    assert torch.equal(log_s, torch.zeros(2)) and torch.equal(shift, torch.zeros(2))  # identity at init
    depth = apply_scale(pred + 0.5, log_s, shift, max_depth=10.0)
    assert float(depth.max()) <= 10.0 + 1e-5 and torch.allclose(depth, 1 / (pred + 0.5).clamp_min(0.1))


def test_registry_small_configs_are_small():
    assert ARCHS["tiny"].hidden_size == 192 and ARCHS["tiny"].num_layers == 6
    m = build_model("tiny")
    n = sum(p.numel() for p in m.parameters())
    assert 1e6 < n < 6e6


def test_parameter_groups_and_gradient_checkpointing():
    from bridgedepth.mde.model import enable_checkpointing, parameter_groups

    model = build_model("micro", seed=0)
    groups = parameter_groups(model, 1e-4, decoder_lr_mult=10.0, weight_decay=0.05)
    by = {g["name"]: g for g in groups}
    assert by["encoder"]["lr"] == 1e-4 and by["decoder"]["lr"] == pytest.approx(1e-3)
    assert by["encoder_no_decay"]["weight_decay"] == 0.0 and by["decoder"]["weight_decay"] == 0.05
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    ids = {id(p) for p in by["encoder"]["params"] + by["encoder_no_decay"]["params"]}
    assert ids == {id(p) for p in model.backbone.parameters()}
    # gradient checkpointing (transformers' own) gives the same gradients
    x = torch.rand(2, 3, 56, 56)
    model.train()
    model(pixel_values=x).predicted_depth.sum().backward()
    ref = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    enable_checkpointing(model)
    assert model.backbone.encoder.layer[0].gradient_checkpointing
    model(pixel_values=x).predicted_depth.sum().backward()
    assert sum(a is not None for a in ref) > 50
    assert all((a is None and p.grad is None) or torch.allclose(a, p.grad, atol=1e-6)
               for a, p in zip(ref, model.parameters()))


def test_saving_and_loading_print_no_progress_bar_and_leave_the_setting_alone(tmp_path, capfd):
    """`bridge predict` and the demo's worker processes printed transformers' "Loading weights" bar on
    every load, even with --no-progress."""
    from transformers.utils import logging as hf_logging

    from bridgedepth.mde.model import build_model, load_model, save_model

    capfd.readouterr()
    save_model(build_model("tiny", seed=0), tmp_path / "m")
    err = capfd.readouterr().err
    assert "Writing model shards" not in err
    # the torchvision warning comes once per process, at transformers' first DPTImageProcessor access:
    # only a fresh process shows whether a save prints it
    import subprocess
    import sys

    code = ("from bridgedepth.mde import build_model, save_model; "
            f"save_model(build_model('micro', seed=0), {str(tmp_path / 'fresh')!r})")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert "requires torchvision" not in fresh.stderr and "Writing model shards" not in fresh.stderr, fresh.stderr
    assert json.loads((tmp_path / "m" / "preprocessor_config.json").read_text())["image_processor_type"] == \
        "DPTImageProcessor"
    assert hf_logging.is_progress_bar_enabled()
    load_model(tmp_path / "m")
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()  # restored for the caller's own transformers use
    hf_logging.disable_progress_bar()
    try:
        load_model(tmp_path / "m")
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.enable_progress_bar()
