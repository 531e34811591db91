"""Generator backends behind one interface, and loading of saved d2i directories.

A backend exposes what the sampler needs and nothing else:

* ``denoiser``: the nn.Module that LoRA is attached to (UNet / Flux transformer);
* ``encode_condition(disp01)``: (B,1,H,W) normalised disparity in [0,1] -> condition tensor(s);
* ``initial_latents(generators, device)``: starting noise, one generator per image (batch-independent);
* ``schedule(num_steps, device)``: a :class:`Schedule` (timesteps + our own update rule);
* ``predict(latents, t, cond)``: the denoiser output for one step;
* ``decode(latents)``: images in [0, 1], (B,3,H,W), differentiable.

A d2i directory holds ``bridge.json`` naming the backend; a fine-tuned directory additionally holds
``pytorch_lora_weights.safetensors`` and names its base directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import InputError

BRIDGE_JSON = "bridge.json"
LORA_FILE = "pytorch_lora_weights.safetensors"


@dataclass
class Schedule:
    """Timesteps plus a pure-tensor update rule ``step(i, model_output, latents) -> latents``."""

    timesteps: torch.Tensor
    step: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
    kind: str


def ddim_schedule(scheduler, num_steps: int, device) -> Schedule:
    """Deterministic DDIM (eta = 0) with the timesteps/alphas of a diffusers DDIMScheduler config.

    Written out here (instead of calling ``scheduler.step``) so that the update is a plain
    differentiable expression of (model output, latents) with no scheduler state."""
    scheduler.set_timesteps(num_steps, device=device)
    cfg = scheduler.config
    ts = scheduler.timesteps.clone()
    ac = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
    ratio = cfg.num_train_timesteps // num_steps
    final = torch.tensor(1.0) if cfg.set_alpha_to_one else scheduler.alphas_cumprod[0]
    a_t = [ac[int(t)] for t in ts]
    a_prev = [ac[int(t) - ratio] if int(t) - ratio >= 0 else final.to(device) for t in ts]
    pred = cfg.prediction_type

    def step(i: int, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        at, ap = a_t[i].to(x.dtype), a_prev[i].to(x.dtype)
        if pred == "epsilon":
            x0 = (x - (1 - at).sqrt() * out) / at.sqrt()
            eps = out
        elif pred == "v_prediction":
            x0 = at.sqrt() * x - (1 - at).sqrt() * out
            eps = at.sqrt() * out + (1 - at).sqrt() * x
        else:  # "sample"
            x0 = out
            eps = (x - at.sqrt() * x0) / (1 - at).sqrt()
        if cfg.clip_sample:
            # as diffusers: epsilon is taken before x0 is clipped
            x0 = x0.clamp(-cfg.clip_sample_range, cfg.clip_sample_range)
        return ap.sqrt() * x0 + (1 - ap).sqrt() * eps

    return Schedule(ts, step, "ddim")


def flow_schedule(scheduler, num_steps: int, device, **set_kwargs) -> Schedule:
    """Flow-matching Euler (FlowMatchEulerDiscreteScheduler): x <- x + (sigma_next - sigma) * v."""
    scheduler.set_timesteps(num_steps, device=device, **set_kwargs)
    sig = scheduler.sigmas.to(device=device, dtype=torch.float32)
    ts = scheduler.timesteps.clone()

    def step(i: int, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (x.float() + (sig[i + 1] - sig[i]) * out.float()).to(out.dtype)

    return Schedule(ts, step, "flow")


class Backend:
    """Base class; see the module docstring for the contract."""

    name = "base"
    lora_prefix = "unet."  # key prefix of the diffusers LoRA file
    resolution: int = 64
    default_steps: int = 20

    denoiser: torch.nn.Module

    def configure(self, dc) -> "Backend":
        """Apply a D2IConfig's sampling settings (latent backends: resolution, steps, guidance). The
        tiny backend's resolution is fixed by its trained UNet."""
        return self

    def to(self, device, dtype=None):  # pragma: no cover - overridden
        raise NotImplementedError

    def encode_condition(self, disp01: torch.Tensor) -> Any:
        raise NotImplementedError

    def initial_latents(self, generators: list[torch.Generator], device) -> torch.Tensor:
        raise NotImplementedError

    def schedule(self, num_steps: int, device) -> Schedule:
        raise NotImplementedError

    def predict(self, latents: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def save(self, out_dir: str | os.PathLike) -> None:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)


def read_bridge_json(d: Path) -> dict:
    """``bridge.json`` of a d2i directory. A plain diffusers directory without one is recognised by its
    layout: ``transformer/`` -> flux-depth, ``controlnet/`` -> sd-controlnet (default sizes/steps)."""
    p = Path(d) / BRIDGE_JSON
    if not p.exists():
        if (Path(d) / "transformer").is_dir():
            return {"backend": "flux-depth"}
        if (Path(d) / "controlnet").is_dir():
            return {"backend": "sd-controlnet"}
        raise InputError(f"{d}: not a d2i model directory (no {BRIDGE_JSON}, no diffusers transformer/ or controlnet/)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: not valid JSON: {e}") from e


def load_backend(path: str | os.PathLike, device: str | torch.device = "cpu") -> Backend:
    """Load a d2i directory: a base backend, or a fine-tuned one (base + LoRA weights)."""
    d = Path(path)
    info = read_bridge_json(d)
    if info.get("kind") == "lora":
        base_dir = Path(info["base"])
        if not base_dir.is_absolute():
            base_dir = (d / base_dir).resolve()
        backend = load_backend(base_dir, device)
        from .lora import add_lora, load_lora

        add_lora(backend.denoiser, rank=info["lora"]["rank"], alpha=info["lora"]["alpha"],
                 targets=info["lora"]["targets"])
        load_lora(backend.denoiser, d / LORA_FILE)
        backend.denoiser.to(device)
        return backend
    name = info.get("backend")
    if name == "tiny":
        from .tiny import TinyBackend

        return TinyBackend.load(d).to(device)
    if name == "flux-depth":
        from .flux import FluxDepthBackend

        return FluxDepthBackend.load(d).to(device)
    if name == "sd-controlnet":
        from .sd import SDControlNetBackend

        return SDControlNetBackend.load(d).to(device)
    raise InputError(f"{d / BRIDGE_JSON}: unknown backend {name!r} (tiny, flux-depth, sd-controlnet)")
