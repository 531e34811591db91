"""`bridge d2i finetune`: reward-gradient LoRA fine-tuning of a d2i backend (DRaFT-K / VADER style).

Per step: draw a batch of source depth maps, roll out the sampler from fresh noise with gradients only
through the last K steps, score the images with the reward registry, minimise
``w_depth * (1 - cos) - w_aes * aesthetic`` w.r.t. the LoRA weights (AdamW, grad-norm clip). Accelerate
handles device placement, mixed precision and multi-GPU (launch with ``accelerate launch``).

Outputs in OUT: ``pytorch_lora_weights.safetensors`` + ``bridge.json`` (kind "lora", base directory),
``finetune_log.jsonl`` (one line per step), ``samples/step-*.png`` grids (source depth | generated |
depth inferred back), ``checkpoints/last`` (resume), ``finetune_summary.json`` (held-out before/after)."""

from __future__ import annotations

import json
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import Config
from ..errors import InputError
from .backend import BRIDGE_JSON, LORA_FILE, load_backend, read_bridge_json, write_json_atomic
from .common import load_source, prepare_source
from .lora import add_lora, load_lora, lora_parameters, save_lora
from .rewards import aligned_absrel, build_rewards, masked_cosine
from .sampler import sample
from .teacher import load_teacher, teacher_disparity


