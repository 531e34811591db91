"""The embedded ``tiny`` backend: a small pixel-space diffusers UNet2DModel.

Input channels: the noisy RGB image (in [-1, 1]) concatenated with the normalised source disparity
(mapped to [-1, 1]); output: the epsilon (or v) prediction for the RGB channels. DDIM schedule
(diffusers DDIMScheduler config).

``patch`` > 1 runs the UNet on pixel-unshuffled images (space-to-depth by ``patch``: a 96 px RGB image
becomes 24 x 24 x 48 channels at patch 4, and the condition 24 x 24 x 16), and pixel-shuffles its
output back: a latent-free way to make a pixel-space model at 96-128 px affordable on a CPU (the
UNet's 3x3 convolutions still mix neighbouring patches, so there is no block grid)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DModel

from ..errors import InputError
from ..io import usual_permissions
from .backend import BRIDGE_JSON, Backend, Schedule, ddim_schedule, load_kwargs, read_bridge_json, write_json_atomic


def build_unet(resolution: int = 64, channels=(32, 64, 64), layers_per_block: int = 1,
               attention_head_dim: int = 16, patch: int = 1) -> UNet2DModel:
    """The tiny UNet: plain conv blocks at full resolution, attention on the lower levels (LoRA targets).
    With ``patch`` > 1 it works on the pixel-unshuffled image (``resolution / patch`` per side)."""
    if patch < 1 or resolution % patch:
        raise InputError(f"d2i.patch {patch}: must be >= 1 and divide the resolution {resolution}")
    n = len(channels)
    down = ["DownBlock2D"] + ["AttnDownBlock2D"] * (n - 1)
    up = ["AttnUpBlock2D"] * (n - 1) + ["UpBlock2D"]
    groups = 8 if all(c % 8 == 0 for c in channels) else 1
    return UNet2DModel(sample_size=resolution // patch, in_channels=4 * patch * patch, out_channels=3 * patch * patch,
                       block_out_channels=tuple(channels), down_block_types=tuple(down),
                       up_block_types=tuple(up), layers_per_block=layers_per_block,
                       norm_num_groups=groups, attention_head_dim=attention_head_dim)


def build_scheduler(prediction_type: str = "epsilon") -> DDIMScheduler:
    if prediction_type not in ("epsilon", "v_prediction", "sample"):
        raise InputError(f"d2i.prediction_type {prediction_type!r}: expected epsilon, v_prediction or sample")
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=True,
                         set_alpha_to_one=True, prediction_type=prediction_type, timestep_spacing="trailing")


class TinyBackend(Backend):
    name = "tiny"

    def __init__(self, unet: UNet2DModel, scheduler: DDIMScheduler, default_steps: int = 20, patch: int = 1):
        # NHWC: oneDNN's native layout on CPU (sampling the shipped model 8-29 % faster in A/B rounds,
        # docs/d2i.md), the tensor cores' on GPU; same maths, and diffusers saves the weights contiguous
        self.denoiser = unet.to(memory_format=torch.channels_last)
        self.scheduler = scheduler
        self.patch = int(patch)
        self.resolution = int(unet.config.sample_size) * self.patch  # the size it was trained at (square)
        self.default_steps = default_steps
        self.info = {}

    @property
    def factor(self) -> int:
        """Patch times the UNet's total downsampling (2 per level below the first)."""
        return self.patch * 2 ** (len(self.denoiser.config.block_out_channels) - 1)

    @classmethod
    def create(cls, resolution: int = 64, channels=(32, 64, 64), layers_per_block: int = 1,
               default_steps: int = 20, patch: int = 1, prediction_type: str = "epsilon") -> "TinyBackend":
        return cls(build_unet(resolution, channels, layers_per_block, patch=patch), build_scheduler(prediction_type),
                   default_steps, patch)

    def encode_condition(self, disp01: torch.Tensor) -> torch.Tensor:
        return disp01 * 2 - 1

    def initial_latents(self, generators, device, size=None) -> torch.Tensor:
        h, w = self.check_size(size or (self.resolution, self.resolution))
        noise = [torch.randn((1, 3, h, w), generator=g, dtype=torch.float32) for g in generators]
        return torch.cat(noise).to(device=device, dtype=self.dtype) * self.scheduler.init_noise_sigma

    def schedule(self, num_steps: int, device, size=None) -> Schedule:
        return ddim_schedule(self.scheduler, num_steps, device)

    def predict(self, latents, t, cond, size=None):
        tt = t.expand(latents.shape[0]) if t.ndim == 0 else t
        p = self.patch
        if p == 1:
            x = torch.cat([latents, cond.to(latents.dtype)], dim=1)
        else:
            x = torch.cat([F.pixel_unshuffle(latents, p), F.pixel_unshuffle(cond.to(latents.dtype), p)], dim=1)
        out = self.denoiser(x.contiguous(memory_format=torch.channels_last), tt).sample.contiguous()
        return out if p == 1 else F.pixel_shuffle(out, p)

    def decode(self, latents, size=None):
        return ((latents.float() + 1) / 2).clamp(0, 1)

    def save(self, out_dir, extra: dict | None = None) -> None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        unet = getattr(self.denoiser, "module", self.denoiser)
        unet.save_pretrained(out / "unet")  # writes config.json + diffusion_pytorch_model.safetensors
        usual_permissions(out / "unet")  # safetensors writes 0600
        self.scheduler.save_pretrained(out / "scheduler")
        info = {"backend": "tiny", "resolution": self.resolution, "num_steps": self.default_steps,
                "patch": self.patch,
                "condition": "robust min-max normalised disparity (near=1) concatenated to the noisy RGB"}
        info.update(extra or {})
        write_json_atomic(out / BRIDGE_JSON, info)

    @classmethod
    def load(cls, d: str | os.PathLike, dtype: torch.dtype | None = None, device=None) -> "TinyBackend":
        d = Path(d)
        info = read_bridge_json(d)
        if not (d / "unet").is_dir():
            raise InputError(f"{d}: tiny d2i directory has no unet/ folder")
        unet = UNet2DModel.from_pretrained(d / "unet", **load_kwargs(dtype, device))
        sched = DDIMScheduler.from_pretrained(d / "scheduler")
        return cls(unet, sched, int(info.get("num_steps", 20)), int(info.get("patch", 1)))
