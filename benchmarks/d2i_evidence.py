"""Evidence run for reward fine-tuning on the tiny setup (CPU, minutes).

1. trains a throwaway tiny DepthAnything teacher on toy RGB-D scenes (1 - Pearson loss on disparity),
   unless --teacher is given;
2. LoRA-fine-tunes a pretrained tiny d2i model with the depth reward;
3. prints the held-out depth reward and the teacher's AbsRel on generated images before and after.

    PYTHONPATH=src python benchmarks/d2i_evidence.py --d2i runs/d2i --out runs/d2i_ft [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def train_teacher(out: Path, steps: int = 300, n: int = 400, seed: int = 3, res: int = 64) -> Path:
    from transformers import DepthAnythingForDepthEstimation

    from bridgedepth.d2i.common import prepare_source
    from bridgedepth.d2i.rewards import masked_cosine
    from bridgedepth.d2i.synthetic import toy_scenes
    from bridgedepth.d2i.teacher import teacher_disparity, tiny_teacher_config

    torch.manual_seed(seed)
    data = prepare_source(toy_scenes(n, res, seed=seed), res)
    model = DepthAnythingForDepthEstimation(tiny_teacher_config("metric"))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    g = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for s in range(steps):
        idx = torch.randint(0, n, (16,), generator=g)
        pred = teacher_disparity(model, data["rgb"][idx])
        loss = (1 - masked_cosine(pred, data["disp"][idx, 0], data["valid"][idx, 0], True)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if s % 50 == 0 or s == steps - 1:
            print(f"teacher step {s} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    model.save_pretrained(out)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d2i", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--teacher", default=None)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--teacher-steps", type=int, default=300)
    ap.add_argument("--teacher-only", action="store_true")
    ap.add_argument("--quality-only", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args()
    torch.set_num_threads(1)
    from bridgedepth.config import load_config
    from bridgedepth.d2i.finetune import finetune
    from bridgedepth.d2i.synthetic import toy_scenes

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    res = json.loads((Path(a.d2i) / "bridge.json").read_text())["resolution"]
    teacher = Path(a.teacher) if a.teacher else train_teacher(out / "teacher", a.teacher_steps, res=res)
    if a.teacher_only:
        return
    if a.quality_only:
        print(json.dumps(quality(a.d2i, str(teacher)), indent=2))
        return
    cfg = load_config("tiny", ["device=cpu", "finetune.heldout=16", "finetune.sample_every=20", *a.overrides])
    src = toy_scenes(200, 2 * res, seed=11)  # unseen toy scenes (the d2i model was pretrained on seed 1)
    s = finetune(cfg, a.d2i, teacher, src, out / "ft", steps=a.steps)
    print(json.dumps({k: s[k] for k in ("heldout_before", "heldout_after", "depth_reward_gain", "seconds")}, indent=2))



def quality(d2i_dir: str, teacher_dir: str, n: int = 16, steps: int | None = None) -> dict:
    """Depth consistency (teacher Pearson vs source disparity) of generated images and of the real renders
    on unseen toy scenes: how far the generator is from 'as depth-consistent as the real image'."""
    from bridgedepth.d2i.backend import load_backend
    from bridgedepth.d2i.common import prepare_source
    from bridgedepth.d2i.finetune import evaluate_depth
    from bridgedepth.d2i.rewards import masked_cosine
    from bridgedepth.d2i.synthetic import toy_scenes
    from bridgedepth.d2i.teacher import load_teacher, teacher_disparity

    be = load_backend(d2i_dir)
    t = load_teacher(teacher_dir)
    data = prepare_source(toy_scenes(n, 2 * be.resolution, seed=99), be.resolution)
    gen = evaluate_depth(be, t, data, num_steps=steps or be.default_steps, seeds=list(range(n)))
    with torch.no_grad():
        real = masked_cosine(teacher_disparity(t, data["rgb"]), data["disp"][:, 0], data["valid"][:, 0]).mean()
    return {"generated": gen, "real_render_depth_reward": float(real)}


if __name__ == "__main__":
    main()
