"""Evaluation: alignment, metrics, benchmark runner, tables (imports io, data, mde).

The protocol is documented in docs/evaluation.md. Entry points:

* :func:`align`, :func:`compute_metrics`, :func:`evaluate_arrays` — batched (B, H, W) tensors;
* :func:`evaluate` — a benchmark loader (``bridgedepth.data.benchmarks.get_benchmark``) against a
  prediction source (:class:`FolderPredictions` or :class:`ModelPredictions`);
* :func:`side_by_side`, :func:`result_markdown`, :func:`table1_markdown` — tables.
"""

from ._segments import Workspace
from .alignment import ALIGNMENTS, PREDICTION_TYPES, Aligned, align, least_squares_scale_shift, masked_median
from .metrics import METRICS, compute_metrics
from .runner import (
    EvalResult,
    FolderPredictions,
    ModelPredictions,
    check_prediction_cache,
    evaluate,
    evaluate_arrays,
    evaluate_dense,
    evaluate_pairs,
    pair_accuracy,
    prediction_to_gt_frame,
    predictor_settings,
    resize_bilinear,
)
from .tables import result_markdown, side_by_side, table1_markdown

__all__ = [
    "ALIGNMENTS", "PREDICTION_TYPES", "METRICS", "Aligned", "EvalResult", "FolderPredictions",
    "ModelPredictions", "align", "check_prediction_cache", "compute_metrics", "evaluate", "evaluate_arrays",
    "evaluate_dense", "evaluate_pairs", "least_squares_scale_shift", "masked_median", "pair_accuracy",
    "prediction_to_gt_frame", "predictor_settings", "resize_bilinear", "result_markdown", "side_by_side",
    "table1_markdown", "Workspace",
]
