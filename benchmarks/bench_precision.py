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

Not offered, measured beside them when torchao is installed (``pip install --no-deps torchao==0.18.0``;
it is no dependency of bridgedepth): **static int8 through PT2E** (``torch.export`` of our fast model,
torchao's ``X86InductorQuantizer`` for every linear and convolution, activations calibrated on real
images other than the agreement fixtures, ``reduce_range`` on CPUs without VNNI, then ``torch.compile``
with weight freezing: oneDNN's int8 kernels). Its figures go to the row's ``extra``, never into its
``winner``, which is chosen among the precisions ``bridge predict`` offers.

    PYTHONPATH=src python benchmarks/bench_precision.py [--rounds 6] [--threads 2] [--no-static-int8]
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


def calibration_images(data: Path = DATA) -> list[np.ndarray]:
    """Real RGB images that are not among the agreement fixtures: the static int8 path's calibration."""
    import cv2

    rgbd = data / "rgbd"
    paths = [rgbd / "open3d/color/00001.jpg", rgbd / "open3d/color/00003.jpg",
             rgbd / "open3d/other_formats/TUM_color.png", rgbd / "open3d/other_formats/SUN_color.jpg"]
    paths += sorted((rgbd / "stereo").rglob("*.png"))[:4]
    out = []
    for p in paths:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr is not None:
            out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return out


def static_int8_available() -> bool:
    try:
        import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
    except Exception:
        return False
    return True


def cpu_has_vnni() -> bool:
    """VNNI (int8 dot products without 16-bit saturation), by torch's own CPU probe, as ``bf16_native``."""
    import torch

    probe = getattr(getattr(torch, "cpu", None), "_is_vnni_supported", None)
    return bool(probe()) if probe is not None else False


class StaticInt8:
    """``forward(pixel_values=x)`` of a predictor's (fast) model quantised statically to int8 with PT2E, one
    export + calibration + frozen compile per input shape (a benchmark variant, not a product path).
    ``calibration``: preprocessed float tensors (1, 3, h, w), resized to each shape."""

    def __init__(self, model, calibration, *, reduce_range: bool | None = None):
        import torch

        class _Net(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, x):
                return self.m(pixel_values=x).predicted_depth

        self.net = _Net(model).eval()
        self.calibration = list(calibration)
        self.reduce_range = (not cpu_has_vnni()) if reduce_range is None else reduce_range
        self.compiled: dict[tuple, object] = {}
        self.compile_s: list[float] = []

    def _build(self, x):
        import torch
        import torch.nn.functional as F
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        from bridgedepth.mde.predictor import _frozen_compile

        t = time.perf_counter()
        graph = torch.export.export(self.net, (x,)).module()
        quantizer = xiq.X86InductorQuantizer().set_global(
            xiq.get_default_x86_inductor_quantization_config(reduce_range=self.reduce_range))
        prepared = prepare_pt2e(graph, quantizer)
        with torch.no_grad():
            for c in self.calibration:
                prepared(F.interpolate(c, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False))
        compiled = _frozen_compile(convert_pt2e(prepared))  # the predictor's frozen compile: oneDNN int8
        with torch.no_grad():
            compiled(x)
        self.compile_s.append(time.perf_counter() - t)
        return compiled

    def __call__(self, pixel_values):
        from types import SimpleNamespace

        key = tuple(pixel_values.shape)
        if key not in self.compiled:
            self.compiled[key] = self._build(pixel_values)
        return SimpleNamespace(predicted_depth=self.compiled[key](pixel_values))


def static_int8_predictor(ckpt_or_model, calibration_rgbs):
    """A fp32 fast Predictor whose network runs through :class:`StaticInt8`, calibrated on the images."""
    from bridgedepth.mde.predictor import Predictor, preprocess

    pred = (Predictor.from_pretrained(ckpt_or_model) if isinstance(ckpt_or_model, (str, Path))
            else Predictor(ckpt_or_model, fast=True))
    calib = [preprocess(r, pred.input_size, multiple=pred.patch) for r in calibration_rgbs]
    pred._forward = StaticInt8(pred.model, calib)
    return pred


def agreement(ckpt: Path, items, precisions=("fp32", "bf16", "int8"), *, static_int8: bool = False) -> dict[str, dict]:
    from bridgedepth.mde.predictor import Predictor

    res = {}
    for p in precisions:
        a = absrel_per_image(Predictor.from_pretrained(ckpt, precision=p), items)
        res[p] = {"absrel": float(np.mean(a)), "per_image": a}
    if static_int8:
        a = absrel_per_image(static_int8_predictor(ckpt, calibration_images()), items)
        res["int8-static"] = {"absrel": float(np.mean(a)), "per_image": a}
    precisions = list(res)
    for p in precisions:
        res[p]["absrel_change"] = abs(res[p]["absrel"] - res["fp32"]["absrel"])
        res[p]["worst_image_change"] = float(np.max(np.abs(np.subtract(res[p]["per_image"], res["fp32"]["per_image"]))))
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--no-static-int8", action="store_true", help="skip the PT2E static int8 variant")
    a = ap.parse_args()
    static = not a.no_static_int8 and static_int8_available()

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
    static_pred = None
    if static:  # calibrated on real images (random weights: the speed is what counts here)
        static_pred = static_int8_predictor(model, calibration_images())
        variants["int8-static"] = lambda: torch.no_grad()(static_pred._run)(x)
    elif not a.no_static_int8:
        print("static int8 (PT2E) not measured: torchao is not installed (pip install --no-deps torchao==0.18.0)")
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
        print(f"  {k:11s} {best[k]:7.3f} s/img   {best['hf-sdpa'] / best[k]:5.2f}x hf-sdpa fp32")
    if static_pred is not None:
        print(f"  (int8-static: PT2E, reduce_range {static_pred._forward.reduce_range}, compile "
              f"{static_pred._forward.compile_s[0]:.0f} s per input shape; not offered by bridge predict)")

    ckpt = Path(__import__("bridgedepth").__file__).parent / "zoo/models/depth"
    items = fixtures()
    agree = agreement(ckpt, items, static_int8=static)
    print(f"agreement on {len(items)} real fixtures (toy teacher {ckpt.name}), AbsRel after disparity alignment:")
    for p, r in agree.items():
        print(f"  {p:11s} AbsRel {r['absrel']:.4f}  change vs fp32 {r['absrel_change']:.4f} "
              f"(worst image {r['worst_image_change']:.4f}; goal <= 0.002)")

    sys.path.insert(0, str(HERE))
    from bench_common import write_row

    win = max(("bf16", "int8"), key=lambda p: best["hf-sdpa"] / best[p])
    agreed = all(r["absrel_change"] <= 0.002 for p, r in agree.items() if p != "int8-static")
    ratio = best["hf-sdpa"] / best[win]
    static_extra = {}
    if static_pred is not None:
        static_extra = {"int8_static": {"ratio": best["hf-sdpa"] / best["int8-static"],
                                        "absrel_change": agree["int8-static"]["absrel_change"],
                                        "worst_image_change": agree["int8-static"]["worst_image_change"],
                                        "reduce_range": static_pred._forward.reduce_range,
                                        "compile_s": static_pred._forward.compile_s[0], "offered": False}}
    write_row("precision", ours=1 / best[win], reference=1 / best["hf-sdpa"],
              unit=f"img/s, {win} vs hf-sdpa fp32", goal=2.5, met=ratio >= 2.5 and agreed,
              extra={"seconds": best, "threads": a.threads, "winner": win, "agreement_met": agreed,
                     "absrel_change": {p: r["absrel_change"] for p, r in agree.items()}, **static_extra})


if __name__ == "__main__":
    main()
