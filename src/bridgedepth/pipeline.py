"""The end-to-end BRIDGE run (`bridge demo`): every stage is a call of the same function its own
subcommand uses; each stage is resumable and a rerun skips completed stages.

It starts, as the paper does, from pretrained foundations: the toy depth, D2I and aesthetic models that
ship with the package (docs/zoo.md), or with ``--from-scratch`` models it builds first. The world has
two looks (docs/scenes.md): the *source* data are synthetic-look renders with exact depth; the test set
and the DA-V2-style / oracle images are real-look renders ("photographs").

Layout of ``OUT`` (default ``runs/demo``)::

    scenes/{train,val,test,photos,gen}/  train = synthetic source (gen: its depth maps that get images),
                                         val = held-out synthetic depth maps, test = real-look test set,
                                         photos = real-look images (DA-V2-style and oracle rows)
    d2i/finetuned/                 LoRA reward fine-tune of the shipped D2I foundation
    generated/  generated_no_rl/   generated images (reward-tuned / untuned D2I)
    labelled/  labelled_no_rl/  photos_labelled/   + teacher pseudo-labels and similarity masks
    rows/seed{k}/{row}/            one training run per row and seed (ids in RELATIVE_ROWS)
    metric/  scale-head/           metric fine-tune of the BRIDGE student; scale head on it (frozen)
    fixtures/                      the real RGB-D fixtures staged as `folder` benchmarks
    eval/                          results.json; generated_test/ (D2I on the test depth maps)
    figures/                       PNG figures
    stages.json  metrics.json  report.html
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .config import Config, DemoConfig, flatten, pick_settings, save_resolved, to_dict
from .errors import InputError
from .stages import ParallelStage, StageRecord, StageRunner, _jsonable  # noqa: F401  (re-exported: the demo's stage runner)
# the rows' ids and labels (re-exported: tests and scripts import them from here)
from .demo_rows import METRIC_ROWS, REAL_LOOK_TEST, RELATIVE_ROWS, TRAINED_ROWS  # noqa: F401

# Real fixtures (../shared/data/rgbd) evaluated through the `folder` benchmark:
# name -> (rgb source, depth source, encoding, kind of scene). Sources are folders or single files.
FIXTURES: dict[str, tuple[str, str, str, str]] = {
    "nyu": ("nyu_sync/rgb", "nyu_sync/depth", "png-mm", "indoor"),
    "kitti": ("kitti_annotated/rgb", "kitti_annotated/depth", "png-kitti", "outdoor"),
    "tum": ("open3d/other_formats/TUM_color.png", "open3d/other_formats/TUM_depth.png", "png-tum", "indoor"),
    "sun": ("open3d/other_formats/SUN_color.jpg", "open3d/other_formats/SUN_depth.png", "png-sun3d", "indoor"),
    "redwood": ("open3d/color", "open3d/depth", "png-mm", "indoor"),
}


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _worker_threads(threads: int | None) -> None:
    """A stage worker's share of the cores: torch's intra-op threads and OpenCV's pool (decoding and
    augmentation; left at the core count, two workers' pools oversubscribe the cores: 1.16x vs 1.32x
    the throughput of one 2-thread process in our measurement)."""
    if not threads:
        return
    import cv2
    import torch

    torch.set_num_threads(max(1, int(threads)))
    cv2.setNumThreads(max(1, int(threads)))


def train_stage(cfg: Config, data: list, out_dir: str, init_from: str | None, progress: bool,
                threads: int | None = None) -> dict:
    """One trained row of the demo (a picklable stage for :meth:`StageRunner.run_parallel`)."""
    from .mde.trainer import train

    _worker_threads(threads)
    r = train(cfg, data, Path(out_dir), init_from=init_from, progress=progress)
    return {"steps": r.steps, "final_loss": r.final_loss, "seed": cfg.train.seed}


def generate_stage(cfg: Config, d2i_dir: str, source_dir: str, out_dir: str, progress: bool,
                   threads: int | None = None) -> dict:
    """One generation of the demo (a picklable stage for :meth:`StageRunner.run_parallel`)."""
    from .d2i.generate import generate

    _worker_threads(threads)
    return generate(cfg, d2i_dir, source_dir, out_dir, progress=progress, overwrite=True)


def demo_seeds(cfg: Config) -> dict[str, int]:
    """The scene seeds of the demo's sets (the test seed must never reach a training set): ``train``
    the synthetic-look source set (its first ``gen_sources`` depth maps get generated images), ``val``
    held-out synthetic depth maps (D2I before/after), ``test`` the real-look test set, ``photos``
    real-look images for the DA-V2-style and oracle rows."""
    return {"train": cfg.seed, "val": cfg.seed + 1, "test": cfg.seed + 2, "photos": cfg.seed + 3}


def row_recipes(out: Path, d: DemoConfig,
                labelled: Path | None = None) -> dict[str, tuple[list, str | None, int, str]]:
    """The demo's trained rows in folder ``out``: {row: (training mixture, the row whose checkpoint it
    starts from (None: the shipped depth foundation), steps, training stage)}. Every row mixes the
    synthetic source scenes with ground truth in; the rows differ in what comes beside them.
    ``labelled``: another labelled generated set for the reward-tuned generator's rows (default
    ``out/labelled``)."""
    from .mde.trainer import TrainData

    source_gt = TrainData(str(out / "scenes" / "train"), "gt", 1.0)
    lab = str(labelled or out / "labelled")
    lab_no_rl, photos = str(out / "labelled_no_rl"), str(out / "photos_labelled")
    return {
        "source_only": ([source_gt], None, d.student_steps, "teacher"),
        "generated_pseudo": ([TrainData(lab, "pseudo"), source_gt], None, d.student_steps, "student-pseudo"),
        "finetune_pseudo": ([TrainData(lab, "pseudo"), source_gt], "generated_pseudo", d.hybrid_steps,
                            "student-pseudo"),
        "finetune_hybrid": ([TrainData(lab, "hybrid"), source_gt], "generated_pseudo", d.hybrid_steps,
                            "student-hybrid"),
        "no_rl_d2i": ([TrainData(lab_no_rl, "pseudo"), source_gt], None, d.student_steps, "student-pseudo"),
        "dav2_style": ([TrainData(photos, "pseudo"), source_gt], None, d.student_steps, "student-pseudo"),
        "oracle": ([TrainData(photos, "gt"), source_gt], None, d.student_steps, "teacher"),
    }


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


# ------------------------------------------------------------------------------------------------
# Evaluation of every row
# ------------------------------------------------------------------------------------------------


def _benchmarks(out: Path, fixtures: dict[str, dict]) -> dict[str, Any]:
    from .data.benchmarks import get_benchmark
    from .data.benchmarks.shard_set import ShardSet

    benches: dict[str, Any] = {REAL_LOOK_TEST: ShardSet(out / "scenes" / "test")}
    for name, f in fixtures.items():
        benches[name] = get_benchmark("folder", f["root"], encoding=f["encoding"])
    return benches


def _score(bench, predictor, cfg: Config, metric: bool = False) -> dict:
    from .evaluation.runner import ModelPredictions, evaluate_dense

    ptype = "depth" if metric else "disparity"
    res = evaluate_dense(bench, ModelPredictions(predictor, field_name=ptype), prediction_type=ptype,
                         alignment="none" if metric else "disparity", disparity_floor=cfg.eval.disparity_floor,
                         progress=False)
    return res.to_json()


def row_checkpoints(out: Path, row: str, seeds: int) -> list[Path]:
    """The checkpoint folders of a row: one per seed for trained rows, one for the fixed ones."""
    if row in TRAINED_ROWS:
        return [out / "rows" / f"seed{k}" / row / "last" for k in range(seeds)]
    ckpt = RELATIVE_ROWS[row][1]
    return [out / ckpt] if ckpt else []


def _aggregate(per_seed: list[dict]) -> dict:
    """{"absrel", "delta1", "n"} of one (row, dataset); with several seeds the mean plus the spread."""
    ab = [r["metrics"]["abs_rel"] for r in per_seed]
    d1 = [r["metrics"]["delta1"] for r in per_seed]
    agg = {"absrel": float(np.mean(ab)), "delta1": float(np.mean(d1)), "n": int(per_seed[0]["n_images"])}
    if len(per_seed) > 1:
        agg.update({"absrel_std": float(np.std(ab)), "absrel_min": float(np.min(ab)),
                    "absrel_max": float(np.max(ab)), "delta1_std": float(np.std(d1)), "seeds": len(per_seed)})
    return agg


def training_median_depth(out: Path, cfg: Config) -> float:
    """The median valid depth (m, up to ``model.max_depth``) of the demo's synthetic training scenes: the
    constant-depth reference of the metric table (what a metric model must beat without alignment)."""
    from .data.shards import iter_samples
    from .evaluation.baselines import median_depth

    depths, valids = [], []
    for s in iter_samples(out / "scenes" / "train", fields=["depth", "valid"]):
        depths.append(s["depth"])
        valids.append(s["valid"])
    return median_depth(depths, valids, cfg.model.max_depth)


def evaluate_rows(out: Path, cfg: Config, fixtures: dict[str, dict], foundations: dict) -> dict:
    """Every row on the real-look test set and the real fixtures -> ``results.json``: ``rows`` and
    ``metric_rows`` in the metrics.json contract, plus the full per-seed evaluation objects."""
    from .evaluation.baselines import ConstantDepthPrior, VerticalGradientPrior
    from .mde.predictor import Predictor

    seeds = max(1, int(cfg.demo.seeds))
    benches = _benchmarks(out, fixtures)
    if not (out / "untrained" / "bridge.json").exists():  # the trivial reference: same model, no training
        from .mde import build_model, save_model

        save_model(build_model(cfg.model.name, seed=cfg.seed), out / "untrained", extra={"stage": "untrained"})
    full: dict[str, dict] = {}
    rows: dict[str, dict] = {}
    for row in RELATIVE_ROWS:
        if row == "vertical_prior":
            preds = [VerticalGradientPrior()]
        elif row == "teacher":
            preds = [Predictor.from_pretrained(foundations["depth"], input_size=cfg.model.input_size)]
        else:
            ckpts = [c for c in row_checkpoints(out, row, seeds) if c.exists()]
            if not ckpts:
                continue
            preds = [Predictor.from_pretrained(c, input_size=cfg.model.input_size) for c in ckpts]
        full[row], rows[row] = {}, {}
        for bname, bench in benches.items():
            per_seed = [_score(bench, p, cfg) for p in preds]
            full[row][bname] = per_seed
            rows[row][bname] = _aggregate(per_seed)
    metric_rows: dict[str, dict] = {}
    for row, (_, ckpt) in METRIC_ROWS.items():
        if row == "median_depth_prior":
            pred = ConstantDepthPrior(training_median_depth(out, cfg))
        else:
            p = out / ckpt / "last"
            if not p.exists():
                continue
            pred = Predictor.from_pretrained(p, input_size=cfg.model.input_size, metric=True)
        full[row], metric_rows[row] = {}, {}
        for bname, bench in benches.items():
            r = _score(bench, pred, cfg, metric=True)
            full[row][bname] = [r]
            metric_rows[row][bname] = _aggregate([r])
    doc = {"rows": rows, "metric_rows": metric_rows, "full": full}
    (out / "eval").mkdir(exist_ok=True)
    tmp = out / "eval" / "results.json.tmp"
    tmp.write_text(json.dumps(_jsonable(doc), indent=1))
    os.replace(tmp, out / "eval" / "results.json")
    return doc


def d2i_consistency(out: Path, cfg: Config, foundations: dict, progress: bool = False) -> dict:
    """The teacher's AbsRel on D2I images of the real-look test set's depth maps (one image each, the
    reward-tuned generator) next to its AbsRel on the real-look renders of the same depth maps."""
    from .d2i.generate import generate
    from .data.benchmarks.shard_set import ShardSet
    from .mde.predictor import Predictor

    gdir = out / "eval" / "generated_test"
    generate(cfg, out / "d2i" / "finetuned", out / "scenes" / "test", gdir, images_per_depth=1, seed=cfg.seed + 7,
             progress=progress, overwrite=True)  # the demo owns its folders: a retrained model regenerates
    teacher = Predictor.from_pretrained(foundations["depth"], input_size=cfg.model.input_size)
    gen = _score(ShardSet(gdir), teacher, cfg)["metrics"]["abs_rel"]
    real = _score(ShardSet(out / "scenes" / "test"), teacher, cfg)["metrics"]["abs_rel"]
    return {"teacher_absrel_generated": float(gen), "teacher_absrel_real_look": float(real),
            "ratio": float(gen / max(real, 1e-9))}


def hybrid_statistics(labelled: Path) -> dict:
    """Share of accepted samples and of ground-truth pixels among the supervised pixels of the hybrid set."""
    from .data.shards import iter_samples
    from .data.targets import SOURCE_GT, sample_target

    n = acc = gt = sup = 0
    for s in iter_samples(labelled):
        n += 1
        acc += int(bool((s.get("meta") or {}).get("accepted")))
        _, valid, source = sample_target(s, "hybrid")
        gt += int((source == SOURCE_GT).sum())
        sup += int(valid.sum())
    return {"samples": n, "accepted": acc, "accepted_fraction": acc / n if n else 0.0,
            "gt_pixel_fraction": gt / sup if sup else 0.0}


# the labelled sets (and the generated sets they label)
LABELLED_SETS = {"labelled": "generated", "labelled_no_rl": "generated_no_rl"}


def pseudo_labels_identity(labelled: Path) -> str:
    """What a row trained on pseudo-labels reads of a labelled set, as one value: every sample's shard,
    key and the fields a pseudo-label target decodes (``data.targets.TARGET_FIELDS``: the image and
    the label) as stored, in order. Their ``meta`` is left out: of it only the hybrid target reads
    something (acceptance, crop), as it alone reads the similarity mask. So a relabel with other mask
    settings leaves it unchanged and those rows are not retrained for it; another teacher or other
    images change it."""
    import hashlib

    from .data.shards import iter_shard_members, require_complete
    from .data.targets import TARGET_FIELDS

    fields = set(TARGET_FIELDS["pseudo"]) - {"meta"}
    m = require_complete(labelled, "rerun the labelling")
    h = hashlib.sha256()
    for sh in m.shards:
        for members in iter_shard_members(labelled / sh.name):
            for name in sorted(members):
                parts = name.split(".")  # key.field.ext
                if len(parts) > 2 and parts[1] in fields:
                    h.update(f"{sh.name}/{name}={hashlib.sha256(members[name]).hexdigest()}\n".encode())
    return h.hexdigest()


def reads_pseudo_only(data: list, name: str) -> bool:
    """Whether a row's mixture reads the labelled set ``name`` as pseudo-labels only."""
    targets = {t.target for t in data if Path(t.path).name == name}
    return targets == {"pseudo"}


