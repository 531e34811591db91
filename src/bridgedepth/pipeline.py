"""The end-to-end BRIDGE run (`bridge demo`): every stage is a call of the same function its own
subcommand uses; each stage is resumable and a rerun skips completed stages.

Layout of ``OUT`` (default ``runs/demo``)::

    scenes/{train,val,test,gen}/   procedural source shards (gen = the source depth maps that get images)
    teacher/                       teacher = the source-only baseline (last/, best/, log.jsonl, curves.png)
    d2i/base/  d2i/finetuned/      tiny D2I model before / after reward fine-tuning (LoRA)
    generated/  labelled/          generated images; + pseudo-labels and similarity masks
    students/{pseudo,pseudo-ft,hybrid}/   + generated data (pseudo-labels); the two fine-tunes of Table 3
    metric/  scale-head/           metric fine-tune of the hybrid student; scale head on it (frozen)
    fixtures/                      the real RGB-D fixtures staged as `folder` benchmarks
    eval/                          one JSON per (model, benchmark)
    figures/                       PNG figures
    stages.json  metrics.json  report.html
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .config import Config, save_resolved
from .stages import StageRecord, StageRunner, _jsonable  # noqa: F401  (re-exported: the demo's stage runner)

# Real fixtures (../shared/data/rgbd) evaluated through the `folder` benchmark:
# name -> (rgb source, depth source, encoding, kind of scene). Sources are folders or single files.
FIXTURES: dict[str, tuple[str, str, str, str]] = {
    "nyu": ("nyu_sync/rgb", "nyu_sync/depth", "png-mm", "indoor"),
    "kitti": ("kitti_annotated/rgb", "kitti_annotated/depth", "png-kitti", "outdoor"),
    "tum": ("open3d/other_formats/TUM_color.png", "open3d/other_formats/TUM_depth.png", "png-tum", "indoor"),
    "sun": ("open3d/other_formats/SUN_color.jpg", "open3d/other_formats/SUN_depth.png", "png-sun3d", "indoor"),
    "redwood": ("open3d/color", "open3d/depth", "png-mm", "indoor"),
}

RELATIVE_MODELS = [  # (row name in the tables, checkpoint folder under OUT)
    ("untrained (random init, reference)", "untrained"),
    ("baseline (source data only)", "teacher/last"),
    ("+ generated data, pseudo-labels", "students/pseudo/last"),
    ("+ fine-tune, pseudo-labels only", "students/pseudo-ft/last"),
    ("+ fine-tune, hybrid (BRIDGE)", "students/hybrid/last"),
]
METRIC_MODELS = [  # metric head, or a frozen relative model with a scale head: both give metres
    ("metric fine-tune (SiLog)", "metric/last"),
    ("hybrid student + scale head", "scale-head/last"),
]


def demo_seeds(cfg: Config) -> dict[str, int]:
    """The scene seeds of the demo's sets (the test seed must never reach a training set)."""
    return {"train": cfg.seed, "val": cfg.seed + 1, "test": cfg.seed + 2}


def _with(cfg: Config, **train) -> Config:
    c = copy.deepcopy(cfg)
    for k, v in train.items():
        setattr(c.train, k, v)
    return c


def default_fixtures_root() -> Path | None:
    for cand in (Path.cwd().parent / "shared" / "data" / "rgbd",
                 Path(__file__).resolve().parents[3] / "shared" / "data" / "rgbd"):
        if cand.is_dir():
            return cand
    return None


def stage_fixtures(src_root: Path, dst: Path) -> dict[str, dict]:
    """Lay out the real fixtures as `folder` benchmarks (rgb/ + depth/ with paired names, symlinks)."""
    staged = {}
    for name, (rgb, depth, enc, kind) in FIXTURES.items():
        r, d = src_root / rgb, src_root / depth
        if not r.exists() or not d.exists():
            continue
        root = dst / name
        if root.exists():
            shutil.rmtree(root)
        (root / "rgb").mkdir(parents=True)
        (root / "depth").mkdir(parents=True)
        if r.is_file():
            os.symlink(r.resolve(), root / "rgb" / f"{name}{r.suffix}")
            os.symlink(d.resolve(), root / "depth" / f"{name}{d.suffix}")
        else:
            for f in sorted(r.iterdir()):
                os.symlink(f.resolve(), root / "rgb" / f.name)
            for f in sorted(d.iterdir()):
                os.symlink(f.resolve(), root / "depth" / f.name)
        staged[name] = {"root": str(root), "encoding": enc, "kind": kind}
    return staged


