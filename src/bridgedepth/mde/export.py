"""ONNX export of a depth checkpoint, its verification with onnxruntime, and an ONNX predictor.

The graph (one input, one output):

- input ``image``: float32 (B, 3, S, S), RGB in [0, 1], S = the export size (``--input-size``, a
  multiple of the patch size). Outside the graph: RGB uint8 -> float / 255, bicubic resize to S x S
  (aspect not kept, as ``bridge predict --fixed-size``).
- inside: ImageNet normalisation ``(x - mean) / std``, the DINOv2 encoder, the DPT head and, for a
  checkpoint with a scale head exported with ``metric=True``, the scale head.
- output ``disparity`` (relative head: affine-invariant inverse depth, larger = nearer) or ``depth``
  (metric head or scale head: metres), float32 (B, S, S). Outside the graph: bilinear resize
  (align_corners=True) back to the input resolution.

``dynamic=True`` makes the batch axis **and the image size** dynamic (height and width any multiples
of the patch size): the graph is exported with ``torch.export`` (the dynamo exporter, symbolic
shapes), and the DPT head's final upsampling is written here with the input's own size, because
transformers' head turns the token grid into Python integers (a traced graph would bake them in).
Outside a dynamic graph the predictor keeps the aspect as the torch predictor does (the shorter side
resized to S, both sides multiples of the patch), so both give the same depth. The check compares ONNX with PyTorch at the export size, at a
wider and a smaller size, and on the fixtures. The model's metadata (``metadata_props``) records
the kind, unit, size, patch, dynamic flags and the source checkpoint.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ..io import atomic_path
from .model import IMAGENET_MEAN, IMAGENET_STD, apply_scale, load_model, load_scale_head

DEFAULT_TOLERANCE = 1e-4


class _ExportGraph(torch.nn.Module):
    def __init__(self, model, scale_head=None):
        super().__init__()
        self.model = model
        self.scale_head = scale_head
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[None, :, None, None])
        self.register_buffer("std", torch.tensor(IMAGENET_STD, dtype=torch.float32)[None, :, None, None])

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image - self.mean) / self.std
        m = self.model
        feats = list(m.backbone(x).feature_maps)
        ps = m.config.patch_size
        hidden = m.neck(feats, x.shape[-2] // ps, x.shape[-1] // ps)
        pred = _head(m.head, hidden, x.shape[-2:])
        if self.scale_head is not None:
            log_s, shift = self.scale_head(feats[-1])
            return apply_scale(pred, log_s, shift, self.scale_head.max_depth)
        return pred


def _head(head, hidden_states, size) -> torch.Tensor:
    """transformers' DepthAnythingDepthEstimationHead.forward with the upsampling to ``size`` (the
    input's, symbolic under torch.export) instead of ``int(patches * patch_size)``: the same result."""
    y = head.conv1(hidden_states[head.head_in_index])
    y = F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=True)
    y = head.activation1(head.conv2(y))
    y = head.activation2(head.conv3(y)) * head.max_depth
    return y.squeeze(1)


