"""How far can the toy depth foundation get with more steps? A learning curve of the zoo's recipe.

The issue asks for a baseline (the source-only student, which starts from the shipped depth
foundation) at AbsRel <= 0.12 on the real-look test; the demo's is 0.278, and the foundation's own
card says 0.247 even on held-out *synthetic-look* scenes (its training look). This script retrains
the foundation exactly as `bridge zoo build` does (`zoo.*` of the preset: the toy architecture,
4000 synthetic-look scenes with ground truth, batch 8, the same seeds) for ``--steps`` steps, and
scores it every ``--every`` steps on held-out scenes in both looks (the zoo's held-out seed) and on
the real-look renders of the demo's val seed (the set `row_budget.py` uses). No test set is used.

Resumable (the scenes are a stage; training resumes from the trainer's ``last/`` checkpoint).
``--look real`` trains on real-look renders of the same scenes instead (the in-domain bound for the
real look).

    PYTHONPATH=src python benchmarks/depth_curve.py [--steps 6000] [--every 500] [--look synthetic]
        [--out runs/depth_curve]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/depth_curve"))
    ap.add_argument("--preset", default="zoo")
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--every", type=int, default=500, help="score every N steps")
    ap.add_argument("--look", choices=["synthetic", "real"], default="synthetic", help="the training scenes' look")
    ap.add_argument("--val", type=int, default=96, help="real-look renders of the demo's val seed")
    a = ap.parse_args()

    import torch

    from bridgedepth.config import load_config
    from bridgedepth.data.scenes.dataset import write_scenes
    from bridgedepth.evaluation.validate import make_shard_validator
    from bridgedepth.mde.trainer import TrainData, train
    from bridgedepth.pipeline import demo_seeds
    from bridgedepth.stages import StageRunner
    from bridgedepth.zoo.build import _depth_cfg, build_seeds

    cfg = load_config(a.preset)
    cfg.zoo.depth_steps = a.steps
    dcfg = _depth_cfg(cfg)
    dcfg.train.val_every = a.every
    dcfg.train.save_every = a.every
    dcfg.train.val_limit = 0  # every scene of each set (the preset's train.val_limit would score 64)
    seeds = build_seeds(cfg)
    size = tuple(cfg.zoo.scene_size)
    out = a.out / a.look
    out.mkdir(parents=True, exist_ok=True)
    sc = a.out / "scenes"
    runner = StageRunner(out)
    val_seed = demo_seeds(load_config("tiny"))["val"]  # the demo's val seed (row_budget.py's set)
    if val_seed in seeds.values():
        raise SystemExit(f"the demo's val seed {val_seed} is a zoo seed")

    def scenes():
        kw = dict(kind="mixed", size=size, samples_per_shard=256, progress=False)
        write_scenes(sc / f"train_{a.look}", cfg.zoo.teacher_scenes, seed=seeds["teacher_train"], look=a.look, **kw)
        for look in ("synthetic", "real"):
            write_scenes(sc / f"heldout_{look}", cfg.zoo.val_scenes, seed=seeds["heldout"], look=look, **kw)
        write_scenes(sc / "demo_val_real", a.val, seed=val_seed, look="real", **kw)
        return {"seeds": seeds, "demo_val_seed": val_seed}

    runner.run("scenes", scenes)
    vals = {name: make_shard_validator(sc / name, dcfg)
            for name in ("heldout_synthetic", "heldout_real", "demo_val_real")}

    def validate(model) -> dict:
        res = {name: v(model) for name, v in vals.items()}
        row = {**{f"{n}_abs_rel": round(r["abs_rel"], 4) for n, r in res.items()},
               **{f"{n}_delta1": round(r["delta1"], 4) for n, r in res.items()}}
        print(json.dumps(row), flush=True)
        # best/ is kept by the training look's held-out AbsRel (as the zoo build keeps it by its val set);
        # every set's figures go to the trainer's log.jsonl as val_* beside the step
        return {"abs_rel": res[f"heldout_{a.look}"]["abs_rel"], "delta1": res[f"heldout_{a.look}"]["delta1"], **row}

    t0 = time.time()
    r = train(dcfg, [TrainData(str(sc / f"train_{a.look}"), "gt")], out / "model", validate=validate, progress=False)
    print(f"trained {r.steps} steps in {time.time() - t0:.0f} s this run on {torch.get_num_threads()} threads; "
          f"the curve: val_* of {out / 'model' / 'log.jsonl'}")
    curve = [json.loads(x) for x in (out / "model" / "log.jsonl").read_text().splitlines() if '"val_' in x]
    for c in curve:
        print(c.get("step"), {k[4:]: v for k, v in c.items() if k.startswith("val_") and k.endswith("abs_rel")})


if __name__ == "__main__":
    main()
