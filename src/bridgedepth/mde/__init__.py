"""Depth model: DINOv2 + DPT, scale head, losses, trainer, predictor (imports io, data).

Public names (imported lazily so that ``import bridgedepth.mde`` stays cheap)::

    build_model, make_config, save_model, load_model, load_scale_head, read_metadata,
    ScaleHead, apply_scale, forward_with_features, parameter_groups,
    enable_checkpointing, decoder_channels_last              (bridgedepth.mde.model)
    optimize_for_inference                                  (bridgedepth.mde.fast)
    ARCHS, get_arch, model_names                            (bridgedepth.mde.registry)
    relative_loss, ssi_loss, gradient_matching_loss, silog_loss, DepthLoss   (bridgedepth.mde.losses)
    Predictor, DepthResult, predict_tensor, preprocess      (bridgedepth.mde.predictor)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "build_model": "model", "make_config": "model", "save_model": "model", "load_model": "model",
    "load_scale_head": "model", "read_metadata": "model", "ScaleHead": "model", "apply_scale": "model",
    "forward_with_features": "model", "set_attention": "model", "init_encoder": "model",
    "parameter_groups": "model", "enable_checkpointing": "model", "decoder_channels_last": "model", "count_parameters": "model", "optimize_for_inference": "fast",
    "ARCHS": "registry", "get_arch": "registry", "model_names": "registry",
    "relative_loss": "losses", "ssi_loss": "losses", "gradient_matching_loss": "losses",
    "silog_loss": "losses", "DepthLoss": "losses", "LossTerms": "losses", "align_scale_shift": "losses",
    "Predictor": "predictor", "DepthResult": "predictor", "predict_tensor": "predictor",
    "preprocess": "predictor", "load": "predictor", "normalize01": "predictor",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'bridgedepth.mde' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)
