"""Tiny backend + our sampling loop: equivalence with diffusers' DDIMScheduler loop, truncated backprop."""

import copy
import random

import torch

from bridgedepth.d2i.lora import add_lora, lora_parameters
from bridgedepth.d2i.sampler import make_generators, sample
from bridgedepth.d2i.tiny import TinyBackend


def _backend(res=16):
    torch.manual_seed(0)
    be = TinyBackend.create(resolution=res, channels=(8, 16), default_steps=6)
    # random (non-zero) output layer so that the test exercises the full update
    return be


def _reference_loop(be, disp01, seeds, steps, eta_generator=None):
    """Plain diffusers loop: DDIMScheduler.step(eta=0) on the same UNet (in NCHW layout: the backend
    keeps it channels-last) and initial noise."""
    net = copy.deepcopy(be.denoiser).to(memory_format=torch.contiguous_format)
    sched = be.scheduler
    sched.set_timesteps(steps)
    r = be.resolution
    x = torch.cat([torch.randn((1, 3, r, r), generator=g) for g in make_generators(seeds)]) * sched.init_noise_sigma
    cond = disp01 * 2 - 1
    with torch.no_grad():
        for t in sched.timesteps:
            eps = net(torch.cat([x, cond], 1), t).sample
            x = sched.step(eps, t, x, eta=0.0).prev_sample
    return ((x + 1) / 2).clamp(0, 1)


def test_sampler_matches_diffusers_ddim_loop():
    be = _backend()
    w = be.denoiser.conv_in.weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    disp = torch.rand(3, 1, 16, 16)
    seeds = [1, 2, 3]
    for prediction in ("epsilon", "v_prediction", "sample"):
        be.scheduler.register_to_config(prediction_type=prediction)
        ref = _reference_loop(be, disp, seeds, 6)
        ours = sample(be, disp, num_steps=6, seeds=seeds).images
        assert ours.shape == (3, 3, 16, 16)
        # stated tolerance: 1e-5 absolute on images in [0, 1] (float32 rounding only)
        assert torch.allclose(ours, ref, atol=1e-5), (prediction, (ours - ref).abs().max())
        assert not torch.allclose(ours, ours[[1, 2, 0]])


def test_seeds_are_per_image_not_per_batch():
    be = _backend()
    disp = torch.rand(3, 1, 16, 16)
    full = sample(be, disp, num_steps=4, seeds=[5, 6, 7]).images
    one = sample(be, disp[1:2], num_steps=4, seeds=[6]).images
    assert torch.allclose(full[1:2], one, atol=1e-5)


def _lora_grad(be, disp, k, ckpt, cutoff=False, rng=None):
    for p in lora_parameters(be.denoiser):
        p.grad = None
    roll = sample(be, disp, num_steps=5, seeds=[0, 1], grad_steps=k, checkpointing=ckpt, random_cutoff=cutoff, rng=rng)
    roll.images.mean().backward()
    return roll, torch.cat([p.grad.flatten() for p in lora_parameters(be.denoiser) if p.grad is not None])


def test_truncated_backprop_reaches_lora_and_checkpointing_is_exact():
    be = _backend()
    add_lora(be.denoiser, rank=2, alpha=2)
    for n, p in be.denoiser.named_parameters():
        if "lora_B" in n:  # LoRA B starts at zero; make the adapter active so every LoRA weight gets a gradient
            torch.nn.init.normal_(p, std=0.1)
    assert all(("lora_" in n) == p.requires_grad for n, p in be.denoiser.named_parameters())
    disp = torch.rand(2, 1, 16, 16)
    roll, g_plain = _lora_grad(be, disp, 1, ckpt=False)
    assert roll.grad_steps == 1 and roll.images.requires_grad
    _, g_ckpt = _lora_grad(be, disp, 1, ckpt=True)
    assert g_plain.abs().sum() > 0
    assert torch.allclose(g_plain, g_ckpt, atol=1e-6)
    _, g_full = _lora_grad(be, disp, 5, ckpt=True)
    assert not torch.allclose(g_full, g_plain)
    # no grad at all when K = 0
    r0 = sample(be, disp, num_steps=5, seeds=[0, 1], grad_steps=0)
    assert not r0.images.requires_grad
    # random cutoff drawn once per rollout within 1..K
    ks = {sample(be, disp, num_steps=5, seeds=[0, 1], grad_steps=5, random_cutoff=True,
                 rng=random.Random(i)).grad_steps for i in range(12)}
    assert ks <= set(range(1, 6)) and len(ks) > 1
