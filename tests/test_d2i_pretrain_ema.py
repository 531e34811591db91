"""`bridge d2i pretrain` with a moving average of the weights (d2i.pretrain_ema) and a warm start
(d2i.pretrain_init): the saved model is the average diffusers' EMAModel defines, the average survives
an interruption, and a warm start begins from the given model's weights."""

import shutil

import pytest
import torch

from bridgedepth.config import load_config
from bridgedepth.d2i import pretrain as pm
from bridgedepth.d2i.backend import load_backend
from bridgedepth.d2i.pretrain import pretrain
from bridgedepth.d2i.synthetic import toy_scenes
from bridgedepth.errors import InputError

SMALL = ["device=cpu", "d2i.resolution=16", "d2i.channels=[8,16]", "d2i.num_steps=3", "d2i.pretrain_batch_size=4",
         "d2i.pretrain_lr=1e-2"]


def _weights(d):
    return {k: v.detach().clone() for k, v in load_backend(d).denoiser.state_dict().items()}


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_saved_model_is_the_warmed_up_average(tmp_path, monkeypatch):
    data = toy_scenes(8, 24)
    raw: dict[int, list[torch.Tensor]] = {}
    first: list[list[torch.Tensor]] = []
    real_save, real_create = pm._save_checkpoint, pm.TinyBackend.create

    def save(backend, opt, step, ckpt, ema=None, settings=None):
        raw[step] = _params(backend.denoiser)
        real_save(backend, opt, step, ckpt, ema, settings)

    def create(*a, **k):
        b = real_create(*a, **k)
        first.append(_params(b.denoiser))
        return b

    monkeypatch.setattr(pm, "_save_checkpoint", save)
    monkeypatch.setattr(pm.TinyBackend, "create", create)
    plain = pretrain(load_config("tiny", SMALL + ["d2i.save_every=1"]), data, tmp_path / "plain", steps=3,
                     progress=False)
    assert plain["ema"] == 0.0
    w0 = first[0]
    w1, w2 = raw[1], raw[2]
    w3 = _params(load_backend(tmp_path / "plain").denoiser)
    s = pretrain(load_config("tiny", SMALL + ["d2i.save_every=1", "d2i.pretrain_ema=0.999"]), data,
                 tmp_path / "ema", steps=3, progress=False)
    assert s["ema"] == 0.999
    assert all(torch.equal(a, b) for a, b in zip(first[1], w0))  # the same start
    got = _params(load_backend(tmp_path / "ema").denoiser)
    # warm-up: the decay after the n-th update is min(0.999, n / (9 + n)): 0.1, 2/11, 0.25
    for a0, a1, a2, a3, g in zip(w0, w1, w2, w3, got):
        e = 0.1 * a0 + 0.9 * a1
        e = 2 / 11 * e + 9 / 11 * a2
        e = 0.25 * e + 0.75 * a3
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(g, a3) for g, a3 in zip(got, w3))  # not the raw weights


def test_average_survives_an_interruption(tmp_path, monkeypatch):
    data = toy_scenes(8, 24)
    real_save = pm._save_checkpoint

    def save_then_stop(backend, opt, step, ckpt, ema=None, settings=None):
        real_save(backend, opt, step, ckpt, ema, settings)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(pm, "_save_checkpoint", save_then_stop)
    cfg = load_config("tiny", SMALL + ["d2i.save_every=1", "d2i.pretrain_ema=0.999"])
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg, data, tmp_path / "a", steps=3, progress=False)
    state = torch.load(tmp_path / "a/checkpoint/ema.pt", weights_only=True)
    assert state["optimization_step"] == 2
    shadow = state["shadow_params"]
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    monkeypatch.setattr(pm, "_save_checkpoint", real_save)
    s = pretrain(cfg, data, tmp_path / "a", steps=3, progress=False)
    assert s["resumed_from"] == 2
    # the same resumed step without the average gives the raw weights of step 3
    pretrain(load_config("tiny", SMALL + ["d2i.save_every=1"]), data, tmp_path / "b", steps=3, progress=False)
    w3 = _params(load_backend(tmp_path / "b").denoiser)
    got = _params(load_backend(tmp_path / "a").denoiser)
    for sh, a3, g in zip(shadow, w3, got):
        torch.testing.assert_close(g, 0.25 * sh + 0.75 * a3, rtol=1e-5, atol=1e-6)


def test_warm_start_begins_from_the_given_model(tmp_path):
    data = toy_scenes(8, 24)
    pretrain(load_config("tiny", SMALL), data, tmp_path / "base", steps=2, progress=False)
    base = _weights(tmp_path / "base")
    # zero learning rate: one step leaves the initial weights as they were
    cfg = load_config("tiny", SMALL + ["d2i.pretrain_lr=0", f"d2i.pretrain_init={tmp_path / 'base'}",
                                       "d2i.channels=[4,4]"])
    s = pretrain(cfg, data, tmp_path / "cont", steps=1, progress=False)
    assert s["init"] == str(tmp_path / "base")
    got = _weights(tmp_path / "cont")
    assert got.keys() == base.keys() and all(torch.equal(got[k], base[k]) for k in base)
    # and with a learning rate it moves on from there
    cfg = load_config("tiny", SMALL + [f"d2i.pretrain_init={tmp_path / 'base'}"])
    pretrain(cfg, data, tmp_path / "cont2", steps=1, progress=False)
    moved = _weights(tmp_path / "cont2")
    assert any(not torch.equal(moved[k], base[k]) for k in base)


def test_warm_start_and_average_are_checked(tmp_path):
    data = toy_scenes(8, 24)
    pretrain(load_config("tiny", SMALL), data, tmp_path / "base", steps=1, progress=False)
    with pytest.raises(InputError, match="trained at 16 px"):
        pretrain(load_config("tiny", SMALL + ["d2i.resolution=32", f"d2i.pretrain_init={tmp_path / 'base'}"]),
                 data, tmp_path / "x", steps=1, progress=False)
    # a new training target on the old weights: the saved scheduler predicts the new one
    pretrain(load_config("tiny", SMALL + ["d2i.prediction_type=sample", f"d2i.pretrain_init={tmp_path / 'base'}"]),
             data, tmp_path / "y", steps=1, progress=False)
    assert load_backend(tmp_path / "y").scheduler.config.prediction_type == "sample"
    with pytest.raises(InputError, match="no unet"):
        pretrain(load_config("tiny", SMALL + [f"d2i.pretrain_init={tmp_path}"]), data, tmp_path / "z", steps=1,
                 progress=False)
    with pytest.raises(InputError, match="pretrain_ema 1.5"):
        pretrain(load_config("tiny", SMALL + ["d2i.pretrain_ema=1.5"]), data, tmp_path / "w", steps=1,
                 progress=False)
