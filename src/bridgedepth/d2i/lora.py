"""LoRA adapters on the denoiser (peft) saved in diffusers' LoRA file format."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from ..errors import InputError
from ..io import usual_permissions

PREFIX = "unet."  # diffusers names UNet LoRA keys "unet.<module>.lora_A.weight"


def add_lora(model: torch.nn.Module, rank: int = 8, alpha: int = 8, targets=("to_q", "to_k", "to_v", "to_out.0")):
    """Inject LoRA into ``model``'s attention projections; freeze everything else. The LoRA parameters
    are fp32 whatever the frozen weights' dtype (peft casts the input to them and the sum back)."""
    found = [n for n, _ in model.named_modules() if any(n == t or n.endswith("." + t) for t in targets)]
    if not found:
        raise InputError(f"no LoRA target modules {list(targets)} in {type(model).__name__}")
    cfg = LoraConfig(r=int(rank), lora_alpha=int(alpha), target_modules=list(targets), init_lora_weights=True)
    model.requires_grad_(False)
    inject_adapter_in_model(cfg, model)
    for n, p in model.named_parameters():
        p.requires_grad_("lora_" in n)
        if "lora_" in n and p.dtype != torch.float32:
            p.data = p.data.float()
    return model


@contextmanager
def lora_disabled(model: torch.nn.Module):
    """Run ``model`` as its base inside the block (every peft LoRA layer bypassed), then switch the
    adapters back on with the trainable flags they had."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    flags = {id(p): p.requires_grad for p in lora_parameters(model)}
    for m in layers:
        m.enable_adapters(False)
    try:
        yield model
    finally:
        for m in layers:
            m.enable_adapters(True)
        for p in lora_parameters(model):
            p.requires_grad_(flags.get(id(p), p.requires_grad))


def lora_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if "lora_" in n]


def save_lora(model: torch.nn.Module, path: str | os.PathLike, prefix: str = PREFIX) -> None:
    model = getattr(model, "module", model)
    sd = get_peft_model_state_dict(model)
    sd = {prefix + k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sd.items()}
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt"})
    usual_permissions(tmp)  # safetensors writes 0600
    os.replace(tmp, p)


def load_lora(model: torch.nn.Module, path: str | os.PathLike, prefix: str | None = None) -> None:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: LoRA weights file does not exist")
    sd = load_file(str(p))
    if prefix is None:
        prefix = next((k.split(".", 1)[0] + "." for k in sd if k.split(".", 1)[0] in ("unet", "transformer")), "")
    sd = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
    model = getattr(model, "module", model)
    res = set_peft_model_state_dict(model, sd)
    unexpected = getattr(res, "unexpected_keys", [])
    if unexpected:
        raise InputError(f"{p}: LoRA keys do not match the model: {unexpected[:3]}...")