def depends_on_labels_identity(runner: StageRunner, stage: str, key: str) -> bool:
    """Whether a row that reads a labelled set as pseudo-labels may depend on that set's identity
    (setting ``key``) instead of on the folder: a new stage, or one recorded with the key. A record
    from before this rule does not know the identity it was made with, so the folder stays its input
    until the row is remade (its first relabel retrains it once)."""
    rec = runner.recorded_settings(stage)
    return rec is None or key in rec


# ------------------------------------------------------------------------------------------------
# The demo
# ------------------------------------------------------------------------------------------------


def resolve_foundations(cfg: Config, out: Path, *, from_scratch: bool, progress: bool,
                        log: Callable[[str], None]) -> dict:
    """Paths of the depth, D2I and aesthetic foundations: the shipped zoo models, or (``from_scratch``)
    models built first into ``OUT/zoo`` with the ``demo.zoo_preset`` recipe."""
    from .zoo import MODELS, model_path

    if not from_scratch:
        return {name: str(model_path(name)) for name in MODELS}
    from .config import load_config
    from .zoo.build import build, install_models

    zcfg = load_config(cfg.demo.zoo_preset)
    res = build(zcfg, out / "zoo", progress=progress, log=log)
    dest = out / "zoo" / "models"
    if not all((dest / n / MODELS[n][1]).exists() for n in MODELS):
        from .stages import StageRunner

        install_models(zcfg, out / "zoo", res["quality"], StageRunner(out / "zoo", log), log=log, dest=dest)
    return {name: str(dest / name) for name in MODELS}


