"""pretrain / finetune end to end on tiny sizes: outputs, LoRA file round trip, resume, logs."""

import json

import pytest
import torch

from bridgedepth.config import load_config
from bridgedepth.d2i.backend import LORA_FILE, load_backend
from bridgedepth.d2i.finetune import finetune
from bridgedepth.d2i.pretrain import pretrain
from bridgedepth.d2i.sampler import sample
from bridgedepth.d2i.synthetic import toy_scenes

SMALL = ["device=cpu", "d2i.resolution=16", "d2i.channels=[8,16]", "d2i.num_steps=3", "d2i.pretrain_batch_size=4",
         "finetune.batch_size=2", "finetune.heldout=2", "finetune.sample_every=2", "finetune.save_every=1",
         "finetune.lora_rank=2", "finetune.lora_alpha=2", "finetune.lr=1e-2"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("d2i")
    cfg = load_config("tiny", SMALL)
    s = pretrain(cfg, toy_scenes(8, 24), out, steps=3, progress=False)
    return out, s


def test_pretrain_writes_diffusers_layout_and_resumes(pretrained, tmp_path):
    out, s = pretrained
    assert (out / "unet" / "config.json").exists() and (out / "unet" / "diffusion_pytorch_model.safetensors").exists()
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == "DDIMScheduler"
    info = json.loads((out / "bridge.json").read_text())
    assert info["backend"] == "tiny" and info["resolution"] == 16
    assert s["steps"] == 3 and s["final_loss"] > 0
    assert len((out / "pretrain_log.jsonl").read_text().splitlines()) == 3
    be = load_backend(out)
    img = sample(be, torch.rand(2, 1, 16, 16), num_steps=2, seeds=[0, 1]).images
    assert img.shape == (2, 3, 16, 16) and 0 <= float(img.min()) and float(img.max()) <= 1
    # resume: a run interrupted after its step-2 checkpoint continues from step 2
    cfg = load_config("tiny", SMALL + ["d2i.save_every=2"])
    d = tmp_path / "r"
    pretrain(cfg, toy_scenes(8, 24), d, steps=2, progress=False)
    from bridgedepth.d2i import pretrain as pm

    pm._save_checkpoint(load_backend(d), torch.optim.AdamW(load_backend(d).denoiser.parameters()), 2, d / "checkpoint")
    s2 = pretrain(cfg, toy_scenes(8, 24), d, steps=3, progress=False)
    assert s2["resumed_from"] == 2 and not (d / "checkpoint").exists()


def test_pretrain_resume_refuses_other_settings_and_survives_a_kill_between_renames(tmp_path):
    """A rerun into the same --out with other d2i settings (other channels: another UNet) resumed the
    old checkpoint; a kill between removing the old checkpoint and renaming the new one lost both."""
    from dataclasses import replace

    from bridgedepth.d2i import pretrain as pm
    from bridgedepth.errors import InputError

    cfg = load_config("tiny", SMALL)
    d = tmp_path / "r"
    pretrain(cfg, toy_scenes(8, 24), d, steps=2, progress=False)

    def interrupted_at_2(c):  # the checkpoint an interrupted run of config c leaves after step 2
        dc = replace(c.d2i, resolution=16, num_steps=3)
        be = load_backend(d)
        pm._save_checkpoint(be, torch.optim.AdamW(be.denoiser.parameters()), 2, d / "checkpoint",
                            settings=pm._resume_settings(dc, None))

    interrupted_at_2(cfg)
    with pytest.raises(InputError, match=r"other settings \(d2i.pretrain_lr: 0.002 -> 0.01\)"):
        pretrain(load_config("tiny", SMALL + ["d2i.pretrain_lr=1e-2"]), toy_scenes(8, 24), d, steps=3, progress=False)
    # a kill between the renames: only checkpoint.old is left; it is put back and resumed, and a longer
    # run (d2i.pretrain_steps / --steps) may resume it
    (d / "checkpoint").rename(d / "checkpoint.old")
    s = pretrain(load_config("tiny", SMALL + ["d2i.save_every=100"]), toy_scenes(8, 24), d, steps=4, progress=False)
    assert s["resumed_from"] == 2 and not (d / "checkpoint").exists() and not (d / "checkpoint.old").exists()


def test_finetune_lora_logs_grids_resume(pretrained, teacher_dir, tmp_path):
    d2i, _ = pretrained
    cfg = load_config("tiny", SMALL)
    out = tmp_path / "ft"
    s = finetune(cfg, d2i, teacher_dir, toy_scenes(6, 24), out, steps=2, progress=False)
    assert s["rewards"]["aesthetic"]["on"] is False
    for k in ("depth_reward", "teacher_absrel", "depth_cosine_centred", "depth_cosine_raw"):
        assert k in s["heldout_before"] and k in s["heldout_after"]
    log = [json.loads(x) for x in (out / "finetune_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all({"loss", "grad_norm", "reward/depth", "reward/aesthetic"} <= set(r) for r in log)
    assert log[0]["reward/aesthetic"] is None
    assert (out / "samples" / "step-000002.png").exists() and (out / "samples" / "final-heldout.png").exists()
    from safetensors.torch import load_file

    sd = load_file(str(out / LORA_FILE))
    assert sd and all(k.startswith("unet.") and ".lora_" in k for k in sd)
    assert any(float(v.abs().sum()) > 0 for k, v in sd.items() if "lora_B" in k)  # trained
    # the fine-tuned directory loads as a backend (base + LoRA) and differs from the base
    ft = load_backend(out)
    base = load_backend(d2i)
    disp = torch.rand(1, 1, 16, 16)
    a = sample(ft, disp, num_steps=2, seeds=[3]).images
    b = sample(base, disp, num_steps=2, seeds=[3]).images
    assert not torch.allclose(a, b)
    # resume: interrupt a 3-step run during step 3 (checkpoint at step 2), rerun, it continues at step 3
    import bridgedepth.d2i.finetune as fm

    out2 = tmp_path / "ft2"
    cfg3 = load_config("tiny", SMALL + ["finetune.save_every=2"])
    calls = {"n": 0}
    real = fm.sample

    def flaky(*a, **k):
        if k.get("grad_steps"):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return real(*a, **k)

    fm.sample = flaky
    try:
        with pytest.raises(KeyboardInterrupt):
            finetune(cfg3, d2i, teacher_dir, toy_scenes(6, 24), out2, steps=3, progress=False)
    finally:
        fm.sample = real
    assert (out2 / "checkpoints" / "last" / LORA_FILE).exists()
    # resuming with another learning rate or LoRA rank is refused (it would mix them) ...
    from bridgedepth.errors import InputError

    for change, key in (("finetune.lr=1e-3", "finetune.lr: 0.01 -> 0.001"), ("finetune.lora_rank=4", "lora_rank")):
        with pytest.raises(InputError, match=key.replace(".", r"\.")):
            finetune(load_config("tiny", SMALL + ["finetune.save_every=2", change]), d2i, teacher_dir,
                     toy_scenes(6, 24), out2, steps=3, progress=False)
    # ... another save or sample cadence is not
    cfg3 = load_config("tiny", SMALL + ["finetune.save_every=5", "finetune.sample_every=7"])
    s3 = finetune(cfg3, d2i, teacher_dir, toy_scenes(6, 24), out2, steps=3, progress=False)
    assert s3["resumed_from"] == 2
    full = [json.loads(x) for x in (out2 / "finetune_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in full] == [1, 2, 3]
    assert not (out2 / "checkpoints").exists()


def test_finetune_with_the_anchor_samples_the_base_for_the_same_noise(pretrained, teacher_dir, tmp_path):
    import bridgedepth.d2i.finetune as fm

    d2i, _ = pretrained
    cfg = load_config("tiny", SMALL + ["finetune.reward.anchor_weight=5"])
    calls = []
    real = fm.sample

    def spy(be, disp, **k):
        lora_on = not any(getattr(m, "disable_adapters", False) for m in be.denoiser.modules())
        calls.append((k.get("grad_steps", 0), tuple(k.get("seeds") or ()), lora_on))
        return real(be, disp, **k)

    fm.sample = spy
    try:
        s = finetune(cfg, d2i, teacher_dir, toy_scenes(6, 24), tmp_path / "ft", steps=2, progress=False)
    finally:
        fm.sample = real
    assert s["rewards"]["anchor"] == {"weight": 5.0, "on": True}
    rollouts = [i for i, c in enumerate(calls) if c[0]]
    assert len(rollouts) == 2
    for i in rollouts:  # each training rollout (LoRA on) is followed by the base's (LoRA off), same seeds
        assert calls[i][2] and calls[i + 1] == (0, calls[i][1], False)
    log = [json.loads(x) for x in (tmp_path / "ft" / "finetune_log.jsonl").read_text().splitlines()]
    assert log[0]["reward/anchor"] == pytest.approx(0.0, abs=1e-10)  # the LoRA starts at zero: same images
    assert log[1]["reward/anchor"] < 0


def test_ablation_without_the_aesthetic_term_still_reports_its_score(pretrained, teacher_dir, tmp_path):
    """aesthetic_weight 0 (the depth-only ablation) with a scorer configured: the term stays off in
    the loss, and the held-out measurement still scores the images before and after with that model,
    so the ablation shows what the aesthetic did without its term."""
    from bridgedepth.d2i.scorer import ToyAestheticScorer

    ToyAestheticScorer(16, (8, 8)).save(tmp_path / "sc")
    d2i, _ = pretrained
    cfg = load_config("tiny", SMALL + [f"finetune.reward.aesthetic_model={tmp_path / 'sc'}",
                                       "finetune.reward.aesthetic_weight=0"])
    s = finetune(cfg, d2i, teacher_dir, toy_scenes(6, 24), tmp_path / "ft", steps=1, progress=False)
    assert s["rewards"]["aesthetic"]["on"] is False
    assert isinstance(s["heldout_before"]["aesthetic"], float) and isinstance(s["heldout_after"]["aesthetic"], float)
    log = [json.loads(x) for x in (tmp_path / "ft" / "finetune_log.jsonl").read_text().splitlines()]
    assert log[0]["reward/aesthetic"] is None  # not part of the objective
