"""The toy world (two looks of one geometry) and the zoo of shipped toy foundation models."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from bridgedepth.config import load_config
from bridgedepth.data.scenes import render_scene
from bridgedepth.errors import InputError


# ------------------------------------------------------------------------------------------------
# Looks
# ------------------------------------------------------------------------------------------------


def _texture(rgb: np.ndarray) -> float:
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.abs(cv2.Laplacian(g, cv2.CV_32F)).mean())


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_looks_share_geometry_and_differ_in_appearance(index):
    s = {look: render_scene(5, "mixed", (64, 80), index=index, look=look) for look in ("synthetic", "standard", "real")}
    for look in ("synthetic", "real"):
        np.testing.assert_array_equal(s[look]["depth"], s["standard"]["depth"])
        np.testing.assert_array_equal(s[look]["valid"], s["standard"]["valid"])
        assert s[look]["__key__"] == s["standard"]["__key__"]
        assert s[look]["meta"]["look"] == look
    assert not np.array_equal(s["real"]["rgb"], s["standard"]["rgb"])
    # synthetic: flat palette colours, much less texture than the photograph-like look
    assert _texture(s["synthetic"]["rgb"]) < 0.6 * _texture(s["real"]["rgb"])
    colours = np.unique(s["synthetic"]["rgb"].reshape(-1, 3), axis=0)
    assert len(colours) < len(np.unique(s["real"]["rgb"].reshape(-1, 3), axis=0)) / 4


def test_looks_are_deterministic_and_validated():
    a = render_scene(2, "outdoor", (48, 48), look="real")
    b = render_scene(2, "outdoor", (48, 48), look="real")
    np.testing.assert_array_equal(a["rgb"], b["rgb"])
    with pytest.raises(InputError, match="look"):
        render_scene(2, "outdoor", (48, 48), look="painted")


def test_camera_effects_can_leave_out_single_effects():
    """The real look is the standard shader plus the camera model; ``skip`` drops named effects and
    keeps the others exactly (their parameters are still drawn), for studies of the look gap."""
    from bridgedepth.data.scenes import build_scene
    from bridgedepth.data.scenes.render import CAMERA_EFFECTS, camera_effects, render

    def photo(skip=()):
        scene, rng = build_scene(4, "indoor", (256, 256), index=1)
        return camera_effects(render(scene, rng, "standard")[0], rng, skip=skip)

    full = photo()
    np.testing.assert_array_equal(full, render_scene(4, "indoor", (256, 256), index=1, look="real")["rgb"])
    scene, rng = build_scene(4, "indoor", (256, 256), index=1)
    state = rng.bit_generator.state
    render(scene, rng, "synthetic")  # draws nothing: one scene and rng serve both looks (mask_ceiling.py)
    assert rng.bit_generator.state == state
    standard = render(scene, rng, "standard")[0]
    # all effects left out: the standard render through the camera's tone shoulder only
    lin = (standard.astype(np.float32) / 255) ** 2
    toned = np.sqrt(lin / (1 + 0.15 * lin)) * 255 + 0.5
    assert np.abs(photo(CAMERA_EFFECTS).astype(np.float32) - np.floor(toned)).max() <= 1
    # without noise and JPEG: the same exposure (zero-mean effects)
    quiet = photo(("noise", "jpeg"))
    assert abs(float(quiet.mean()) - float(full.mean())) < 2.0
    for name in CAMERA_EFFECTS:  # each one changes the image on its own
        assert not np.array_equal(photo((name,)), full), name
    with pytest.raises(ValueError, match="camera effects"):
        photo(("grain",))


def test_write_scenes_refuses_mixing_looks(tmp_path):
    from bridgedepth.data.scenes.dataset import write_scenes

    write_scenes(tmp_path / "s", 3, size=(32, 32), seed=1, look="synthetic", progress=False)
    with pytest.raises(InputError, match="look"):
        write_scenes(tmp_path / "s", 3, size=(32, 32), seed=1, look="real", progress=False)


# ------------------------------------------------------------------------------------------------
# Building blocks of the foundations
# ------------------------------------------------------------------------------------------------


def test_tiny_backend_patch_and_v_prediction_round_trip(tmp_path):
    from bridgedepth.d2i.backend import load_backend
    from bridgedepth.d2i.pretrain import denoising_loss
    from bridgedepth.d2i.sampler import sample
    from bridgedepth.d2i.tiny import TinyBackend

    b = TinyBackend.create(32, (16, 32), 1, default_steps=3, patch=4, prediction_type="v_prediction")
    assert b.resolution == 32 and b.denoiser.config.sample_size == 8 and b.denoiser.config.in_channels == 64
    loss = denoising_loss(b, torch.rand(2, 3, 32, 32), torch.rand(2, 1, 32, 32), torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss)
    b.save(tmp_path / "d2i")
    b2 = load_backend(tmp_path / "d2i", "cpu")
    assert b2.patch == 4 and b2.scheduler.config.prediction_type == "v_prediction"
    disp = torch.rand(1, 1, 32, 32)
    r1 = sample(b, disp, num_steps=3, seeds=[4]).images
    r2 = sample(b2, disp, num_steps=3, seeds=[4]).images
    assert r1.shape == (1, 3, 32, 32)
    torch.testing.assert_close(r1, r2)
    with pytest.raises(InputError, match="patch"):
        TinyBackend.create(30, (16, 32), patch=4)


def test_prepare_source_conditions_on_the_teachers_estimate():
    from bridgedepth.d2i.common import prepare_source

    rng = np.random.default_rng(0)
    depth = rng.uniform(1, 5, (16, 16)).astype(np.float32)
    pseudo = (1 / depth).astype(np.float32)
    a = prepare_source([{"depth": depth}], 16)["disp01"]
    # the estimate is relative: any positive scale and shift of it gives the same condition
    b = prepare_source([{"pseudo": 3.0 * pseudo - 7.0}], 16, condition="pseudo")["disp01"]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    with pytest.raises(InputError, match="pseudo"):
        prepare_source([{"depth": depth}], 16, condition="pseudo")


def test_toy_aesthetic_scorer_round_trip_and_reward(tmp_path):
    from bridgedepth.config import RewardConfig
    from bridgedepth.d2i.rewards import build_rewards
    from bridgedepth.d2i.scorer import DEGRADATIONS, ToyAestheticScorer, degrade, load_scorer

    m = ToyAestheticScorer(32, (8, 8))
    m.save(tmp_path / "sc")
    m2 = load_scorer(tmp_path / "sc")
    x = torch.rand(3, 3, 40, 40, requires_grad=True)
    torch.testing.assert_close(m(x), m2(x))
    m2(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # differentiable w.r.t. the image (a reward)
    g = torch.Generator().manual_seed(0)
    for k in DEGRADATIONS:
        y = degrade(x.detach(), k, g)
        assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    reg = build_rewards(RewardConfig(aesthetic_model=str(tmp_path / "sc")), teacher=None)
    assert reg.describe()["aesthetic"] == {"weight": 0.1, "on": True}
    with pytest.raises(InputError, match="scorer"):
        load_scorer(tmp_path)


def test_toy_scorer_that_cannot_tell_photos_from_renders_warns_and_stays_uncalibrated(tmp_path):
    from bridgedepth.d2i.scorer import load_scorer, train_scorer

    same = torch.rand(24, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.warns(RuntimeWarning, match="uncalibrated"):
        rep = train_scorer(same, same.clone(), tmp_path / "sc", steps=2, batch_size=8, size=32, progress=False,
                           heldout_fraction=0.25)
    assert rep["calibration"]["calibrated"] is False
    m = load_scorer(tmp_path / "sc")
    assert (m.scale, m.offset) == (1.0, 0.0)


def test_toy_scorer_calibration_maps_heldout_means_to_the_anchors(tmp_path):
    """train_scorer fits score = offset + scale * logit so held-out photographs average 6 and synthetic
    renders 5 (the LAION-like spread the 0.9 / 0.1 reward weights assume); the calibration is saved,
    reloaded, and the raw logit stays available; an old scorer.json without it reads as the raw logit."""
    import json

    from bridgedepth.d2i.scorer import SCORE_PHOTO, SCORE_SYNTHETIC, evaluate_scorer, load_scorer, train_scorer

    g = torch.Generator().manual_seed(0)
    # "photographs": smooth gradients; "renders": flat colours (easy to tell apart in a few steps)
    ramp = torch.linspace(0, 1, 32)
    real = (ramp[None, None, :, None] * torch.rand(40, 3, 1, 1, generator=g)
            + 0.3 * torch.rand(40, 3, 1, 32, generator=g)).clamp(0, 1).expand(40, 3, 32, 32).contiguous()
    syn = torch.rand(40, 3, 1, 1, generator=g).expand(40, 3, 32, 32).contiguous()
    noisy = torch.rand(20, 3, 32, 32, generator=g)  # "samples of an untuned generator"
    rep = train_scorer(real, syn, tmp_path / "sc", steps=40, batch_size=16, size=32, progress=False,
                       heldout_fraction=0.25, generated=noisy)
    assert set(rep["d2i_samples"]) == {"accuracy", "mean_logit"}
    cal = rep["calibration"]
    m = load_scorer(tmp_path / "sc")
    assert (m.scale, m.offset) == pytest.approx((cal["scale"], cal["offset"]))
    assert m.scale > 0
    hr, hs = real[:10], syn[:10]  # the held-out images train_scorer kept aside
    with torch.no_grad():
        assert float(m(hr).mean()) == pytest.approx(SCORE_PHOTO, abs=1e-3)
        assert float(m(hs).mean()) == pytest.approx(SCORE_SYNTHETIC, abs=1e-3)
        torch.testing.assert_close(m(hr), m.offset + m.scale * m.logits(hr))
        # accuracies are judged on the logit (> 0 = photograph), not on the calibrated score
        assert evaluate_scorer(m, hr, hs)["real"] == rep["real"]
    info = json.loads((tmp_path / "sc" / "scorer.json").read_text())
    del info["calibration"]
    (tmp_path / "sc" / "scorer.json").write_text(json.dumps(info))
    old = load_scorer(tmp_path / "sc")
    with torch.no_grad():
        torch.testing.assert_close(old(hr), old.logits(hr))


def test_speckle_negative_looks_like_colour_noise():
    """The speckle degradation (an under-trained sampler's colour noise) keeps the layout but adds strong
    local colour variance: the per-pixel colour spread grows well above the clean image's."""
    from bridgedepth.d2i.scorer import degrade

    g = torch.Generator().manual_seed(1)
    x = torch.linspace(0, 1, 64)[None, None, None, :].expand(4, 3, 64, 64).contiguous()
    y = degrade(x, "speckle", g)
    local = (y[..., 1:] - y[..., :-1]).abs().mean()
    assert float(local) > 3 * float((x[..., 1:] - x[..., :-1]).abs().mean())
    assert float(x.std(1).mean()) == 0 and float(y.std(1).mean()) > 0.05  # colour appears in a grey image
    assert float(torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1]) > 0.2  # layout survives