# settings no stage's result depends on: the number of seeds (each seed's rows are stages of their own;
# the documented way to add seeds), how the work is spread over processes and threads, cadences, caches
# and memory options (generation and labelling are batch-independent, tested). A rerun may change them
# without remaking anything; the override strings' effect is in the values compared.
RERUN_FREE = ("demo.seeds", "demo.threads", "demo.stage_workers", "device", "overrides",
              "scenes.workers", "data.num_workers", "d2i.cache_dir", "generate.batch_size",
              "label.mask_threads", "label.workers", "label.batch_size",
              "finetune.log_every", "finetune.sample_every", "finetune.save_every", "finetune.open_shards",
              "finetune.checkpointing", "finetune.checkpoint_granularity", "finetune.decoder_checkpointing",
              "finetune.teacher_checkpointing",
              "train.save_every", "train.val_every", "train.val_limit", "train.val", "train.channels_last",
              "train.gradient_checkpointing", "eval.cpu_threads", "eval.batch_pixels")

FOUNDATIONS_STAGE, SCENES_STAGE = "0 foundations", "1 scenes"
GENERATE_STAGES = {"finetuned": "3a generate (reward-tuned D2I)", "untuned": "3b generate (untuned D2I, for the RL ablation)"}
LABEL_STAGES = {"labelled": "4a label", "labelled_no_rl": "4b label (untuned D2I)"}
PHOTOS_STAGE = "4c teacher pseudo-labels for real-look images (DA-V2 style)"
METRIC_STAGES = {"metric": ("6a metric fine-tune", "metric"), "scale-head": ("6b scale head", "scale-head")}
CONSISTENCY_STAGE = "7b D2I geometric consistency on the test depth maps"


