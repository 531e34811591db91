"""flux-depth backend on tiny random components: our loop == FluxControlPipeline; gradient to LoRA."""

import pytest
import torch

from bridgedepth.d2i.backend import load_backend
from bridgedepth.d2i.lora import add_lora, lora_parameters
from bridgedepth.d2i.sampler import make_generators, sample
from bridgedepth.d2i.sd import EMPTY_EMBEDS, write_bridge_json


def test_flux_depth_matches_pipeline_and_backprops(tmp_path, monkeypatch):
    from diffusers import FluxControlPipeline
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    from bridgedepth.d2i.flux import tiny_flux_components

    comps = tiny_flux_components(tmp_path)
    pipe = FluxControlPipeline(**comps)
    d = tmp_path / "flux"
    pipe.save_pretrained(d)
    write_bridge_json(d, resolution=32, num_steps=3, backend="flux-depth", guidance_scale=3.5,
                      max_sequence_length=16)
    be = load_backend(d)
    assert (d / EMPTY_EMBEDS).exists()
    disp = torch.rand(2, 1, 32, 32)
    seeds = [5, 6]
    ours = sample(be, disp, num_steps=3, seeds=seeds).images
    # the pipeline samples the control latent from the VAE posterior with the user's generator; our
    # backend uses the posterior mean. Make the pipeline do the same for the comparison.
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode())
    with torch.no_grad():
        # a tensor control image is taken as already preprocessed ([-1, 1]), as the image processor would give
        ref = pipe(prompt=[""] * 2, control_image=disp.expand(-1, 3, -1, -1) * 2 - 1, height=32, width=32,
                   num_inference_steps=3, guidance_scale=3.5, generator=make_generators(seeds),
                   max_sequence_length=16, output_type="pt").images
    assert ours.shape == ref.shape == (2, 3, 32, 32)
    # stated tolerance: 1e-4 absolute on [0, 1] images
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()

    add_lora(be.denoiser, rank=2, alpha=2)
    for n, p in be.denoiser.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.1)
    roll = sample(be, disp, num_steps=3, seeds=seeds, grad_steps=1)
    roll.images.mean().backward()
    g = [p.grad for p in lora_parameters(be.denoiser)]
    assert g and sum(float(x.abs().sum()) for x in g if x is not None) > 0
    assert all(p.grad is None for p in be.vae.parameters())
    # diffusers-format LoRA file with the transformer prefix; loads back into a fresh backend
    from safetensors.torch import load_file

    from bridgedepth.d2i.lora import load_lora, save_lora

    save_lora(be.denoiser, tmp_path / "lora.safetensors", prefix=be.lora_prefix)
    keys = list(load_file(str(tmp_path / "lora.safetensors")))
    assert keys and all(k.startswith("transformer.") for k in keys)
    be2 = load_backend(d)
    add_lora(be2.denoiser, rank=2, alpha=2)
    load_lora(be2.denoiser, tmp_path / "lora.safetensors")
    with torch.no_grad():
        a = sample(be, disp, num_steps=2, seeds=seeds).images
        b = sample(be2, disp, num_steps=2, seeds=seeds).images
    assert torch.allclose(a, b, atol=1e-6)