# ------------------------------------------------------------------------------------------------
# Evaluation of every model variant
# ------------------------------------------------------------------------------------------------


def evaluate_models(out: Path, cfg: Config, fixtures: dict[str, dict], progress: bool = True) -> dict:
    from .data.benchmarks import get_benchmark
    from .data.benchmarks.shard_set import ShardSet
    from .evaluation.runner import ModelPredictions, evaluate_dense
    from .mde.predictor import Predictor

    if not (out / "untrained" / "bridge.json").exists():  # the trivial reference: same model, no training
        from .mde import build_model, save_model

        save_model(build_model(cfg.model.name, seed=cfg.seed), out / "untrained", extra={"stage": "untrained"})
    benches: dict[str, Any] = {"procedural test": ShardSet(out / "scenes" / "test")}
    for name, f in fixtures.items():
        benches[name] = get_benchmark("folder", f["root"], encoding=f["encoding"])
    results: dict[str, dict] = {"relative": {}, "metric": {}}
    (out / "eval").mkdir(exist_ok=True)

    def run(kind, row, predictor, ptype, alignment):
        results[kind][row] = {}
        for bname, bench in benches.items():
            res = evaluate_dense(bench, ModelPredictions(predictor, field_name=ptype), prediction_type=ptype,
                                 alignment=alignment, disparity_floor=cfg.eval.disparity_floor, progress=False)
            results[kind][row][bname] = res.to_json()

    for row, ckpt in RELATIVE_MODELS:
        p = out / ckpt
        if p.exists():
            run("relative", row, Predictor.from_pretrained(p, input_size=cfg.model.input_size), "disparity", "disparity")
    for row, ckpt in METRIC_MODELS:
        p = out / ckpt
        if p.exists():
            run("metric", row, Predictor.from_pretrained(p, input_size=cfg.model.input_size, metric=True), "depth", "none")
    tmp = out / "eval" / "results.json.tmp"
    tmp.write_text(json.dumps(_jsonable(results), indent=1))
    os.replace(tmp, out / "eval" / "results.json")
    return results


# ------------------------------------------------------------------------------------------------
# The demo
# ------------------------------------------------------------------------------------------------


