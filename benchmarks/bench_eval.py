"""Benchmark: evaluating 654 NYU-sized (480x640) disparity predictions with the standard protocol
(least-squares disparity alignment, floor, inversion, range clip, all nine metrics).

Ours: ``bridgedepth.evaluation.evaluate_arrays`` over batches of images of one size (the runner's
default batch of 2^23 ground-truth pixels = 27 NYU frames).
Reference: a straightforward per-image NumPy loop (np.linalg.lstsq per image, then the metrics), the
way public evaluation scripts do it.

    PYTHONPATH=src python benchmarks/bench_eval.py [--n 654] [--pool 24] [--threads 1]

Both paths see the same 654 (prediction, ground truth, mask) triples (a pool of distinct synthetic
frames, cycled, to bound memory); the script checks they agree to 1e-6 and prints the ratio.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bridgedepth.evaluation import METRICS, Workspace, evaluate_arrays


def reference_loop(pred, gt, valid, min_d=1e-3, max_d=10.0, floor=1e-3):
    out = {k: 0.0 for k in METRICS}
    for p, g, m in zip(pred, gt, valid):
        p = p.astype(np.float64)
        g = g.astype(np.float64)
        fit = m & (p > 0)
        A = np.stack([p[fit], np.ones(fit.sum())], 1)
        (s, t), *_ = np.linalg.lstsq(A, 1.0 / g[fit], rcond=None)
        d = np.clip(1.0 / np.clip(s * p + t, floor, None), min_d, max_d)[m]
        gg = g[m]
        e = np.log(d) - np.log(gg)
        ratio = np.maximum(d / gg, gg / d)
        out["abs_rel"] += np.mean(np.abs(d - gg) / gg)
        out["sq_rel"] += np.mean((d - gg) ** 2 / gg)
        out["rmse"] += np.sqrt(np.mean((d - gg) ** 2))
        out["rmse_log"] += np.sqrt(np.mean(e**2))
        out["log10"] += np.mean(np.abs(np.log10(d) - np.log10(gg)))
        out["silog"] += np.sqrt(np.mean(e**2) - np.mean(e) ** 2) * 100
        for k in (1, 2, 3):
            out[f"delta{k}"] += np.mean(ratio < 1.25**k)
    return out


WORK = Workspace()  # reused buffers, as the runner keeps one per benchmark


def ours(pred, gt, valid, batch=3):
    out = {k: 0.0 for k in METRICS}
    for i in range(0, len(pred), batch):
        r = evaluate_arrays(
            torch.from_numpy(pred[i : i + batch]), torch.from_numpy(gt[i : i + batch]),
            torch.from_numpy(valid[i : i + batch]), alignment="disparity", prediction_type="disparity",
            min_depth=1e-3, max_depth=10.0, work=WORK,
        )
        for k in METRICS:
            out[k] += float(r[k].sum())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=654)
    ap.add_argument("--pool", type=int, default=27, help="distinct frames, cycled to --n")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (per-image arrays are small: 1 is best on a busy machine)")
    ap.add_argument("--batch", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    h, w = 480, 640
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gts, preds, valids = [], [], []
    for i in range(args.pool):
        g = (1.0 + 6.0 * (yy / h) + 0.5 * np.sin(xx / (30 + i))).astype(np.float32) + rng.uniform(0, 0.2, (h, w)).astype(np.float32)
        v = (rng.uniform(size=(h, w)) > 0.15) & (g > 1e-3) & (g < 10)
        v[:45] = v[471:] = False
        v[:, :41] = v[:, 601:] = False
        p = (0.7 / g * rng.lognormal(0, 0.1, (h, w)) + 0.05).astype(np.float32)
        gts.append(g), preds.append(p), valids.append(v)
    idx = np.arange(args.n) % args.pool
    # cycle by batch so that each batch is a contiguous array (as the runner stacks it)
    gt, pred, valid = np.stack(gts), np.stack(preds), np.stack(valids)

    def take(arr, i0, i1):
        return arr[idx[i0:i1]]

    t0 = time.perf_counter()
    ref = {k: 0.0 for k in METRICS}
    for i in range(0, args.n, args.pool):
        r = reference_loop(take(pred, i, i + args.pool), take(gt, i, i + args.pool), take(valid, i, i + args.pool))
        for k in METRICS:
            ref[k] += r[k]
    t_ref = time.perf_counter() - t0

    t0 = time.perf_counter()
    our = {k: 0.0 for k in METRICS}
    for i in range(0, args.n, args.pool):
        r = ours(take(pred, i, i + args.pool), take(gt, i, i + args.pool), take(valid, i, i + args.pool), args.batch)
        for k in METRICS:
            our[k] += r[k]
    t_our = time.perf_counter() - t0

    worst = max(abs(our[k] - ref[k]) / max(abs(ref[k]), 1e-12) for k in METRICS)
    print(f"{args.n} images of {h}x{w}, {args.threads} threads")
    print(f"reference per-image NumPy loop (lstsq): {t_ref:7.2f} s  ({1000 * t_ref / args.n:.1f} ms/img)")
    print(f"bridgedepth evaluate_arrays (batched): {t_our:7.2f} s  ({1000 * t_our / args.n:.1f} ms/img)")
    print(f"ratio reference / ours: {t_ref / t_our:.2f}x   (max relative difference of the means: {worst:.1e})")
    import sys as _sys
    from pathlib import Path as _Path

    _sys.path.insert(0, str(_Path(__file__).resolve().parent))
    from bench_common import write_row
    write_row("eval", ours=t_our, reference=t_ref, higher_is_better=False, unit=f"s for {args.n} images (NumPy lstsq ref)",
              goal=None, extra={"max_rel_diff": worst, "threads": args.threads})
    print("abs_rel %.5f delta1 %.5f" % (our["abs_rel"] / args.n, our["delta1"] / args.n))
    assert worst < 1e-6


if __name__ == "__main__":
    main()
