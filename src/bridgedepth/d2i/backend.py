"""Generator backends behind one interface, and loading of saved d2i directories.

A backend exposes what the sampler needs and nothing else:

* ``denoiser``: the nn.Module that LoRA is attached to (UNet / Flux transformer), never a DDP wrapper;
* ``encode_condition(disp01)``: (B,1,H,W) normalised disparity in [0,1] -> condition tensor(s);
* ``initial_latents(generators, device, size)``: starting noise, one generator per image (batch-independent);
* ``schedule(num_steps, device, size)``: a :class:`Schedule` (timesteps + our own update rule);
* ``predict(latents, t, cond, size)``: the denoiser output for one step;
* ``decode(latents, size)``: images in [0, 1], (B,3,H,W), differentiable.

``size`` is the image's (height, width) in pixels; both sides must be multiples of the backend's
``factor`` (16 for FLUX: 8x VAE downsampling then 2x2 latent packing; 8 for SD; for the tiny backend its
patch times the UNet's total downsampling). :meth:`Backend.bucket` gives, for a source of any aspect,
the size of about ``resolution x resolution`` pixels with the source's aspect (aspect buckets).

Precision: :func:`resolve_dtype` is the policy. Frozen parts load in ``d2i.dtype`` (``auto``: bf16 on
GPU, fp32 on CPU); LoRA parameters are kept fp32 (:func:`bridgedepth.d2i.lora.add_lora`).

A d2i directory holds ``bridge.json`` naming the backend; a fine-tuned directory additionally holds
``pytorch_lora_weights.safetensors`` and names its base directory.
"""

from __future__ import annotations

import contextlib
import json
import math
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


DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_dtype(name: str | torch.dtype | None, device) -> torch.dtype:
    """The dtype frozen d2i parts (denoiser, VAE, ControlNet, teacher, CLIP) load in.

    ``auto`` (or None): bf16 on a CUDA device, fp32 elsewhere (CPU bf16 matmuls are slow and the
    tiny models are small)."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "auto"):
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if name not in DTYPES:
        raise InputError(f"d2i.dtype {name!r}: expected auto, {', '.join(sorted(DTYPES))}")
    return DTYPES[name]


def bucket_size(h: int, w: int, resolution: int, factor: int) -> tuple[int, int]:
    """The (height, width) of about ``resolution**2`` pixels with the aspect of an ``h x w`` source,
    each side a multiple of ``factor`` (at least one ``factor``)."""
    if h <= 0 or w <= 0:
        raise InputError(f"source size {h}x{w}: empty")
    a = w / h
    hh = max(factor, int(round(resolution / math.sqrt(a) / factor)) * factor)
    ww = max(factor, int(round(resolution * math.sqrt(a) / factor)) * factor)
    return hh, ww


def check_resolution(resolution: int, factor: int, backend: str) -> int:
    """A resolution that is not a multiple of ``factor`` is an error naming the nearest valid values."""
    r = int(resolution)
    if r < factor or r % factor:
        lo = max(factor, r // factor * factor)
        hi = lo + factor if lo <= r else lo
        raise InputError(f"d2i.resolution {r}: the {backend} backend needs a multiple of {factor} "
                         f"(nearest valid: {lo} or {hi})")
    return r


# the sampling settings a model directory's bridge.json may carry, with the D2IConfig field of each
SETTINGS = {"resolution": "resolution", "num_steps": "num_steps", "guidance_scale": "guidance_scale"}


def effective_settings(dc, info: dict, explicit: set[str] | frozenset = frozenset(), defaults: dict | None = None
                       ) -> tuple[dict, dict]:
    """Which resolution / steps / guidance a run uses, and where each came from.

    Order: a value the user set explicitly (``--set d2i.resolution=...``, listed in ``explicit``) wins;
    then the preset's value when the preset was written for this kind of model (``dc.backend`` equals
    the folder's backend); then the folder's own ``bridge.json``; then the backend's default.
    Returns (values, origin) with origin in {"user", "preset", "model", "default"}."""
    defaults = defaults or {}
    same_kind = getattr(dc, "backend", None) == info.get("backend")
    vals, origin = {}, {}
    for key, field_name in SETTINGS.items():
        v = getattr(dc, field_name, None)
        if f"d2i.{field_name}" in explicit and v is not None:
            vals[key], origin[key] = v, "user"
        elif same_kind and v is not None:
            vals[key], origin[key] = v, "preset"
        elif info.get(key) is not None:
            vals[key], origin[key] = info[key], "model"
        elif key in defaults:
            vals[key], origin[key] = defaults[key], "default"
    return vals, origin


class Backend:
    """Base class; see the module docstring for the contract."""

    name = "base"
    lora_prefix = "unet."  # key prefix of the diffusers LoRA file
    resolution: int = 64
    default_steps: int = 20
    guidance_scale: float = 1.0
    info: dict = {}  # the model directory's bridge.json
    settings_origin: dict = {}

    denoiser: torch.nn.Module

    @property
    def factor(self) -> int:
        """Image sides must be multiples of this."""
        return 8

    def bucket(self, h: int, w: int) -> tuple[int, int]:
        """The generation size for a source of ``h x w`` pixels (its aspect bucket)."""
        return bucket_size(h, w, self.resolution, self.factor)

    def check_size(self, size) -> tuple[int, int]:
        hh, ww = int(size[0]), int(size[1])
        f = self.factor
        if hh < f or ww < f or hh % f or ww % f:
            raise InputError(f"{self.name} backend: image size {hh}x{ww} must be multiples of {f} "
                             f"(use Backend.bucket for a source of any size)")
        return hh, ww

    def configure(self, dc, explicit: set[str] | frozenset = frozenset()) -> "Backend":
        """Apply the sampling settings: the user's explicit ones, else the preset's when it targets this
        kind of model, else the model directory's ``bridge.json`` (:func:`effective_settings`)."""
        vals, self.settings_origin = effective_settings(
            dc, self.info, explicit, {"resolution": self.resolution, "num_steps": self.default_steps,
                                      "guidance_scale": self.guidance_scale})
        self.resolution = check_resolution(vals["resolution"], self.factor, self.name)
        self.default_steps = int(vals["num_steps"])
        self.guidance_scale = float(vals["guidance_scale"])
        return self

    def settings(self) -> dict:
        """What a generated image depends on, besides the weights and its seed."""
        return {"backend": self.name, "resolution": self.resolution, "num_steps": self.default_steps,
                "guidance_scale": self.guidance_scale}

    def set_gradient_checkpointing(self, denoiser: bool = True, decoder: bool = False) -> None:
        """Block-level activation checkpointing of the denoiser's blocks (and the VAE decoder's), through
        the diffusers models' own ``enable_gradient_checkpointing``. Only active while gradients are on."""
        for m, on in ((self.denoiser, denoiser), (getattr(self, "controlnet", None), denoiser),
                      (getattr(self, "vae", None), decoder)):
            if m is None or not getattr(m, "_supports_gradient_checkpointing", False):
                continue
            m.enable_gradient_checkpointing() if on else m.disable_gradient_checkpointing()

    def frozen_modules(self) -> dict[str, torch.nn.Module]:
        """The modules that stay frozen (all but the denoiser's LoRA parameters)."""
        out = {"denoiser": self.denoiser}
        for name in ("controlnet", "vae"):
            if getattr(self, name, None) is not None:
                out[name] = getattr(self, name)
        return out

    def to(self, device, dtype=None):
        for m in self.frozen_modules().values():
            m.to(device) if dtype is None else m.to(device=device, dtype=dtype)
        return self

    def encode_condition(self, disp01: torch.Tensor) -> Any:
        raise NotImplementedError

    def initial_latents(self, generators: list[torch.Generator], device, size) -> torch.Tensor:
        raise NotImplementedError

    def schedule(self, num_steps: int, device, size) -> Schedule:
        raise NotImplementedError

    def predict(self, latents: torch.Tensor, t: torch.Tensor, cond: Any, size) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor, size) -> torch.Tensor:
        raise NotImplementedError

    def save(self, out_dir: str | os.PathLike) -> None:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The frozen weights' dtype (LoRA parameters may be fp32 beside them)."""
        return next(p for n, p in self.denoiser.named_parameters() if "lora_" not in n).dtype