@torch.no_grad()
def image_statistics(images01: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image colour and texture statistics (B,): mean HSV saturation, mean |Laplacian| of the grey
    image (texture energy), and the share of the image taken by its most common coarse colour (a
    collapse to one colour drives it towards 1)."""
    x = images01.detach().float().clamp(0, 1)
    mx, mn = x.max(1).values, x.min(1).values
    sat = ((mx - mn) / mx.clamp_min(1e-6)).flatten(1).mean(1)
    g = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], device=x.device).view(1, 1, 3, 3)
    tex = torch.nn.functional.conv2d(g, lap).abs().flatten(1).mean(1)
    q = (x * 3.999).long()  # 4 levels per channel: 64 coarse colours
    code = (q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2]).flatten(1)
    dom = torch.stack([torch.bincount(c, minlength=64).max() for c in code]).float() / code.shape[1]
    return {"saturation": sat, "texture": tex, "dominant_colour_share": dom}


@torch.no_grad()
def evaluate_depth(backend, teacher, data: dict, *, num_steps: int, seeds: list[int], batch_size: int = 8,
                   mean_centre: bool = True, aesthetic=None) -> dict:
    """Held-out depth consistency (cosine, centred and not), teacher AbsRel on generated images, colour and
    texture statistics (:func:`image_statistics`) and, with an ``aesthetic`` scorer (images -> (B,)), its mean."""
    cos_c, cos_r, absrel, aes = [], [], [], []
    stats: dict[str, list] = {}
    dev = backend.device
    n = data["disp01"].shape[0]
    for i in range(0, n, batch_size):
        sl = slice(i, min(i + batch_size, n))
        roll = sample(backend, data["disp01"][sl], num_steps=num_steps, seeds=seeds[sl])
        pred = teacher_disparity(teacher, roll.images)
        disp, valid = data["disp"][sl, 0].to(dev), data["valid"][sl, 0].to(dev)
        cos_c.append(masked_cosine(pred, disp, valid, True).cpu())
        cos_r.append(masked_cosine(pred, disp, valid, False).cpu())
        absrel.append(aligned_absrel(pred, disp, valid).cpu())
        for k, v in image_statistics(roll.images).items():
            stats.setdefault(k, []).append(v.cpu())
        if aesthetic is not None:
            aes.append(aesthetic(roll.images.float()).detach().float().cpu())
    c, r, a = torch.cat(cos_c), torch.cat(cos_r), torch.cat(absrel)
    out = {"depth_cosine_centred": float(c.mean()), "depth_cosine_raw": float(r.mean()),
           "depth_reward": float((c if mean_centre else r).mean()), "teacher_absrel": float(np.nanmean(a.numpy())),
           "count": int(n)}
    out.update({k: float(torch.cat(v).mean()) for k, v in stats.items()})
    if aes:
        out["aesthetic"] = float(torch.cat(aes).mean())
    return out


def _grid(data: dict, images: torch.Tensor, pred: torch.Tensor) -> np.ndarray:
    """Rows: source disparity | generated | teacher disparity of the generated image (greyscale)."""

    def norm(d):
        d = d.detach().float().cpu()
        lo = d.flatten(1).quantile(0.02, dim=1).view(-1, 1, 1)
        hi = d.flatten(1).quantile(0.98, dim=1).view(-1, 1, 1)
        return ((d - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)

    src = data["disp01"][:, 0].cpu()
    back = norm(pred)
    rows = []
    for b in range(images.shape[0]):
        cols = [src[b][..., None].expand(-1, -1, 3), images[b].detach().float().cpu().permute(1, 2, 0),
                back[b][..., None].expand(-1, -1, 3)]
        rows.append(torch.cat(cols, 1))
    return (torch.cat(rows, 0).numpy() * 255).round().astype(np.uint8)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    os.replace(tmp, path)


def finetune(cfg: Config, d2i_dir: str | os.PathLike, teacher, source, out_dir: str | os.PathLike, *,
             heldout=None, steps: int | None = None, progress: bool = True, accelerator=None) -> dict:
    """Fine-tune LoRA on ``d2i_dir`` with rewards from ``teacher`` (a directory or a loaded model).

    ``source``/``heldout``: shard directories or lists of sample dicts; without ``heldout`` the last
    ``finetune.heldout`` source samples are held out. Returns the summary dict."""
    from accelerate import Accelerator

    fc = cfg.finetune
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = int(steps if steps is not None else fc.steps)
    if accelerator is None:
        cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
        accelerator = Accelerator(mixed_precision=fc.mixed_precision, cpu=cpu)
    dev = accelerator.device
    torch.manual_seed(fc.seed + accelerator.process_index)
    rng = random.Random(fc.seed * 7919 + accelerator.process_index)

    base_info = read_bridge_json(Path(d2i_dir))
    backend = load_backend(d2i_dir, dev).configure(cfg.d2i)
    backend.denoiser.requires_grad_(False)
    add_lora(backend.denoiser, fc.lora_rank, fc.lora_alpha, fc.lora_targets)
    backend.denoiser.to(dev)
    if isinstance(teacher, (str, os.PathLike)):
        teacher_dir = str(Path(teacher).resolve())
        teacher = load_teacher(teacher)
    else:
        teacher_dir = None
    teacher.to(dev)
    rewards = build_rewards(fc.reward, teacher, dev)
    aes_term = rewards.terms.get("aesthetic")
    aesthetic_fn = (lambda img: aes_term.fn(img, {})) if aes_term is not None else None
    num_steps = int(fc.num_steps or cfg.d2i.num_steps)

    res = backend.resolution
    samples = load_source(source, limit=fc.max_samples + (0 if heldout is not None else fc.heldout))
    if heldout is None:
        if len(samples) <= fc.heldout:
            raise InputError(f"{source}: need more than finetune.heldout={fc.heldout} source samples, "
                             f"got {len(samples)}")
        held, samples = samples[-fc.heldout:], samples[:-fc.heldout]
    else:
        held = load_source(heldout, limit=max(fc.heldout, 1))
    train = prepare_source(samples, res)
    held_data = prepare_source(held, res)
    held_seeds = [10_000 + i for i in range(len(held))]
    ntrain = train["disp01"].shape[0]

    params = lora_parameters(backend.denoiser)
    opt = torch.optim.AdamW(params, lr=fc.lr, weight_decay=1e-4)
    denoiser, opt = accelerator.prepare(backend.denoiser, opt)
    backend.denoiser = denoiser

    ckpt = out / "checkpoints" / "last"
    start = 0
    before = None
    if (ckpt / "state.pt").exists():
        load_lora(accelerator.unwrap_model(denoiser), ckpt / LORA_FILE)
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        rng.setstate(_tuple_state(state["rng"]))
        before = json.loads((ckpt / "before.json").read_text())
    denoiser.eval()  # no dropout/batch statistics: rewards drive the update
    if before is None:
        before = evaluate_depth(backend, teacher, held_data, num_steps=num_steps, seeds=held_seeds,
                                mean_centre=fc.reward.depth_mean_centre, aesthetic=aesthetic_fn)
    log_path = out / "finetune_log.jsonl"
    if start == 0 and log_path.exists():
        log_path.unlink()
    gen = torch.Generator("cpu").manual_seed(fc.seed * 100003 + start * 31 + accelerator.process_index)
    t0 = time.time()
    bar = tqdm(range(start, steps), desc="d2i finetune", initial=start, total=steps,
               disable=not (progress and accelerator.is_main_process))
    for step in bar:
        idx = torch.randint(0, ntrain, (min(fc.batch_size, ntrain),), generator=gen)
        flip = torch.rand(len(idx), generator=gen) < 0.5
        batch = {k: torch.where(flip[:, None, None, None], train[k][idx].flip(-1), train[k][idx]).to(dev)
                 for k in ("disp01", "disp", "valid")}
        seeds = torch.randint(0, 2**62, (len(idx),), generator=gen).tolist()
        with accelerator.autocast():
            roll = sample(backend, batch["disp01"], num_steps=num_steps, seeds=seeds, grad_steps=fc.grad_steps,
                          random_cutoff=fc.random_cutoff, rng=rng, checkpointing=fc.checkpointing,
                          decoder_checkpointing=fc.decoder_checkpointing)
            loss, logs, values = rewards.evaluate(roll.images, batch)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        gn = accelerator.clip_grad_norm_(params, fc.grad_clip) if fc.grad_clip else _grad_norm(params)
        opt.step()
        rec = {"step": step + 1, "loss": float(loss.detach()), "grad_norm": float(gn), "k": roll.grad_steps, **logs}
        if accelerator.is_main_process and fc.log_every and (step + 1) % fc.log_every == 0:
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            accelerator.log({k: v for k, v in rec.items() if k != "step"}, step=step + 1)  # --log-with trackers
        bar.set_postfix(loss=f"{rec['loss']:.4f}", depth=f"{logs.get('reward/depth', 0):.3f}")
        if accelerator.is_main_process and fc.sample_every and (step + 1) % fc.sample_every == 0:
            with torch.no_grad():
                pred = teacher_disparity(teacher, roll.images.detach().float())
            _write_png(out / "samples" / f"step-{step + 1:06d}.png",
                       _grid({k: v.cpu() for k, v in batch.items()}, roll.images, pred))
        if accelerator.is_main_process and fc.save_every and (step + 1) % fc.save_every == 0 and step + 1 < steps:
            _save_ckpt(accelerator.unwrap_model(denoiser), opt, step + 1, rng, before, ckpt)
    accelerator.wait_for_everyone()
    after = evaluate_depth(backend, teacher, held_data, num_steps=num_steps, seeds=held_seeds,
                           mean_centre=fc.reward.depth_mean_centre, aesthetic=aesthetic_fn)
    summary = {"steps": steps, "resumed_from": start, "seconds": round(time.time() - t0, 1), "sampler_steps": num_steps,
               "grad_steps": fc.grad_steps, "random_cutoff": fc.random_cutoff, "rewards": rewards.describe(),
               "heldout_before": before, "heldout_after": after,
               "depth_reward_gain": after["depth_reward"] - before["depth_reward"]}
    if "aesthetic" in after:
        summary["aesthetic_gain"] = after["aesthetic"] - before["aesthetic"]
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(denoiser)
        save_lora(model, out / LORA_FILE, prefix=getattr(backend, "lora_prefix", "unet."))
        with torch.no_grad():
            roll = sample(backend, held_data["disp01"][:4], num_steps=num_steps, seeds=held_seeds[:4])
            pred = teacher_disparity(teacher, roll.images)
        _write_png(out / "samples" / "final-heldout.png", _grid({k: v[:4] for k, v in held_data.items()},
                                                                 roll.images, pred))
        write_json_atomic(out / BRIDGE_JSON, {
            "kind": "lora", "base": str(Path(d2i_dir).resolve()), "backend": base_info.get("backend"),
            "lora": {"rank": fc.lora_rank, "alpha": fc.lora_alpha, "targets": list(fc.lora_targets)},
            "teacher": teacher_dir, "num_steps": base_info.get("num_steps"), "resolution": base_info.get("resolution")})
        write_json_atomic(out / "finetune_summary.json", summary)
        if ckpt.exists():
            shutil.rmtree(ckpt.parent)
    return summary


def _grad_norm(params) -> torch.Tensor:
    g = [p.grad.detach().norm() for p in params if p.grad is not None]
    return torch.stack(g).norm() if g else torch.zeros(())


def _tuple_state(s):
    return tuple(_tuple_state(x) for x in s) if isinstance(s, (list, tuple)) else s


def _save_ckpt(model, opt, step: int, rng: random.Random, before: dict, ckpt: Path) -> None:
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_lora(model, tmp / LORA_FILE)
    version, internal, gauss = rng.getstate()
    torch.save({"optimizer": opt.state_dict(), "step": step,
                "rng": [version, list(internal), gauss]}, tmp / "state.pt")
    (tmp / "before.json").write_text(json.dumps(before))
    if ckpt.exists():
        shutil.rmtree(ckpt)
    os.replace(tmp, ckpt)