@dataclass
class ExportReport:
    path: Path
    kind: str
    input_size: int
    dynamic: bool
    max_abs_diff: dict
    tolerance: float

    @property
    def ok(self) -> bool:
        return all(v <= self.tolerance for v in self.max_abs_diff.values())

    def to_json(self) -> dict:
        return {"path": str(self.path), "kind": self.kind, "input_size": self.input_size, "dynamic": self.dynamic,
                "max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance, "ok": self.ok}


def _graph_for(ckpt_dir, metric: bool):
    model = load_model(ckpt_dir, attn_implementation="eager")
    head = load_scale_head(ckpt_dir) if metric else None
    is_metric_head = model.config.depth_estimation_type == "metric"
    if metric and head is None and not is_metric_head:
        raise InputError(f"{ckpt_dir}: metric export needs a metric model or a checkpoint with a scale head")
    kind = "depth" if (head is not None or is_metric_head) else "disparity"
    return _ExportGraph(model.float().eval(), head).eval(), kind, model


def export_onnx(ckpt_dir, out, *, input_size: int | None = None, dynamic: bool = False, metric: bool = False,
                opset: int = 17, fixtures: Sequence[np.ndarray] = (), tolerance: float = DEFAULT_TOLERANCE,
                seed: int = 0) -> ExportReport:
    """Export ``ckpt_dir`` to ``out`` (atomically) and verify it against PyTorch with onnxruntime on a
    random input and on ``fixtures`` (RGB uint8 images); raises :class:`InputError` when the maximum
    absolute difference exceeds ``tolerance`` (the file is then not written)."""
    graph, kind, model = _graph_for(ckpt_dir, metric)
    patch = int(model.config.patch_size)
    meta = getattr(model, "bridge_meta", {}) or {}
    size = int(input_size or meta.get("input_size") or 518)
    if size < patch or size % patch:
        lo = max(patch, size // patch * patch)
        raise InputError(f"--input-size {size}: must be a multiple of the model's patch size {patch} "
                         f"(e.g. {lo} or {lo + patch})")
    out = Path(out)
    if out.suffix != ".onnx":
        raise InputError(f"{out}: the output file must end in .onnx")
    name = "depth" if kind == "depth" else "disparity"
    example = torch.rand(2 if dynamic else 1, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with atomic_path(out) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if dynamic:
                # traced at a non-square size off the model's native grid: transformers' DINOv2 skips the
                # position-embedding interpolation at the native square size, which would bake that size in
                wide = torch.rand(2, 3, size, size + patch, generator=torch.Generator().manual_seed(seed))
                _export_dynamic(graph, wide, tmp, name, patch, max(opset, 18))
            else:
                torch.onnx.export(graph, (example,), str(tmp), input_names=["image"], output_names=[name],
                                  opset_version=opset, dynamo=False)
        _add_metadata(tmp, {
            "bridgedepth.kind": kind, "bridgedepth.unit": "m" if kind == "depth" else "relative",
            "bridgedepth.input_size": str(size), "bridgedepth.patch_size": str(patch),
            "bridgedepth.dynamic_batch": str(bool(dynamic)).lower(),
            "bridgedepth.dynamic_size": str(bool(dynamic)).lower(),
            "bridgedepth.preprocess": "RGB/255 in [0,1], bicubic resize to input_size x input_size, NCHW; "
                                      "ImageNet normalisation is inside the graph",
            "bridgedepth.postprocess": "bilinear resize (align_corners=True) to the input resolution",
            "bridgedepth.source": str(Path(ckpt_dir).resolve()),
        })
        diffs = verify(tmp, graph, size, fixtures=fixtures, dynamic=dynamic, seed=seed, patch=patch)
        report = ExportReport(out, kind, size, dynamic, diffs, tolerance)
        if not report.ok:
            raise InputError(f"{out}: ONNX output differs from PyTorch by up to {max(diffs.values()):.3g} "
                             f"(> tolerance {tolerance:g}); not written. Differences: {diffs}")
    return report


def _export_dynamic(graph, example, path, name: str, patch: int, opset: int) -> None:
    """Batch, height and width symbolic (height and width multiples of ``patch``), dynamo exporter."""
    import contextlib
    import io as _io

    from torch.export import Dim

    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        raise InputError("--dynamic needs onnxscript: pip install 'bridgedepth[export]'") from None
    hh, ww = Dim("patch_rows", min=1, max=512), Dim("patch_cols", min=1, max=512)
    shapes = {"image": {0: Dim("batch", min=1, max=1024), 2: patch * hh, 3: patch * ww}}
    import logging

    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)  # "torchvision is not installed" notices: not our concern
    with contextlib.redirect_stdout(_io.StringIO()):  # the exporter prints its progress
        torch.onnx.export(graph, (example,), str(path), input_names=["image"], output_names=[name],
                          dynamo=True, dynamic_shapes=shapes, opset_version=opset, external_data=False)
    log.setLevel(level)


def _add_metadata(path, props: dict) -> None:
    try:
        import onnx
    except ImportError:  # metadata is optional; the graph itself does not need the onnx package
        return
    m = onnx.load(str(path))
    for k, v in props.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, str(path))


def _session(path):
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("onnxruntime is not installed: pip install 'bridgedepth[export]'") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, torch.get_num_threads())
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise InputError(f"{path}: onnxruntime cannot load the model ({e})") from None


