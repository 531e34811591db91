"""Depth for a video, frame by frame, batched, with one colour normalisation for the whole clip.

Two passes over the file, so memory stays bounded by one batch of frames plus the predictions (kept
in a temporary memory-mapped file beside the output, float32 at the frame size):

1. predict every frame (``batch_size`` frames a batch). A relative model's disparity is known only up
   to a scale and shift *per frame*, so each prediction is aligned (least-squares scale and shift,
   ``align=True``) to the previous output frame before anything else; with ``smooth > 0`` it is then
   blended, ``s_t = (1 - smooth) * aligned_t + smooth * s_{t-1}``. Metric predictions are not aligned
   (their scale is the point), only blended;
2. colourise every frame with the *clip's* range (min to max over all frames, subsampled), so
   that the brightness of a static object does not change with what else is in the frame, and write
   the depth (or input | depth, ``side_by_side``) clip.

``flicker`` is the mean absolute frame-to-frame change of the colourised output (0-255 per channel);
the summary reports it for the clip normalisation and, for comparison, for per-frame min-max
normalisation of the same predictions.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import atomic_write, colorize
from ..io.video import read_frames, video_info, video_writer


def align_scale_shift(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``s * pred + t`` with (s, t) the least-squares fit of ``pred`` to ``ref`` (finite pixels)."""
    ok = np.isfinite(pred) & np.isfinite(ref)
    if ok.sum() < 2:
        return pred
    x, y = pred[ok].astype(np.float64), ref[ok].astype(np.float64)
    a = np.stack([x, np.ones_like(x)], 1)
    (s, t), *_ = np.linalg.lstsq(a, y, rcond=None)
    return (s * pred + t).astype(np.float32)


def mean_abs_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def predict_video(predictor, src, out, *, side_by_side: bool = False, smooth: float = 0.0,
                  batch_size: int = 4, grayscale: bool = False, progress: bool = True, align: bool = True,
                  log=print) -> dict:
    """Write the depth clip of ``src`` to ``out`` (atomically) and ``out`` + ``.json`` (what the
    colours mean, the range, the flicker figures); returns that summary."""
    from tqdm import tqdm

    if not 0.0 <= smooth < 1.0:
        raise InputError(f"--smooth must be in [0, 1), got {smooth}")
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    info = video_info(src)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kind = predictor.kind
    cmap = "gray" if grayscale else "Spectral_r"
    log(f"{info.path}: {info.width}x{info.height}, {info.fps:.2f} fps, about {info.frames} frames; "
        "audio, if any, is dropped (OpenCV carries video only)")
    t0 = time.perf_counter()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".pred", dir=out.parent)
    os.close(fd)
    try:
        # pass 1: predictions (aligned and smoothed), appended to a raw float32 file
        n = 0
        prev = None
        with open(tmp_name, "wb") as raw, tqdm(total=info.frames or None, desc="depth", unit="frame",
                                               disable=not progress or None) as bar:
            buf: list[np.ndarray] = []

            def flush():
                nonlocal n, prev
                for res in predictor.predict_batch(buf):
                    v = res.values.astype(np.float32)
                    if prev is not None:
                        if kind == "disparity" and align:
                            v = align_scale_shift(v, prev)
                        if smooth > 0:
                            v = ((1.0 - smooth) * v + smooth * prev).astype(np.float32)
                    prev = v
                    raw.write(v.tobytes())
                    n += 1
                bar.update(len(buf))
                buf.clear()

            for frame in read_frames(src):
                if frame.shape[:2] != (info.height, info.width):
                    raise InputError(f"{info.path}: frame {n + len(buf)} is {frame.shape[1]}x{frame.shape[0]}, "
                                     f"the clip {info.width}x{info.height}")
                buf.append(frame)
                if len(buf) >= batch_size:
                    flush()
            if buf:
                flush()
        preds = np.memmap(tmp_name, dtype=np.float32, mode="r", shape=(n, info.height, info.width))
        step = max(1, int(np.ceil(np.sqrt(info.height * info.width / 4096))))
        sample = np.asarray(preds[:, ::step, ::step]).reshape(-1)
        sample = sample[np.isfinite(sample) & ((sample > 0) if kind == "depth" else True)]
        if sample.size == 0:
            raise InputError(f"{info.path}: no valid prediction in any frame")
        lo, hi = float(sample.min()), float(sample.max())
        # pass 2: colourise with the clip's range and write
        width = info.width * (2 if side_by_side else 1)
        flick_clip, flick_frame = [], []
        last_clip = last_frame = None
        with video_writer(out, info.fps, (width, info.height)) as write:
            for i, frame in enumerate(read_frames(src)):
                if i >= n:
                    break
                col = colorize(preds[i], kind=kind, cmap=cmap, vmin=lo, vmax=hi)
                per = colorize(preds[i], kind=kind, cmap=cmap)
                if last_clip is not None:
                    flick_clip.append(mean_abs_change(col, last_clip))
                    flick_frame.append(mean_abs_change(per, last_frame))
                last_clip, last_frame = col, per
                write(np.concatenate([frame, col], axis=1) if side_by_side else col)
        del preds
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    dt = time.perf_counter() - t0
    summary = {
        "input": str(info.path), "output": str(out), "frames": n, "fps": info.fps,
        "size": [info.width, info.height], "side_by_side": side_by_side,
        "kind": kind, "unit": "m" if kind == "depth" else "relative",
        "meaning": ("metric depth in metres" if kind == "depth"
                    else "relative disparity (affine-invariant inverse depth, larger = nearer)"),
        "normalisation": "one range for the whole clip (min to max over all frames)",
        "range": [lo, hi], "colormap": cmap, "near": "white" if grayscale else "red",
        "aligned": bool(align and kind == "disparity"), "smooth": smooth, "audio": "dropped",
        "flicker_clip_normalisation": float(np.mean(flick_clip)) if flick_clip else 0.0,
        "flicker_per_frame_normalisation": float(np.mean(flick_frame)) if flick_frame else 0.0,
        "seconds": round(dt, 2), "frames_per_s": round(n / dt, 2) if dt > 0 else None,
    }
    with atomic_write(Path(str(out) + ".json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