def write_json_atomic(path: Path, data: dict) -> None:
    """``data`` as JSON at ``path``, atomically (a unique temporary file: ranks may race), with the
    usual file permissions (0666 minus the umask, not mkstemp's 0600)."""
    from ..io import atomic_write

    with atomic_write(Path(path), "w") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True))


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


def load_kwargs(dtype, device) -> dict:
    """``from_pretrained`` arguments: load in ``dtype`` straight onto ``device`` (no full fp32 copy of a
    12 B-parameter transformer in host memory)."""
    kw = {"torch_dtype": dtype or torch.float32, "low_cpu_mem_usage": True}
    if device is not None:
        kw["device_map"] = {"": torch.device(device)}
    return kw


def base_dir_of(d: Path, info: dict) -> Path:
    base = Path(info["base"])
    return base if base.is_absolute() else (d / base).resolve()


def load_backend(path: str | os.PathLike, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
                 *, cache_dir: str | os.PathLike | None = None) -> Backend:
    """Load a d2i directory: a base backend, or a fine-tuned one (base + LoRA weights).

    ``dtype`` (see :func:`resolve_dtype`): the frozen weights are loaded in it directly
    (``torch_dtype``; no fp32 copy in host memory); LoRA parameters stay fp32. ``cache_dir``: where the
    empty-prompt embedding goes when the model directory is read-only."""
    d = Path(path)
    info = read_bridge_json(d)
    dt = resolve_dtype(dtype, device)
    if info.get("kind") == "lora":
        backend = load_backend(base_dir_of(d, info), device, dt, cache_dir=cache_dir)
        from .lora import add_lora, load_lora

        add_lora(backend.denoiser, rank=info["lora"]["rank"], alpha=info["lora"]["alpha"],
                 targets=info["lora"]["targets"])
        load_lora(backend.denoiser, d / LORA_FILE)
        backend.denoiser.to(device)
        # a fine-tuned folder's sampling settings (written from its base) override the base's
        backend.info = {**backend.info, **{k: info[k] for k in SETTINGS if info.get(k) is not None}}
        return backend
    name = info.get("backend")
    if name == "tiny":
        from .tiny import TinyBackend

        backend = TinyBackend.load(d, dtype=dt, device=device)
    elif name == "flux-depth":
        from .flux import FluxDepthBackend

        backend = FluxDepthBackend.load(d, dtype=dt, cache_dir=cache_dir, device=device)
    elif name == "sd-controlnet":
        from .sd import SDControlNetBackend

        backend = SDControlNetBackend.load(d, dtype=dt, cache_dir=cache_dir, device=device)
    else:
        raise InputError(f"{d / BRIDGE_JSON}: unknown backend {name!r} (tiny, flux-depth, sd-controlnet)")
    backend.info = info
    return backend.to(device)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def _sha256_cached(path: Path) -> str:
    """sha256 of a (possibly huge) weights file, remembered across runs in the bridgedepth cache, keyed
    by (path, size, mtime): a 24 GB FLUX transformer is hashed once per machine, not once per job."""
    from ..data.shards import sha256_file

    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache = Path(os.environ.get("BRIDGE_CACHE") or Path.home() / ".cache" / "bridgedepth") / "checksums.json"
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    digest = sha256_file(path)
    known[key] = digest
    with contextlib.suppress(OSError):
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache, known)
    return digest


def model_fingerprint(path: str | os.PathLike) -> dict:
    """Checksums of what a d2i directory generates with: the base weights (one digest over every weights
    file's relative path and sha256) and, for a fine-tuned directory, its LoRA file."""
    import hashlib

    d = Path(path)
    info = read_bridge_json(d)
    if info.get("kind") == "lora":
        return {"lora_sha256": _sha256_cached(d / LORA_FILE), "base": model_fingerprint(base_dir_of(d, info))}
    files = sorted(f for f in d.rglob("*") if f.is_file() and f.suffix in WEIGHT_SUFFIXES)
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(d).as_posix()}={_sha256_cached(f)}\n".encode())
    return {"weights_sha256": h.hexdigest(), "files": len(files)}
