"""How many images *could* pass the similarity mask in the domain-gap world?

The demo's D2I model turns synthetic-look depth maps into real-look images, and the labeller accepts a
generated image for ground truth when its final mask (registered SSIM and direct SSIM > 0.85) covers
more than half of it. The best a real-look generator can do is the real-look render of the very same
scene: exact geometry, the real look's materials, lighting and camera effects. This script renders
scenes in both looks with the same seeds and masks each real-look render against its synthetic-look
render, with the labeller's settings: the ceiling of the accepted fraction in this world.

    PYTHONPATH=src python benchmarks/mask_ceiling.py [--scenes 64] [--size 128] [--seed 0] [--look real]

``--look standard`` renders the "photographs" with the real look's shader but without its camera
model (exposure and white-balance error, vignetting, blur, chromatic aberration, sensor noise, JPEG):
how much of the gap the camera effects make and how much the materials and lighting make;
``--without noise,jpeg`` leaves chosen camera effects out of the real look (the others unchanged).
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=64)
    ap.add_argument("--size", type=int, default=128, help="side of the renders (the demo's: 128)")
    ap.add_argument("--seed", type=int, default=0, help="scene seed (the demo's source scenes: 0)")
    ap.add_argument("--look", default="real", choices=("real", "standard"),
                    help="the 'photographs' (standard: the real look's shader without its camera effects)")
    ap.add_argument("--without", default="", help="comma-separated camera effects to leave out of the real "
                    "look (exposure, vignetting, blur, aberration, noise, jpeg)")
    a = ap.parse_args()

    from bridgedepth.config import LabelConfig
    from bridgedepth.data.scenes import build_scene
    from bridgedepth.data.scenes.render import camera_effects, render
    from bridgedepth.labels.masks import similarity_mask

    skip = tuple(x for x in a.without.split(",") if x)
    cfg = LabelConfig()
    res = []
    for i in range(a.scenes):  # the scenes of write_scenes(kind="mixed", seed) in both looks
        scene, rng = build_scene(a.seed, "mixed", (a.size, a.size), index=i)
        syn = render(scene, rng, "synthetic")[0]  # draws nothing from rng: the photo's draws stay the same
        photo = render(scene, rng, "standard")[0]  # the real look = the standard shader + the camera
        if a.look == "real":
            photo = camera_effects(photo, rng, skip=skip)
        res.append(similarity_mask(photo, syn, cfg))
    final = np.array([r.final_fraction for r in res])
    direct = np.array([r.direct_fraction for r in res])
    accepted = sum(bool(r.accepted) for r in res)
    without = f" without {a.without}" if a.without else ""
    print(f"{a.look}-look render{without} vs synthetic-look render of the same scene, {len(res)} scenes at "
          f"{a.size} px:")
    print(f"  accepted {accepted} of {len(res)} ({100 * accepted / len(res):.1f} %; accept: final fraction > "
          f"{cfg.accept_fraction})")
    print(f"  final mask fraction mean {final.mean():.4f}, median {np.median(final):.4f}; "
          f"direct SSIM > {cfg.ssim_threshold}: mean {direct.mean():.4f}")
    shares = ", ".join(f"> {t:.1f}: {100 * np.mean(final > t):.1f} %" for t in (0.4, 0.3, 0.2, 0.1))
    print(f"  share of scenes whose final mask covers more than a fraction of the pixels: {shares}")


if __name__ == "__main__":
    main()
