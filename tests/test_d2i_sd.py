"""sd-controlnet backend on tiny random components: our loop == StableDiffusionControlNetPipeline."""

import os

import torch

from bridgedepth.d2i.backend import load_backend
from bridgedepth.d2i.lora import add_lora, lora_parameters
from bridgedepth.d2i.sampler import make_generators, sample
from bridgedepth.d2i.sd import EMPTY_EMBEDS, tiny_sd_components, write_bridge_json


def test_sd_controlnet_matches_pipeline_and_backprops(tmp_path):
    from diffusers import StableDiffusionControlNetPipeline

    comps = tiny_sd_components(tmp_path)
    pipe = StableDiffusionControlNetPipeline(**comps, requires_safety_checker=False)
    d = tmp_path / "sd"
    pipe.save_pretrained(d)
    write_bridge_json(d, resolution=16, num_steps=3)
    be = load_backend(d)
    assert (d / EMPTY_EMBEDS).exists()  # cached once; later loads never touch the text encoder
    # written atomically but readable by others (the umask's mode, not mkstemp's private 0600)
    umask = os.umask(0)
    os.umask(umask)
    for name in (EMPTY_EMBEDS, "bridge.json"):
        assert (d / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
    assert not list(d.glob(".*.tmp*"))
    disp = torch.rand(2, 1, 16, 16)
    seeds = [11, 12]
    ours = sample(be, disp, num_steps=3, seeds=seeds).images
    with torch.no_grad():
        ref = pipe(prompt=[""] * 2, image=disp.expand(-1, 3, -1, -1), height=16, width=16, num_inference_steps=3,
                   guidance_scale=1.0, generator=make_generators(seeds), output_type="pt").images
    assert ours.shape == ref.shape == (2, 3, 16, 16)
    # stated tolerance: 1e-4 absolute on [0, 1] images (float32 rounding across VAE/ControlNet paths)
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()

    # the text encoder is not needed any more
    import shutil

    shutil.rmtree(d / "text_encoder")
    be = load_backend(d)
    add_lora(be.denoiser, rank=2, alpha=2)
    for n, p in be.denoiser.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    roll = sample(be, disp, num_steps=3, seeds=seeds, grad_steps=1)
    roll.images.mean().backward()
    g = [p.grad for p in lora_parameters(be.denoiser)]
    assert g and all(x is not None for x in g) and sum(float(x.abs().sum()) for x in g) > 0
    assert all(p.grad is None for p in be.vae.parameters())
