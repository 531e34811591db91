"""Validation during training: the standard protocol on a held-out shard set."""

from __future__ import annotations

import os
from typing import Callable

from ..config import Config


def make_shard_validator(val_dir: str | os.PathLike, cfg: Config, *, metric: bool | None = None
                         ) -> Callable[[object], dict]:
    """``validate(model) -> {"abs_rel", "delta1", ...}`` on ``val_dir`` (a shard folder).

    Relative models are scored after per-image least-squares alignment in disparity space; metric
    models (or ``metric=True``) with no alignment."""
    from ..data.benchmarks.shard_set import ShardSet
    from ..mde.predictor import Predictor
    from .runner import ModelPredictions, evaluate_dense

    bench = ShardSet(val_dir)
    limit = cfg.train.val_limit or None

    def validate(model) -> dict:
        if hasattr(model, "head") and hasattr(model, "model"):  # the trainer's frozen model + scale head
            is_metric = True
            predictor = Predictor(model.model, input_size=cfg.model.input_size, metric=True, scale_head=model.head,
                                  fast=True)
        else:
            is_metric = metric if metric is not None else (
                getattr(getattr(model, "config", None), "depth_estimation_type", "relative") == "metric")
            predictor = Predictor(model, input_size=cfg.model.input_size, metric=is_metric, fast=True)
        res = evaluate_dense(
            bench, ModelPredictions(predictor, field_name="depth" if is_metric else "disparity"),
            prediction_type="depth" if is_metric else "disparity",
            alignment="none" if is_metric else "disparity",
            disparity_floor=cfg.eval.disparity_floor, limit=limit, progress=False,
        )
        return {k: float(v) for k, v in res.metrics.items() if k in ("abs_rel", "delta1", "rmse")}

    return validate
