"""Convert original Depth-Anything-V2 checkpoints (``depth_anything_v2_vit?.pth``) to our format.

The original model is ``DepthAnythingV2``: ``pretrained`` = DINOv2 ``DinoVisionTransformer`` (fused ``qkv``
projection, ``ls1/ls2`` layer scale, ``mlp.fc1/fc2`` or, for ViT-G, the fused SwiGLU ``mlp.w12/w3``), and
``depth_head`` = ``DPTHead`` (``projects``, ``resize_layers``, ``scratch.layerN_rn``,
``scratch.refinenet1..4``, ``scratch.output_conv1/2``). The key mapping to transformers'
``DepthAnythingForDepthEstimation``:

- ``attn.qkv`` (3C, C) is split row-wise into ``q_proj``, ``k_proj``, ``v_proj`` (in that order);
  SwiGLU ``w12`` (2H, C) into ``gate_proj`` (first H rows) and ``up_proj``; ``w3`` -> ``down_proj``;
- the DPT fusion blocks run deepest first in transformers, so ``refinenet{k}`` -> ``fusion_stage.layers[4-k]``;
- ``resize_layers[2]`` is an identity (no weights); ``output_conv2.0/.2`` -> ``head.conv2/.conv3``.

Every source key must be consumed and every target key filled, otherwise the conversion fails and
names the keys. The ``.pth`` is read with ``torch.load(weights_only=True)`` (tensors only, no code).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import InputError
from .registry import ArchSpec, get_arch

ENCODERS = ("vits", "vitb", "vitl", "vitg")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth`` (``weights_only=True``) or ``.safetensors`` file; unwraps ``{"model": ...}`` /
    ``{"state_dict": ...}`` and a DDP ``module.`` prefix."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: checkpoint file not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p))
    else:
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - unpickling refusals and corrupt files alike
            raise InputError(f"{p}: not a weights-only PyTorch checkpoint ({type(e).__name__}: {e})") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"{p}: expected a state dict of tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _rename_table(arch: ArchSpec) -> dict[str, str]:
    t = {
        "pretrained.cls_token": "backbone.embeddings.cls_token",
        "pretrained.mask_token": "backbone.embeddings.mask_token",
        "pretrained.pos_embed": "backbone.embeddings.position_embeddings",
        "pretrained.patch_embed.proj.weight": "backbone.embeddings.patch_embeddings.projection.weight",
        "pretrained.patch_embed.proj.bias": "backbone.embeddings.patch_embeddings.projection.bias",
        "pretrained.norm.weight": "backbone.layernorm.weight",
        "pretrained.norm.bias": "backbone.layernorm.bias",
    }
    for i in range(arch.num_layers):
        src, dst = f"pretrained.blocks.{i}.", f"backbone.encoder.layer.{i}."
        for wb in ("weight", "bias"):
            t[f"{src}norm1.{wb}"] = f"{dst}norm1.{wb}"
            t[f"{src}norm2.{wb}"] = f"{dst}norm2.{wb}"
            t[f"{src}attn.proj.{wb}"] = f"{dst}attention.o_proj.{wb}"
            if arch.swiglu:
                t[f"{src}mlp.w3.{wb}"] = f"{dst}mlp.down_proj.{wb}"
            else:
                t[f"{src}mlp.fc1.{wb}"] = f"{dst}mlp.fc1.{wb}"
                t[f"{src}mlp.fc2.{wb}"] = f"{dst}mlp.fc2.{wb}"
        t[f"{src}ls1.gamma"] = f"{dst}layer_scale1.lambda1"
        t[f"{src}ls2.gamma"] = f"{dst}layer_scale2.lambda1"
    for i in range(4):
        for wb in ("weight", "bias"):
            t[f"depth_head.projects.{i}.{wb}"] = f"neck.reassemble_stage.layers.{i}.projection.{wb}"
            if i != 2:
                t[f"depth_head.resize_layers.{i}.{wb}"] = f"neck.reassemble_stage.layers.{i}.resize.{wb}"
        t[f"depth_head.scratch.layer{i + 1}_rn.weight"] = f"neck.convs.{i}.weight"
    for k in range(1, 5):
        src, dst = f"depth_head.scratch.refinenet{k}.", f"neck.fusion_stage.layers.{4 - k}."
        for wb in ("weight", "bias"):
            t[f"{src}out_conv.{wb}"] = f"{dst}projection.{wb}"
            for u in (1, 2):
                for c in (1, 2):
                    t[f"{src}resConfUnit{u}.conv{c}.{wb}"] = f"{dst}residual_layer{u}.convolution{c}.{wb}"
    for wb in ("weight", "bias"):
        t[f"depth_head.scratch.output_conv1.{wb}"] = f"head.conv1.{wb}"
        t[f"depth_head.scratch.output_conv2.0.{wb}"] = f"head.conv2.{wb}"
        t[f"depth_head.scratch.output_conv2.2.{wb}"] = f"head.conv3.{wb}"
    return t


def convert_state_dict(sd: dict[str, torch.Tensor], arch: str | ArchSpec) -> dict[str, torch.Tensor]:
    """Original Depth-Anything-V2 keys -> transformers ``DepthAnythingForDepthEstimation`` keys."""
    a = get_arch(arch) if isinstance(arch, str) else arch
    sd = dict(sd)
    unsupported = [k for k in sd if "readout_projects" in k or "register_tokens" in k]
    if unsupported:
        raise InputError(f"checkpoint uses features Depth-Anything-V2 does not ship (cls-token readout or "
                         f"register tokens): {unsupported[:3]}")
    cls = sd.get("pretrained.cls_token")
    if cls is None:
        raise InputError("not a Depth-Anything-V2 checkpoint: no 'pretrained.cls_token' key "
                         f"(first keys: {list(sd)[:4]})")
    if cls.shape[-1] != a.hidden_size:
        raise InputError(f"checkpoint encoder is {cls.shape[-1]} wide, but the chosen encoder is "
                         f"{a.hidden_size} wide; pick the matching --encoder")
    n_blocks = len({k.split(".")[2] for k in sd if k.startswith("pretrained.blocks.")})
    if n_blocks != a.num_layers:
        raise InputError(f"checkpoint has {n_blocks} transformer blocks, the chosen encoder {a.num_layers}")
    out: dict[str, torch.Tensor] = {}
    c = a.hidden_size
    for i in range(a.num_layers):
        src, dst = f"pretrained.blocks.{i}.", f"backbone.encoder.layer.{i}."
        for wb in ("weight", "bias"):
            qkv = sd.pop(f"{src}attn.qkv.{wb}", None)
            if qkv is None:
                raise InputError(f"missing key {src}attn.qkv.{wb}")
            for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
                out[f"{dst}attention.{name}.{wb}"] = qkv[j * c : (j + 1) * c].clone()
            if a.swiglu:
                w12 = sd.pop(f"{src}mlp.w12.{wb}", None)
                if w12 is None:
                    raise InputError(f"missing key {src}mlp.w12.{wb} (is this a ViT-G checkpoint?)")
                h = w12.shape[0] // 2
                out[f"{dst}mlp.gate_proj.{wb}"] = w12[:h].clone()
                out[f"{dst}mlp.up_proj.{wb}"] = w12[h:].clone()
    table = _rename_table(a)
    missing = []
    for src, dst in table.items():
        if src in sd:
            out[dst] = sd.pop(src)
        else:
            missing.append(src)
    if missing:
        raise InputError(f"checkpoint lacks {len(missing)} expected key(s), e.g. {missing[:4]}")
    if sd:
        raise InputError(f"checkpoint has {len(sd)} key(s) this conversion does not know, e.g. {list(sd)[:4]}")
    return out


def convert_depth_anything_v2(
    source: str | os.PathLike | dict,
    encoder: str | ArchSpec,
    *,
    metric: bool = False,
    max_depth: float = 20.0,
):
    """Build our model (transformers ``DepthAnythingForDepthEstimation``) from an original checkpoint."""
    from .model import build_model

    sd = read_state_dict(source) if not isinstance(source, dict) else source
    converted = convert_state_dict(sd, encoder)
    with torch.device("meta"):
        model = build_model(encoder, "metric" if metric else "relative", max_depth)
    target = model.state_dict()
    bad = [k for k, v in converted.items() if k not in target or tuple(target[k].shape) != tuple(v.shape)]
    if bad:
        k = bad[0]
        raise InputError(f"converted tensor {k} has shape {tuple(converted[k].shape)}, the model expects "
                         f"{tuple(target[k].shape) if k in target else 'no such key'}")
    missing = [k for k in target if k not in converted]
    if missing:
        raise InputError(f"conversion left model weights unset: {missing[:4]}")
    model.load_state_dict(converted, strict=True, assign=True)
    return model.eval()
