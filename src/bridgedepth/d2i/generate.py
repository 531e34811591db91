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

Storage: each generated sample stores the generated ``rgb``, its ``meta`` and a ``source_ref`` to
its source sample (:mod:`bridgedepth.data.refs`); readers add the source's fields from there. With
``generate.embed_source`` (``--embed-source``) the source's fields are copied in instead.

Batching: images of several source samples share a sampler call (``generate.batch_size`` images);
encoding (PNG) and checksums run in the shard writer's thread. The unit of resumption is one shard.

Seeds: image i of sample KEY gets ``derive_seed(seed, KEY, i)`` (sha256 of the triple), recorded in
``meta.seed``; output is therefore identical however the input is sharded, batched or ranked."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import Config, changed_settings, save_resolved
from ..data.refs import REF_FIELD, make_ref
from ..data.shards import SOURCE_CONTEXT
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
    """Generated samples for source samples: ``gen.batch(samples)`` (``map_dataset(..., chunk=gen.chunk)``)
    returns, per source sample, its list of generated samples (one per image) or the InputError that
    skips it; ``gen(sample)`` does one.

    Batching spans source samples: the images of all samples of a chunk are generated
    ``batch_size`` at a time (images of one size per sampler call), so ``batch_size: 8`` with 4 images
    per depth map runs 8 images per call. ``chunk`` is the fewest source samples whose images fill
    whole batches. Output is identical for any batch size (each image's noise comes from its own
    seed, see the module docstring).

    Output samples reference their source sample (``source_ref``, :mod:`bridgedepth.data.refs`)
    when the input comes through ``map_dataset`` (which says which shard each sample is from) and
    ``out_dir`` is set; with ``embed_source`` (or without that context) they carry copies of the
    source's ``depth``, ``valid``, RGB (``source_rgb``), ``sky`` and ``intrinsics`` instead."""

    def __init__(self, backend, *, images_per_depth: int = 4, seed: int = 0, steps: int | None = None,
                 batch_size: int = 8, embed_source: bool = False, out_dir: str | os.PathLike | None = None):
        self.backend = backend
        self.n = int(images_per_depth)
        if self.n < 1:
            raise InputError(f"images_per_depth must be >= 1, got {images_per_depth}")
        self.seed = int(seed)
        self.steps = int(steps or backend.default_steps)
        self.batch_size = max(1, int(batch_size))
        self.embed_source = bool(embed_source)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.images = 0
        self.sampler_calls = 0

    @property
    def chunk(self) -> int:
        """Source samples per batched call: the fewest whose images fill whole sampler batches."""
        return math.lcm(self.batch_size, self.n) // self.n

    def _condition(self, s: dict) -> torch.Tensor:
        h, w = s["depth"].shape[:2]
        return prepare_source([s], size=self.backend.bucket(h, w), rgb=False)["disp01"]

    def __call__(self, s: dict) -> list[dict]:
        out = self.batch([s])[0]
        if isinstance(out, InputError):
            raise out
        return out

    @torch.no_grad()
    def batch(self, samples: list[dict]) -> list[list[dict] | InputError]:
        results: list = [None] * len(samples)
        conds: dict[int, torch.Tensor] = {}
        groups: dict[tuple, list[tuple[int, int, int]]] = {}  # condition size -> (sample, image, seed)
        for si, s in enumerate(samples):
            try:
                if "depth" not in s:
                    raise InputError(f"sample {s.get('__key__', '?')}: has no 'depth' field")
                conds[si] = self._condition(s)
            except InputError as e:
                results[si] = e
                continue
            jobs = groups.setdefault(tuple(conds[si].shape[-2:]), [])
            jobs.extend((si, i, derive_seed(self.seed, s["__key__"], i)) for i in range(self.n))
        images: dict[tuple[int, int], tuple[np.ndarray, list[int]]] = {}
        for jobs in groups.values():
            for j in range(0, len(jobs), self.batch_size):
                part = jobs[j:j + self.batch_size]
                cond = torch.cat([conds[si] for si, _, _ in part])
                roll = sample(self.backend, cond, num_steps=self.steps, seeds=[sd for _, _, sd in part])
                self.sampler_calls += 1
                imgs = roll.images.float()
                for k, (si, i, _) in enumerate(part):
                    h, w = samples[si]["depth"].shape[:2]
                    images[si, i] = _to_size(imgs[k:k + 1], h, w)[0], list(imgs.shape[-2:])
        for si, s in enumerate(samples):
            if results[si] is None:
                results[si] = [self._output(s, i, *images[si, i]) for i in range(self.n)]
                self.images += self.n
        return results

    def _output(self, s: dict, i: int, img: np.ndarray, generated_size: list[int]) -> dict:
        key = s["__key__"]
        meta_src = dict(s.get("meta") or {})
        meta = {**{k: v for k, v in meta_src.items() if k not in ("seed", "look")}, "source_key": key,
                "seed": derive_seed(self.seed, key, i), "index": i, "steps": self.steps,
                "generator": self.backend.name, "generated_size": generated_size,
                "source_seed": meta_src.get("seed")}
        if "look" in meta_src:  # the source's look describes its render, not this image
            meta.update(look="generated", source_look=meta_src["look"])
        o = {"__key__": f"{key}_g{i}", "rgb": img, "meta": meta}
        ctx = s.get(SOURCE_CONTEXT)
        if not self.embed_source and ctx is not None and self.out_dir is not None:
            o[REF_FIELD] = make_ref(ctx["dir"], ctx["shard"], key, ctx["sha256"], self.out_dir)
            return o
        o["depth"] = s["depth"]
        o["valid"] = s.get("valid", s["depth"] > 0)
        if s.get("rgb") is not None:
            o["source_rgb"] = s["rgb"]
        if s.get("sky") is not None:
            o["sky"] = s["sky"]  # the source's sky mask, in the depth map's grid like depth/valid
        if s.get("intrinsics") is not None:
            o["intrinsics"] = np.asarray(s["intrinsics"], np.float32)
        return o