def row_stage(row: str, k: int) -> str:
    return f"5 row {row} (seed {k})"


def evaluate_stage(seeds: int) -> str:
    # the evaluation covers every seed's rows: a rerun with another --seeds evaluates again
    return "7a evaluate" if seeds == 1 else f"7a evaluate ({seeds} seeds)"


def rerun_free(key: str) -> bool:
    return any(key == f or key.startswith(f + ".") for f in RERUN_FREE)


def model_identity(path: str | os.PathLike | None) -> str | None:
    """What a model folder is, as one value: a digest over its weights (``*.safetensors``) and its
    JSON configuration files (a scorer's calibration, a scheduler), by relative path. The same model
    seen from another checkout has the same identity; a retrained one another. Not a folder (an
    aesthetic model named by another kind of reference, or none): the reference itself."""
    import hashlib

    from .data.shards import weights_sha256

    if not path or not Path(path).is_dir():
        return None if path is None else str(path)
    p = Path(path)
    h = hashlib.sha256()
    for rel, digest in weights_sha256(p).items():  # (as weights_digest, which this extends with the JSON files)
        h.update(f"{rel}={digest}\n".encode())
    for f in sorted(p.rglob("*.json")):
        if f.name != "card.json":  # the model card's wall time and the like, not the model
            h.update(f"{f.relative_to(p)}={hashlib.sha256(f.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def fixtures_identity(fixtures: dict[str, dict]) -> dict[str, list]:
    """The staged real fixtures as the evaluation reads them: per benchmark, its encoding and the
    names and sizes of its files (the same files seen from another checkout compare equal)."""
    out = {}
    for name, f in sorted(fixtures.items()):
        files = sorted((str(q.relative_to(f["root"])), q.stat().st_size)
                       for q in Path(f["root"]).rglob("*") if q.is_file())
        out[name] = [f["encoding"], files]
    return out


def row_config(cfg: Config, stage: str, steps: int, k: int | None = None) -> Config:
    """The training configuration of one trained row (seed ``k``) or, with ``k`` None, a metric stage."""
    seed = {} if k is None else {"seed": cfg.train.seed + k}
    return _with(cfg, stage=stage, steps=steps, val_every=0, **seed)


def foundations_settings(d: DemoConfig, from_scratch: bool) -> dict:
    """The foundations stage's settings: shipped, or built from the ``demo.zoo_preset`` recipe."""
    return {"from_scratch": bool(from_scratch), "demo.zoo_preset": d.zoo_preset if from_scratch else None}


def stage_settings(cfg: Config, foundations: dict[str, str], *, from_scratch: bool = False,
                   fixtures: dict[str, dict] | None = None, seeds: int | None = None) -> dict[str, dict]:
    """Each stage's name -> the configuration values (flat keys) and models its result depends on: a
    rerun in the same folder makes a stage again when they differ, and then the stages that read
    its outputs (``StageRunner``), so ``--set label.ssim_threshold=0.5`` relabels and retrains what
    reads the labels but keeps the scenes, the D2I fine-tune and the generated images. Left out:
    ``RERUN_FREE``. The foundations count by :func:`model_identity`, not by path. A row that reads a
    labelled set as pseudo-labels only gets, when the run reaches it, ``labels.<set>``: the
    :func:`pseudo_labels_identity` of what it reads, in place of the folder as an input. ``seeds``: name
    the rows of this many seeds (default ``demo.seeds``). tests/test_demo.py checks, while the fast
    demo runs, that every stage reads only configuration values it declares here."""
    from .demo_report import d2i_finetune_stage

    def pick(c: Config, *keys: str) -> dict:
        return {k: v for k, v in pick_settings(flatten(to_dict(c)), *keys).items() if not rerun_free(k)}

    d = cfg.demo
    ids = {f"foundation.{n}": model_identity(p) for n, p in foundations.items()}
    teacher = {"foundation.depth": ids["foundation.depth"]}
    aesthetic = cfg.finetune.reward.aesthetic_model or foundations.get("aesthetic")
    gen = pick(cfg, "generate.", "d2i.")
    lab = {**pick(cfg, "label.", "model.input_size"), **teacher}
    out = {
        FOUNDATIONS_STAGE: foundations_settings(d, from_scratch),
        SCENES_STAGE: pick(cfg, "seed", "demo.train_scenes", "demo.val_scenes", "demo.test_scenes",
                           "demo.photo_scenes", "demo.gen_sources", "demo.scene_size", "scenes.kind",
                           "scenes.samples_per_shard"),
        d2i_finetune_stage(cfg): {**pick(cfg, "finetune.", "d2i.", "demo.d2i_finetune_steps"),
                                  "finetune.reward.aesthetic_model": model_identity(aesthetic),
                                  "foundation.d2i": ids["foundation.d2i"], **teacher},
        GENERATE_STAGES["finetuned"]: gen,
        GENERATE_STAGES["untuned"]: {**gen, "foundation.d2i": ids["foundation.d2i"]},
        LABEL_STAGES["labelled"]: lab,
        LABEL_STAGES["labelled_no_rl"]: lab,
        PHOTOS_STAGE: {**pick(cfg, "model.input_size"), **teacher},
        CONSISTENCY_STAGE: {**pick(cfg, "generate.", "d2i.", "eval.", "model.input_size", "seed"), **teacher},
    }
    n_seeds = max(1, int(d.seeds if seeds is None else seeds))
    recipes = row_recipes(Path("."), d)
    for k in range(n_seeds):
        for row, (data, init_row, steps, stage) in recipes.items():
            out[row_stage(row, k)] = {**pick(row_config(cfg, stage, steps, k), "train.", "data.", "model."),
                                      "data": [[Path(t.path).name, t.target, float(t.weight)] for t in data],
                                      "init": init_row or "foundation.depth", **({} if init_row else teacher)}
    for key, (name, stage) in METRIC_STAGES.items():
        steps = d.metric_steps if key == "metric" else d.scale_head_steps
        out[name] = pick(row_config(cfg, stage, steps), "train.", "data.", "model.")
    out[evaluate_stage(n_seeds)] = {**pick(cfg, "eval.", "model.", "seed"), **teacher,
                                    "fixtures": fixtures_identity(fixtures or {})}
    return out


def adopt_old_settings(runner: StageRunner, saved: Path, foundations: dict[str, str], *, from_scratch: bool,
                       fixtures: dict[str, dict] | None, log: Callable[[str], None]) -> None:
    """Give the records of a folder made before stages recorded their settings the settings of the
    configuration saved with it (``config.yaml``; the foundations and fixtures are taken to be those of
    this run, which an older folder cannot tell), so that a rerun with other settings remakes what
    they change instead of taking the new values as recorded."""
    if not saved.exists() or all("settings" in r for r in runner.done.values()):
        return
    from .config import load_config

    try:  # through the dataclasses: a key added since then compares as its default
        old = load_config(saved)
    except Exception as e:  # noqa: BLE001  (unreadable YAML, keys of another version)
        raise InputError(f"{saved}: cannot be read as a configuration ({e}); delete {saved.parent} or use "
                         "another --out") from e
    seeds = max([int(old.demo.seeds)] + [int(n.rsplit("seed ", 1)[1].rstrip(")")) + 1
                                          for n in runner.done if n.startswith("5 row ")])
    scorer = old.finetune.reward.aesthetic_model
    if not scorer or (not Path(scorer).exists() and Path(scorer).name == Path(foundations["aesthetic"]).name):
        # the shipped scorer, or a scorer recorded by a path that no longer exists (the folder was made in a
        # checkout that has moved): the one this run uses
        old.finetune.reward.aesthetic_model = foundations["aesthetic"]
    settings = stage_settings(old, foundations, from_scratch=from_scratch, fixtures=fixtures, seeds=seeds)
    for k in range(1, seeds):  # an evaluation of fewer seeds than the rows
        settings.setdefault(evaluate_stage(k), settings[evaluate_stage(seeds)])
    adopted = [name for name, values in settings.items() if runner.adopt_settings(name, values)]
    if adopted:  # (the records of stage groups carry no settings: they are looked at on every run)
        log(f"{saved.parent}: {len(adopted)} stage(s) made before stages recorded their settings; "
            f"took them from {saved.name}")


def run_demo(cfg: Config, out: str | os.PathLike = "runs/demo", *, fixtures_root: str | None = None,
             progress: bool = True, log: Callable[[str], None] = print, from_scratch: bool = False) -> dict:
    """Run the whole pipeline on ``cfg`` (the `tiny` preset by default) and write the report.

    Starts from the shipped toy foundations (docs/zoo.md) or, with ``from_scratch``, builds them first."""
    from .data.scenes.dataset import scene_pool, write_contact_sheet, write_scenes
    from .data.shards import map_dataset
    from .labels.label import label
    from .mde.trainer import TrainData

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.demo.threads:
        import torch

        torch.set_num_threads(int(cfg.demo.threads))
    d = cfg.demo
    runner = StageRunner(out, log)
    sc = out / "scenes"
    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    size = tuple(d.scene_size)
    sps = cfg.scenes.samples_per_shard
    seeds = demo_seeds(cfg)

    def foundations_stage():
        f = resolve_foundations(cfg, out, from_scratch=from_scratch, progress=progress, log=log)
        return {"foundations": f, "from_scratch": from_scratch}

    # the real fixtures first: what the evaluation reads is one of its settings
    fx_root = fixtures_root or d.fixtures or default_fixtures_root()
    fixtures = stage_fixtures(Path(fx_root), out / "fixtures") if fx_root else {}
    if not fixtures:
        log("no real RGB-D fixtures found (../shared/data/rgbd): evaluating on the real-look test set only")

    old = runner.done.get(FOUNDATIONS_STAGE)
    if old is not None and "settings" not in old:  # a folder from before stages recorded their settings
        runner.adopt_settings(FOUNDATIONS_STAGE, foundations_settings(d, old.get("summary", {}).get("from_scratch")))
    foundations = runner.run(FOUNDATIONS_STAGE, foundations_stage,
                             settings=foundations_settings(d, from_scratch))["foundations"]
    if not from_scratch:  # the shipped models where this checkout has them (a moved folder's record is stale)
        foundations = resolve_foundations(cfg, out, from_scratch=False, progress=progress, log=log)
    cfg.finetune.reward.aesthetic_model = cfg.finetune.reward.aesthetic_model or foundations["aesthetic"]
    adopt_old_settings(runner, out / "config.yaml", foundations, from_scratch=from_scratch, fixtures=fixtures, log=log)
    settings = stage_settings(cfg, foundations, from_scratch=from_scratch, fixtures=fixtures)
    save_resolved(cfg, out)

    def scenes():
        kw = dict(kind=cfg.scenes.kind, size=size, samples_per_shard=sps, progress=progress)
        workers = max(1, min(int(cfg.scenes.workers), available_cores()))
        # one pool of rendering processes for all five sets (each worker starts once)
        with scene_pool(workers) if workers > 1 else contextlib.nullcontext() as pool:
            write_scenes(sc / "train", d.train_scenes, seed=seeds["train"], look="synthetic", pool=pool, **kw)
            write_scenes(sc / "val", d.val_scenes, seed=seeds["val"], look="synthetic", pool=pool, **kw)
            write_scenes(sc / "test", d.test_scenes, seed=seeds["test"], look="real", pool=pool, **kw)
            write_scenes(sc / "photos", d.photo_scenes, seed=seeds["photos"], look="real", pool=pool, **kw)
            # the source depth maps that get generated images: the first `gen_sources` training scenes
            write_scenes(sc / "gen", min(d.gen_sources, d.train_scenes), seed=seeds["train"], look="synthetic",
                         pool=pool, **kw)
        write_contact_sheet(sc / "gen", figs / "scenes.png", limit=8, columns=4, cell=160)
        write_contact_sheet(sc / "test", figs / "scenes_test.png", limit=8, columns=4, cell=160)
        return {"train": d.train_scenes, "val": d.val_scenes, "test": d.test_scenes, "photos": d.photo_scenes,
                "gen": min(d.gen_sources, d.train_scenes), "seeds": seeds}

    runner.run(SCENES_STAGE, scenes, outputs=tuple(sc / n for n in ("train", "val", "test", "photos", "gen")),
               settings=settings[SCENES_STAGE])
    teacher = foundations["depth"]

    def d2i_finetune():
        from .d2i.finetune import finetune  # imports peft: only when the stage runs

        return finetune(cfg, foundations["d2i"], teacher, sc / "gen", out / "d2i" / "finetuned",
                        heldout=sc / "val", steps=d.d2i_finetune_steps, progress=progress)

    from .demo_report import D2I_FINETUNE_STAGE, d2i_finetune_stage

    d2i_stage = d2i_finetune_stage(cfg)  # named by its reward weights: one record, whatever they were
    runner.rename(lambda n: n.startswith(D2I_FINETUNE_STAGE), d2i_stage)
    runner.run(d2i_stage, d2i_finetune, outputs=(out / "d2i" / "finetuned",), inputs=(sc / "gen", sc / "val"),
               settings=settings[d2i_stage])

    # never more stage processes than cores (one core: everything in this process)
    workers = max(1, min(int(d.stage_workers), available_cores()))
    threads = max(1, int(d.threads or torch_threads()) // workers) if workers > 1 else None
    # the two generations are independent: side by side with stage_workers > 1
    gen_stages = []
    for key, d2i_dir, dest, reads in (("finetuned", out / "d2i" / "finetuned", "generated", (out / "d2i" / "finetuned",)),
                                      ("untuned", Path(foundations["d2i"]), "generated_no_rl", ())):
        name = GENERATE_STAGES[key]
        gen_stages.append(ParallelStage(name, generate_stage, (cfg, str(d2i_dir), str(sc / "gen"), str(out / dest),
                                                               progress and workers == 1, threads),
                                        outputs=(out / dest,), inputs=(*reads, sc / "gen"), settings=settings[name]))
    runner.run_parallel("3 generate (both D2I models)", gen_stages, workers)

    def lab(src, dest):
        def fn():
            summary = label(cfg, teacher, out / src, out / dest, progress=progress).to_json()
            summary.update(hybrid_statistics(out / dest), pseudo_labels=pseudo_labels_identity(out / dest))
            return summary

        return fn

    # the generated samples refer to their source scenes (depth, valid, render) in scenes/gen
    pseudo_ids = {}
    for dest, src in LABELLED_SETS.items():
        summary = runner.run(LABEL_STAGES[dest], lab(src, dest), outputs=(out / dest,), inputs=(out / src, sc / "gen"),
                             settings=settings[LABEL_STAGES[dest]])
        pseudo_ids[dest] = summary.get("pseudo_labels") or pseudo_labels_identity(out / dest)  # (older records)

    def photos():
        from .mde.predictor import Predictor

        pred = Predictor.from_pretrained(teacher, input_size=cfg.model.input_size)

        def fn(s):
            return [{**s, "pseudo": pred.predict(s["rgb"]).values.astype(np.float16)}]

        m = map_dataset(sc / "photos", out / "photos_labelled", fn, desc="pseudo-labelling real-look images",
                        progress=progress)
        return {"samples": m.num_samples}

    runner.run(PHOTOS_STAGE, photos, outputs=(out / "photos_labelled",), inputs=(sc / "photos",),
               settings=settings[PHOTOS_STAGE])

    recipes = row_recipes(out, d)

    # Every trained row, then the two metric rows (from the seed-0 hybrid student), as one group of
    # stages: with demo.stage_workers > 1 they train side by side in worker processes, each as soon as
    # its initialisation exists (on the slower 2-core machine 0.81x the time of one 2-thread process:
    # docs/performance.md).
    jobs: list[ParallelStage] = []
    for k in range(max(1, int(d.seeds))):
        base = out / "rows" / f"seed{k}"
        # the row others start from goes first, so that its fine-tunes can start early
        for row in sorted(TRAINED_ROWS, key=lambda r: r != "generated_pseudo"):
            data, init_row, steps, stage = recipes[row]
            init = str(base / init_row / "last") if init_row else teacher
            after = (row_stage(init_row, k),) if init_row else ()
            reads = [*(Path(t.path) for t in data), *((base / init_row,) if init_row else ())]
            row_settings = dict(settings[row_stage(row, k)])
            for name in (n for n in LABELLED_SETS if reads_pseudo_only(data, n)):
                # it depends on the set's images and labels, not on the folder: a relabel with other
                # mask settings keeps it
                key = f"labels.{name}"
                row_settings[key] = pseudo_ids[name]
                if depends_on_labels_identity(runner, row_stage(row, k), key):
                    reads.remove(out / name)
            jobs.append(ParallelStage(row_stage(row, k), train_stage,
                                      (row_config(cfg, stage, steps, k), data, str(base / row), init,
                                       progress and workers == 1, threads), after,
                                      outputs=(base / row,), inputs=tuple(reads), settings=row_settings))
    hybrid_last = out / "rows" / "seed0" / "finetune_hybrid" / "last"
    metric_data = [TrainData(str(sc / "train"), "metric")]
    for dest, (name, stage) in METRIC_STAGES.items():
        steps = d.metric_steps if dest == "metric" else d.scale_head_steps
        jobs.append(ParallelStage(name, train_stage, (row_config(cfg, stage, steps), metric_data, str(out / dest),
                                                      str(hybrid_last), progress and workers == 1, threads),
                                  (row_stage("finetune_hybrid", 0),), outputs=(out / dest,),
                                  inputs=(sc / "train", hybrid_last.parent), settings=settings[name]))
    runner.run_parallel(f"5-6 trained rows ({workers} processes)", jobs, workers)

    def evaluate():
        doc = evaluate_rows(out, cfg, fixtures, foundations)
        return {"rows": len(doc["rows"]), "metric_rows": len(doc["metric_rows"]), "benchmarks": 1 + len(fixtures)}

    n_seeds = max(1, int(d.seeds))
    runner.run(evaluate_stage(n_seeds), evaluate, outputs=(out / "eval" / "results.json", out / "untrained"),
               inputs=(out / "rows", out / "metric", out / "scale-head", sc / "test", sc / "train"),
               settings=settings[evaluate_stage(n_seeds)])
    runner.run(CONSISTENCY_STAGE, lambda: d2i_consistency(out, cfg, foundations, progress=progress),
               outputs=(out / "eval" / "generated_test",), inputs=(out / "d2i" / "finetuned", sc / "test"),
               settings=settings[CONSISTENCY_STAGE])

    from .demo_report import write_report

    log("[8 report] writing figures, tables and the report (always redone)")
    return write_report(out, cfg, runner, fixtures, foundations)
