"""Train a variant of the toy aesthetic scorer on the zoo's own recipe, without rebuilding the zoo.

``bridge zoo build`` trains the scorer (stage 5) on its photographs (real-look renders of the photo
seed), the first synthetic-look renders of the teacher's training seed and 600 samples of the untuned
D2I foundation; rebuilding it that way needs the whole build folder (80-100 minutes). This script
renders the same scene sets (same seeds, size and counts), samples the *shipped* D2I foundation on the
same depth maps and trains the scorer with ``--target`` (``photo``: the shipped recipe; ``quality``:
clean images of either look high, degraded ones and D2I samples low, docs/zoo.md), so that a demo can
be run with it:

    PYTHONPATH=src python benchmarks/scorer_variant.py --target quality --out runs/scorer_quality
    bridge demo --out runs/demo_quality --set finetune.reward.aesthetic_model=runs/scorer_quality/aesthetic_quality

About 6 minutes on 2 cores (scenes 2 min, D2I samples 2 min, training 2 min); each finished part is
reused when rerun.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", choices=("photo", "quality"), default="quality")
    ap.add_argument("--out", default="runs/scorer_variant")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scenes", type=int, default=None, help="scenes per look (default: the zoo's photo_scenes)")
    ap.add_argument("--generated", type=int, default=None, help="D2I samples (default: zoo.scorer_generated)")
    ap.add_argument("--steps", type=int, default=None, help="scorer training steps (default: zoo.scorer_steps)")
    ap.add_argument("--size", type=int, default=None, help="scene size (default: the zoo's)")
    a = ap.parse_args()

    import torch

    from bridgedepth.config import load_config
    from bridgedepth.zoo import model_path
    from bridgedepth.zoo.build import d2i_samples, train_zoo_scorer, write_zoo_scenes

    torch.set_num_threads(a.threads)
    over = [f"zoo.scorer_target={a.target}"]
    over += [f"zoo.scorer_generated={a.generated}"] if a.generated is not None else []
    over += [f"zoo.scorer_steps={a.steps}"] if a.steps else []
    over += [f"zoo.scene_size=[{a.size},{a.size}]"] if a.size else []
    cfg = load_config("zoo", over)
    z = cfg.zoo
    out = Path(a.out)
    sc = out / "scenes"
    t0 = time.time()
    write_zoo_scenes(cfg, sc, ("teacher_train", "photos"), count=a.scenes or z.photo_scenes, workers=a.threads)
    print(f"scenes {time.time() - t0:.0f} s", flush=True)
    t1 = time.time()
    gen_path = out / "generated.pt"
    generated = torch.load(gen_path, weights_only=True) if gen_path.exists() else None
    dest = out / f"aesthetic_{a.target}"
    if generated is None and z.scorer_generated > 0:  # made once: a rerun trains another variant on the same samples
        generated = d2i_samples(model_path("d2i"), sc / "teacher_train", z.scorer_generated, z.scorer_size,
                                steps=cfg.d2i.num_steps, seed=z.seed)
        tmp = gen_path.with_suffix(".tmp")
        torch.save(generated, tmp)
        tmp.replace(gen_path)
    print(f"D2I samples {time.time() - t1:.0f} s", flush=True)
    t2 = time.time()
    rep = train_zoo_scorer(cfg, sc / "photos", sc / "teacher_train", model_path("d2i"), dest, generated=generated)
    print(f"scorer {time.time() - t2:.0f} s -> {dest}")
    print(json.dumps({k: (round(v["mean_logit"], 3) if isinstance(v, dict) and "mean_logit" in v else v)
                      for k, v in rep.items()}, indent=1))


if __name__ == "__main__":
    main()