def run_demo(cfg: Config, out: str | os.PathLike = "runs/demo", *, fixtures_root: str | None = None,
             progress: bool = True, log: Callable[[str], None] = print) -> dict:
    """Run the whole pipeline on ``cfg`` (the `tiny` preset by default) and write the report."""
    from .d2i.finetune import finetune
    from .d2i.generate import generate
    from .d2i.pretrain import pretrain
    from .data.scenes.dataset import write_contact_sheet, write_scenes
    from .evaluation.validate import make_shard_validator
    from .labels.label import label
    from .mde.trainer import TrainData, train

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out)
    d = cfg.demo
    runner = StageRunner(out, log)
    sc = out / "scenes"
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    size = tuple(d.scene_size)
    sps = cfg.scenes.samples_per_shard

    def scenes():
        kw = dict(kind=cfg.scenes.kind, size=size, samples_per_shard=sps, progress=progress)
        seeds = demo_seeds(cfg)
        write_scenes(sc / "train", d.train_scenes, seed=seeds["train"], **kw)
        write_scenes(sc / "val", d.val_scenes, seed=seeds["val"], **kw)
        write_scenes(sc / "test", d.test_scenes, seed=seeds["test"], **kw)
        # the source depth maps that get generated images: the first `gen_sources` training scenes
        write_scenes(sc / "gen", min(d.gen_sources, d.train_scenes), seed=seeds["train"], **kw)
        write_contact_sheet(sc / "test", figs / "scenes.png", limit=12, columns=4, cell=160)
        return {"train": d.train_scenes, "val": d.val_scenes, "test": d.test_scenes, "gen": d.gen_sources}

    runner.run("1 scenes", scenes)
    val = make_shard_validator(sc / "val", cfg)
    gt = TrainData(str(sc / "train"), "gt", 1.0)

    def teacher():
        r = train(_with(cfg, stage="teacher", steps=d.teacher_steps), [gt], out / "teacher",
                  validate=val, progress=progress)
        return {"steps": r.steps, "final_loss": r.final_loss, "best_val_abs_rel": r.best_score}

    runner.run("2 teacher (= source-only baseline)", teacher)

    def d2i_pretrain():
        return pretrain(cfg, sc / "train", out / "d2i" / "base", steps=d.d2i_pretrain_steps, progress=progress)

    runner.run("3a D2I pretrain", d2i_pretrain)

    def d2i_finetune():
        return finetune(cfg, out / "d2i" / "base", out / "teacher" / "last", sc / "train", out / "d2i" / "finetuned",
                        heldout=sc / "val", steps=d.d2i_finetune_steps, progress=progress)

    runner.run("3b D2I reward fine-tune", d2i_finetune)

    def gen():
        return generate(cfg, out / "d2i" / "finetuned", sc / "gen", out / "generated", progress=progress)

    runner.run("4 generate", gen)

    def lab():
        return label(cfg, out / "teacher" / "last", out / "generated", out / "labelled", progress=progress).to_json()

    runner.run("5 label", lab)

    lab_dir = str(out / "labelled")

    def student(name, stage, steps, data, init=None):
        def fn():
            r = train(_with(cfg, stage=stage, steps=steps), data, out / "students" / name, init_from=init,
                      validate=val, progress=progress)
            return {"steps": r.steps, "final_loss": r.final_loss, "best_val_abs_rel": r.best_score}

        return fn

    runner.run("6a student: + generated (pseudo-labels)",
               student("pseudo", "student-pseudo", d.student_steps, [TrainData(lab_dir, "pseudo"), gt]))
    pseudo_last = str(out / "students" / "pseudo" / "last")
    runner.run("6b student: fine-tune, pseudo-labels only",
               student("pseudo-ft", "student-pseudo", d.hybrid_steps, [TrainData(lab_dir, "pseudo"), gt], pseudo_last))
    runner.run("6c student: fine-tune, hybrid",
               student("hybrid", "student-hybrid", d.hybrid_steps, [TrainData(lab_dir, "hybrid"), gt], pseudo_last))
    hybrid_last = str(out / "students" / "hybrid" / "last")
    metric_data = [TrainData(str(sc / "train"), "metric")]
    metric_val = make_shard_validator(sc / "val", cfg, metric=True)

    def metric():
        r = train(_with(cfg, stage="metric", steps=d.metric_steps), metric_data, out / "metric",
                  init_from=hybrid_last, validate=metric_val, progress=progress)
        return {"steps": r.steps, "final_loss": r.final_loss, "best_val_abs_rel": r.best_score}

    runner.run("7a metric fine-tune", metric)

    def scale_head():
        r = train(_with(cfg, stage="scale-head", steps=d.scale_head_steps), metric_data, out / "scale-head",
                  init_from=hybrid_last, validate=metric_val, progress=progress)
        return {"steps": r.steps, "final_loss": r.final_loss, "best_val_abs_rel": r.best_score}

    runner.run("7b scale head", scale_head)

    fx_root = fixtures_root or d.fixtures or default_fixtures_root()
    fixtures = stage_fixtures(Path(fx_root), out / "fixtures") if fx_root else {}
    if not fixtures:
        log("no real RGB-D fixtures found (../shared/data/rgbd): evaluating on procedural scenes only")
    def evaluate():
        evaluate_models(out, cfg, fixtures, progress)
        return {"models": len(RELATIVE_MODELS) + len(METRIC_MODELS), "benchmarks": 1 + len(fixtures)}

    runner.run("8 evaluate", evaluate)

    from .demo_report import write_report

    log("[9 report] writing figures, tables and the report (always redone)")
    return write_report(out, cfg, runner, fixtures)