def _comparable(settings: dict) -> dict:
    """Generation settings as compared on a rerun: the model fingerprint (whose keys vary with the kind
    of model) as one value, so that another model is a changed value, never a key one side lacks."""
    import json

    model = settings.get("model")
    return {**settings, "model": json.dumps(model, sort_keys=True)} if isinstance(model, dict) else settings


def check_output_settings(out: Path, settings: dict, overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, clear) an output folder whose shards were made with other settings."""
    from ..data.shards import check_rerun_output

    check_rerun_output(out, "generate", "generated images",
                       lambda meta: changed_settings(_comparable(meta.get("settings") or {}), _comparable(settings)),
                       overwrite, made="generated", redo="regenerate them",
                       named={"model": "model: other weights (sha256) than the folder's"})


def generate(cfg: Config, d2i_dir: str | os.PathLike, source_dir: str | os.PathLike, out_dir: str | os.PathLike,
             *, images_per_depth: int | None = None, seed: int | None = None, steps: int | None = None,
             rank: int = 0, world_size: int = 1, progress: bool = True, overwrite: bool = False,
             embed_source: bool | None = None) -> dict:
    """Generate shards from source shards; returns a summary (images, seconds, images/s, sampler calls).

    ``embed_source`` (default ``generate.embed_source``): store copies of the source fields in each
    generated sample instead of a ``source_ref`` to the source sample (self-contained shards).
    ``overwrite``: regenerate a folder whose shards were made with other settings (default: refuse)."""
    from ..data.shards import map_dataset
    from .backend import model_fingerprint
    from .finetune import explicit_keys

    gc = cfg.generate
    dev = pick_device(cfg.device)
    backend = load_backend(d2i_dir, dev, cfg.d2i.dtype, cache_dir=cfg.d2i.cache_dir).configure(
        cfg.d2i, explicit_keys(cfg))
    backend.denoiser.eval()
    out = Path(out_dir)
    embed = bool(gc.embed_source if embed_source is None else embed_source)
    gen = Generator(backend, images_per_depth=images_per_depth or gc.images_per_depth,
                    seed=gc.seed if seed is None else seed, steps=steps or gc.steps or backend.default_steps,
                    batch_size=gc.batch_size, embed_source=embed, out_dir=out)
    settings = {**backend.settings(), "num_steps": gen.steps, "seed": gen.seed, "images_per_depth": gen.n,
                "dtype": str(backend.dtype).replace("torch.", ""), "model": model_fingerprint(d2i_dir)}
    if overwrite and world_size > 1 and (out / "manifest.json").exists():
        # no rank may write before another has cleared the folder
        raise InputError(f"{out}: --overwrite with {world_size} processes: remove the folder first (rm -r {out}) "
                         "and rerun without --overwrite, or regenerate with one process")
    check_output_settings(out, settings, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        save_resolved(cfg, out, "generate_config.yaml")
    t0 = time.time()
    manifest = map_dataset(source_dir, out, gen.batch, chunk=gen.chunk, desc="generate", rank=rank,
                           world_size=world_size,
                           meta={"stage": "generate", "d2i": str(Path(d2i_dir).resolve()), "seed": gen.seed,
                                 "images_per_depth": gen.n, "steps": gen.steps, "embed_source": embed,
                                 "settings": settings, "settings_origin": backend.settings_origin},
                           progress=progress)
    dt = time.time() - t0
    return {"images": gen.images, "seconds": round(dt, 2), "images_per_s": gen.images / dt if dt > 0 else None,
            "images_per_depth": gen.n, "steps": gen.steps, "seed": gen.seed, "out": str(out),
            "resolution": backend.resolution, "guidance_scale": backend.guidance_scale,
            "settings_origin": backend.settings_origin, "samples_total": manifest.num_samples,
            "sampler_calls": gen.sampler_calls, "batch_size": gen.batch_size, "embed_source": embed}
