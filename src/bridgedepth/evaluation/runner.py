"""The benchmark runner: predictions (a folder of ``.npy`` files or a model) against a benchmark's
ground truth, with the standard protocol. Dense benchmarks are evaluated in batches of images of one
ground-truth size (alignment and metrics vectorised over the batch); DA-2K by point-pair ordering."""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from ._segments import Workspace, gather
from .alignment import ALIGNMENTS, PREDICTION_TYPES, align_flat
from .metrics import METRICS, metrics_flat

PROTOCOL_VERSION = 1
CPU_BATCH_PIXELS = 1 << 20  # ground-truth pixels per vectorised batch on CPU (3 NYU frames)
ACCEL_BATCH_PIXELS = 1 << 25


# ------------------------------------------------------------------ predictions
class FolderPredictions:
    """Predictions stored as ``{dir}/{key}.npy`` float arrays (H, W) (a leading or trailing axis of
    size 1 is accepted)."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        if not self.dir.is_dir():
            raise InputError(f"{self.dir}: predictions folder not found")

    def path(self, key: str) -> Path:
        return self.dir / f"{key}.npy"

    def get(self, key: str, item: Any = None, benchmark: Any = None) -> np.ndarray:
        return load_prediction(self.path(key))


def load_prediction(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: prediction not found (predictions are .npy files named by the image's relative path stem)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a readable .npy array ({e})") from e
    arr = np.asarray(arr)
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:2])
    real = np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)
    if arr.ndim != 2 or not real:
        raise InputError(f"{path}: a prediction must be a real-valued (H, W) array, got {arr.dtype} {arr.shape}")
    if min(arr.shape) < 2:
        raise InputError(f"{path}: a prediction of {arr.shape[1]}x{arr.shape[0]} pixels is empty or degenerate")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: prediction contains NaN or inf")
    return arr


def predictor_settings(predictor: Any, field_name: str = "disparity") -> dict[str, Any]:
    """What makes a predictor's maps what they are, as JSON: the output field, the predictor's class,
    precision and input size where it has them, and a SHA-256 of its model's dense weights and
    buffers (so two checkpoints never share a cache). Costs one pass over the weights."""
    import hashlib

    out: dict[str, Any] = {"field": field_name, "predictor": type(predictor).__name__}
    for name in ("precision", "input_size", "metric"):
        v = getattr(predictor, name, None)
        if isinstance(v, (str, int, float, bool)):
            out[name] = v
    modules = [getattr(predictor, n, None) for n in ("model", "scale_head")]
    modules = [m for m in modules if isinstance(m, torch.nn.Module)]
    if modules:
        h = hashlib.sha256()
        for m in modules:
            for name, v in m.state_dict().items():
                if torch.is_tensor(v) and v.layout == torch.strided and not v.is_quantized:
                    h.update(f"{name}:{v.dtype}:{tuple(v.shape)}".encode())
                    h.update(v.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        out["weights_sha256"] = h.hexdigest()
    return out


def check_prediction_cache(cache_dir: str | Path, settings: dict[str, Any]) -> None:
    """A prediction cache folder holds the maps of one model at one setting: ``settings.json``
    records them on first use, and a later use with other values for the same keys is refused (it
    would silently score the old maps). Keys only one side has are not compared, so a folder written
    with fewer keys stays usable."""
    import json

    from .tables import write_json

    f = Path(cache_dir) / "settings.json"
    if f.is_file():
        try:
            old = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"{f}: unreadable ({e}); delete it or the folder") from e
        if not isinstance(old, dict):
            raise InputError(f"{f}: not a settings object; delete it or the folder")
        diff = {k: (old[k], v) for k, v in settings.items() if k in old and old[k] != v}
        if diff:
            shown = "; ".join(f"{k} {a!r} there, {b!r} now" for k, (a, b) in diff.items())
            raise InputError(f"{cache_dir}: prediction cache made with other settings ({shown}); "
                             "its cached maps would be reused: pass another folder or delete it")
        missing = {k: v for k, v in settings.items() if k not in old}
        if missing:  # an older folder: record what it lacked, so that the next run is checked on it
            write_json(f, {**old, **missing})
        return
    write_json(f, settings)


class ModelPredictions:
    """Predictions computed by a depth model's predictor (``predict(rgb_uint8) -> result``) on each
    benchmark image (cropped like its ground truth), optionally cached as ``.npy`` files so that a
    rerun resumes. A cache folder records the predictor's settings (``settings``, by default
    :func:`predictor_settings`) in ``settings.json`` and refuses another predictor's maps."""

    def __init__(self, predictor: Any, cache_dir: str | Path | None = None, field_name: str = "disparity",
                 settings: dict[str, Any] | None = None):
        self.predictor = predictor
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.field = field_name
        if self.cache_dir is not None:
            check_prediction_cache(self.cache_dir, settings if settings is not None
                                   else predictor_settings(predictor, field_name))

    def get(self, key: str, item: Any, benchmark: Any) -> np.ndarray:
        if self.cache_dir is not None:
            p = self.cache_dir / f"{key}.npy"
            if p.is_file():
                return load_prediction(p)
        res = self.predictor.predict(benchmark.load_rgb(item))
        if isinstance(res, (np.ndarray, torch.Tensor)):
            arr = res
        elif getattr(res, "kind", None) == self.field and hasattr(res, "values"):
            arr = res.values  # bridgedepth.mde.DepthResult(values, kind)
        else:
            arr = getattr(res, self.field, None)  # DepthResult.disparity / .depth conversions
        if arr is None:
            raise InputError(f"the model's predictor returned no {self.field!r} for {key}")
        arr = np.asarray(arr.detach().cpu() if torch.is_tensor(arr) else arr, dtype=np.float32).squeeze()
        if arr.ndim != 2 or not np.isfinite(arr).all():
            raise InputError(f"the model's prediction for {key} is not a finite (H, W) map (shape {arr.shape})")
        if self.cache_dir is not None:
            p = self.cache_dir / f"{key}.npy"
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, arr)
            os.replace(tmp, p)
        return arr


