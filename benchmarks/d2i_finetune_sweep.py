"""Choose the demo's D2I reward fine-tune settings on a *tuning* set, never on the demo's sets.

The shipped D2I and depth foundations, the demo's 64 source depth maps (training scenes of seed 0, the
ones the demo fine-tunes on) and 32 held-out synthetic scenes of seed 50 (not the demo's val set,
seed 1, on which the demo reports its before/after figures, and no test set). Each variant is
fine-tuned for the demo's step budget from the same LoRA start and judged on the tuning set: the
held-out depth reward, the toy aesthetic score and the mean HSV saturation before and after; with
the saturation of real-look renders (seed 51) as the reference a tuned generator should not overshoot.

    PYTHONPATH=src python benchmarks/d2i_finetune_sweep.py --out runs/d2i_sweep \
        --lr 1e-3 2e-3 3e-3 5e-3 --seeds 0 1 [--steps 40] [--set finetune.grad_steps=2]

Each run's summary is appended to OUT/results.jsonl (a rerun skips the variants already there), and
the table is printed at the end; OUT/montage.png puts the runs' held-out samples side by side (one
column per run, numbered in the order of results.jsonl; docs/images/d2i_anchor_sweep.png). Costs about
55 s per 40-step variant on 2 CPU cores without the anchor, 80 s with it (the tiny preset's default since
2026-12-03: anchor weight 20; --set finetune.reward.anchor_weight=0 turns it off). A run's name carries
its depth / aesthetic / anchor weights (``_w0.9-0.1-20``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def _scenes(root: Path) -> None:
    from bridgedepth.data.scenes.dataset import write_scenes

    kw = dict(kind="mixed", size=(128, 128), samples_per_shard=256, progress=False)
    for name, count, seed, look in (("gen", 64, 0, "synthetic"), ("tune", 32, 50, "synthetic"),
                                    ("real_look", 64, 51, "real")):
        if not (root / name / "manifest.json").exists():
            write_scenes(root / name, count, seed=seed, look=look, **kw)


def real_look_saturation(root: Path) -> float:
    import torch

    from bridgedepth.d2i.finetune import image_statistics
    from bridgedepth.data.shards import iter_samples

    imgs = [torch.from_numpy(s["rgb"]).permute(2, 0, 1).float() / 255 for s in iter_samples(root / "real_look")]
    return float(image_statistics(torch.stack(imgs))["saturation"].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/d2i_sweep")
    ap.add_argument("--lr", type=float, nargs="+", default=[1e-3, 3e-3])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--heldout", type=int, default=32)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override")
    a = ap.parse_args()

    from bridgedepth.config import load_config
    from bridgedepth.d2i.finetune import finetune
    from bridgedepth.zoo import model_path

    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    _scenes(root)
    log = root / "results.jsonl"
    done = {json.loads(x)["name"] for x in log.read_text().splitlines()} if log.exists() else set()
    extra = "".join("_" + o.replace("=", "-") for o in a.overrides)
    for lr in a.lr:
        for seed in a.seeds:
            cfg = load_config("tiny", [f"finetune.lr={lr}", f"finetune.seed={seed}",
                                       f"finetune.heldout={a.heldout}", *a.overrides])
            rw = cfg.finetune.reward  # the effective weights name the run (the preset's defaults change)
            name = (f"lr{lr:g}_steps{a.steps}_seed{seed}_w{rw.depth_weight:g}-{rw.aesthetic_weight:g}-"
                    f"{rw.anchor_weight:g}{extra}")
            if name in done:
                continue
            cfg.finetune.reward.aesthetic_model = str(model_path("aesthetic"))
            t = time.time()
            s = finetune(cfg, str(model_path("d2i")), str(model_path("depth")), root / "gen", root / "runs" / name,
                         heldout=root / "tune", steps=a.steps, progress=False)
            rec = {"name": name, "lr": lr, "seed": seed, "steps": a.steps, "overrides": a.overrides,
                   "seconds": round(time.time() - t, 1), "before": s["heldout_before"], "after": s["heldout_after"]}
            with open(log, "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"{name}: depth reward {rec['before']['depth_reward']:.3f} -> {rec['after']['depth_reward']:.3f}",
                  flush=True)

    sat_ref = real_look_saturation(root)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    if rows:
        b = rows[0]["before"]
        print(f"\nbefore fine-tuning: saturation {b['saturation']:.3f}, texture {b['texture']:.3f}, "
              f"dominant colour share {b['dominant_colour_share']:.3f}")
    print(f"real-look renders (seed 51): saturation {sat_ref:.3f}")
    print("| variant | seconds | depth reward before -> after (gain) | aesthetic before -> after | "
          "saturation after | texture after | dominant colour share after |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        b, f = r["before"], r["after"]
        aes = (f"{b['aesthetic']:.2f} -> {f['aesthetic']:.2f}" if b.get("aesthetic") is not None else "off")
        print(f"| {r['name']} | {r['seconds']:.0f} | {b['depth_reward']:.3f} -> {f['depth_reward']:.3f} "
              f"({f['depth_reward'] - b['depth_reward']:+.3f}) | {aes} | {f['saturation']:.3f} | "
              f"{f['texture']:.3f} | {f['dominant_colour_share']:.3f} |")
    write_montage(root, [r["name"] for r in rows])


def write_montage(root: Path, names: list[str]) -> None:
    """OUT/montage.png: the middle column (the generated images) of each run's
    samples/final-heldout.png (depth condition | image | teacher depth), one column per run, numbered."""
    from PIL import Image, ImageDraw

    cols = []
    for name in dict.fromkeys(names):
        p = root / "runs" / name / "samples" / "final-heldout.png"
        if p.exists():
            im = Image.open(p).convert("RGB")
            w, h = im.size
            cols.append(im.crop((w // 3, 0, 2 * w // 3, h)))
    if not cols:
        return
    w, h = cols[0].size
    out = Image.new("RGB", (w * len(cols), h + 12), "white")
    for i, c in enumerate(cols):
        out.paste(c, (i * w, 12))
        ImageDraw.Draw(out).text((i * w + 2, 0), str(i), fill="black")
    out.quantize(colors=128).save(root / "montage.png", optimize=True)
    print(f"montage: {root / 'montage.png'}")


if __name__ == "__main__":
    main()
