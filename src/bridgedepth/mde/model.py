"""The depth model: transformers' ``DepthAnythingForDepthEstimation`` (DINOv2 backbone + DPT neck/head).

Build by name from :mod:`bridgedepth.mde.registry`::

    model = build_model("vits", head="relative")                   # ReLU output: affine-invariant disparity
    model = build_model("vitl", head="metric", max_depth=20.0)      # sigmoid * max_depth: metres
    model = build_model("vits", encoder_init="/models/dinov2-small")  # DINOv2 weights from a local HF dir

Checkpoints are Hugging Face directories (``config.json`` + ``model.safetensors`` +
``preprocessor_config.json``, loadable by ``transformers.pipeline("depth-estimation", model=DIR)``) plus our
``bridge.json`` (architecture name, head, input size, training metadata) and, optionally,
``scale_head.safetensors``. Nothing here ever unpickles.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from .registry import ArchSpec, get_arch

BRIDGE_META = "bridge.json"
SCALE_HEAD_FILE = "scale_head.safetensors"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HEADS = ("relative", "metric")


def make_config(name: str | ArchSpec = "tiny", head: str = "relative", max_depth: float = 20.0):
    """The ``DepthAnythingConfig`` of a registry architecture (a name, or an :class:`ArchSpec`).

    ``head="relative"`` ends in ReLU (non-negative disparity, scale 1); ``head="metric"`` ends in
    ``sigmoid * max_depth`` (metres). transformers multiplies by ``max_depth`` in both cases, so the relative
    head stores ``max_depth=1``.
    """
    from transformers import DepthAnythingConfig, Dinov2Config

    if head not in HEADS:
        raise InputError(f"unknown head '{head}'; use one of {list(HEADS)}")
    if head == "metric" and not max_depth > 0:
        raise InputError(f"metric head needs max_depth > 0, got {max_depth}")
    if head == "metric" and float(max_depth) != int(max_depth):
        # transformers' DepthAnythingConfig types max_depth as an int (20 indoor, 80 outdoor)
        raise InputError(f"max_depth must be a whole number of metres for transformers' config, got {max_depth}")
    a: ArchSpec = get_arch(name) if isinstance(name, str) else name
    backbone = Dinov2Config(
        hidden_size=a.hidden_size,
        num_hidden_layers=a.num_layers,
        num_attention_heads=a.num_heads,
        mlp_ratio=a.mlp_ratio,
        image_size=a.image_size,
        patch_size=a.patch_size,
        use_swiglu_ffn=a.swiglu,
        layerscale_value=1.0,
        # stage0 is the embedding output, so block i is stage i + 1
        out_indices=[b + 1 for b in a.tapped_blocks],
        apply_layernorm=True,
        reshape_hidden_states=False,
    )
    return DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=a.hidden_size,
        patch_size=a.patch_size,
        neck_hidden_sizes=list(a.out_channels),
        fusion_hidden_size=a.features,
        head_hidden_size=a.head_hidden_size,
        depth_estimation_type=head,
        max_depth=int(max_depth) if head == "metric" else 1,
    )


def build_model(
    name: str | ArchSpec = "tiny",
    head: str = "relative",
    max_depth: float = 20.0,
    *,
    encoder_init: str | os.PathLike | None = None,
    attn_implementation: str = "sdpa",
    seed: int | None = None,
):
    """A randomly initialised ``DepthAnythingForDepthEstimation`` of a registry architecture.

    ``encoder_init`` names a local DINOv2 checkpoint in Hugging Face format (``Dinov2Model.save_pretrained``
    output, e.g. a downloaded ``facebook/dinov2-small``); its weights replace the random encoder.
    ``seed`` makes the random initialisation reproducible. The registry name is kept on the model as
    ``model.bridge_arch`` (None for an ad-hoc :class:`ArchSpec`).
    """
    from transformers import DepthAnythingForDepthEstimation

    cfg = make_config(name, head, max_depth)
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = DepthAnythingForDepthEstimation(cfg)
            _init_dpt_like_original(model)
    else:
        model = DepthAnythingForDepthEstimation(cfg)
        _init_dpt_like_original(model)
    set_attention(model, attn_implementation)
    model.bridge_arch = name if isinstance(name, str) else None
    if encoder_init is not None:
        init_encoder(model, encoder_init)
    return model


def _init_dpt_like_original(model) -> None:
    """Depth-Anything-V2 leaves its DPT neck/head at PyTorch's default initialisation (Kaiming-uniform
    weights, uniform biases); transformers draws N(0, 0.02) weights and zero biases, which makes the initial
    output ~1e-5 and lets the final ReLU die early in training. Re-initialise the neck and head the
    original way (the DINOv2 encoder keeps transformers' DINOv2 initialisation). One deviation: a relative
    head's last bias starts at +1, so that the final ReLU is active everywhere; with a random bias about
    half of the random initialisations output exactly 0 everywhere, and then nothing trains."""
    if next(model.parameters()).is_meta:
        return
    for module in list(model.neck.modules()) + list(model.head.modules()):
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.reset_parameters()
    if model.config.depth_estimation_type == "relative":
        with torch.no_grad():
            model.head.conv3.bias.fill_(1.0)


SIGN_AWARE_DAMPING = 0.3


def relative_to_metric(model, max_depth: float, damping: float = SIGN_AWARE_DAMPING):
    """A metric-head model (``sigmoid * max_depth``) that starts from a relative model, decoder included.

    The relative head's last conv outputs disparity-ordered values (``ReLU(x)`` is the disparity): read
    as sigmoid logits of *depth* they order the first metric predictions inversely. Here every weight is
    copied and the last conv (``head.conv3``) is multiplied by ``-damping``, so that the logits are
    ``-damping * x``: depth = ``max_depth * sigmoid(-damping * x)``, a decreasing function of the relative
    disparity, whose rank correlation with GT depth is the relative model's with GT disparity. The damping
    keeps the sigmoid out of saturation for relative outputs up to ~10 (docs/training.md, measurements).
    """
    from transformers import DepthAnythingForDepthEstimation

    if model.config.depth_estimation_type != "relative":
        raise InputError("relative_to_metric needs a relative model")
    if not max_depth > 0 or float(max_depth) != int(max_depth):
        raise InputError(f"max_depth must be a positive whole number of metres, got {max_depth}")
    if not damping > 0:
        raise InputError(f"damping must be > 0, got {damping}")
    cfg = model.config.__class__.from_dict(model.config.to_dict())
    cfg.depth_estimation_type = "metric"
    cfg.max_depth = int(max_depth)
    metric = DepthAnythingForDepthEstimation(cfg)
    metric.load_state_dict(model.state_dict())
    with torch.no_grad():
        metric.head.conv3.weight.mul_(-float(damping))
        metric.head.conv3.bias.mul_(-float(damping))
    set_attention(metric, getattr(model.backbone.config, "_attn_implementation", None) or "sdpa")
    metric.bridge_arch = getattr(model, "bridge_arch", None)
    metric.bridge_meta = getattr(model, "bridge_meta", {})
    return metric


def set_attention(model, attn_implementation: str = "sdpa") -> None:
    """Attention kernel of the DINOv2 encoder: ``"sdpa"`` (PyTorch fused, default) or ``"eager"``."""
    model.backbone.set_attn_implementation(attn_implementation)


def init_encoder(model, encoder_dir: str | os.PathLike) -> None:
    """Copy a local Hugging Face DINOv2 checkpoint into ``model.backbone`` (strict; dims must match).

    A position-embedding grid of a different size is resized bicubically (as DINOv2 does at run time).
    """
    from transformers import Dinov2Config, Dinov2Model

    d = Path(encoder_dir)
    if not (d / "config.json").is_file():
        raise InputError(f"{d}: not a Hugging Face DINOv2 checkpoint (no config.json)")
    if not any(d.glob("model*.safetensors")):
        raise InputError(f"{d}: no model.safetensors (only safetensors weights are loaded, never pickles)")
    src_cfg = Dinov2Config.from_pretrained(d)
    bcfg = model.config.backbone_config
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size", "use_swiglu_ffn"):
        if getattr(src_cfg, k) != getattr(bcfg, k):
            raise InputError(
                f"{d}: encoder {k}={getattr(src_cfg, k)} does not match the model's {getattr(bcfg, k)}"
            )
    # from_pretrained applies transformers' own key conversions (legacy names on disk)
    with quiet_transformers():
        sd = Dinov2Model.from_pretrained(d, use_safetensors=True, local_files_only=True).state_dict()
    target = model.backbone.state_dict()
    pos = "embeddings.position_embeddings"
    if pos in sd and sd[pos].shape != target[pos].shape:
        sd[pos] = resize_position_embeddings(sd[pos], target[pos].shape[1] - 1)
    missing, unexpected = model.backbone.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise InputError(f"{d}: encoder weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")


def resize_position_embeddings(pe: torch.Tensor, num_patches: int) -> torch.Tensor:
    """(1, 1 + n*n, C) -> (1, 1 + m*m, C) with m*m = num_patches (bicubic on the patch grid)."""
    n = int(round((pe.shape[1] - 1) ** 0.5))
    m = int(round(num_patches**0.5))
    if n * n != pe.shape[1] - 1 or m * m != num_patches:
        raise InputError("position embeddings are not on a square grid")
    grid = pe[:, 1:].reshape(1, n, n, -1).permute(0, 3, 1, 2).float()
    grid = nn.functional.interpolate(grid, size=(m, m), mode="bicubic", align_corners=False)
    return torch.cat([pe[:, :1], grid.permute(0, 2, 3, 1).reshape(1, m * m, -1).to(pe.dtype)], dim=1)


# ------------------------------------------------------------------------------------------------
# Scale head (relative disparity -> metric)
# ------------------------------------------------------------------------------------------------


class ScaleHead(nn.Module):
    """Predicts the per-image affine map that turns the relative disparity into metric disparity.

    Input: the last tapped encoder tokens (B, 1 + N, C) (layer-normed, as fed to the DPT neck). Features =
    [CLS token, mean of patch tokens] -> MLP -> (log_scale, shift). Metric disparity (1/m) =
    ``exp(log_scale) * disparity + shift``; depth = 1 / metric disparity (see :func:`apply_scale`).
    The depth model stays frozen; only this head is trained (stage ``scale-head``).
    """

    def __init__(self, in_features: int, hidden: int = 128, max_depth: float | None = None):
        super().__init__()
        self.in_features = in_features
        self.hidden = hidden
        self.max_depth = max_depth  # depth cap applied by apply_scale at prediction time
        self.mlp = nn.Sequential(nn.Linear(2 * in_features, hidden), nn.GELU(), nn.Linear(hidden, 2))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = torch.cat([tokens[:, 0], tokens[:, 1:].mean(dim=1)], dim=-1)
        out = self.mlp(feats)
        return out[:, 0], out[:, 1]  # log_scale (B,), shift (B,)

    def config(self) -> dict:
        return {"in_features": self.in_features, "hidden": self.hidden, "max_depth": self.max_depth}


def apply_scale(
    disparity: torch.Tensor, log_scale: torch.Tensor, shift: torch.Tensor, max_depth: float | None = None
) -> torch.Tensor:
    """Metric depth (m) from relative disparity (B, H, W) and a scale head's output (B,)."""
    metric_disp = disparity * log_scale.exp()[:, None, None] + shift[:, None, None]
    floor = 1.0 / max_depth if max_depth else 1e-6
    return 1.0 / metric_disp.clamp_min(floor)


def forward_with_features(model, pixel_values: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One pass returning (head output (B, H, W), the backbone's tapped token maps [(B, 1 + N, C)] * 4)."""
    out = model.backbone(pixel_values)
    feats = list(out.feature_maps)
    ps = model.config.patch_size
    ph, pw = pixel_values.shape[-2] // ps, pixel_values.shape[-1] // ps
    hidden = model.neck(feats, ph, pw)
    return model.head(hidden, ph, pw), feats


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------


def image_processor_for(input_size: int = 518, multiple: int = 14):
    """The transformers image processor that reproduces Depth-Anything-V2's preprocessing. Built as
    ``DPTImageProcessor`` (what ``preprocessor_config.json`` names, for every transformers version);
    without torchvision transformers 5 gives its PIL variant, with a warning at every checkpoint save
    that is silenced here (the preprocessing is the same)."""
    with quiet_transformers(logs=True):
        from transformers import DPTImageProcessor  # the first access warns (and picks the variant)

        return DPTImageProcessor(
            do_resize=True,
            size={"height": input_size, "width": input_size},
            keep_aspect_ratio=True,
            ensure_multiple_of=multiple,
            resample=3,  # PIL bicubic
            do_rescale=True,
            rescale_factor=1 / 255,
            do_normalize=True,
            image_mean=list(IMAGENET_MEAN),
            image_std=list(IMAGENET_STD),
            do_pad=False,
        )


def save_model(
    model,
    out_dir: str | os.PathLike,
    extra: dict | None = None,
    *,
    scale_head: ScaleHead | None = None,
    input_size: int | None = None,
) -> Path:
    """Write a checkpoint directory atomically (every file written to a temp dir, then renamed in).

    Files: ``config.json``, ``model.safetensors``, ``preprocessor_config.json`` (transformers),
    ``bridge.json`` (ours: ``arch``, ``head``, ``max_depth``, ``input_size``, ``extra`` = training metadata,
    ``scale_head`` config), ``README.md`` (the model card: :mod:`bridgedepth.mde.card`) and
    ``scale_head.safetensors`` when a scale head is given. ``bridge.json`` is
    renamed in last, so its presence marks a complete checkpoint.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arch = getattr(model, "bridge_arch", None)
    if input_size is None:
        input_size = get_arch(arch).image_size if arch else 518
    meta: dict[str, Any] = {
        "format": "bridgedepth-mde/1",
        "arch": arch,
        "head": model.config.depth_estimation_type,
        "max_depth": float(model.config.max_depth),
        "input_size": int(input_size),
        "extra": extra or {},
    }
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-ckpt-", dir=out))
    try:
        with quiet_transformers():  # transformers' "Writing model shards" bar, printed at every checkpoint
            model.save_pretrained(tmp, safe_serialization=True)
        image_processor_for(input_size, int(model.config.patch_size)).save_pretrained(tmp)
        if scale_head is not None:
            save_file({k: v.detach().contiguous().cpu() for k, v in scale_head.state_dict().items()},
                      str(tmp / SCALE_HEAD_FILE))
            meta["scale_head"] = scale_head.config()
        elif (out / SCALE_HEAD_FILE).exists():
            (out / SCALE_HEAD_FILE).unlink()
        (tmp / BRIDGE_META).write_text(json.dumps(meta, indent=2, default=str))
        from .card import render_card  # the model card (README.md), from the same metadata

        (tmp / "README.md").write_text(render_card(json.loads((tmp / BRIDGE_META).read_text()),
                                                   count_parameters(model)))
        from ..io import usual_permissions

        usual_permissions(tmp)  # safetensors writes 0600
        names = sorted(p.name for p in tmp.iterdir() if p.name != BRIDGE_META) + [BRIDGE_META]
        for name in names:
            with open(tmp / name, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_metadata(ckpt_dir: str | os.PathLike) -> dict:
    """``bridge.json`` of a checkpoint (an empty dict for a plain transformers directory)."""
    p = Path(ckpt_dir) / BRIDGE_META
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{p}: not valid JSON ({e})") from e


def load_model(ckpt_dir: str | os.PathLike, *, attn_implementation: str = "sdpa", device=None):
    """Load a checkpoint directory (ours or any transformers DepthAnything directory with safetensors).

    Returns the model in eval mode with ``model.bridge_arch`` / ``model.bridge_meta`` set. Only
    ``model.safetensors`` is read (pickled ``.bin`` weights are refused).
    """
    from transformers import DepthAnythingForDepthEstimation

    d = Path(ckpt_dir)
    if not d.is_dir():
        raise InputError(f"{d}: model directory not found")
    if not (d / "config.json").is_file():
        raise InputError(f"{d}: not a model checkpoint (no config.json)")
    if not any(d.glob("model*.safetensors")):
        raise InputError(f"{d}: no model.safetensors (only safetensors weights are loaded, never pickles)")
    from safetensors import SafetensorError

    meta = read_metadata(d)
    try:
        with quiet_transformers():
            model, info = DepthAnythingForDepthEstimation.from_pretrained(
                d, use_safetensors=True, local_files_only=True, output_loading_info=True
            )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as e:  # incl. size mismatches
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise InputError(f"{d}: cannot load the model ({type(e).__name__}: {first})") from None
    # transformers initialises missing tensors at random with only a warning: refuse instead
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        detail = "; ".join(f"{k.replace('_', ' ')}: {', '.join(map(str, sorted(v)[:5]))}"
                           f"{' ...' if len(v) > 5 else ''}" for k, v in bad.items())
        raise InputError(f"{d}: model.safetensors does not fit config.json ({detail})")
    set_attention(model, attn_implementation)
    model.bridge_arch = meta.get("arch")
    model.bridge_meta = meta
    if device is not None:
        model.to(device)
    return model.eval()


@contextlib.contextmanager
def quiet_transformers(logs: bool = False):
    """transformers' progress bars off (with ``logs``, its warnings too) while a checkpoint loads or
    saves (local files take about a second; "Loading weights" was printed by every `bridge predict`
    and by each of the demo's worker processes, "Writing model shards" at every training checkpoint,
    even with --no-progress); the previous state is restored after."""
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    if logs:
        hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_scale_head(ckpt_dir: str | os.PathLike) -> ScaleHead | None:
    """The checkpoint's scale head, or None when it has none."""
    from safetensors.torch import load_file

    d = Path(ckpt_dir)
    meta = read_metadata(d)
    if "scale_head" not in meta or not (d / SCALE_HEAD_FILE).is_file():
        return None
    f = d / SCALE_HEAD_FILE
    try:
        head = ScaleHead(**meta["scale_head"])
        head.load_state_dict(load_file(str(f)))
    except Exception as e:  # noqa: BLE001 - SafetensorError, missing / mismatched tensors, bad metadata
        detail = " ".join(str(e).split())[:300]
        raise InputError(f"{f}: cannot load the scale head ({type(e).__name__}: {detail})") from None
    return head.eval()


def parameter_groups(model, lr: float, decoder_lr_mult: float = 10.0, weight_decay: float = 0.01) -> list[dict]:
    """AdamW parameter groups as Depth Anything trains: the DINOv2 encoder (``backbone.*``) at ``lr``, the
    DPT neck and head at ``lr * decoder_lr_mult``; biases, norms, layer scales, tokens and position
    embeddings without weight decay. Each group has a ``name`` ("encoder", "encoder_no_decay", "decoder",
    "decoder_no_decay") and ``initial_lr`` for schedulers."""
    groups: dict[str, list] = {"encoder": [], "encoder_no_decay": [], "decoder": [], "decoder_no_decay": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "encoder" if name.startswith("backbone.") else "decoder"
        no_decay = p.dim() <= 1 or name.endswith(("cls_token", "mask_token", "position_embeddings"))
        groups[part + ("_no_decay" if no_decay else "")].append(p)
    out = []
    for name, params in groups.items():
        if params:
            g_lr = lr * (decoder_lr_mult if name.startswith("decoder") else 1.0)
            out.append({"name": name, "params": params, "lr": g_lr, "initial_lr": g_lr,
                        "weight_decay": 0.0 if name.endswith("no_decay") else weight_decay})
    return out


def enable_checkpointing(model) -> None:
    """Activation (gradient) checkpointing of every DINOv2 block, non-reentrant; uses transformers'
    ``activation_checkpointing_enable`` (5.x) or ``gradient_checkpointing_enable`` (4.x)."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:  # pragma: no cover - transformers 4.x
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def decoder_channels_last(model) -> None:
    """The DPT neck and head (every convolution of the model but the patch embedding) in NHWC memory
    layout, in place: oneDNN's native layout on CPU (the demo's training rows, toy model at batch 8,
    128 px, 2 threads: 1.2-1.3x faster; docs/performance.md), the tensor cores' on GPU. The maths and the
    saved weights are unchanged (checkpoints are written contiguous)."""
    model.neck.to(memory_format=torch.channels_last)
    model.head.to(memory_format=torch.channels_last)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