# ------------------------------------------------------------------ resizing
def resize_bilinear(pred: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of (B, h, w) or (h, w) to ``size`` = (H, W), ``align_corners=False``, no
    antialiasing (``torch.nn.functional.interpolate``); unchanged when already that size."""
    squeeze = pred.ndim == 2
    x = pred[None] if squeeze else pred
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x[:, None].to(torch.float32), size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return x[0] if squeeze else x


def prediction_to_gt_frame(pred: np.ndarray, full_shape, crop, gt_shape) -> torch.Tensor:
    """A prediction in the ground truth's frame: a full-frame prediction of a cropped benchmark
    (KITTI KB crop) is cropped like the ground truth; any other size is taken to cover the ground
    truth's frame and resized bilinearly to it."""
    t = torch.from_numpy(np.ascontiguousarray(pred, dtype=np.float32))
    if crop is not None and tuple(t.shape) == tuple(full_shape) and tuple(full_shape) != tuple(gt_shape):
        top, left, h, w = crop
        t = t[top : top + h, left : left + w]
    return resize_bilinear(t, gt_shape)


# ------------------------------------------------------------------ results
@dataclass
class EvalResult:
    dataset: str
    alignment: str
    prediction_type: str
    n_images: int
    n_skipped: int
    metrics: dict[str, float]
    per_image: list[dict[str, Any]] = field(default_factory=list)
    constants: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    bad_inputs: list[dict[str, str]] = field(default_factory=list)  # {"key", "reason"}: unreadable GT or prediction

    def to_json(self) -> dict[str, Any]:
        out = {
            "dataset": self.dataset,
            "n_images": self.n_images,
            "n_skipped": self.n_skipped,
            "n_bad_inputs": len(self.bad_inputs),
            "bad_inputs": self.bad_inputs,
            "alignment": self.alignment,
            "prediction_type": self.prediction_type,
            "metrics": {k: _clean(v) for k, v in self.metrics.items()},
            "constants": {k: _clean(v) for k, v in self.constants.items()},
            "protocol_version": PROTOCOL_VERSION,
        }
        out.update(self.extra)
        return out


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="img", leave=False)


@contextmanager
def cpu_threads(n: int | None, device: str = "cpu"):
    """Run the block with ``n`` torch threads on CPU (restored afterwards). The evaluation's arrays
    are a few megabytes: on a busy machine thread synchronisation costs more than it saves."""
    if not n or torch.device(device).type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------ dense evaluation
