"""`bridge generate`: N generated images per source depth map, as shards ready for `bridge label`.

Size: each source map is generated at its aspect bucket (:meth:`Backend.bucket`: about ``resolution``
squared pixels, the source's aspect, sides a multiple of the backend's factor), then the image is
resized (bicubic, clipped) to the source sample's size, so every output sample lines up with its
source pixel for pixel (the label stage compares the generated image with the original render).
``meta.generated_size`` records the (height, width) actually generated.

Resume: an output folder remembers what made it (``manifest.meta.settings``: model checksums, seed,
steps, resolution, guidance, images per depth map; each shard also records its source shard's
checksum). A rerun with other settings into the same folder is refused with the differing setting
named, or, with ``overwrite``, the folder's shards are removed and regenerated. Granularity: whole
shards (an interrupted shard is redone).

Seeds: image i of sample KEY gets ``derive_seed(seed, KEY, i)`` (sha256 of the triple), recorded in
``meta.seed``; output is therefore identical however the input is sharded, batched or ranked."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config, save_resolved
from ..errors import InputError
from .backend import load_backend
from .common import derive_seed, pick_device, prepare_source
from .sampler import sample


def _to_size(images01: torch.Tensor, h: int, w: int) -> np.ndarray:
    if images01.shape[-2:] != (h, w):
        images01 = F.interpolate(images01, size=(h, w), mode="bicubic", align_corners=False,
                                 antialias=images01.shape[-1] > w)
    return (images01.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)


class Generator:
    """Callable ``sample -> list of generated samples`` (one per image), usable with map_dataset."""

    def __init__(self, backend, *, images_per_depth: int = 4, seed: int = 0, steps: int | None = None,
                 batch_size: int = 8):
        self.backend = backend
        self.n = int(images_per_depth)
        self.seed = int(seed)
        self.steps = int(steps or backend.default_steps)
        self.batch_size = max(1, int(batch_size))
        self.images = 0

    @torch.no_grad()
    def __call__(self, s: dict) -> list[dict]:
        key = s["__key__"]
        h, w = s["depth"].shape[:2]
        gsize = self.backend.bucket(h, w)
        data = prepare_source([s], size=gsize, rgb=False)
        seeds = [derive_seed(self.seed, key, i) for i in range(self.n)]
        outs: list[np.ndarray] = []
        for j in range(0, self.n, self.batch_size):
            ss = seeds[j:j + self.batch_size]
            roll = sample(self.backend, data["disp01"].expand(len(ss), -1, -1, -1), num_steps=self.steps, seeds=ss)
            outs.extend(_to_size(roll.images.float(), h, w))
        self.images += self.n
        meta_src = dict(s.get("meta") or {})
        res = []
        for i, (img, sd) in enumerate(zip(outs, seeds)):
            o = {"__key__": f"{key}_g{i}", "rgb": img, "depth": s["depth"],
                 "valid": s.get("valid", s["depth"] > 0),
                 "meta": {**{k: v for k, v in meta_src.items() if k not in ("seed",)}, "source_key": key,
                          "seed": sd, "index": i, "steps": self.steps, "generator": self.backend.name,
                          "generated_size": list(gsize),
                          "source_seed": meta_src.get("seed")}}
            if s.get("rgb") is not None:
                o["source_rgb"] = s["rgb"]
            if s.get("sky") is not None:
                o["sky"] = s["sky"]  # the source's sky mask, in the depth map's grid like depth/valid
            if s.get("intrinsics") is not None:
                o["intrinsics"] = np.asarray(s["intrinsics"], np.float32)
            res.append(o)
        return res


def _settings_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _settings_diff(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}: {a!r} in the folder, {b!r} now")
    return out


def check_output_settings(out: Path, settings: dict, overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, clear) an output folder whose shards were made with other settings."""
    from ..data.shards import MANIFEST, _read_manifest_json

    if not (out / MANIFEST).exists():
        return
    old = _read_manifest_json(out).get("meta", {}) or {}
    if old.get("stage") != "generate":
        raise InputError(f"{out}: holds a {old.get('stage') or 'non-generated'} dataset, not generated images; "
                         f"choose another --out")
    diff = _settings_diff(old.get("settings") or {}, settings)
    if not diff:
        return
    if not overwrite:
        raise InputError(f"{out}: its shards were generated with other settings ({'; '.join(diff)}); "
                         f"use another --out, or --overwrite to regenerate them")
    for f in out.iterdir():
        if f.name.startswith("shard-") or f.name == MANIFEST:
            f.unlink()


def generate(cfg: Config, d2i_dir: str | os.PathLike, source_dir: str | os.PathLike, out_dir: str | os.PathLike,
             *, images_per_depth: int | None = None, seed: int | None = None, steps: int | None = None,
             rank: int = 0, world_size: int = 1, progress: bool = True, overwrite: bool = False) -> dict:
    """Generate shards from source shards; returns a summary (images, seconds, images/s)."""
    from ..data.shards import map_dataset
    from .backend import model_fingerprint
    from .finetune import explicit_keys

    gc = cfg.generate
    dev = pick_device(cfg.device)
    backend = load_backend(d2i_dir, dev, cfg.d2i.dtype, cache_dir=cfg.d2i.cache_dir).configure(
        cfg.d2i, explicit_keys(cfg))
    backend.denoiser.eval()
    gen = Generator(backend, images_per_depth=images_per_depth or gc.images_per_depth,
                    seed=gc.seed if seed is None else seed, steps=steps or gc.steps or backend.default_steps,
                    batch_size=gc.batch_size)
    out = Path(out_dir)
    settings = {**backend.settings(), "num_steps": gen.steps, "seed": gen.seed, "images_per_depth": gen.n,
                "dtype": str(backend.dtype).replace("torch.", ""), "model": model_fingerprint(d2i_dir)}
    check_output_settings(out, settings, overwrite and rank == 0)
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        save_resolved(cfg, out, "generate_config.yaml")
    t0 = time.time()
    manifest = map_dataset(source_dir, out, gen, desc="generate", rank=rank, world_size=world_size,
                           meta={"stage": "generate", "d2i": str(Path(d2i_dir).resolve()), "seed": gen.seed,
                                 "images_per_depth": gen.n, "steps": gen.steps, "settings": settings,
                                 "settings_origin": backend.settings_origin}, progress=progress)
    dt = time.time() - t0
    return {"images": gen.images, "seconds": round(dt, 2), "images_per_s": gen.images / dt if dt > 0 else None,
            "images_per_depth": gen.n, "steps": gen.steps, "seed": gen.seed, "out": str(out),
            "resolution": backend.resolution, "guidance_scale": backend.guidance_scale,
            "settings_origin": backend.settings_origin, "samples_total": manifest.num_samples}
