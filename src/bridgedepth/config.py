"""Typed configuration: YAML presets plus dotted overrides, validated into dataclasses.

A preset is a YAML mapping whose keys mirror :class:`Config`. A preset may name another one under
``base:`` and then only lists what differs. Overrides use dotted paths, ``train.lr=1e-5``; values are
parsed as YAML scalars/lists. Unknown keys and wrong types raise :class:`ConfigError` naming the key
and listing the valid ones.

This module imports nothing else of bridgedepth, so every stage can depend on it.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


# --------------------------------------------------------------------------------------------
# Schema. Each stage owns one section; add fields to your own section only.
# --------------------------------------------------------------------------------------------


@dataclass
class ScenesConfig:
    """Procedural source scenes (`bridge scenes`)."""

    kind: Literal["indoor", "outdoor", "object", "mixed"] = "mixed"
    size: list[int] = field(default_factory=lambda: [256, 256])  # [H, W]
    train_count: int = 2000
    val_count: int = 64
    test_count: int = 64
    seed: int = 0
    samples_per_shard: int = 256
    workers: int = 1  # rendering processes (each writes whole shards)
    aspect_range: Optional[list[float]] = None  # [lo, hi] width/height per scene; None = fixed size
    look: Literal["standard", "synthetic", "real"] = "standard"  # image look (docs/scenes.md)


@dataclass
class SourceConfig:
    """One real source dataset read through an adapter (`bridge sources convert`)."""

    name: str = "folder"
    root: str = ""
    encoding: Optional[str] = None
    count: Optional[int] = None  # paper count, informative
    weight: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)  # adapter options (see `bridge sources list`)


@dataclass
class DataConfig:
    """Where shards live and how they are written/read."""

    root: str = "runs/data"
    samples_per_shard: int = 256
    num_workers: int = 0  # training: DataLoader worker processes per source and rank (0: in the main process)
    shuffle_group: int = 16  # training: shards whose samples are read in one random permutation (>= 1)
    sources: list[SourceConfig] = field(default_factory=list)


@dataclass
class ModelConfig:
    """Depth model (teacher / student): a named architecture from the registry."""

    name: str = "tiny"  # tiny | micro | vits | vitb | vitl | vitg (bridgedepth.mde.registry)
    head: Literal["relative", "metric"] = "relative"  # relative: ReLU disparity; metric: sigmoid * max_depth
    input_size: int = 518  # shorter side at inference (multiple of 14)
    max_depth: float = 20.0  # metric head: sigmoid * max_depth
    encoder_init: Optional[str] = None  # local DINOv2 checkpoint dir (Hugging Face format)
    init_from: Optional[str] = None  # start from a bridgedepth checkpoint dir


@dataclass
class LossConfig:
    """Depth losses (bridgedepth.mde.losses; formulas in docs/training.md): total = ssi_weight * SSI +
    gm_weight * GM in MiDaS's normalisation (SSI over 2M, GM over M per scale); SiLog for metric."""

    ssi_weight: float = 1.0
    gm_weight: float = 4.0
    gm_scales: int = 4
    # per image, drop this share of the largest per-pixel SSI losses among the pixels trim_sources names
    trim: float = 0.1
    trim_sources: Literal["pseudo", "all"] = "pseudo"  # pseudo: teacher pseudo-label pixels only; GT is kept
    # median_mad: prediction and target each by their median / mean absolute deviation (MiDaS ssitrim;
    # the scale is positive, so inverted disparity is penalised); lstsq: least-squares fit, scale >= 0
    alignment: Literal["median_mad", "lstsq"] = "median_mad"
    ssi_residual: Literal["absolute", "squared"] = "absolute"
    target_normalization: Literal["mad", "none"] = "mad"  # lstsq only: per-image median/MAD of the target first
    silog_lambda: float = 0.5
    mask_beyond_max_depth: bool = True  # metric stages: GT depth > model.max_depth is not supervised