def evaluate_arrays(
    preds: torch.Tensor,
    gts: torch.Tensor,
    masks: torch.Tensor,
    *,
    alignment: str,
    prediction_type: str,
    min_depth: float,
    max_depth: float,
    disparity_floor: float = 1e-3,
    work: Workspace | None = None,
) -> dict[str, torch.Tensor]:
    """Align and score one batch (B, H, W) of predictions already at the ground truth's resolution.
    Returns per-image metrics plus ``n_valid``, ``n_fit``, ``scale`` and ``shift``. ``work``: reusable
    buffers (pass one :class:`Workspace` for many batches)."""
    work = work if work is not None else Workspace()
    segs, (p, g) = gather(masks, preds, gts, work=work)
    if segs.total and not bool(torch.amin(g) > 0):
        raise ValueError("ground truth must be > 0 on the evaluation mask")
    inv_g = torch.reciprocal(g, out=work.get("inv_g", g.numel(), g.dtype, g.device))
    d, s, t, n = align_flat(
        p, g, segs, alignment=alignment, prediction_type=prediction_type,
        min_depth=min_depth, max_depth=max_depth, disparity_floor=disparity_floor, inplace=True, inv_g=inv_g,
    )
    m = metrics_flat(d, g, segs, inv_g=inv_g, work=work)
    m["n_fit"] = n
    m["scale"] = s
    m["shift"] = t
    return m


def evaluate_dense(
    benchmark,
    source,
    *,
    prediction_type: str,
    alignment: str,
    disparity_floor: float = 1e-3,
    min_valid_pixels: int = 10,
    limit: int | None = None,
    batch_pixels: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    threads: int | None = 1,
    strict: bool = False,
) -> EvalResult:
    """Evaluate ``source`` predictions on a dense benchmark (see docs/evaluation.md). ``threads``:
    torch threads for resizing, alignment and metrics on CPU (None: leave torch's setting); the
    predictions themselves (``source.get``) run outside that limit. An image whose ground truth or
    prediction is unusable (an InputError) is recorded in ``bad_inputs`` with the reason and left out;
    with ``strict`` the first one is raised instead."""
    if alignment not in ALIGNMENTS:
        raise InputError(f"unknown alignment {alignment!r}; choose one of {', '.join(ALIGNMENTS)}")
    if prediction_type not in PREDICTION_TYPES:
        raise InputError(f"unknown prediction type {prediction_type!r}; choose disparity or depth")
    items = benchmark.items(limit)
    if batch_pixels is None:  # CPU: a few frames (cache-sized buffers); accelerators: large batches
        batch_pixels = CPU_BATCH_PIXELS if torch.device(device).type == "cpu" else ACCEL_BATCH_PIXELS
    rows: list[dict[str, Any]] = []
    work = Workspace()
    pending: list[tuple[Any, torch.Tensor, np.ndarray, np.ndarray]] = []

    def flush():
        if not pending:
            return
        preds = torch.stack([p for _, p, _, _ in pending]).to(device)
        gts = torch.from_numpy(np.stack([g for _, _, g, _ in pending])).to(device)
        masks = torch.from_numpy(np.stack([v for _, _, _, v in pending])).to(device)
        with cpu_threads(threads, device):
            res = evaluate_arrays(
                preds, gts, masks, alignment=alignment, prediction_type=prediction_type,
                min_depth=benchmark.min_depth, max_depth=benchmark.max_depth, disparity_floor=disparity_floor,
                work=work,
            )
        res = {k: v.cpu().numpy() for k, v in res.items()}
        for i, (item, _, _, _) in enumerate(pending):
            n_valid, n_fit = int(res["n_valid"][i]), int(res["n_fit"][i])
            row: dict[str, Any] = {"key": item.key, "n_valid": n_valid}
            reason = None
            if n_valid < max(min_valid_pixels, 1):
                reason = f"{n_valid} valid pixels (< {min_valid_pixels})"
            elif alignment in ("disparity", "depth") and n_fit < 2:
                reason = f"{n_fit} pixels for the fit (< 2)"
            row["skipped"] = reason or ""
            for k in METRICS:
                row[k] = float("nan") if reason else float(res[k][i])
            row["scale"], row["shift"] = float(res["scale"][i]), float(res["shift"][i])
            rows.append(row)
        pending.clear()

    shape = None
    pixels = 0
    bad: list[dict[str, str]] = []
    for item in _progress(items, len(items), benchmark.name, progress):
        try:
            gt = benchmark.load_gt(item)
            pred = source.get(item.key, item, benchmark)
            with cpu_threads(threads):
                p = prediction_to_gt_frame(pred, gt.full_shape, gt.crop, gt.depth.shape)
        except InputError as e:
            if strict:
                raise
            bad.append({"key": str(item.key), "reason": str(e)})
            continue
        hw = gt.depth.shape
        if pending and (hw != shape or pixels + hw[0] * hw[1] > batch_pixels):
            flush()
            pixels = 0
        shape = hw
        pixels += hw[0] * hw[1]
        pending.append((item, p, gt.depth, gt.valid))
    flush()

    kept = [r for r in rows if not r["skipped"]]
    metrics = {k: (float(np.mean([r[k] for r in kept])) if kept else float("nan")) for k in METRICS}
    return EvalResult(
        dataset=benchmark.name,
        alignment=alignment,
        prediction_type=prediction_type,
        n_images=len(kept),
        n_skipped=len(rows) - len(kept),
        metrics=metrics,
        per_image=rows,
        constants={**benchmark.constants(), "disparity_floor": disparity_floor, "min_valid_pixels": min_valid_pixels},
        bad_inputs=bad,
    )