def test_predictor_uses_the_models_patch_size():
    from bridgedepth.mde import build_model
    from bridgedepth.mde.predictor import Predictor, preprocess

    m = build_model("toy")
    assert m.config.patch_size == 8
    x = preprocess(np.zeros((97, 131, 3), np.uint8), 128, multiple=8)
    assert x.shape[-2] % 8 == 0 and x.shape[-1] % 8 == 0 and min(x.shape[-2:]) >= 128
    r = Predictor(m).predict(np.random.default_rng(0).integers(0, 255, (97, 131, 3), dtype=np.uint8))
    assert r.values.shape == (97, 131)


# ------------------------------------------------------------------------------------------------
# The zoo
# ------------------------------------------------------------------------------------------------


def test_zoo_seeds_never_reach_the_demo_test_sets():
    from bridgedepth.pipeline import demo_seeds
    from bridgedepth.zoo.build import build_seeds, training_seeds

    for preset in ("tiny", "tiny-fast", "zoo", "zoo-fast"):
        cfg = load_config(preset)
        test = {demo_seeds(cfg)["test"]}
        assert not (training_seeds(cfg) & test), preset
        assert build_seeds(cfg)["heldout"] not in training_seeds(cfg)


def test_zoo_fast_build_installs_loadable_models_with_cards(tmp_path, monkeypatch):
    from bridgedepth.d2i.backend import load_backend
    from bridgedepth.d2i.scorer import load_scorer
    from bridgedepth.mde import load_model
    from bridgedepth.data.shards import sha256_file
    from bridgedepth.zoo import list_models, model_path
    from bridgedepth.zoo.build import build

    monkeypatch.setenv("BRIDGE_ZOO_DIR", str(tmp_path / "models"))
    with pytest.raises(InputError, match="zoo build"):
        model_path("depth")
    cfg = load_config("zoo-fast")
    logs: list[str] = []
    from config_reads import stage_reads

    with stage_reads(monkeypatch, derivations=("_depth_cfg", "_d2i_cfg")) as (reads, declared):
        res = build(cfg, tmp_path / "build", install=True, progress=False, log=logs.append)
    # every stage declares each value it reads (zoo.build.stage_settings), but for what changes no
    # weights: threads, device, cadences, memory layout, and the validation's disparity floor, which
    # only changes the depth stage's reported validation figure (the cards are measured by the
    # evaluate stage, which declares it)
    free = (".save_every", ".val_every", ".val_limit", ".val", ".channels_last", ".gradient_checkpointing",
            "device", "data.num_workers", "zoo.threads")
    validation_only = {("2 depth foundation (teacher on the synthetic look)", "eval.disparity_floor")}
    undeclared = {n: sorted(k for k in keys if k not in (declared[n] or {}) and not k.endswith(free)
                            and (n, k) not in validation_only) for n, keys in reads.items()}
    assert len(reads) >= 4 and not any(undeclared.values()), undeclared
    assert len(res["installed"]) == 3
    q = res["quality"]
    assert set(q) == {"depth", "d2i", "aesthetic"}
    assert 0 <= q["depth"]["heldout_real"]["absrel"] < 10 and q["depth"]["heldout_real"]["n"] == 8
    assert q["depth"]["heldout_real_vertical_prior"]["n"] == 8
    depth = load_model(model_path("depth"))
    card = json.loads((model_path("depth") / "card.json").read_text())
    assert card["parameters"] == sum(p.numel() for p in depth.parameters())
    assert card["hardware"]["torch_threads"] == torch.get_num_threads()
    b = load_backend(model_path("d2i"), "cpu")
    assert next(b.denoiser.parameters()).dtype == torch.float32  # stored float16, loaded float32
    scorer = load_scorer(model_path("aesthetic"))
    info = json.loads((model_path("aesthetic") / "scorer.json").read_text())
    assert info["training"]["generated"] == cfg.zoo.scorer_generated  # the D2I's own samples as negatives
    assert "d2i_samples" in info["heldout"] and info["calibration"] == {"scale": scorer.scale, "offset": scorer.offset}
    for e in list_models():
        assert e.present
        card = json.loads((e.path / "card.json").read_text())
        for rel, digest in card["sha256"].items():
            assert sha256_file(e.path / rel) == digest
        assert (e.path / "README.md").read_text().startswith(f"# bridgedepth toy `{e.name}` model")
        for k in ("data", "seeds", "steps", "wall_seconds", "hardware", "config", "quality"):
            assert k in card, (e.name, k)
        assert card["parameters"] > 0 and card["wall_seconds"] >= 0
    # photographs' depth never travels: the D2I foundation's data holds only images and estimates
    from bridgedepth.data.shards import iter_samples

    s = next(iter(iter_samples(tmp_path / "build" / "photos_labelled")))
    assert "depth" not in s and "pseudo" in s
    # a rerun resumes: every stage is skipped
    logs.clear()
    build(cfg, tmp_path / "build", progress=False, log=logs.append)
    assert sum("skipped" in line for line in logs) == 6
    # reinstalling unchanged weights keeps each card's build date (no churn in the committed cards); a card
    # for other weights gets today's
    import time as _time

    dates = {e.name: json.loads((e.path / "card.json").read_text())["built"] for e in list_models()}
    monkeypatch.setattr(_time, "strftime", lambda fmt, *a: "2099-01-01")
    card_path = model_path("depth") / "card.json"
    edited = json.loads(card_path.read_text())
    edited["sha256"] = {"model.safetensors": "0" * 64}
    card_path.write_text(json.dumps(edited))
    build(cfg, tmp_path / "build", install=True, progress=False, log=logs.append)
    after = {e.name: json.loads((e.path / "card.json").read_text())["built"] for e in list_models()}
    assert after == {**dates, "depth": "2099-01-01"}
    # another setting of one model (here the scorer's target) in the same folder: that stage starts
    # afresh and the evaluation after it runs again, the earlier ones stay skipped; settings no stage
    # reads (threads, the demo's) change nothing
    logs.clear()
    build(load_config("zoo-fast", ["zoo.threads=1", "demo.seeds=3"]), tmp_path / "build", progress=False,
          log=logs.append)
    assert sum("skipped" in line for line in logs) == 6
    logs.clear()
    build(load_config("zoo-fast", ["zoo.scorer_target=quality"]), tmp_path / "build", progress=False, log=logs.append)
    assert sum("skipped" in line for line in logs) == 4
    assert any(line.startswith("[5 toy aesthetic scorer] done before with other settings "
                               "(zoo.scorer_target: 'photo' -> 'quality')") for line in logs), logs
    assert any(line.startswith("[6 evaluate] done before, but its input") for line in logs), logs
    assert any(line.startswith("[6 evaluate] removing") for line in logs), logs  # remade, not resumed
    assert (tmp_path / "build" / "eval" / "generated_heldout").is_dir()
    assert json.loads((tmp_path / "build" / "aesthetic" / "scorer.json").read_text())["target"] == "quality"
    # deleting a model's folder rebuilds it (and what reads it) with the settings of this run
    import shutil

    shutil.rmtree(tmp_path / "build" / "aesthetic")
    logs.clear()
    build(load_config("zoo-fast", ["zoo.scorer_target=quality"]), tmp_path / "build", progress=False, log=logs.append)
    assert any("aesthetic is missing: running it again" in line for line in logs), logs
    assert sum("skipped" in line for line in logs) == 4
    # a build folder from before settings were recorded: they are taken from its saved config.yaml
    done = json.loads((tmp_path / "build" / "stages.json").read_text())
    for rec in done.values():
        rec.pop("settings", None)
    (tmp_path / "build" / "stages.json").write_text(json.dumps(done))
    logs.clear()
    build(load_config("zoo-fast", ["zoo.scorer_target=quality"]), tmp_path / "build", progress=False, log=logs.append)
    assert sum("skipped" in line for line in logs) == 6
    logs.clear()
    build(load_config("zoo-fast", ["zoo.scorer_steps=7"]), tmp_path / "build", progress=False, log=logs.append)
    assert any("other settings (zoo.scorer_steps: " in line and "zoo.scorer_target: 'quality' -> 'photo'" in line
               for line in logs), logs


