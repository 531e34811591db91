"""Do the demo's row gaps grow with the student budget? Measured on a real-look *validation* set.

The demo trains every student row for ``demo.student_steps`` (150) steps from the shipped depth
foundation. BRIDGE's lead over source only (-4.4 %) and even the oracle's (-10.3 %) are small: is the
budget the limit, or the data? This script retrains rows of an existing demo folder (its scenes,
generated-and-labelled set and real-look photos; the demo's own recipes, initialisation and seeds) at
several step counts, and scores each on real-look renders of the demo's *val* seed (depth maps no
model is trained on: the D2I fine-tune only reports on them), never on the test set, so that a budget
can be chosen from it. Resumable: every trained row is a stage in ``--out/stages.json``; rows train on
``demo.stage_workers`` processes side by side.

    PYTHONPATH=src python benchmarks/row_budget.py --demo runs/demo [--steps 150 600] [--seeds 0 1]
        [--rows source_only generated_pseudo oracle] [--val 96] [--out runs/row_budget]
        [--init teacher|encoder] [--gen-sources N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, default=Path("runs/demo"), help="a finished `bridge demo` folder")
    ap.add_argument("--out", type=Path, default=Path("runs/row_budget"))
    ap.add_argument("--steps", type=int, nargs="+", default=[150, 600])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seed offsets (the demo's k)")
    ap.add_argument("--rows", nargs="+", default=["source_only", "generated_pseudo", "oracle"])
    ap.add_argument("--val", type=int, default=96, help="real-look renders of the demo's val seed")
    ap.add_argument("--init", choices=["teacher", "encoder"], default="teacher",
                    help="what every row starts from: the shipped depth foundation (the demo's rows, which is "
                         "also the teacher), or only its encoder with a freshly initialised DPT decoder (as the "
                         "paper's students start from a DINOv2 encoder)")
    ap.add_argument("--lr", type=float, default=None, help="train.lr of every row (default: the demo's)")
    ap.add_argument("--gen-sources", type=int, default=0,
                    help="generate from this many training depth maps with the demo's reward-tuned D2I and "
                         "label them (0: the demo's own labelled set)")
    a = ap.parse_args()

    from bridgedepth.data.benchmarks.shard_set import ShardSet
    from bridgedepth.mde.predictor import Predictor
    from bridgedepth.pipeline import (ParallelStage, StageRunner, _score, _with, available_cores, row_recipes,
                                      torch_threads, train_stage)

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_common import demo_study, write_demo_scenes

    cfg, seeds, teacher = demo_study(a.demo)
    d = cfg.demo
    labelled = None
    if a.gen_sources:
        labelled = a.out / f"labelled_{a.gen_sources}"
    recipes = row_recipes(a.demo, d, labelled)
    for row in a.rows:
        if row not in recipes or recipes[row][1] is not None:
            raise SystemExit(f"{row}: not a row trained from the foundation ({', '.join(recipes)})")
    a.out.mkdir(parents=True, exist_ok=True)
    runner = StageRunner(a.out, print)
    val_dir = a.out / "val_real"

    def scenes(dest, count, seed, look):
        return lambda: write_demo_scenes(cfg, dest, count, seed, look)

    runner.run("real-look val scenes", scenes(val_dir, a.val, seeds["val"], "real"))

    if a.gen_sources:
        from bridgedepth.d2i.generate import generate
        from bridgedepth.labels.label import label

        src, gen = a.out / f"gen_{a.gen_sources}", a.out / f"generated_{a.gen_sources}"
        runner.run(f"source depth maps ({a.gen_sources})", scenes(src, a.gen_sources, seeds["train"], "synthetic"))
        runner.run(f"generate ({a.gen_sources} depth maps)", lambda: generate(
            cfg, a.demo / "d2i" / "finetuned", src, gen, progress=False, overwrite=True))
        runner.run(f"label ({a.gen_sources} depth maps)", lambda: label(
            cfg, teacher, gen, labelled, progress=False).to_json())
    init, enc_dir = teacher, None
    if a.init == "encoder":
        enc_dir = a.out / "teacher_encoder"

        def encoder():
            from transformers import Dinov2Model

            from bridgedepth.mde import load_model

            m = load_model(teacher)
            enc = Dinov2Model(m.config.backbone_config)
            enc.load_state_dict(m.backbone.state_dict(), strict=True)
            enc.save_pretrained(enc_dir, safe_serialization=True)
            return {"parameters": sum(p.numel() for p in enc.parameters())}

        runner.run("the teacher's encoder as a Hugging Face DINOv2 checkpoint", encoder)
        init = None
    workers = max(1, min(int(d.stage_workers), available_cores()))
    threads = max(1, torch_threads() // workers) if workers > 1 else None
    jobs = []
    tag = (f", {a.gen_sources} generated sources" if a.gen_sources else "") + (", encoder start" if enc_dir else "")
    for steps in a.steps:
        for k in a.seeds:
            for row in a.rows:
                data, _, _, stage = recipes[row]
                c = _with(cfg, stage=stage, steps=steps, seed=cfg.train.seed + k, val_every=0,
                          lr=cfg.train.lr if a.lr is None else a.lr)
                c.model.encoder_init = None if enc_dir is None else str(enc_dir)
                dest = a.out / f"steps{steps}" / f"seed{k}" / row
                jobs.append(ParallelStage(f"{row} {steps} steps (seed {k}){tag}", train_stage,
                                          (c, data, str(dest), init, False, threads)))
    t0 = time.time()
    runner.run_parallel(f"rows ({workers} processes)", jobs, workers)
    print(f"trained in {time.time() - t0:.0f} s")

    bench = ShardSet(val_dir)
    results: dict = {}
    for steps in a.steps:
        for row in a.rows:
            ab = []
            for k in a.seeds:
                p = Predictor.from_pretrained(a.out / f"steps{steps}" / f"seed{k}" / row / "last",
                                              input_size=cfg.model.input_size)
                ab.append(_score(bench, p, cfg)["metrics"]["abs_rel"])
            results.setdefault(str(steps), {})[row] = {"absrel": float(np.mean(ab)), "min": float(min(ab)),
                                                       "max": float(max(ab)), "per_seed": ab}
    teacher_ab = _score(bench, Predictor.from_pretrained(teacher, input_size=cfg.model.input_size), cfg)
    results["teacher"] = teacher_ab["metrics"]["abs_rel"]
    (a.out / "results.json").write_text(json.dumps(results, indent=1))

    print(f"\nreal-look val AbsRel ({a.val} scenes, seed {seeds['val']}), mean over training seeds {a.seeds} "
          f"[min, max]; teacher {results['teacher']:.3f}")
    print("| steps | " + " | ".join(a.rows) + " |")
    print("|---" * (len(a.rows) + 1) + "|")
    for steps in a.steps:
        r = results[str(steps)]
        base = r.get("source_only", {}).get("absrel")
        cells = []
        for row in a.rows:
            v = r[row]
            gap = f" ({100 * (v['absrel'] / base - 1):+.1f} %)" if base and row != "source_only" else ""
            cells.append(f"{v['absrel']:.3f} [{v['min']:.3f}, {v['max']:.3f}]{gap}")
        print(f"| {steps} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