# ------------------------------------------------------------------ DA-2K
def pair_accuracy(
    pred: np.ndarray | torch.Tensor, points: np.ndarray, closer_is_1: np.ndarray, prediction_type: str
) -> np.ndarray:
    """Per pair, whether the prediction orders it correctly. ``points`` (N, 4) = row1, col1, row2,
    col2 into ``pred`` (H, W). For disparity the larger value is nearer, for depth the smaller; a tie
    is wrong."""
    p = pred.numpy() if torch.is_tensor(pred) else np.asarray(pred)
    h, w = p.shape
    r1, c1, r2, c2 = points.T
    if (points < 0).any() or (np.maximum(r1, r2) >= h).any() or (np.maximum(c1, c2) >= w).any():
        raise InputError(f"a DA-2K point lies outside the {h}x{w} image")
    v1, v2 = p[r1, c1].astype(np.float64), p[r2, c2].astype(np.float64)
    pred_1_closer = v1 > v2 if prediction_type == "disparity" else v1 < v2
    return (pred_1_closer == closer_is_1) & (v1 != v2)


def evaluate_pairs(
    benchmark, source, *, prediction_type: str, limit: int | None = None, progress: bool = True,
    threads: int | None = 1,
) -> EvalResult:
    """DA-2K: share of point pairs whose predicted ordering is right, at the original resolution
    (predictions resized bilinearly, ``align_corners=False``); overall and per scene type."""
    if prediction_type not in PREDICTION_TYPES:
        raise InputError(f"unknown prediction type {prediction_type!r}; choose disparity or depth")
    items = benchmark.items(limit)
    rows = []
    per_scene: dict[str, list[int]] = {}
    for item in _progress(items, len(items), benchmark.name, progress):
        pred = source.get(item.key, item, benchmark)
        size = benchmark.image_size(item)
        with cpu_threads(threads):
            p = resize_bilinear(torch.from_numpy(np.ascontiguousarray(pred)), size)
        ok = pair_accuracy(p, item.points, item.closer_is_1, prediction_type)
        c = per_scene.setdefault(item.scene, [0, 0])
        c[0] += int(ok.sum())
        c[1] += int(ok.size)
        rows.append({"key": item.key, "scene": item.scene, "n_pairs": int(ok.size), "n_correct": int(ok.sum()),
                     "accuracy": float(ok.mean()), "skipped": ""})
    n_correct = sum(c[0] for c in per_scene.values())
    n_pairs = sum(c[1] for c in per_scene.values())
    acc = n_correct / n_pairs if n_pairs else float("nan")
    scenes = {s: {"accuracy": c[0] / c[1], "n_pairs": c[1]} for s, c in sorted(per_scene.items())}
    return EvalResult(
        dataset=benchmark.name,
        alignment="none",
        prediction_type=prediction_type,
        n_images=len(rows),
        n_skipped=0,
        metrics={"accuracy": acc},
        per_image=rows,
        extra={"accuracy": acc, "n_pairs": n_pairs, "per_scene": scenes},
    )


def evaluate(benchmark, source, **kw) -> EvalResult:
    """Dispatch on the benchmark kind (DA-2K pairs or dense depth)."""
    if getattr(benchmark, "name", "") == "da2k":
        kw = {k: v for k, v in kw.items() if k in ("prediction_type", "limit", "progress", "threads")}
        return evaluate_pairs(benchmark, source, **kw)
    return evaluate_dense(benchmark, source, **kw)