def test_cli_zoo_list(capsys, monkeypatch, tmp_path):
    from bridgedepth.cli import main

    monkeypatch.setenv("BRIDGE_ZOO_DIR", str(tmp_path))
    assert main(["zoo", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["depth", "d2i", "aesthetic"]
    assert not any(r["present"] for r in rows)


def test_shard_set_benchmark_clips_to_the_datas_depth_cap(tmp_path):
    """An aligned disparity clipped at the floor becomes depth 1/floor; like every real benchmark the
    shard-set benchmark clips it to the data's cap (procedural scenes record max_depth 80 m), so one such
    pixel cannot dominate the mean AbsRel."""
    from bridgedepth.data.benchmarks.shard_set import ShardSet
    from bridgedepth.data.scenes.dataset import write_scenes
    from bridgedepth.data.shards import write_dataset

    write_scenes(tmp_path / "s", 2, kind="outdoor", size=(32, 32), seed=3, progress=False)
    b = ShardSet(tmp_path / "s")
    assert b.max_depth == 80.0
    assert ShardSet(tmp_path / "s", max_depth=20).max_depth == 20.0
    metas = [b.meta(it) for it in b.items()]  # the public per-sample record (metric_probe reads the kind)
    assert [m["kind"] for m in metas] == ["outdoor", "outdoor"] and all(m["max_depth"] == 80.0 for m in metas)

    def make(i):
        return {"__key__": f"k{i}", "rgb": np.zeros((8, 8, 3), np.uint8), "depth": np.ones((8, 8), np.float32)}

    write_dataset(tmp_path / "plain", 1, make, progress=False)
    plain = ShardSet(tmp_path / "plain")
    assert plain.max_depth == float("inf")
    assert plain.meta(plain.items()[0]) == {}


def test_zoo_depth_recipe_takes_its_training_options_from_the_zoo_section():
    """_depth_cfg maps the zoo.depth_* keys onto the teacher's training config (colour jitter included)."""
    from bridgedepth.config import load_config
    from bridgedepth.zoo.build import _depth_cfg

    cfg = load_config("zoo", ["zoo.depth_color_jitter=0.2", "zoo.depth_lr=3e-4", "zoo.depth_steps=40"])
    t = _depth_cfg(cfg).train
    assert (t.color_jitter, t.lr, t.steps, t.stage) == (0.2, 3e-4, 40, "teacher")
    assert _depth_cfg(load_config("zoo")).train.color_jitter == 0.2  # the shipped build's recipe


def test_zoo_d2i_recipe_takes_its_target_and_average_from_the_zoo_section():
    """_d2i_cfg maps zoo.d2i_prediction / zoo.d2i_ema onto the pretraining config; the shipped recipe
    predicts the clean image and keeps a moving average."""
    from bridgedepth.config import load_config
    from bridgedepth.zoo.build import _d2i_cfg

    d = _d2i_cfg(load_config("zoo", ["zoo.d2i_prediction=epsilon", "zoo.d2i_ema=0.5"]), 10).d2i
    assert (d.prediction_type, d.pretrain_ema, d.pretrain_max_samples) == ("epsilon", 0.5, 10)
    d = _d2i_cfg(load_config("zoo"), 3000).d2i
    assert (d.prediction_type, d.pretrain_ema, d.pretrain_steps) == ("sample", 0.999, 4500)


def test_quality_scorer_rates_clean_renders_high_and_degraded_images_low(tmp_path):
    """target="quality" (the stand-in for an aesthetic head that judges image quality, not the look):
    clean synthetic renders are positives like photographs, degraded images and D2I samples are the
    negatives; the calibration maps held-out photographs to 6 and the held-out negatives' mean to 5."""
    import json

    import numpy as np

    from bridgedepth.d2i.scorer import SCORE_PHOTO, SCORE_SYNTHETIC, load_scorer, train_scorer

    g = torch.Generator().manual_seed(0)
    ramp = torch.linspace(0, 1, 32)
    real = (ramp[None, None, :, None] * torch.rand(40, 3, 1, 1, generator=g)
            + 0.3 * torch.rand(40, 3, 1, 32, generator=g)).clamp(0, 1).expand(40, 3, 32, 32).contiguous()
    syn = (ramp[None, None, None, :] * torch.rand(40, 3, 1, 1, generator=g)).expand(40, 3, 32, 32).contiguous()
    noisy = torch.rand(20, 3, 32, 32, generator=g)
    rep = train_scorer(real, syn, tmp_path / "q", steps=60, batch_size=16, size=32, progress=False,
                       heldout_fraction=0.25, generated=noisy, target="quality")
    assert json.loads((tmp_path / "q" / "scorer.json").read_text())["target"] == "quality"
    # renders are positives here: held-out renders score above the noise samples, unlike the photo target
    assert rep["synthetic"]["mean_logit"] > rep["d2i_samples"]["mean_logit"]
    photo = train_scorer(real, syn, tmp_path / "p", steps=60, batch_size=16, size=32, progress=False,
                         heldout_fraction=0.25, generated=noisy)
    gap = {k: r["real"]["mean_logit"] - r["synthetic"]["mean_logit"] for k, r in (("quality", rep), ("photo", photo))}
    assert gap["photo"] > 0 and gap["quality"] < gap["photo"] / 2, gap
    negatives = [v["mean_logit"] for k, v in rep.items() if isinstance(v, dict) and k not in ("real", "synthetic", "calibration")]
    assert "noise" in rep and len(negatives) >= 9  # 8 degradations + the D2I samples
    m = load_scorer(tmp_path / "q")
    assert m.offset + m.scale * rep["real"]["mean_logit"] == pytest.approx(SCORE_PHOTO, abs=1e-6)
    assert m.offset + m.scale * float(np.mean(negatives)) == pytest.approx(SCORE_SYNTHETIC, abs=1e-6)
    with pytest.raises(ValueError, match="target"):
        train_scorer(real, syn, tmp_path / "x", steps=1, target="photograph")


def test_zoo_stage_settings_name_what_each_stage_reads():
    """A changed setting remakes only the stages that read it (docs/zoo.md "Rebuilding one model")."""
    from bridgedepth.zoo.build import STAGES, stage_settings

    base = stage_settings(load_config("zoo"))
    assert set(base) == set(STAGES.values())

    def changed(*overrides):
        new = stage_settings(load_config("zoo", list(overrides)))
        return {k for k, v in STAGES.items() if new[v] != base[v]}

    assert changed("zoo.depth_steps=10") == {"depth"}
    assert changed("train.loss.gm_weight=1") == {"depth"}  # the teacher's loss, through the derived config
    assert changed("zoo.d2i_steps=10") == {"d2i"}
    assert changed("zoo.scorer_target=quality") == {"aesthetic"}
    assert changed("zoo.seed=7") == {"scenes", "depth", "d2i", "aesthetic", "evaluate"}
    assert changed("zoo.photo_scenes=10") == {"scenes", "d2i"}
    # what no zoo stage reads, and cadence or threads, remakes nothing
    assert changed("zoo.threads=1", "demo.seeds=3", "label.ssim_threshold=0.5", "finetune.steps=3",
                   "device=cpu") == set()
