"""`bridge d2i pretrain`: train the tiny backend from scratch on source RGB-D samples.

Epsilon-, v- or clean-image prediction MSE (``d2i.prediction_type``) on (noisy RGB ++ normalised
disparity) with random horizontal flips. The source set is downsampled to the d2i resolution once and
held in memory (64 px: about 16 KB per sample).
With ``d2i.pretrain_ema`` > 0 an exponential moving average of the weights (diffusers' ``EMAModel``)
is kept beside them and is what the finished run saves (the usual practice for diffusion models;
what it changed on the shipped model is measured in docs/zoo.md).
Resumable: ``OUT/checkpoint`` holds the last UNet + optimizer state (and the average); finished runs
write the diffusers layout ``OUT/unet``, ``OUT/scheduler`` and ``OUT/bridge.json``."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from ..config import Config
from ..errors import InputError
from ..io import usual_permissions
from .backend import write_json_atomic
from .common import check_resume_settings, load_source, pick_device, prepare_source, recover_checkpoint, swap_in_checkpoint
from .tiny import TinyBackend, build_scheduler


CHECKPOINT = "checkpoint"  # OUT/checkpoint: the resume state of an unfinished run


def _encode_source(samples: list[dict], resolution: int, chunk: int = 256, condition: str = "depth"
                   ) -> dict[str, torch.Tensor]:
    parts = [prepare_source(samples[i:i + chunk], resolution, condition=condition)
             for i in range(0, len(samples), chunk)]
    return {k: torch.cat([p[k] for p in parts]) for k in ("rgb", "disp01")}


def denoising_loss(backend: TinyBackend, rgb01: torch.Tensor, disp01: torch.Tensor,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Epsilon-, v- or clean-image ("sample") prediction MSE, by the scheduler's ``prediction_type``, at
    uniformly drawn training timesteps."""
    sched = backend.scheduler
    b = rgb01.shape[0]
    x0 = rgb01 * 2 - 1
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=generator).to(x0.device)
    xt = sched.add_noise(x0, noise, t)
    pred = backend.predict(xt, t, backend.encode_condition(disp01))
    if sched.config.prediction_type == "v_prediction":
        return F.mse_loss(pred, sched.get_velocity(x0, noise, t))
    if sched.config.prediction_type == "sample":
        return F.mse_loss(pred, x0)
    return F.mse_loss(pred, noise)


