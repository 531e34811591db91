"""Prediction speed of our Predictor against transformers' DepthAnythingForDepthEstimation (the reference).

Same random-weight ``vits`` (Depth-Anything-V2-Small architecture), one 518x518 RGB image, 2 CPU threads,
end to end (uint8 image in, depth at the input resolution out):

- ``hf-sdpa``: transformers called plainly: ``DPTImageProcessor`` -> model (SDPA attention) under
  ``torch.no_grad`` -> ``post_process_depth_estimation``;
- ``hf-eager``: the same with eager attention (close to the original Depth-Anything-V2 code on CPU, which
  falls back to plain attention without xformers);
- ``ours``: ``bridgedepth`` ``Predictor`` (fused OpenCV preprocessing, ``torch.inference_mode``, fused QKV
  projection, layer scale folded into the projections, channels-last DPT head; :mod:`bridgedepth.mde.fast`).

Variants run interleaved, round after round, and the best round counts (the machine is shared; the
minimum is the least disturbed measurement). Prints images/s, the ratios ours / reference and the
largest output difference (must be <= 1e-4 relative to the output range).

- ``ours-compiled``: the same predictor with ``compile=True`` (``torch.compile``, inductor with weight
  freezing: `bridge predict --compile`); its one-off compile is reported separately and it writes its own
  row, ``predict_compiled``.

    PYTHONPATH=src python benchmarks/bench_predict.py [--rounds 3] [--threads 2] [--ablate] [--no-compile]

``--ablate`` adds our predictor without each speed-up; ``--no-compile`` skips the compiled variant.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--ablate", action="store_true")
    ap.add_argument("--no-compile", dest="compile", action="store_false",
                    help="skip the torch.compile variant (its one-off compile: 13-17 s for vits on 2 cores)")
    a = ap.parse_args()

    import torch
    from PIL import Image

    from bridgedepth.mde.fast import optimize_for_inference
    from bridgedepth.mde.model import image_processor_for
    from bridgedepth.mde.predictor import Predictor

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_common import random_vits

    torch.set_num_threads(a.threads)
    model = random_vits(a.size)

    rgb = (np.random.default_rng(0).random((a.size, a.size, 3)) * 255).astype(np.uint8)
    pil = Image.fromarray(rgb)
    processor = image_processor_for(a.size)

    def hf_runner(m):
        def run():
            inputs = processor(images=pil, return_tensors="pt")
            with torch.no_grad():
                out = m(**inputs)
            post = processor.post_process_depth_estimation(out, target_sizes=[(a.size, a.size)])
            return post[0]["predicted_depth"].numpy()

        return run

    eager = optimize_for_inference(model, fuse_qkv=False, channels_last=False)  # a plain copy
    eager.backbone.set_attn_implementation("eager")
    variants = {
        "hf-sdpa": hf_runner(model),
        "hf-eager": hf_runner(eager),
        "ours": (lambda p: (lambda: p.predict(rgb).values))(Predictor(model, fast=True)),
    }
    if a.ablate:
        variants["ours-no-fused-qkv"] = (lambda p: (lambda: p.predict(rgb).values))(
            Predictor(optimize_for_inference(model, fuse_qkv=False)))
        variants["ours-no-fold-layer-scale"] = (lambda p: (lambda: p.predict(rgb).values))(
            Predictor(optimize_for_inference(model, fold_layer_scale=False)))
        variants["ours-no-channels-last"] = (lambda p: (lambda: p.predict(rgb).values))(
            Predictor(optimize_for_inference(model, channels_last=False)))
        variants["ours-plain-model"] = (lambda p: (lambda: p.predict(rgb).values))(Predictor(model))
    compile_s = None
    if a.compile:
        comp = Predictor(model, fast=True, compile=True)
        t = time.perf_counter()
        comp.predict(rgb)
        compile_s = time.perf_counter() - t
        variants["ours-compiled"] = lambda: comp.predict(rgb).values

    outputs = {k: f() for k, f in variants.items()}  # warm-up (and the outputs to compare)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(a.rounds):
        for k, f in variants.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)

    ref = outputs["hf-sdpa"]
    scale = float(np.abs(ref).max())
    print(f"vits {a.size}x{a.size}, batch 1, {a.threads} threads, best of {a.rounds} interleaved rounds")
    print(f"{'variant':24s} {'s/img':>8s} {'img/s':>8s} {'vs hf-sdpa':>11s} {'vs hf-eager':>12s} {'max|diff|/range':>16s}")
    best = {k: min(v) for k, v in times.items()}
    for k in variants:
        diff = float(np.abs(outputs[k] - ref).max()) / scale
        print(f"{k:24s} {best[k]:8.3f} {1 / best[k]:8.2f} {best['hf-sdpa'] / best[k]:10.2f}x "
              f"{best['hf-eager'] / best[k]:11.2f}x {diff:16.2e}")
    if compile_s is not None:
        print(f"torch.compile one-off compile + first call: {compile_s:.1f} s")
    worst = max(float(np.abs(outputs[k] - ref).max()) / scale for k in variants)
    print(f"outputs agree: {'yes' if worst <= 1e-4 else 'NO'} (worst {worst:.1e} of the output range, limit 1e-4)")

    from bench_common import write_row

    write_row("predict", ours=1 / best["ours"], reference=1 / best["hf-sdpa"], goal=1.3,
              met=best["hf-sdpa"] / best["ours"] >= 1.3 and worst <= 1e-4,
              unit=f"img/s fp32 vs transformers SDPA, {a.threads} thr",
              extra={"seconds": best, "worst_diff_of_range": worst, "size": a.size})
    if compile_s is not None:
        diff = float(np.abs(outputs["ours-compiled"] - ref).max()) / scale
        write_row("predict_compiled", ours=1 / best["ours-compiled"], reference=1 / best["hf-sdpa"], goal=1.3,
                  met=best["hf-sdpa"] / best["ours-compiled"] >= 1.3 and diff <= 1e-4,
                  unit="img/s fp32 compiled (frozen) vs hf SDPA",
                  extra={"seconds": best, "worst_diff_of_range": diff, "size": a.size, "compile_s": compile_s})


if __name__ == "__main__":
    main()
