"""Rewards: masked cosine / Pearson, the real LAION head with a tiny random CLIP, gradients to LoRA."""

import numpy as np
import pytest
import torch

from bridgedepth.config import RewardConfig
from bridgedepth.d2i.lora import add_lora, lora_parameters
from bridgedepth.d2i.rewards import (AestheticScorer, RewardRegistry, aligned_absrel, build_rewards,
                                     load_aesthetic_head, masked_cosine)
from bridgedepth.d2i.sampler import sample
from bridgedepth.d2i.tiny import TinyBackend

HEAD = "aesthetic/sac+logos+ava1-l14-linearMSE.pth"


def _tiny_clip():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=224, patch_size=32, projection_dim=768)
    return CLIPVisionModelWithProjection(cfg)


def test_masked_cosine_and_pearson():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 8, 8, generator=g) + 0.5
    valid = torch.rand(2, 8, 8, generator=g) > 0.3
    # invariant to a positive scale; centring makes it invariant to a shift as well
    assert torch.allclose(masked_cosine(3 * a, a, valid, mean_centre=False), torch.ones(2), atol=1e-5)
    assert torch.allclose(masked_cosine(3 * a + 7, a, valid, mean_centre=True), torch.ones(2), atol=1e-5)
    assert (masked_cosine(3 * a + 7, a, valid, mean_centre=False) < 0.999).all()
    # centred cosine equals Pearson correlation over the valid pixels
    b = torch.rand(2, 8, 8, generator=g)
    c = masked_cosine(a, b, valid, mean_centre=True)
    for i in range(2):
        m = valid[i].numpy()
        r = np.corrcoef(a[i].numpy()[m], b[i].numpy()[m])[0, 1]
        assert abs(float(c[i]) - r) < 1e-5
    # invalid pixels do not matter
    b2 = b.clone()
    b2[~valid] = 100.0
    assert torch.allclose(masked_cosine(a, b2, valid), c, atol=1e-6)


def test_aligned_absrel_zero_for_affine_disparity():
    gt_depth = torch.rand(1, 10, 10) * 5 + 1
    disp = 1 / gt_depth
    valid = torch.ones(1, 10, 10, dtype=torch.bool)
    assert float(aligned_absrel(2 * disp + 0.1, disp, valid)[0]) < 1e-4
    assert float(aligned_absrel(torch.rand(1, 10, 10), disp, valid)[0]) > 0.05


def test_real_head_loads_and_matches_manual_mlp(shared_data):
    head = load_aesthetic_head(shared_data / HEAD)
    sd = torch.load(shared_data / HEAD, map_location="cpu", weights_only=True)
    assert sorted(sd) == sorted(f"layers.{i}.{k}" for i in (0, 2, 4, 6, 7) for k in ("weight", "bias"))
    x = torch.nn.functional.normalize(torch.randn(3, 768), dim=-1)
    y = x
    for i in (0, 2, 4, 6, 7):
        y = y @ sd[f"layers.{i}.weight"].float().T + sd[f"layers.{i}.bias"].float()
    assert torch.allclose(head(x), y, atol=1e-4)


