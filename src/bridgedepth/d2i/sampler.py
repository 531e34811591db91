"""Our sampling loop: one loop for every backend, with truncated reward backprop.

``sample(...)`` runs ``num_steps`` denoising steps. With ``grad_steps=0`` nothing builds a graph
(generation). With ``grad_steps=K`` only the last K steps keep gradients (DRaFT-K / VADER style); the
earlier steps run under ``torch.no_grad``. With ``random_cutoff=True`` K is drawn uniformly from
1..``grad_steps`` once per rollout. Each gradient step's denoiser call is wrapped in
``torch.utils.checkpoint`` (use_reentrant=False) when ``checkpointing`` is on, so activations are
recomputed in backward instead of stored; the decoder can be checkpointed too."""

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
           rng: random.Random | None = None, checkpointing: bool = True,
           decoder_checkpointing: bool = False) -> Rollout:
    """Denoise from noise to images conditioned on ``disp01`` (B,1,H,W) in [0,1] (the backend's size)."""
    device = backend.device
    num_steps = int(num_steps or backend.default_steps)
    b = disp01.shape[0]
    if latents is None:
        if generators is None:
            seeds = seeds if seeds is not None else list(range(b))
            generators = make_generators(seeds)
        if len(generators) != b:
            raise ValueError(f"need one generator per image: {len(generators)} != {b}")
        latents = backend.initial_latents(generators, device)
    k = max(0, min(int(grad_steps), num_steps))
    if k and random_cutoff:
        k = (rng or random).randint(1, k)
    sched = backend.schedule(num_steps, device)
    first_grad = num_steps - k
    with torch.no_grad():
        cond_ng = backend.encode_condition(disp01.to(device))
    cond = cond_ng
    x = latents
    for i, t in enumerate(sched.timesteps):
        if i < first_grad:
            with torch.no_grad():
                out = backend.predict(x, t, cond_ng)
                x = sched.step(i, out, x)
            continue
        if checkpointing:
            out = checkpoint(backend.predict, x, t, cond, use_reentrant=False)
        else:
            out = backend.predict(x, t, cond)
        x = sched.step(i, out, x)
    if k == 0:
        with torch.no_grad():
            images = backend.decode(x)
    elif decoder_checkpointing:
        images = checkpoint(backend.decode, x, use_reentrant=False)
    else:
        images = backend.decode(x)
    return Rollout(images=images, latents=x, grad_steps=k)
