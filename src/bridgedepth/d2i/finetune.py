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

from .. import faults
from ..config import Config
from .backend import BRIDGE_JSON, LORA_FILE, load_backend, read_bridge_json, write_json_atomic
from .common import check_resume_settings, load_source, prepare_source, recover_checkpoint, swap_in_checkpoint
from .lora import add_lora, load_lora, lora_disabled, lora_parameters, save_lora
from .rewards import aesthetic_model, aligned_absrel, build_rewards, masked_cosine
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


def group_by_size(samples: list[dict], bucket) -> list[dict[str, torch.Tensor]]:
    """Prepared maps of ``samples``, one stacked group per aspect bucket (``bucket(h, w) -> (H, W)``);
    each group carries ``index`` (positions in ``samples``, for per-image seeds)."""
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(samples):
        h, w = s["depth"].shape[:2]
        groups.setdefault(tuple(bucket(h, w)), []).append(i)
    out = []
    for size, idx in groups.items():
        g = prepare_source([samples[i] for i in idx], size=size, rgb=False)
        g["index"] = torch.tensor(idx)
        out.append(g)
    return out


@torch.no_grad()
def evaluate_depth(backend, teacher, data, *, num_steps: int, seeds: list[int], batch_size: int = 8,
                   mean_centre: bool = True, aesthetic=None) -> dict:
    """Held-out depth consistency (cosine against the condition, centred and not), teacher AbsRel on
    generated images, colour and texture statistics (:func:`image_statistics`) and, with an ``aesthetic``
    scorer (images -> (B,)), its mean. ``data``: prepared maps (one dict) or a list of size groups
    (:func:`group_by_size`); ``seeds[i]`` is image i's seed."""
    cos_c, cos_r, absrel, aes = [], [], [], []
    stats: dict[str, list] = {}
    dev = backend.device
    groups = data if isinstance(data, list) else [{**data, "index": torch.arange(data["disp01"].shape[0])}]
    chunks = []
    for g in groups:
        n = g["disp01"].shape[0]
        chunks += [(g, slice(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]
    n = sum(g["disp01"].shape[0] for g in groups)
    for g, sl in chunks:
        ss = [seeds[int(j)] for j in g["index"][sl]]
        roll = sample(backend, g["disp01"][sl], num_steps=num_steps, seeds=ss)
        pred = teacher_disparity(teacher, roll.images)
        disp, valid = g["disp"][sl, 0].to(dev), g["valid"][sl, 0].to(dev)
        target = g["disp01"][sl, 0].to(dev)
        cos_c.append(masked_cosine(pred, target, valid, True).cpu())
        cos_r.append(masked_cosine(pred, target, valid, False).cpu())
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


def explicit_keys(cfg) -> set[str]:
    """The dotted keys the user set on the command line (``--set key=value``)."""
    return {o.split("=", 1)[0].strip() for o in (getattr(cfg, "overrides", None) or [])}


def sync_gradients(params: list[torch.nn.Parameter], accelerator) -> None:
    """Average the LoRA gradients over all ranks: one all-reduce of a flat bucket per step.

    The denoiser is not wrapped in DistributedDataParallel: a K-step rollout calls it several times
    before one backward, its blocks checkpoint themselves, and the backends read ``.config`` / ``.dtype``
    from it, none of which DDP's wrapper supports. Only the LoRA parameters train, so syncing their
    gradients by hand is all DDP would do here."""
    if accelerator.num_processes <= 1:
        return
    import torch.distributed as dist

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= accelerator.num_processes
    i = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[i:i + n].view_as(p).to(p.dtype)
        i += n


CHECKPOINT = "checkpoints/last"  # OUT/checkpoints/last: the resume state of an unfinished run


def broadcast_parameters(params: list[torch.nn.Parameter], accelerator) -> None:
    """Make every rank start from rank 0's LoRA weights."""
    if accelerator.num_processes <= 1:
        return
    import torch.distributed as dist

    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def finetune(cfg: Config, d2i_dir: str | os.PathLike, teacher, source, out_dir: str | os.PathLike, *,
             heldout=None, steps: int | None = None, progress: bool = True, accelerator=None) -> dict:
    """Fine-tune LoRA on ``d2i_dir`` with rewards from ``teacher`` (a directory or a loaded model).

    ``source``: a shard directory, ``DIR:WEIGHT``, a list of those (drawn by weight), or a list of sample
    dicts. ``heldout``: shard directories or sample dicts for the before/after evaluation; without it,
    ``finetune.heldout`` samples from whole scenes are held out of the sources
    (:func:`bridgedepth.d2i.source.split_heldout`). Returns the summary dict.

    Precision: the frozen parts (denoiser, VAE, ControlNet, teacher, aesthetic model) are loaded in
    ``d2i.dtype`` (``auto``: bf16 on GPU, fp32 on CPU); the LoRA parameters and the optimizer state are
    fp32. Multi-GPU: launch with ``accelerate launch``; LoRA gradients are averaged with one all-reduce
    per step (:func:`sync_gradients`) and only rank 0 writes."""
    from accelerate import Accelerator

    from .backend import resolve_dtype
    from .source import SourceStream, parse_sources, split_heldout
    from .teacher import enable_teacher_checkpointing

    fc = cfg.finetune
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = int(steps if steps is not None else fc.steps)
    if accelerator is None:
        cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
        accelerator = Accelerator(mixed_precision=fc.mixed_precision, cpu=cpu)
    dev = accelerator.device
    dtype = resolve_dtype(cfg.d2i.dtype, dev)
    rank, world = accelerator.process_index, accelerator.num_processes

    base_info = read_bridge_json(Path(d2i_dir))
    backend = load_backend(d2i_dir, dev, dtype, cache_dir=cfg.d2i.cache_dir).configure(cfg.d2i, explicit_keys(cfg))
    backend.denoiser.requires_grad_(False)
    torch.manual_seed(fc.seed)  # the same LoRA initialisation on every rank
    add_lora(backend.denoiser, fc.lora_rank, fc.lora_alpha, fc.lora_targets)
    backend.denoiser.to(dev)
    params = lora_parameters(backend.denoiser)
    broadcast_parameters(params, accelerator)
    torch.manual_seed(fc.seed + rank)
    rng = random.Random(fc.seed * 7919 + rank)
    if isinstance(teacher, (str, os.PathLike)):
        teacher_dir = str(Path(teacher).resolve())
        teacher = load_teacher(teacher, dtype)
    else:
        teacher_dir = None
        teacher.to(dtype)
    teacher.to(dev)
    if fc.teacher_checkpointing and fc.checkpointing:
        enable_teacher_checkpointing(teacher)
    rewards = build_rewards(fc.reward, teacher, dev, dtype)
    aes_term = rewards.terms.get("aesthetic")
    aesthetic_fn = (lambda img: aes_term.fn(img, {})) if aes_term is not None else None
    if aesthetic_fn is None:
        # the term is off (weight 0: an ablation): still measure the configured model's score on the
        # held-out maps before and after, so that the run shows what the images' aesthetic did without it
        aesthetic_fn, _ = aesthetic_model(fc.reward, dev, dtype)
    num_steps = int(fc.num_steps or backend.default_steps)

    sources = parse_sources(source)
    if heldout is None:
        held = split_heldout(sources, fc.heldout, fc.seed)
        held_samples, exclude, held_desc = held.samples, held.keys, held.describe()
    else:
        hs = parse_sources(heldout)
        held_samples = [x for src in hs for x in load_source(src.data, limit=max(fc.heldout, 1))]
        exclude, held_desc = {}, {"given": [str(s.data) if s.is_dir else "samples" for s in hs],
                                  "samples": len(held_samples)}
    held_data = group_by_size(held_samples, backend.bucket)
    held_seeds = [10_000 + i for i in range(len(held_samples))]
    stream = SourceStream(sources, backend.bucket, exclude=exclude, seed=fc.seed * 1009 + rank,
                          open_shards=fc.open_shards)

    opt = torch.optim.AdamW(params, lr=fc.lr, weight_decay=1e-4)
    opt = accelerator.prepare(opt)  # the denoiser is not wrapped: see sync_gradients

    ckpt = out / CHECKPOINT
    recover_checkpoint(ckpt)
    settings = resume_settings(fc, backend, d2i_dir, teacher_dir, sources, hs if heldout is not None else None)
    start = 0
    before = None
    if (ckpt / "state.pt").exists():
        check_resume_settings(ckpt, settings, out, "reward fine-tuning",
                              "finetune.steps (to extend the run), the log, sample and save cadences and "
                              "activation checkpointing")
        load_lora(backend.denoiser, ckpt / LORA_FILE)
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        rng.setstate(_tuple_state(state["rng"]))
        before = json.loads((ckpt / "before.json").read_text())
    backend.denoiser.eval()  # no dropout/batch statistics: rewards drive the update
    if before is None:
        before = evaluate_depth(backend, teacher, held_data, num_steps=num_steps, seeds=held_seeds,
                                mean_centre=fc.reward.depth_mean_centre, aesthetic=aesthetic_fn)
    log_path = out / "finetune_log.jsonl"
    if accelerator.is_main_process:
        _truncate_log(log_path, start)  # steps logged after the checkpoint are redone
    t0 = time.time()
    bar = tqdm(range(start, steps), desc="d2i finetune", initial=start, total=steps,
               disable=not (progress and accelerator.is_main_process))
    for step in bar:
        batch = stream.next_batch(fc.batch_size, step)
        # flips and noise seeds depend on (seed, step, rank) only: a resumed run repeats them exactly
        gen = torch.Generator("cpu").manual_seed((fc.seed * 100003 + step * 7919 + rank * 104729) % (2**63))
        flip = torch.rand(batch["disp01"].shape[0], generator=gen) < 0.5
        batch = {k: torch.where(flip[:, None, None, None], v.flip(-1), v).to(dev) for k, v in batch.items()}
        seeds = torch.randint(0, 2**62, (len(flip),), generator=gen).tolist()
        with accelerator.autocast():
            roll = sample(backend, batch["disp01"], num_steps=num_steps, seeds=seeds, grad_steps=fc.grad_steps,
                          random_cutoff=fc.random_cutoff, rng=rng,
                          checkpointing=fc.checkpoint_granularity if fc.checkpointing else False,
                          decoder_checkpointing=fc.decoder_checkpointing)
            if "anchor" in rewards.terms:
                with torch.no_grad(), lora_disabled(backend.denoiser):
                    batch["reference_images"] = sample(backend, batch["disp01"], num_steps=num_steps,
                                                       seeds=seeds).images
            loss, logs, values = rewards.evaluate(roll.images, batch)
        opt.zero_grad(set_to_none=True)
        accelerator.backward(loss)
        sync_gradients(params, accelerator)
        gn = accelerator.clip_grad_norm_(params, fc.grad_clip) if fc.grad_clip else _grad_norm(params)
        opt.step()
        faults.point("train-step")
        rec = {"step": step + 1, "loss": float(loss.detach()), "grad_norm": float(gn), "k": roll.grad_steps,
               "size": list(batch["disp01"].shape[-2:]), **logs}
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
            _save_ckpt(backend.denoiser, opt, step + 1, rng, before, ckpt, settings)
    accelerator.wait_for_everyone()
    after = evaluate_depth(backend, teacher, held_data, num_steps=num_steps, seeds=held_seeds,
                           mean_centre=fc.reward.depth_mean_centre, aesthetic=aesthetic_fn)
    summary = {"steps": steps, "resumed_from": start, "seconds": round(time.time() - t0, 1), "sampler_steps": num_steps,
               "grad_steps": fc.grad_steps, "random_cutoff": fc.random_cutoff, "rewards": rewards.describe(),
               "processes": world, "dtype": str(dtype).replace("torch.", ""),
               "settings": backend.settings(), "settings_origin": backend.settings_origin,
               "sources": [{"source": str(s.data) if s.is_dir else "samples", "weight": s.weight,
                            "drawn_rank0": n} for s, n in zip(sources, stream.seen)],
               "heldout": held_desc,
               "heldout_before": before, "heldout_after": after,
               "depth_reward_gain": after["depth_reward"] - before["depth_reward"]}
    if "aesthetic" in after:
        summary["aesthetic_gain"] = after["aesthetic"] - before["aesthetic"]
    summary["lora_sha256"] = lora_checksum(backend.denoiser)  # this rank's weights (equal on every rank)
    if accelerator.is_main_process:
        save_lora(backend.denoiser, out / LORA_FILE, prefix=getattr(backend, "lora_prefix", "unet."))
        first = held_data[0]
        with torch.no_grad():
            idx = first["index"][:4]
            roll = sample(backend, first["disp01"][:4], num_steps=num_steps, seeds=[held_seeds[int(i)] for i in idx])
            pred = teacher_disparity(teacher, roll.images)
        _write_png(out / "samples" / "final-heldout.png", _grid({k: v[:4] for k, v in first.items()},
                                                                 roll.images, pred))
        write_json_atomic(out / BRIDGE_JSON, {
            "kind": "lora", "base": str(Path(d2i_dir).resolve()), "backend": base_info.get("backend"),
            "lora": {"rank": fc.lora_rank, "alpha": fc.lora_alpha, "targets": list(fc.lora_targets)},
            "teacher": teacher_dir, "num_steps": backend.default_steps, "resolution": backend.resolution,
            "guidance_scale": backend.guidance_scale})
        write_json_atomic(out / "finetune_summary.json", summary)
        if ckpt.parent.exists():
            shutil.rmtree(ckpt.parent)
    stream.close()
    accelerator.wait_for_everyone()
    return summary


def lora_checksum(model) -> str:
    """sha256 over the LoRA parameters (names and fp32 bytes)."""
    import hashlib

    h = hashlib.sha256()
    for n, p in sorted(model.named_parameters()):
        if "lora_" in n:
            h.update(n.encode())
            h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _grad_norm(params) -> torch.Tensor:
    g = [p.grad.detach().norm() for p in params if p.grad is not None]
    return torch.stack(g).norm() if g else torch.zeros(())


def _tuple_state(s):
    return tuple(_tuple_state(x) for x in s) if isinstance(s, (list, tuple)) else s


def _truncate_log(log_path: Path, start: int) -> None:
    """Keep the log lines of steps <= ``start`` (all of them gone for a fresh run)."""
    if not log_path.exists():
        return
    if start == 0:
        log_path.unlink()
        return
    keep = [line for line in log_path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= start]
    tmp = log_path.with_name(log_path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in keep))
    os.replace(tmp, log_path)


def _save_ckpt(model, opt, step: int, rng: random.Random, before: dict, ckpt: Path,
               settings: dict | None = None) -> None:
    """Write the resume state into ``last.tmp`` and swap it in atomically (:func:`swap_in_checkpoint`:
    at every point a complete checkpoint exists)."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_lora(model, tmp / LORA_FILE)
    version, internal, gauss = rng.getstate()
    torch.save({"optimizer": opt.state_dict(), "step": step,
                "rng": [version, list(internal), gauss]}, tmp / "state.pt")
    (tmp / "before.json").write_text(json.dumps(before))
    swap_in_checkpoint(tmp, ckpt, settings)


# finetune.* settings a resumed run may change: its length, cadences, the source reader's cache and
# activation checkpointing (memory only); every other one changes what the LoRA learns
RESUME_FREE = ("steps", "log_every", "sample_every", "save_every", "open_shards", "max_samples", "checkpointing",
               "checkpoint_granularity", "decoder_checkpointing", "teacher_checkpointing")


def resume_settings(fc, backend, d2i_dir, teacher_dir: str | None, sources, heldout) -> dict:
    """What a fine-tune checkpoint depends on: ``finetune.*`` (less ``RESUME_FREE``), the generator's
    resolved sampling settings, the base model's and the teacher's weights, the (held-out) sources
    (parsed :class:`~bridgedepth.d2i.source.Source` lists)."""
    from dataclasses import asdict

    from ..config import flatten
    from ..data.shards import weights_digest
    from .backend import model_fingerprint

    out = {f"finetune.{k}": v for k, v in flatten(asdict(fc)).items() if k.split(".")[0] not in RESUME_FREE}
    out.update({f"d2i.{k}": v for k, v in backend.settings().items()})
    out["base"] = json.dumps(model_fingerprint(d2i_dir), sort_keys=True)  # one value: its keys vary by kind
    if teacher_dir:
        out["teacher"] = weights_digest(teacher_dir)

    def named(srcs):
        return [[str(Path(x.data).resolve()) if x.is_dir else "samples", float(x.weight)] for x in srcs]

    out["sources"] = named(sources)
    if heldout is not None:
        out["heldout"] = named(heldout)
    return out
