"""Adapter to the depth teacher used by the depth-consistency reward.

Uses ``bridgedepth.mde`` (``load_model`` / ``predict_tensor``) when that package provides them;
otherwise falls back to transformers' DepthAnythingForDepthEstimation with the same semantics
(differentiable; relative disparity; output at the input resolution)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _mde():
    try:
        from .. import mde

        if hasattr(mde, "load_model") and hasattr(mde, "predict_tensor"):
            return mde
    except ImportError:  # pragma: no cover
        pass
    return None


def load_teacher(path: str | os.PathLike, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Load a frozen teacher from a bridgedepth model directory (or any DepthAnything HF directory),
    in ``dtype`` when given (frozen parts follow ``d2i.dtype``)."""
    p = Path(path)
    if not p.is_dir():
        raise InputError(f"{p}: teacher model directory does not exist")
    mde = _mde()
    if mde is not None:
        model = mde.load_model(p)
    else:
        from transformers import DepthAnythingForDepthEstimation

        model = DepthAnythingForDepthEstimation.from_pretrained(p, use_safetensors=True)
    model.eval()
    model.requires_grad_(False)
    if dtype is not None:
        model.to(dtype)
    return model


def _fallback_predict(model, images01: torch.Tensor, input_size: int | None = None) -> torch.Tensor:
    b, _, h, w = images01.shape
    patch = int(getattr(model.config, "patch_size", 14))
    side = input_size or max(h, w)
    side = max(5 * patch, int(round(side / patch)) * patch)  # at least 5x5 patches for tiny images
    x = F.interpolate(images01, size=(side, side), mode="bilinear", align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    pred = model(pixel_values=(x - mean) / std).predicted_depth
    return F.interpolate(pred[:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0]


def teacher_disparity(model, images01: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) images in [0,1] -> (B,H,W) relative disparity (float32), differentiable w.r.t. the
    images. The images are cast to the teacher's dtype (a bf16 teacher runs in bf16)."""
    dt = next(model.parameters()).dtype
    x = images01.to(dt)
    mde = _mde()
    if mde is not None:
        return mde.predict_tensor(model, x).float()
    return _fallback_predict(model, x).float()


def enable_teacher_checkpointing(model) -> None:
    """Block-level activation checkpointing of the frozen teacher's ViT blocks (the depth reward
    backpropagates through it). transformers only checkpoints layers in training mode, so the encoder
    blocks are put in training mode; that is exact only without dropout, which is checked."""
    from ..mde.model import enable_checkpointing

    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Dropout) and m.p > 0:
            raise InputError(f"teacher module {name} has dropout p={m.p}: block checkpointing in training mode "
                             f"would change its output; turn finetune.teacher_checkpointing off")
    enable_checkpointing(model)
    for m in model.modules():
        if getattr(m, "gradient_checkpointing", False):
            m.train()


def tiny_teacher_config(head: str = "relative"):
    """A tiny random DepthAnything configuration (tests and quick experiments). ``head="metric"`` uses the
    sigmoid head (no dead-ReLU collapse when trained briefly from scratch)."""
    from transformers import DepthAnythingConfig, Dinov2Config

    bc = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                      image_size=70, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                      reshape_hidden_states=False)
    return DepthAnythingConfig(backbone_config=bc, reassemble_hidden_size=32, neck_hidden_sizes=[16, 16, 32, 32],
                               fusion_hidden_size=16, head_hidden_size=8, patch_size=14,
                               depth_estimation_type=head, max_depth=1)
