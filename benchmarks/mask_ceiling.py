"""How many images *could* pass the similarity mask in the domain-gap world?

The demo's D2I model turns synthetic-look depth maps into real-look images, and the labeller accepts a
generated image for ground truth when its final mask (registered SSIM and direct SSIM > 0.85) covers
more than half of it. The best a real-look generator can do is the real-look render of the very same
scene: exact geometry, the real look's materials, lighting and camera effects. This script renders
scenes in both looks with the same seeds and masks each real-look render against its synthetic-look
render, with the labeller's settings: the ceiling of the accepted fraction in this world.

    PYTHONPATH=src python benchmarks/mask_ceiling.py [--scenes 64] [--size 128] [--seed 0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=64)
    ap.add_argument("--size", type=int, default=128, help="side of the renders (the demo's: 128)")
    ap.add_argument("--seed", type=int, default=0, help="scene seed (the demo's source scenes: 0)")
    a = ap.parse_args()

    from bridgedepth.config import LabelConfig
    from bridgedepth.data.scenes.dataset import write_scenes
    from bridgedepth.data.shards import iter_samples
    from bridgedepth.labels.masks import similarity_mask

    cfg = LabelConfig()
    with tempfile.TemporaryDirectory() as tmp:
        kw = dict(kind="mixed", size=(a.size, a.size), samples_per_shard=256, seed=a.seed, progress=False)
        write_scenes(Path(tmp) / "synthetic", a.scenes, look="synthetic", **kw)
        write_scenes(Path(tmp) / "real", a.scenes, look="real", **kw)
        pairs = zip(iter_samples(Path(tmp) / "synthetic"), iter_samples(Path(tmp) / "real"))
        res = [similarity_mask(real["rgb"], syn["rgb"], cfg) for syn, real in pairs]
    final = np.array([r.final_fraction for r in res])
    direct = np.array([r.direct_fraction for r in res])
    accepted = sum(bool(r.accepted) for r in res)
    print(f"real-look render vs synthetic-look render of the same scene, {len(res)} scenes at {a.size} px:")
    print(f"  accepted {accepted} of {len(res)} ({100 * accepted / len(res):.1f} %; accept: final fraction > "
          f"{cfg.accept_fraction})")
    print(f"  final mask fraction mean {final.mean():.4f}, median {np.median(final):.4f}; "
          f"direct SSIM > {cfg.ssim_threshold}: mean {direct.mean():.4f}")
    shares = ", ".join(f"> {t:.1f}: {100 * np.mean(final > t):.1f} %" for t in (0.4, 0.3, 0.2, 0.1))
    print(f"  share of scenes whose final mask covers more than a fraction of the pixels: {shares}")


if __name__ == "__main__":
    main()
