"""Two D2I foundations side by side on held-out real-look scenes: denoising error by noise level and
a picture of their samples.

For each of ``--scenes`` held-out real-look scenes (seed 1003, the zoo build's held-out family, never
trained on) the shipped depth teacher estimates the disparity that conditions both models, as in
the build. Printed per model: the clean-image MSE of its one-step estimate from the photograph
noised to t = 200, 500, 800 (of 1000), and the mean colour saturation and |Laplacian| texture of its
samples (the fine-tune's `image_statistics`). Written: a grid with the photograph, the condition, then each model's one-step estimate at
t = 200 and ``--seeds`` full samples (``--steps`` DDIM steps).

    PYTHONPATH=src python benchmarks/d2i_foundation_compare.py OLD_D2I_DIR NEW_D2I_DIR --out grid.png
"""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import torch

LEVELS = (200, 500, 800)


def _x0(backend, xt, t, cond):
    sch = backend.scheduler
    out = backend.predict(xt, t, cond)
    at = sch.alphas_cumprod[t[0]]
    kind = sch.config.prediction_type
    if kind == "sample":
        return out
    if kind == "v_prediction":
        return at.sqrt() * xt - (1 - at).sqrt() * out
    return (xt - (1 - at).sqrt() * out) / at.sqrt()


def main() -> None:
    from bridgedepth.d2i import load_backend
    from bridgedepth.d2i.common import prepare_source
    from bridgedepth.d2i.finetune import image_statistics
    from bridgedepth.d2i.sampler import sample
    from bridgedepth.data.scenes import render_scene
    from bridgedepth.mde.predictor import Predictor
    from bridgedepth.zoo import models_dir

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs=2, help="two tiny D2I directories (e.g. old and new)")
    ap.add_argument("--scenes", type=int, default=6)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="runs/bench/d2i_foundation_compare.png")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    teacher = Predictor.from_pretrained(models_dir() / "depth", fast=True)
    samples = []
    for i in range(a.scenes):
        s = render_scene(1003, "mixed", (128, 128), index=i, look="real")
        samples.append({"rgb": s["rgb"], "pseudo": teacher.predict(s["rgb"]).values.astype(np.float32)})
    rows, report = [], {}
    for m, path in enumerate(a.models):
        b = load_backend(path, "cpu")
        b.denoiser.eval()
        src = prepare_source(samples, b.resolution, condition="pseudo")
        if m == 0:
            rows += [src["rgb"], src["disp01"].repeat(1, 3, 1, 1)]
        x0 = src["rgb"] * 2 - 1
        cond = b.encode_condition(src["disp01"])
        g = torch.Generator().manual_seed(0)
        noise = torch.randn(x0.shape, generator=g)
        r = {"prediction_type": b.scheduler.config.prediction_type}
        with torch.no_grad():
            for t in LEVELS:
                tt = torch.full((x0.shape[0],), t)
                est = _x0(b, b.scheduler.add_noise(x0, noise, tt), tt, cond)
                r[f"x0_mse_t{t}"] = round(float(((est - x0) ** 2).mean()), 4)
                if t == LEVELS[0]:
                    rows.append(((est.clamp(-1, 1) + 1) / 2))
            imgs = []
            for k in range(a.seeds):
                out = sample(b, src["disp01"], num_steps=a.steps, seeds=[1000 * k + i for i in range(a.scenes)]).images
                rows.append(out)
                imgs.append(out)
        st = image_statistics(torch.cat(imgs))
        r["sample_saturation"] = round(float(st["saturation"].mean()), 3)
        r["sample_texture"] = round(float(st["texture"].mean()), 4)
        report[path] = r
    st = image_statistics(src["rgb"])
    report["photographs"] = {"sample_saturation": round(float(st["saturation"].mean()), 3),
                             "sample_texture": round(float(st["texture"].mean()), 4)}
    print(json.dumps(report, indent=1))
    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)
    img = (grid.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
    from pathlib import Path

    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(a.out, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    print("wrote", a.out, "rows: photograph, condition, then per model: one-step estimate at t=200,",
          a.seeds, "samples")


if __name__ == "__main__":
    main()
