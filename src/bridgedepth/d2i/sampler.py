"""Our sampling loop: one loop for every backend, with truncated reward backprop.

``sample(...)`` runs ``num_steps`` denoising steps. With ``grad_steps=0`` nothing builds a graph
(generation). With ``grad_steps=K`` only the last K steps keep gradients (DRaFT-K / VADER style); the
earlier steps run under ``torch.no_grad``. With ``random_cutoff=True`` K is drawn uniformly from
1..``grad_steps`` once per rollout.

Activation checkpointing (``checkpointing``): ``True`` / ``"block"`` turns on the denoiser's own
block-level checkpointing (diffusers' ``enable_gradient_checkpointing``: each transformer / UNet block
is recomputed on its own in backward, so at most one block's activations are alive during the
recompute); ``"step"`` wraps each whole gradient-step denoiser call in one ``torch.utils.checkpoint``
(the old behaviour: the recompute then holds every block's activations at once); ``False`` stores all.
``decoder_checkpointing`` does the same for the VAE decoder's blocks (backends without a VAE: one
checkpoint around the decode). The image size is the condition's: (H, W) multiples of the backend's
``factor`` (see :meth:`Backend.bucket`)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from .backend import Backend


@dataclass
class Rollout:
    images: torch.Tensor  # (B,3,H,W) in [0,1]
    latents: torch.Tensor  # final latents
    grad_steps: int  # how many final steps kept gradients


def make_generators(seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def sample(backend: Backend, disp01: torch.Tensor, *, num_steps: int | None = None,
           seeds: list[int] | None = None, generators: list[torch.Generator] | None = None,
           latents: torch.Tensor | None = None, grad_steps: int = 0, random_cutoff: bool = False,
           rng: random.Random | None = None, checkpointing: bool | str = True,
           decoder_checkpointing: bool = False) -> Rollout:
    """Denoise from noise to images conditioned on ``disp01`` (B,1,H,W) in [0,1]; the images have the
    condition's size."""
    if checkpointing not in (True, False, "block", "step"):
        raise ValueError(f"checkpointing {checkpointing!r}: expected True/'block', 'step' or False")
    device = backend.device
    num_steps = int(num_steps or backend.default_steps)
    b = disp01.shape[0]
    size = backend.check_size(disp01.shape[-2:])
    if latents is None:
        if generators is None:
            seeds = seeds if seeds is not None else list(range(b))
            generators = make_generators(seeds)
        if len(generators) != b:
            raise ValueError(f"need one generator per image: {len(generators)} != {b}")
        latents = backend.initial_latents(generators, device, size)
    k = max(0, min(int(grad_steps), num_steps))
    if k and random_cutoff:
        k = (rng or random).randint(1, k)
    block = checkpointing in (True, "block")
    has_vae = getattr(backend, "vae", None) is not None
    if k:
        backend.set_gradient_checkpointing(denoiser=block, decoder=bool(decoder_checkpointing) and has_vae)
    sched = backend.schedule(num_steps, device, size)
    first_grad = num_steps - k
    with torch.no_grad():
        cond = backend.encode_condition(disp01.to(device))
    x = latents
    for i, t in enumerate(sched.timesteps):
        if i < first_grad:
            with torch.no_grad():
                out = backend.predict(x, t, cond, size)
                x = sched.step(i, out, x)
            continue
        if checkpointing == "step":
            out = checkpoint(backend.predict, x, t, cond, size, use_reentrant=False)
        else:
            out = backend.predict(x, t, cond, size)
        x = sched.step(i, out, x)
    if k == 0:
        with torch.no_grad():
            images = backend.decode(x, size)
    elif decoder_checkpointing and not has_vae:
        images = checkpoint(backend.decode, x, size, use_reentrant=False)
    else:
        images = backend.decode(x, size)
    return Rollout(images=images, latents=x, grad_steps=k)