def pretrain(cfg: Config, source, out_dir: str | os.PathLike, *, steps: int | None = None,
             progress: bool = True) -> dict:
    """Train the tiny backend; returns a summary dict (also written to OUT/pretrain_summary.json).

    ``source``: a shard directory or an iterable of sample dicts (rgb, depth, valid)."""
    from dataclasses import replace

    dc = cfg.d2i
    # a new tiny model: the config's sampling settings (none set: 64 px, 20 steps) go into its bridge.json
    dc = replace(dc, resolution=int(dc.resolution or 64), num_steps=int(dc.num_steps or 20))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = int(steps if steps is not None else dc.pretrain_steps)
    device = pick_device(cfg.device)
    torch.manual_seed(dc.seed)
    samples = load_source(source, limit=dc.pretrain_max_samples)
    data = _encode_source(samples, dc.resolution, condition=dc.pretrain_condition)
    n = data["rgb"].shape[0]
    del samples
    ckpt = out / CHECKPOINT
    if dc.pretrain_init:
        backend = _initial(Path(dc.pretrain_init), dc)
    else:
        backend = TinyBackend.create(dc.resolution, tuple(dc.channels), dc.layers_per_block, dc.num_steps,
                                     patch=dc.patch, prediction_type=dc.prediction_type)
    start = 0
    opt = torch.optim.AdamW(backend.denoiser.parameters(), lr=dc.pretrain_lr, weight_decay=1e-4)
    settings = _resume_settings(dc, source)
    recover_checkpoint(ckpt)
    if (ckpt / "state.pt").exists():
        check_resume_settings(ckpt, settings, out, "pretraining",
                              "d2i.pretrain_steps (to extend the run), d2i.save_every and d2i.pretrain_ema")
        backend.denoiser = UNet2DModel.from_pretrained(ckpt / "unet").to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(backend.denoiser.parameters(), lr=dc.pretrain_lr, weight_decay=1e-4)
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
    backend.to(device)
    ema = None
    if dc.pretrain_ema:
        if not 0.0 < dc.pretrain_ema < 1.0:
            raise InputError(f"d2i.pretrain_ema {dc.pretrain_ema}: expected 0 (off) or a decay in (0, 1)")
        ema = EMAModel(backend.denoiser.parameters(), decay=float(dc.pretrain_ema))
        if start and (ckpt / "ema.pt").exists():
            ema.load_state_dict(torch.load(ckpt / "ema.pt", map_location="cpu", weights_only=True))
            ema.to(device)
        elif start:
            # a checkpoint written without an average: start the average from the resumed weights
            ema.optimization_step = start
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + start + 1) / 50) * (0.1 + 0.9 * max(0.0, 1 - (s + start) / max(steps, 1))))
    gen = torch.Generator("cpu").manual_seed(dc.seed * 1000003 + start)
    log_path = out / "pretrain_log.jsonl"
    losses: list[float] = []
    t0 = time.time()
    bar = tqdm(range(start, steps), desc="d2i pretrain", disable=not progress, initial=start, total=steps)
    backend.denoiser.train()
    for step in bar:
        idx = torch.randint(0, n, (min(dc.pretrain_batch_size, n),), generator=gen)
        rgb, disp = data["rgb"][idx], data["disp01"][idx]
        flip = torch.rand(len(idx), generator=gen) < 0.5
        rgb = torch.where(flip[:, None, None, None], rgb.flip(-1), rgb).to(device)
        disp = torch.where(flip[:, None, None, None], disp.flip(-1), disp).to(device)
        loss = denoising_loss(backend, rgb, disp, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(backend.denoiser.parameters(), 1.0)
        opt.step()
        sched.step()
        if ema is not None:
            ema.step(backend.denoiser.parameters())
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        with open(log_path, "a") as f:
            f.write(json.dumps({"step": step + 1, "loss": losses[-1], "grad_norm": float(gn),
                                "lr": sched.get_last_lr()[0]}) + "\n")
        if dc.save_every and (step + 1) % dc.save_every == 0 and step + 1 < steps:
            _save_checkpoint(backend, opt, step + 1, ckpt, ema, settings)
    if ema is not None:
        ema.copy_to(backend.denoiser.parameters())
    backend.denoiser.eval()
    params = sum(p.numel() for p in backend.denoiser.parameters())
    summary = {"steps": steps, "resumed_from": start, "samples": n, "resolution": dc.resolution,
               "condition": dc.pretrain_condition, "patch": backend.patch, "init": dc.pretrain_init,
               "prediction_type": dc.prediction_type, "parameters": params, "ema": float(dc.pretrain_ema),
               "final_loss": float(sum(losses[-50:]) / max(len(losses[-50:]), 1)) if losses else None,
               "seconds": round(time.time() - t0, 1)}
    backend.save(out, extra={"pretrain": summary})
    write_json_atomic(out / "pretrain_summary.json", summary)
    if ckpt.exists():
        shutil.rmtree(ckpt)
    return summary


def _initial(d: Path, dc) -> TinyBackend:
    """The tiny backend saved in ``d``, checked against the run's resolution. A different
    ``d2i.prediction_type`` gives it a new scheduler: training then teaches the old features the new target."""
    if not (d / "unet").is_dir():
        raise InputError(f"d2i.pretrain_init {d}: not a tiny d2i directory (no unet/ folder)")
    b = TinyBackend.load(d)
    if b.resolution != int(dc.resolution):
        raise InputError(f"d2i.pretrain_init {d}: trained at {b.resolution} px, the run asks for "
                         f"d2i.resolution {dc.resolution}")
    if b.scheduler.config.prediction_type != dc.prediction_type:
        # a new training target on the old features (the output layer learns the new target)
        b.scheduler = build_scheduler(dc.prediction_type)
    b.default_steps = int(dc.num_steps)
    return b


# d2i settings a resumed pretraining may change: its length (to extend it), the checkpoint cadence, the
# sampling steps written into the finished model's bridge.json and the weight average (which only
# watches the training: a checkpoint without one starts it from the resumed weights)
RESUME_FREE = ("pretrain_steps", "save_every", "num_steps", "guidance_scale", "dtype", "cache_dir", "path",
               "pretrain_ema")


def _resume_settings(dc, source) -> dict:
    """What a pretraining checkpoint's weights depend on: the ``d2i.*`` settings less ``RESUME_FREE``
    and the source folder (when given as a path)."""
    from dataclasses import asdict

    out = {f"d2i.{k}": v for k, v in asdict(dc).items() if k not in RESUME_FREE}
    if isinstance(source, (str, os.PathLike)):
        out["source"] = str(Path(source).resolve())
    return out


def _save_checkpoint(backend: TinyBackend, opt, step: int, ckpt: Path, ema: EMAModel | None = None,
                     settings: dict | None = None) -> None:
    """Write the checkpoint into ``checkpoint.tmp`` and swap it in (:func:`swap_in_checkpoint`: a kill
    at any point leaves a complete checkpoint)."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    backend.denoiser.save_pretrained(tmp / "unet")
    usual_permissions(tmp / "unet")  # safetensors writes 0600
    torch.save({"optimizer": opt.state_dict(), "step": step}, tmp / "state.pt")
    if ema is not None:
        torch.save(ema.state_dict(), tmp / "ema.pt")
    swap_in_checkpoint(tmp, ckpt, settings)
