"""Depth-to-image: generator backends, differentiable sampler, rewards, reward fine-tuning (imports mde).

Public names (imported lazily)::

    pretrain (d2i.pretrain), finetune, evaluate_depth (d2i.finetune), generate, Generator (d2i.generate),
    load_backend, Backend (d2i.backend), TinyBackend (d2i.tiny), sample (d2i.sampler),
    RewardRegistry, build_rewards, masked_cosine (d2i.rewards), add_lora, save_lora, load_lora (d2i.lora)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "pretrain": "pretrain", "finetune": "finetune", "evaluate_depth": "finetune", "generate": "generate",
    "Generator": "generate", "load_backend": "backend", "Backend": "backend", "TinyBackend": "tiny",
    "sample": "sampler", "RewardRegistry": "rewards", "build_rewards": "rewards", "masked_cosine": "rewards",
    "add_lora": "lora", "save_lora": "lora", "load_lora": "lora",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