def _to_input(rgb: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """RGB uint8 -> (1, 3, H, W) float32 in [0, 1], bicubic to ``size`` (S x S, or (H, W))."""
    import cv2

    hh, ww = (size, size) if isinstance(size, int) else size
    img = cv2.resize(rgb.astype(np.float32), (ww, hh), interpolation=cv2.INTER_CUBIC) / 255.0
    return img.transpose(2, 0, 1)[None].astype(np.float32)  # not clipped: as the torch predictor


def _aspect_size(h: int, w: int, size: int, patch: int) -> tuple[int, int]:
    """The torch predictor's network size: the shorter side ``size``, the aspect kept, both sides
    multiples of ``patch`` (Depth-Anything-V2's resize, :func:`bridgedepth.mde.predictor.target_size`)."""
    from .predictor import target_size

    return target_size(h, w, size, multiple=patch)


@torch.no_grad()
def verify(onnx_path, graph, size: int, *, fixtures: Sequence[np.ndarray] = (), dynamic: bool = False,
           seed: int = 0, patch: int = 14) -> dict:
    """Maximum absolute difference, ONNX vs PyTorch, per input: ``random`` (a random batch, of 3 when
    ``dynamic``; then also ``random_wide`` and ``random_small``, other heights and widths) and
    ``fixture<i>`` for each RGB fixture (preprocessed as the predictor does)."""
    sess = _session(onnx_path)
    g = torch.Generator().manual_seed(seed + 1)
    inputs = {"random": torch.rand(3 if dynamic else 1, 3, size, size, generator=g).numpy()}
    if dynamic:
        small = max(patch, size // 2 // patch * patch)
        inputs["random_wide"] = torch.rand(1, 3, small, size + 2 * patch, generator=g).numpy()
        inputs["random_small"] = torch.rand(2, 3, small + patch, small, generator=g).numpy()
    for i, rgb in enumerate(fixtures):
        rgb = np.asarray(rgb)
        inputs[f"fixture{i}"] = _to_input(rgb, _aspect_size(*rgb.shape[:2], size, patch) if dynamic else size)
    out = {}
    for k, x in inputs.items():
        ref = graph(torch.from_numpy(x)).numpy()
        got = sess.run(None, {"image": x})[0]
        if got.shape != ref.shape:
            raise InputError(f"{onnx_path}: ONNX output shape {got.shape} != PyTorch {ref.shape} on {k}")
        out[k] = float(np.abs(got - ref).max())
    return out


class OnnxPredictor:
    """:class:`~bridgedepth.mde.predictor.Predictor`'s interface over an exported ``.onnx`` file
    (onnxruntime, CPU): same results type, same output conventions."""

    def __init__(self, path: str | os.PathLike):
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: ONNX model file not found")
        self.path = p
        self.session = _session(p)
        meta = self.session.get_modelmeta().custom_metadata_map
        inp = self.session.get_inputs()[0]
        shape = inp.shape
        size = meta.get("bridgedepth.input_size") or (shape[-1] if isinstance(shape[-1], int) else None)
        if size is None:
            raise InputError(f"{p}: no fixed input size in the graph or its metadata (not a bridge export?)")
        self.input_size = int(size)
        self.patch = int(meta.get("bridgedepth.patch_size", 1))
        self.kind = meta.get("bridgedepth.kind") or ("depth" if self.session.get_outputs()[0].name == "depth"
                                                     else "disparity")
        self.dynamic_batch = not isinstance(shape[0], int)
        self.dynamic_size = not (isinstance(shape[-1], int) and isinstance(shape[-2], int))
        self.meta = dict(meta)

    def predict_batch(self, images: Sequence[Any]) -> list:
        from .predictor import DepthResult, _to_rgb_array, describe_values

        rgbs = [_to_rgb_array(im) for im in images]
        if self.dynamic_size:  # keep the aspect, as the torch predictor does
            xs = [_to_input(r, _aspect_size(*r.shape[:2], self.input_size, self.patch)) for r in rgbs]
        else:
            xs = [_to_input(r, self.input_size) for r in rgbs]
        if self.dynamic_batch and len({x.shape for x in xs}) == 1:
            preds = list(self.session.run(None, {"image": np.concatenate(xs)})[0])
        else:
            preds = [self.session.run(None, {"image": x})[0][0] for x in xs]
        out = []
        for rgb, pred in zip(rgbs, preds):
            h, w = rgb.shape[:2]
            t = torch.from_numpy(np.ascontiguousarray(pred, np.float32))[None, None]
            v = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=True)[0, 0].numpy()
            out.append(DepthResult(v.astype(np.float32), self.kind, rgb,
                                   {**describe_values(self.kind), "backend": "onnx", "model": str(self.path), "input_size": self.input_size}))
        return out

    def predict(self, image: Any):
        return self.predict_batch([image])[0]


def describe_report(report: ExportReport) -> str:
    return json.dumps(report.to_json(), indent=1)