def test_safetensors_head_and_bad_head(tmp_path, shared_data):
    from safetensors.torch import save_file

    from bridgedepth.errors import InputError

    sd = torch.load(shared_data / HEAD, map_location="cpu", weights_only=True)
    save_file({k: v.float().contiguous() for k, v in sd.items()}, str(tmp_path / "h.safetensors"))
    h = load_aesthetic_head(tmp_path / "h.safetensors")
    assert h.layers[0].weight.shape == (1024, 768)
    save_file({"w": torch.zeros(2)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(InputError, match="bad.safetensors"):
        load_aesthetic_head(tmp_path / "bad.safetensors")


def test_aesthetic_gradient_reaches_generator_lora(shared_data):
    scorer = AestheticScorer(_tiny_clip(), load_aesthetic_head(shared_data / HEAD))
    torch.manual_seed(1)
    be = TinyBackend.create(resolution=16, channels=(8, 16), default_steps=3)
    add_lora(be.denoiser, rank=2, alpha=2)
    for n, p in be.denoiser.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    reg = RewardRegistry()
    reg.register("aesthetic", lambda img, batch: scorer(img), 0.1)
    disp = torch.rand(2, 1, 16, 16)
    roll = sample(be, disp, num_steps=3, seeds=[0, 1], grad_steps=1)
    loss, logs, values = reg.evaluate(roll.images, {})
    assert values["aesthetic"].shape == (2,) and np.isfinite(logs["reward/aesthetic"])
    loss.backward()
    grads = [p.grad for p in lora_parameters(be.denoiser)]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in scorer.parameters())


def test_registry_turns_aesthetic_off_without_clip_and_adds_custom_terms():
    teacher = _tiny_teacher()
    reg = build_rewards(RewardConfig(clip_path=None), teacher)
    d = reg.describe()
    assert d["depth"]["on"] and d["depth"]["weight"] == 0.9
    assert d["aesthetic"]["on"] is False and "CLIP" in d["aesthetic"]["why"]
    reg.register("brightness", lambda img, batch: img.mean(dim=(1, 2, 3)), 0.5)
    img = torch.rand(2, 3, 28, 28, requires_grad=True)
    batch = {"disp": torch.rand(2, 1, 28, 28) + 0.1, "valid": torch.ones(2, 1, 28, 28, dtype=torch.bool)}
    loss, logs, values = reg.evaluate(img, batch)
    expected = 0.9 * (1 - values["depth"]).mean() - 0.5 * values["brightness"].mean()
    assert torch.allclose(loss, expected)
    assert logs["reward/aesthetic"] is None
    loss.backward()
    assert img.grad is not None and img.grad.abs().sum() > 0


def test_lora_disabled_gives_the_base_sample_and_the_anchor_pulls_back_to_it():
    from bridgedepth.d2i.lora import lora_disabled
    from bridgedepth.d2i.rewards import anchor_reward

    torch.manual_seed(3)
    be = TinyBackend.create(resolution=16, channels=(8, 16), default_steps=3)
    disp = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        base = sample(be, disp, num_steps=3, seeds=[4, 5]).images
    add_lora(be.denoiser, rank=2, alpha=2)
    for n, p in be.denoiser.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.2)
    with torch.no_grad():
        tuned = sample(be, disp, num_steps=3, seeds=[4, 5]).images
        with lora_disabled(be.denoiser):
            ref = sample(be, disp, num_steps=3, seeds=[4, 5]).images
    assert (tuned - base).abs().max() > 1e-3  # the LoRA changes the images ...
    torch.testing.assert_close(ref, base, rtol=0, atol=1e-6)  # ... and switched off, they are the base's
    assert all(p.requires_grad for p in lora_parameters(be.denoiser))  # trainable again after the block
    tuned_again = sample(be, disp, num_steps=3, seeds=[4, 5]).images.detach()
    torch.testing.assert_close(tuned_again, tuned)

    reg = build_rewards(RewardConfig(clip_path=None, anchor_weight=2.0), _tiny_teacher())
    assert reg.describe()["anchor"] == {"weight": 2.0, "on": True}
    roll = sample(be, disp, num_steps=3, seeds=[4, 5], grad_steps=1)
    batch = {"disp01": disp, "valid": torch.ones(2, 1, 16, 16, dtype=torch.bool), "reference_images": ref}
    loss, logs, values = reg.evaluate(roll.images, batch)
    mse = (roll.images.detach() - ref).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(values["anchor"].detach(), -mse)
    assert logs["reward/anchor"] < 0
    # a step of plain gradient descent on the anchor alone moves the tuned images towards the base's
    reg.terms["depth"].weight = 0.0
    loss, _, _ = reg.evaluate(roll.images, batch)
    loss.backward()
    with torch.no_grad():
        for p in lora_parameters(be.denoiser):
            p -= 0.5 * p.grad / (p.grad.norm() + 1e-12) * p.norm().clamp_min(1e-3) * 0.2
        after = sample(be, disp, num_steps=3, seeds=[4, 5]).images
    assert (after - ref).pow(2).mean() < mse.mean()
    with pytest.raises(KeyError, match="reference_images"):
        anchor_reward(roll.images, {})


def _tiny_teacher():
    from transformers import DepthAnythingForDepthEstimation

    from bridgedepth.d2i.teacher import tiny_teacher_config

    return DepthAnythingForDepthEstimation(tiny_teacher_config()).eval()
