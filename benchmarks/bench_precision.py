"""Reduced precision: speed against transformers SDPA fp32, and agreement against our fp32 output.

Speed: the random-weight ``vits`` (Depth-Anything-V2-Small architecture) at 518x518, batch 1, on
``--threads`` threads; ``hf-sdpa`` = transformers' DepthAnythingForDepthEstimation (SDPA) called on the
preprocessed tensor under ``torch.no_grad`` (the network only, no image processor, so the ratio is the
network's); ours = ``Predictor(..., precision=P)._run`` on the same tensor. Interleaved rounds, best
counts (the machine is shared).

Agreement: the shipped toy teacher (``bridgedepth/zoo/models/depth``) predicts the real fixtures of
../shared/data/rgbd (NYU, Open3D, KITTI; 9 images) in each precision; each prediction is aligned to
the ground truth (least squares in disparity) and scored; the AbsRel change against fp32 of the same
model is the agreement figure (goal <= 0.002).

    PYTHONPATH=src python benchmarks/bench_precision.py [--rounds 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("BRIDGE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
HERE = Path(__file__).resolve().parent


def fixtures(data: Path = DATA) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, RGB uint8, depth in metres with 0 = invalid) for the real RGB-D fixtures."""
    import cv2

    rgbd = data / "rgbd"
    items = []
    for i in ("00000", "00050", "00100"):
        items.append((f"nyu/{i}", rgbd / f"nyu_sync/rgb/rgb_{i}.jpg", rgbd / f"nyu_sync/depth/sync_depth_{i}.png", 1000.0))
    for i in ("00000", "00002", "00004"):
        items.append((f"open3d/{i}", rgbd / f"open3d/color/{i}.jpg", rgbd / f"open3d/depth/{i}.png", 1000.0))
    for i in ("0000000005", "0000000050", "0000000100"):
        items.append((f"kitti/{i}", rgbd / f"kitti_annotated/rgb/{i}.png", rgbd / f"kitti_annotated/depth/{i}.png", 256.0))
    out = []
    for name, rgb_p, d_p, scale in items:
        bgr = cv2.imread(str(rgb_p), cv2.IMREAD_COLOR)
        raw = cv2.imread(str(d_p), cv2.IMREAD_UNCHANGED)
        if bgr is None or raw is None:
            raise SystemExit(f"cannot read fixture {rgb_p} / {d_p}")
        out.append((name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), raw.astype(np.float32) / scale))
    return out


def absrel_per_image(predictor, items) -> list[float]:
    """AbsRel of each fixture after least-squares scale and shift in disparity space."""
    import torch

    from bridgedepth.evaluation.runner import evaluate_arrays

    out = []
    for _, rgb, depth in items:
        pred = torch.from_numpy(predictor.predict(rgb).values)[None]
        gt = torch.from_numpy(depth)[None]
        valid = gt > 0
        m = evaluate_arrays(pred, gt, valid, alignment="disparity", prediction_type="disparity",
                            min_depth=1e-3, max_depth=float(gt.max()))
        out.append(float(m["abs_rel"][0]))
    return out


def agreement(ckpt: Path, items, precisions=("fp32", "bf16", "int8")) -> dict[str, dict]:
    from bridgedepth.mde.predictor import Predictor

    res = {}
    for p in precisions:
        a = absrel_per_image(Predictor.from_pretrained(ckpt, precision=p), items)
        res[p] = {"absrel": float(np.mean(a)), "per_image": a}
    for p in precisions:
        res[p]["absrel_change"] = abs(res[p]["absrel"] - res["fp32"]["absrel"])
        res[p]["worst_image_change"] = float(np.max(np.abs(np.subtract(res[p]["per_image"], res["fp32"]["per_image"]))))
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=518)
    a = ap.parse_args()

    import torch

    from bridgedepth.mde.predictor import Predictor, bf16_native

    sys.path.insert(0, str(HERE))
    from bench_common import random_vits

    torch.set_num_threads(a.threads)
    model = random_vits(a.size)
    x = torch.randn(1, 3, a.size, a.size)
    preds = {p: Predictor(model, fast=True, precision=p) for p in ("fp32", "bf16", "int8")}

    def hf():
        with torch.no_grad():
            return model(pixel_values=x).predicted_depth

    variants = {"hf-sdpa": hf}
    for p, pr in preds.items():
        variants[p] = (lambda pr: (lambda: torch.inference_mode()(pr._run)(x)))(pr)
    with torch.inference_mode():
        for f in variants.values():
            f()
    times = {k: [] for k in variants}
    for _ in range(a.rounds):
        for k, f in variants.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    best = {k: min(v) for k, v in times.items()}
    print(f"vits {a.size}x{a.size} network only, batch 1, {a.threads} threads, best of {a.rounds} interleaved "
          f"rounds; load {os.getloadavg()[0]:.1f}; bf16 native on this CPU: {bf16_native('cpu')}")
    for k in variants:
        print(f"  {k:8s} {best[k]:7.3f} s/img   {best['hf-sdpa'] / best[k]:5.2f}x hf-sdpa fp32")

    ckpt = Path(__import__("bridgedepth").__file__).parent / "zoo/models/depth"
    items = fixtures()
    agree = agreement(ckpt, items)
    print(f"agreement on {len(items)} real fixtures (toy teacher {ckpt.name}), AbsRel after disparity alignment:")
    for p, r in agree.items():
        print(f"  {p:5s} AbsRel {r['absrel']:.4f}  change vs fp32 {r['absrel_change']:.4f} "
              f"(worst image {r['worst_image_change']:.4f}; goal <= 0.002)")

    sys.path.insert(0, str(HERE))
    from bench_common import write_row

    win = max(("bf16", "int8"), key=lambda p: best["hf-sdpa"] / best[p])
    agreed = all(r["absrel_change"] <= 0.002 for r in agree.values())
    ratio = best["hf-sdpa"] / best[win]
    write_row("precision", ours=1 / best[win], reference=1 / best["hf-sdpa"],
              unit=f"img/s, {win} vs hf-sdpa fp32", goal=2.5, met=ratio >= 2.5 and agreed,
              extra={"seconds": best, "threads": a.threads, "winner": win, "agreement_met": agreed,
                     "absrel_change": {p: r["absrel_change"] for p, r in agree.items()}})


if __name__ == "__main__":
    main()