@dataclass
class TrainDataConfig:
    """One source of a training mixture: a shard folder, what to supervise with, its weight."""

    path: str = ""
    target: Literal["gt", "pseudo", "hybrid", "metric"] = "gt"
    weight: float = 1.0


@dataclass
class TrainConfig:
    """One training stage (`bridge train`)."""

    stage: Literal["teacher", "student-pseudo", "student-hybrid", "metric", "scale-head"] = "teacher"
    steps: int = 1000
    batch_size: int = 8
    lr: float = 5e-6
    decoder_lr_mult: float = 10.0
    weight_decay: float = 0.01
    warmup_steps: int = 0
    poly_power: float = 0.9
    grad_accum: int = 1
    grad_clip: Optional[float] = None
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    gradient_checkpointing: bool = False
    channels_last: bool = True  # the DPT neck/head convolutions in NHWC layout (same maths; faster on CPU)
    crop_size: int = 518
    hflip: bool = True
    sky_as_far: bool = True  # relative targets: sky pixels (where a source marks them) = valid disparity 0
    color_jitter: float = 0.0
    val_every: int = 0
    save_every: int = 0
    seed: int = 0
    data: list[TrainDataConfig] = field(default_factory=list)
    val: Optional[str] = None  # held-out shard folder for validation (AbsRel after alignment)
    val_limit: int = 64
    loss: LossConfig = field(default_factory=LossConfig)

    def check_crop(self, patch_size: int) -> None:
        """``crop_size`` must be a positive multiple of the model's patch size (the ViT tokenises
        whole patches; DINOv2's is 14): a :class:`ConfigError` naming the nearest valid values."""
        c, p = int(self.crop_size), int(patch_size)
        if c >= p and c % p == 0:
            return
        lo, hi = (c // p) * p, (c // p + 1) * p
        near = [v for v in (lo, hi) if v >= p]
        raise ConfigError(f"train.crop_size: {c} is not a multiple of the patch size {p}; "
                          f"use {' or '.join(str(v) for v in near)} (any multiple of {p})")


@dataclass
class D2IConfig:
    """Depth-to-image generator backend."""

    backend: Literal["tiny", "flux-depth", "sd-controlnet"] = "tiny"
    path: Optional[str] = None  # local diffusers-format directory for real backends
    # Sampling settings. None: the model directory's own bridge.json (then the backend's default).
    # A preset's value applies when the preset's backend is the model's; `--set d2i.X=...` always wins.
    resolution: Optional[int] = None  # side of the square the aspect buckets have the area of
    num_steps: Optional[int] = None
    guidance_scale: Optional[float] = None
    dtype: str = "auto"  # frozen parts: auto = bf16 on GPU, fp32 on CPU; or float32 / bfloat16 / float16
    cache_dir: Optional[str] = None  # empty-prompt embedding cache for read-only model dirs ($BRIDGE_CACHE)
    # tiny backend architecture and `bridge d2i pretrain`
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    pretrain_steps: int = 1500
    pretrain_batch_size: int = 16
    pretrain_lr: float = 1e-3
    pretrain_max_samples: int = 4000  # source samples held in memory (downsampled)
    pretrain_condition: Literal["depth", "pseudo"] = "depth"  # condition on 1/depth or on a teacher's `pseudo`
    patch: int = 1  # tiny backend: UNet on pixel-unshuffled images (space-to-depth by this factor)
    # tiny backend training target: the noise, v, or the clean image ("sample": a model short of capacity
    # then errs towards blur instead of leaving noise in, docs/d2i.md)
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    # exponential moving average of the weights (0 = off); the saved model is the average. diffusers'
    # EMAModel with its warm-up (decay min(ema, n / (9 + n)) at the n-th update)
    pretrain_ema: float = 0.0
    # a tiny d2i directory whose UNet starts the run (continue a shipped or earlier model on more data
    # or steps); its architecture, patch and prediction type are used, `channels` is ignored
    pretrain_init: Optional[str] = None
    save_every: int = 250
    seed: int = 0


@dataclass
class RewardConfig:
    depth_weight: float = 0.9
    aesthetic_weight: float = 0.1
    depth_mean_centre: bool = True
    aesthetic_head: Optional[str] = None  # LAION head .pth / .safetensors
    clip_path: Optional[str] = None  # local CLIP ViT-L/14 dir; None turns the aesthetic term off
    aesthetic_model: Optional[str] = None  # toy aesthetic scorer dir (bridge zoo); used instead of CLIP + head
    # proximal term against reward hacking: weight * mean squared difference between the image and the base
    # model's image for the same noise and condition (LoRA off); costs one more no-grad sampling per step
    anchor_weight: float = 0.0


@dataclass
class FinetuneConfig:
    """Reward-gradient fine-tuning (`bridge d2i finetune`)."""

    steps: int = 200
    batch_size: int = 2
    lr: float = 1e-5
    lora_rank: int = 8
    lora_alpha: int = 8
    lora_targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    grad_steps: int = 1  # K: backprop through the last K sampler steps
    random_cutoff: bool = False
    grad_clip: float = 1.0
    checkpointing: bool = True
    checkpoint_granularity: Literal["block", "step"] = "block"  # block: each transformer/UNet block
    decoder_checkpointing: bool = False  # the VAE decoder's blocks
    teacher_checkpointing: bool = True  # the teacher's ViT blocks (when checkpointing is on)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"  # autocast; frozen weights follow d2i.dtype
    num_steps: Optional[int] = None  # sampler steps while fine-tuning (None: d2i.num_steps)
    heldout: int = 8  # source samples (from whole scenes) kept out of training for the before/after evaluation
    max_samples: int = 2000  # unused since the source is streamed; kept for old configs
    open_shards: int = 8  # source shards kept open for random access (the samples themselves are never held)
    log_every: int = 1
    sample_every: int = 50  # sample grid PNG every N steps (0: only at the end)
    save_every: int = 50
    seed: int = 0
    reward: RewardConfig = field(default_factory=RewardConfig)


@dataclass
class GenerateConfig:
    images_per_depth: int = 4
    seed: int = 0
    batch_size: int = 8
    steps: Optional[int] = None
    embed_source: bool = False  # copy the source's depth/valid/RGB into each sample instead of a source_ref


@dataclass
class LabelConfig:
    """Labelling (`bridge mask`, `bridge label`). Similarity-mask defaults are the paper's; see
    docs/labels.md for what each constant does."""

    ssim_threshold: float = 0.85  # mask A and B: SSIM > this
    ssim_sigma: float = 1.5  # Gaussian window (11 taps at truncate 3.5)
    ssim_k1: float = 0.01  # C1 = (k1 * 255)^2
    ssim_k2: float = 0.03  # C2 = (k2 * 255)^2
    ssim_precision: Literal["float32", "float64"] = "float32"  # float64 = skimage to 1e-8
    ssim_backend: Literal["auto", "numba", "opencv"] = "auto"  # auto: fused Numba kernels where they apply
    orb_features: int = 500  # ORB keypoints per image
    orb_max_side: Optional[int] = None  # detect ORB on a copy downscaled to this side (None: full size)
    orb_levels: int = 3  # ORB pyramid levels (small motions: few levels = precise keypoints)
    orb_grid: int = 8  # spread keypoints over this many cells along the longer side (0 or 1: off)
    orb_oversample: int = 3  # detect this many times orb_features, keep orb_features spread over the cells
    orb_patch: int = 0  # ORB patch size and edge threshold (px); 0: 31 from a shorter side of 160 px up, max(9, side // 8) below
    min_matches: int = 10  # fewer cross-checked matches: mask A empty
    min_inliers: int = 4  # fewer RANSAC inliers: mask A empty
    ransac_threshold: float = 3.0  # reprojection error in original-image pixels
    ransac_max_iters: int = 2000  # OpenCV's default
    ransac_confidence: float = 0.995  # OpenCV's default
    # registration model: auto = similarity, affine or homography, whichever is clearly best
    motion_model: Literal["auto", "similarity", "affine", "homography"] = "auto"
    precise_threshold: float = 1.0  # px: residual of a "precise" inlier (what the model choice counts)
    model_tolerance: float = 0.05  # a more general model needs > (1 + this) x the precise inliers
    refine: Literal["ecc", "none"] = "ecc"  # refine the chosen model by ECC on a small grey copy
    refine_side: int = 160  # ECC works on a copy whose shorter side is this (never upscaled)
    refine_iters: int = 30
    refine_max_shift: float = 8.0  # px: reject a refinement that moves an image corner further
    refine_inlier_fraction: float = 0.1  # refine only a model whose RANSAC inliers are at least this fraction of the matches
    max_homography_scale: float = 8.0  # reject homographies scaling area by more than this (or 1/this)
    max_perspective: float = 2.0  # reject homographies whose projective scale varies more than this over the image (or that fold it)
    morph_kernel: int = 3  # square kernel of the opening and the closing
    erode_kernel: int = 3  # final erosion that drops slivers
    accept_fraction: float = 0.5  # accepted iff final mask fraction > this
    crop_size: int = 518  # square crop centred on the largest valid region
    min_size: int = 32  # images with a side below this are degenerate (empty mask)
    min_std: float = 1.0  # grey-level standard deviation below this = one colour (empty mask)
    workers: int = 0
    batch_size: int = 8  # generated images of one size pseudo-labelled per teacher call
    mask_threads: int = 0  # threads for one batch's masks (0: torch's intra-op thread count)


@dataclass
class EvalConfig:
    """Benchmark evaluation (`bridge eval`); the protocol is in docs/evaluation.md."""

    # auto: "disparity" for disparity predictions, "depth" for depth predictions
    alignment: Literal["auto", "disparity", "depth", "median", "none"] = "auto"
    disparity_floor: float = 1e-3  # aligned disparity is clipped below at this before inversion
    min_valid_pixels: int = 10  # images with fewer valid ground-truth pixels are skipped (counted)
    kitti_crop: Literal["garg", "eigen", "none"] = "garg"  # applied after the KB crop
    kitti_kb_crop: bool = True  # crop KITTI to the bottom-centre 352x1216
    nyu_layout: Literal["auto", "marigold", "sync"] = "auto"
    min_depth: Optional[float] = None  # override the dataset's evaluation range (folder: 1e-3..inf)
    max_depth: Optional[float] = None
    batch_pixels: Optional[int] = None  # GT pixels per vectorised batch (None: 2^20 on CPU, 2^25 on GPU)
    input_size: Optional[int] = None  # --model: predictor input size (None: model.input_size)
    cpu_threads: Optional[int] = 1  # torch threads for resize/alignment/metrics on CPU (None: torch's)


@dataclass
class DemoConfig:
    """Sizes of `bridge demo` (the whole pipeline on the embedded default, from the shipped foundations)."""

    train_scenes: int = 1200  # synthetic-look source scenes with exact depth
    val_scenes: int = 32  # held-out synthetic depth maps (D2I before / after fine-tuning)
    test_scenes: int = 96  # real-look test scenes (the toy's "real benchmark")
    photo_scenes: int = 256  # real-look images for the DA-V2-style and oracle rows
    scene_size: list[int] = field(default_factory=lambda: [128, 128])  # [H, W]
    gen_sources: int = 64  # source depth maps that get generated images
    student_steps: int = 150  # every trained row (same initialisation, same budget)
    hybrid_steps: int = 60  # Table 3: the two fine-tunes of the '+ generated' student
    metric_steps: int = 60
    scale_head_steps: int = 60
    d2i_finetune_steps: int = 40
    seeds: int = 1  # repeat every trained row over this many training seeds (mean and spread)
    threads: Optional[int] = None  # torch threads (None: torch's default)
    stage_workers: int = 1  # processes running independent stages side by side (the 2 generations, the
    # trained rows); the torch threads are split between them (the tiny preset: 2; never more than cores)
    zoo_preset: str = "zoo"  # --from-scratch: the recipe that builds the foundations first
    fixtures: Optional[str] = None  # real RGB-D fixtures folder (default: ../shared/data/rgbd if present)


@dataclass
class ZooConfig:
    """`bridge zoo build`: the toy foundation models shipped with the package (docs/zoo.md).

    Scene seeds: ``seed`` + 0 teacher training (synthetic look), + 1 teacher validation (synthetic),
    + 2 the D2I foundation's "photographs" (real look; their depth is never used), + 3 the cards'
    held-out real-look scenes. None of them may equal a demo seed (tests check it)."""

    seed: int = 1000
    scene_size: list[int] = field(default_factory=lambda: [128, 128])  # [H, W]
    teacher_scenes: int = 4000
    photo_scenes: int = 3000
    val_scenes: int = 64
    # depth foundation (the DINOv2 + teacher stand-in), trained on the synthetic look with ground truth
    depth_arch: str = "toy"
    depth_steps: int = 3000
    depth_batch_size: int = 8
    depth_lr: float = 1.0e-4  # decoder x10 (train.decoder_lr_mult)
    depth_warmup_steps: int = 100
    depth_color_jitter: float = 0.0  # brightness/contrast/saturation jitter (train.color_jitter); the zoo preset's 0.2 is the shipped build's (docs/zoo.md)
    # D2I foundation (the FLUX.1-Depth stand-in): real-look photos conditioned on the teacher's estimate
    d2i_resolution: int = 96
    d2i_patch: int = 4
    d2i_channels: list[int] = field(default_factory=lambda: [64, 128, 192])
    d2i_steps: int = 4000
    d2i_batch_size: int = 16
    d2i_lr: float = 5.0e-4
    d2i_sampling_steps: int = 20
    d2i_prediction: Literal["epsilon", "v_prediction", "sample"] = "v_prediction"  # the UNet's training target
    d2i_ema: float = 0.0  # moving average of the D2I weights (d2i.pretrain_ema; 0 = off)
    # toy aesthetic scorer (the CLIP + LAION stand-in)
    scorer_steps: int = 1500
    scorer_size: int = 64
    scorer_generated: int = 600  # negatives made by the untuned D2I foundation (0: none)
    # what the scorer rates high: "photo" (the real look; synthetic renders are negatives) or "quality"
    # (clean images of either look; degraded images and D2I samples are negatives): docs/zoo.md
    scorer_target: Literal["photo", "quality"] = "photo"
    threads: Optional[int] = None  # torch threads (None: torch's default)


@dataclass
class Config:
    """The whole run. Every run writes the resolved version of this next to its outputs."""

    name: str = "tiny"
    description: str = ""
    seed: int = 0
    out: str = "runs/demo"
    device: str = "auto"
    scenes: ScenesConfig = field(default_factory=ScenesConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    d2i: D2IConfig = field(default_factory=D2IConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    zoo: ZooConfig = field(default_factory=ZooConfig)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-stage raw overrides
    overrides: list[str] = field(default_factory=list)  # the command line's --set items (filled by load_config)


# --------------------------------------------------------------------------------------------
# Machinery
# --------------------------------------------------------------------------------------------

PRESET_DIR = Path(__file__).resolve().parent / "configs"


def preset_names() -> list[str]:
    """Names of the shipped presets (``configs/*.yaml``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return it (ints widen to floats)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported annotation {tp!r}")


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        if k not in hints:
            raise ConfigError(
                f"unknown key '{prefix}{k}'; valid keys{' under ' + prefix.rstrip('.') if prefix else ''}: "
                + ", ".join(names)
            )
        kwargs[k] = _coerce(v, hints[k], prefix + k)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    """Plain-data view of a config (for YAML/JSON output)."""
    return dataclasses.asdict(cfg)


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": value}`` of a nested dict (``to_dict`` of a config); lists stay values."""
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def pick_settings(flat: dict, *keys: str, drop: tuple[str, ...] = ()) -> dict:
    """The entries of a flattened config whose key is one of ``keys`` or starts with one ending in
    ``.`` or ``_``, less those ending in one of ``drop``: what one stage of a long job reads."""
    def wanted(k: str) -> bool:
        return any(k == p or (p[-1] in "._" and k.startswith(p)) for p in keys) and not k.endswith(drop)

    return {k: v for k, v in flat.items() if wanted(k)}


def changed_settings(old: dict, new: dict) -> list[tuple[str, Any, Any]]:
    """``(dotted key, old value, new value)`` for every setting that differs between two (nested)
    settings dicts, sorted by key: what every "made with other settings" check of a rerun compares.
    Keys only one side has are not compared: a setting added by a later version, at its default,
    reproduces what the older output was made with. So a dict whose keys vary (adapter options, a
    model fingerprint) is to be given as one value (a digest or sorted JSON), not nested."""
    a, b = flatten(old), flatten(new)
    return [(k, a[k], b[k]) for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]


def describe_changes(changes: list[tuple[str, Any, Any]], *, limit: int = 4,
                     form: str = "{key}: {old!r} -> {new!r}", named: dict[str, str] | None = None) -> str:
    """The first ``limit`` of :func:`changed_settings`' changes as text: ``form`` filled per change, or
    the fixed text ``named[key]`` (for values such as weight digests that mean nothing to a reader)."""
    named = named or {}
    shown = "; ".join(named.get(k) or form.format(key=k, old=_short(a), new=_short(b)) for k, a, b in changes[:limit])
    return shown + (f" (and {len(changes) - limit} more)" if len(changes) > limit else "")


class _Digest(str):
    """A sha256 hex digest as a reader needs it: its first 12 digits."""

    def __repr__(self) -> str:
        return f"sha256:{self[:12]}"


def _short(v: Any) -> Any:
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return _Digest(v)
    return v


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _resolve_preset_path(preset: str | os.PathLike) -> Path:
    p = Path(preset)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        return p
    cand = PRESET_DIR / f"{preset}.yaml"
    if not cand.exists():
        raise ConfigError(f"unknown preset '{preset}'; available presets: {', '.join(preset_names())}")
    return cand


def load_raw(preset: str | os.PathLike, _seen: tuple = ()) -> dict:
    """Read a preset (name or path) into a plain mapping, following ``base:`` chains."""
    path = _resolve_preset_path(preset)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: circular 'base' chain")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid YAML: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror or e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file must be a mapping at the top level")
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: base must be a preset name or a file name, got {base!r}")
        base_path = base if base in preset_names() else path.parent / base
        try:
            data = _deep_merge(load_raw(base_path, _seen + (path.resolve(),)), data)
        except ConfigError as e:
            if str(e).startswith(str(path)):
                raise
            raise ConfigError(f"{path}: base {base!r}: {e}") from None
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    """``'train.lr=1e-5'`` -> (['train', 'lr'], 1e-05)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key.path=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads 1e-5 as a string (no dot); accept it as a float.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") and value.strip() else value
        except ValueError:
            pass
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    data = _deep_merge({}, data)
    for item in overrides or []:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[path[-1]] = value
    return data


def load_config(preset: str | os.PathLike = "tiny", overrides: list[str] | None = None) -> Config:
    """Load a preset (name or YAML path), apply dotted overrides, validate."""
    data = apply_overrides(load_raw(preset), overrides)
    try:
        cfg = from_dict(Config, data)
    except ConfigError as e:  # name the file the bad key came from (or the overrides)
        where = _resolve_preset_path(preset)
        raise ConfigError(f"{where}{' with --set overrides' if overrides else ''}: {e}") from None
    cfg.overrides = [*cfg.overrides, *(overrides or [])]
    return cfg


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_resolved(cfg: Any, out_dir: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the resolved configuration next to a run's outputs (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = out / name
    # a unique temporary name (".tmp-", as the shard writers use), removed if the write is interrupted
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        tmp.write_text(dump_yaml(cfg))
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
