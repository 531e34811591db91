"""`bridge zoo build`: train the toy foundation models from procedural scenes (docs/zoo.md).

The recipe mirrors how the paper's foundations came to be, in the toy world of two looks
(:mod:`bridgedepth.data.scenes.render`):

1. ``scenes``     synthetic-look scenes with exact depth (the source datasets; teacher training and
                  validation) and real-look scenes (the "photographs"; their depth is dropped);
                  held-out real-look scenes for the cards' measurements. Seeds: ``zoo.seed + 0..3``.
2. ``depth``      the depth foundation (arch ``toy``: patch 8, 16x16 tokens at 128 px) trained as a
                  teacher on the synthetic look with ground truth (SSI + GM), like DA-V2's teacher.
3. ``photos``     the teacher pseudo-labels the photographs: their *estimated* relative disparity.
4. ``d2i``        the D2I foundation (tiny backend, pixel-unshuffled UNet at 96 px, clean-image target)
                  trained on the photographs conditioned on the teacher's estimate, as FLUX.1-Depth
                  was trained on photographs with estimated depth, never their ground truth.
5. ``aesthetic``  the toy aesthetic scorer: photographs vs synthetic renders, degraded photographs and
                  samples of the untuned D2I foundation (on training depth maps), calibrated to a
                  LAION-like scale (:mod:`bridgedepth.d2i.scorer`).
6. ``evaluate``   measured quality for the cards (held-out real-look scenes, seed ``zoo.seed + 3``).
7. ``install``    (``--install``) model folders with cards into the package (``bridgedepth/zoo/models``).

Every stage is resumable (each training checkpoints; the stage runner skips finished stages), so an
interrupted build continues with the same command. A finished stage is made again when its output
folder is deleted, when a stage it reads from was made again, or when a setting it reads changed
(:func:`stage_settings`): ``--set zoo.d2i_steps=6000`` in the same folder retrains the D2I foundation
from the start and remakes the scorer and the evaluation, but keeps the scenes and the depth model.
Everything runs on the CPU (a GPU is used when
``device`` allows it, nothing depends on one).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import Config, flatten, load_config, pick_settings, save_resolved, to_dict
from ..errors import InputError
from ..data.shards import weights_sha256
from ..io import usual_permissions
from ..stages import StageRunner, _jsonable
from . import CARD_JSON, MODELS, folder_bytes, models_dir

SEED_OFFSETS = {"teacher_train": 0, "teacher_val": 1, "photos": 2, "heldout": 3}


def build_seeds(cfg: Config) -> dict[str, int]:
    """The scene seeds every zoo training or measurement set uses (each a distinct scene family)."""
    return {k: cfg.zoo.seed + v for k, v in SEED_OFFSETS.items()}


def training_seeds(cfg: Config) -> set[int]:
    """Seeds whose scenes reach any shipped model's training (the demo's test seeds must avoid them)."""
    s = build_seeds(cfg)
    return {s["teacher_train"], s["teacher_val"], s["photos"]}


def _depth_cfg(cfg: Config) -> Config:
    z = cfg.zoo
    c = copy.deepcopy(cfg)
    c.model.name = z.depth_arch
    c.model.input_size = int(z.scene_size[0])
    c.model.init_from = None
    t = c.train
    t.stage, t.steps, t.batch_size, t.lr = "teacher", z.depth_steps, z.depth_batch_size, z.depth_lr
    t.warmup_steps = z.depth_warmup_steps
    t.color_jitter = z.depth_color_jitter
    t.crop_size = int(min(z.scene_size))
    t.save_every = max(50, z.depth_steps // 20)
    t.val_every = max(50, z.depth_steps // 10)
    t.seed = z.seed
    return c


def _d2i_cfg(cfg: Config, photo_count: int | None = None) -> Config:
    """The D2I foundation's pretraining configuration, derived from the ``zoo`` section (``photo_count``:
    the photographs it may read, default ``zoo.photo_scenes``)."""
    z = cfg.zoo
    c = copy.deepcopy(cfg)
    d = c.d2i
    d.backend, d.resolution, d.patch = "tiny", z.d2i_resolution, z.d2i_patch
    d.channels, d.layers_per_block = list(z.d2i_channels), 1
    d.prediction_type, d.pretrain_condition = z.d2i_prediction, "pseudo"
    d.pretrain_ema = z.d2i_ema
    d.pretrain_steps, d.pretrain_batch_size, d.pretrain_lr = z.d2i_steps, z.d2i_batch_size, z.d2i_lr
    d.pretrain_max_samples = z.photo_scenes if photo_count is None else photo_count
    d.num_steps = z.d2i_sampling_steps
    d.save_every = max(50, z.d2i_steps // 20)
    d.seed = z.seed
    return c


STAGES = {"scenes": "1 scenes", "depth": "2 depth foundation (teacher on the synthetic look)",
          "photos": "3 photos pseudo-labelled by the teacher",
          "d2i": "4 D2I foundation (photos, teacher-estimated depth)", "aesthetic": "5 toy aesthetic scorer",
          "evaluate": "6 evaluate"}


def stage_settings(cfg: Config) -> dict[str, dict]:
    """Each stage's name -> the configuration values its result depends on (flat keys). A rerun in
    the same folder makes a stage again when they differ (``StageRunner.run``); the depth and D2I
    stages are described by the training configuration the recipe derives for them, so a ``zoo.*``
    setting and a ``model.*`` / ``train.*`` / ``d2i.*`` one count alike. Left out: thread counts, the
    device, checkpoint or validation cadence, memory layout and activation checkpointing (they do not
    change what is learnt)."""
    z = flatten(to_dict(cfg))
    depth = flatten(to_dict(_depth_cfg(cfg)))
    d2i = flatten(to_dict(_d2i_cfg(cfg)))
    return {
        STAGES["scenes"]: pick_settings(z, "zoo.seed", "zoo.scene_size", "zoo.teacher_scenes", "zoo.val_scenes",
                                        "zoo.photo_scenes"),
        STAGES["depth"]: pick_settings(depth, "model.", "train.", "data.shuffle_group",
                                       drop=(".save_every", ".val_every", ".val_limit", ".val", ".channels_last",
                                             ".gradient_checkpointing")),
        STAGES["photos"]: {},  # the teacher's checkpoint (an input) says everything it uses
        STAGES["d2i"]: pick_settings(d2i, "d2i.", drop=(".save_every", ".cache_dir")),
        STAGES["aesthetic"]: pick_settings(z, "zoo.seed", "zoo.scorer_", "d2i.num_steps"),
        STAGES["evaluate"]: pick_settings(z, "zoo.seed", "eval.disparity_floor"),
    }


def _rgb_tensor(rgb: np.ndarray, size: int):
    """(1, 3, size, size) float tensor in [0, 1] of a uint8 (H, W, 3) image (area-resized)."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(x, size=(size, size), mode="area")


def _images(dir_: Path, size: int, limit: int | None = None):
    """(N, 3, size, size) float tensor in [0, 1] of a shard set's rgb (area-resized)."""
    import torch

    from ..data.shards import iter_samples

    out = []
    for i, s in enumerate(iter_samples(dir_, fields=["rgb"])):
        if limit is not None and i >= limit:
            break
        out.append(_rgb_tensor(s["rgb"], size))
    if not out:
        raise InputError(f"{dir_}: no images")
    return torch.cat(out)


def d2i_samples(d2i_dir: Path, depth_dir: Path, count: int, size: int, *, steps: int | None = None,
                seed: int = 0):
    """(N, 3, size, size) images in [0, 1]: one sample of the D2I model in ``d2i_dir`` for each of the
    first ``count`` depth maps of ``depth_dir`` (the scorer's "untuned generator" negatives)."""
    import torch

    from ..d2i import load_backend
    from ..d2i.generate import Generator
    from ..data.shards import iter_samples

    backend = load_backend(d2i_dir, "cpu")
    backend.denoiser.eval()
    gen = Generator(backend, images_per_depth=1, seed=seed, steps=steps or backend.default_steps)
    out, batch = [], []

    def flush():
        for res in gen.batch(batch):
            if isinstance(res, list):
                out.append(_rgb_tensor(res[0]["rgb"], size))
        batch.clear()

    for i, s in enumerate(iter_samples(depth_dir, fields=["depth", "valid", "meta"])):
        if i >= count:
            break
        batch.append(s)
        if len(batch) == gen.batch_size:
            flush()
    if batch:
        flush()
    if not out:
        raise InputError(f"{depth_dir}: no depth maps to generate from")
    return torch.cat(out)


def train_zoo_scorer(cfg: Config, photos: Path, synthetic: Path, d2i_dir: Path, dest: Path, *,
                     generated=None, progress: bool = False) -> dict:
    """The recipe's toy aesthetic scorer (stage 5): trained on the photographs in ``photos``, as many
    synthetic renders from ``synthetic`` and ``zoo.scorer_generated`` samples of the untuned D2I
    foundation in ``d2i_dir`` on those renders' depth maps (``generated``: samples made before, as a
    (N, 3, S, S) tensor), with the ``zoo.scorer_*`` settings; written to ``dest``. Returns the report
    of :func:`bridgedepth.d2i.scorer.train_scorer`."""
    from ..d2i.scorer import train_scorer

    z = cfg.zoo
    real = _images(photos, z.scorer_size)
    syn = _images(synthetic, z.scorer_size, limit=real.shape[0])
    if generated is None and z.scorer_generated > 0:
        generated = d2i_samples(d2i_dir, synthetic, z.scorer_generated, z.scorer_size, steps=cfg.d2i.num_steps,
                                seed=z.seed)
    return train_scorer(real, syn, dest, steps=z.scorer_steps, seed=z.seed, size=z.scorer_size, progress=progress,
                        generated=generated, target=z.scorer_target)


def write_zoo_scenes(cfg: Config, dest: Path, sets: tuple[str, ...] = ("teacher_train", "teacher_val", "photos",
                                                                        "heldout_real", "heldout_synthetic"),
                     *, count: int | None = None, progress: bool = False, workers: int = 1) -> dict:
    """Render the recipe's scene sets into ``dest/NAME`` (stage 1): ``teacher_train``, ``teacher_val``
    (synthetic look), ``photos`` (real look), ``heldout_real`` and ``heldout_synthetic`` (the same held-out
    scenes in both looks), each with its seed (:func:`build_seeds`) and ``zoo.*`` count; ``count``
    overrides every count. Returns the summary the stage records."""
    from ..data.scenes.dataset import write_scenes

    z, seeds = cfg.zoo, build_seeds(cfg)
    plan = {"teacher_train": (z.teacher_scenes, "teacher_train", "synthetic"),
            "teacher_val": (z.val_scenes, "teacher_val", "synthetic"),
            "photos": (z.photo_scenes, "photos", "real"),
            "heldout_real": (z.val_scenes, "heldout", "real"),
            "heldout_synthetic": (z.val_scenes, "heldout", "synthetic")}
    kw = dict(kind="mixed", size=tuple(z.scene_size), samples_per_shard=256, progress=progress, workers=workers)
    for name in sets:
        n, seed, look = plan[name]
        write_scenes(dest / name, count or n, seed=seeds[seed], look=look, **kw)
    return {"seeds": seeds, "size": list(z.scene_size), "teacher": z.teacher_scenes, "photos": z.photo_scenes,
            "heldout": z.val_scenes}


def _hardware() -> dict:
    import torch

    dev = "cpu"
    if torch.cuda.is_available():
        dev = torch.cuda.get_device_name(0)
    return {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": dev,
            "torch": torch.__version__}


def build(cfg: Config, out: str | os.PathLike = "runs/zoo", *, install: bool = False, progress: bool = True,
          log: Callable[[str], None] = print) -> dict:
    """Run (or resume) the recipe in ``out``; with ``install`` copy the models into the package.
    Returns ``{"quality": ..., "stages": ..., "installed": [paths]}``."""
    import torch

    from ..data.shards import map_dataset

    z = cfg.zoo
    if z.threads:
        torch.set_num_threads(int(z.threads))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runner = StageRunner(out, log)
    settings = stage_settings(cfg)
    _adopt_old_settings(runner, out / "config.yaml", log)
    save_resolved(cfg, out)
    sc = out / "scenes"

    def scenes():
        return write_zoo_scenes(cfg, sc, progress=progress)

    runner.run(STAGES["scenes"], scenes, outputs=(sc / "teacher_train", sc / "teacher_val", sc / "photos",
                                                  sc / "heldout_real", sc / "heldout_synthetic"),
               settings=settings[STAGES["scenes"]])

    def depth():
        from ..evaluation.validate import make_shard_validator
        from ..mde.trainer import TrainData, train

        dcfg = _depth_cfg(cfg)
        t0 = time.time()
        r = train(dcfg, [TrainData(str(sc / "teacher_train"), "gt")], out / "depth",
                  validate=make_shard_validator(sc / "teacher_val", dcfg), progress=progress)
        return {"steps": r.steps, "final_loss": r.final_loss, "best_val_abs_rel": r.best_score,
                "seconds_this_run": round(time.time() - t0, 1), "resumed_from": r.resumed_from,
                "torch_threads": torch.get_num_threads()}

    runner.run(STAGES["depth"], depth, outputs=(out / "depth",), inputs=(sc / "teacher_train", sc / "teacher_val"),
               settings=settings[STAGES["depth"]])
    teacher_dir = out / "depth" / "last"

    def photos():
        from ..mde.predictor import Predictor

        pred = Predictor.from_pretrained(teacher_dir, fast=True)

        def fn(s):
            disp = pred.predict(s["rgb"]).values.astype(np.float16)
            meta = dict(s.get("meta") or {})
            meta["pseudo_from"] = str(teacher_dir)
            # the photograph's depth is never used: only the image and the teacher's estimate go on
            return [{"__key__": s["__key__"], "rgb": s["rgb"], "pseudo": disp, "meta": meta}]

        m = map_dataset(sc / "photos", out / "photos_labelled", fn, desc="pseudo-labelling photos",
                        fields=["rgb", "meta"], meta={"stage": "zoo photos", "teacher": str(teacher_dir)},
                        progress=progress)
        return {"samples": m.num_samples}

    runner.run(STAGES["photos"], photos, outputs=(out / "photos_labelled",), inputs=(sc / "photos", out / "depth"),
               settings=settings[STAGES["photos"]])

    def d2i():
        from ..d2i.pretrain import pretrain

        summary = pretrain(_d2i_cfg(cfg), out / "photos_labelled", out / "d2i", progress=progress)
        return {**summary, "torch_threads": torch.get_num_threads()}

    runner.run(STAGES["d2i"], d2i, outputs=(out / "d2i",), inputs=(out / "photos_labelled",),
               settings=settings[STAGES["d2i"]])

    def aesthetic():
        report = train_zoo_scorer(cfg, out / "photos_labelled", sc / "teacher_train", out / "d2i", out / "aesthetic",
                                  progress=progress)
        return {**report, "torch_threads": torch.get_num_threads()}

    runner.run(STAGES["aesthetic"], aesthetic, outputs=(out / "aesthetic",),
               inputs=(out / "photos_labelled", sc / "teacher_train", out / "d2i"), settings=settings[STAGES["aesthetic"]])

    def evaluate():
        return measure_quality(cfg, out, progress=progress)

    quality = runner.run(STAGES["evaluate"], evaluate, outputs=(out / "quality.json", out / "eval"),
                         inputs=(sc / "heldout_real", sc / "heldout_synthetic", out / "depth", out / "d2i",
                                 out / "aesthetic"), settings=settings[STAGES["evaluate"]])
    installed = []
    if install:
        installed = install_models(cfg, out, quality, runner, log=log)
    return {"quality": quality, "stages": {r.name: r.seconds for r in runner.records}, "installed": installed}


def _adopt_old_settings(runner: StageRunner, saved: Path, log: Callable[[str], None]) -> None:
    """Stages recorded before settings were kept get those of the configuration saved with that build
    (``config.yaml``, about to be replaced), so that a changed setting is still noticed."""
    if not saved.exists() or all("settings" in r for r in runner.done.values()):
        return
    try:
        old = stage_settings(load_config(saved))
    except Exception as e:  # noqa: BLE001  (unreadable YAML, keys of another version)
        log(f"{saved}: cannot be read ({e}); the finished stages are kept as they are")
        return
    for name, values in old.items():
        runner.adopt_settings(name, values)


def measure_quality(cfg: Config, out: Path, progress: bool = False) -> dict:
    """What the cards report: AbsRel / delta1 of the depth foundation and of the vertical-gradient prior on
    held-out real- and synthetic-look scenes; the teacher on D2I images of the held-out depth maps vs on
    their real-look renders; the scorer on photographs, synthetic renders and D2I samples."""
    import torch

    from ..d2i.backend import load_backend
    from ..d2i.generate import Generator
    from ..d2i.scorer import load_scorer
    from ..data.benchmarks.shard_set import ShardSet
    from ..data.shards import map_dataset
    from ..evaluation.baselines import VerticalGradientPrior
    from ..evaluation.runner import ModelPredictions, evaluate_dense
    from ..mde.predictor import Predictor

    sc = out / "scenes"
    teacher = Predictor.from_pretrained(out / "depth" / "last", fast=True)

    def score(bench_dir, predictor):
        r = evaluate_dense(ShardSet(bench_dir), ModelPredictions(predictor), prediction_type="disparity",
                           alignment="disparity", disparity_floor=cfg.eval.disparity_floor, progress=False)
        return {"absrel": round(float(r.metrics["abs_rel"]), 4), "delta1": round(float(r.metrics["delta1"]), 4),
                "n": int(r.n_images)}

    q: dict = {"depth": {}, "d2i": {}, "aesthetic": {}}
    for name in ("heldout_real", "heldout_synthetic"):
        q["depth"][name] = score(sc / name, teacher)
        q["depth"][name + "_vertical_prior"] = score(sc / name, VerticalGradientPrior())
    backend = load_backend(out / "d2i", "cpu")
    backend.denoiser.eval()
    gen = Generator(backend, images_per_depth=1, seed=cfg.zoo.seed, steps=backend.default_steps)
    gdir = out / "eval" / "generated_heldout"
    map_dataset(sc / "heldout_real", gdir, gen, desc="D2I on held-out depth maps", progress=progress)
    q["d2i"]["teacher_on_generated"] = score(gdir, teacher)
    q["d2i"]["teacher_on_real_look"] = q["depth"]["heldout_real"]
    q["d2i"]["ratio"] = round(q["d2i"]["teacher_on_generated"]["absrel"]
                              / max(q["d2i"]["teacher_on_real_look"]["absrel"], 1e-9), 3)
    scorer = load_scorer(out / "aesthetic")
    with torch.no_grad():
        for name, d in (("photos", sc / "heldout_real"), ("synthetic", sc / "heldout_synthetic"),
                        ("d2i_samples", gdir)):
            imgs = _images(d, scorer.size)
            q["aesthetic"][name + "_mean_logit"] = round(float(scorer.logits(imgs).mean()), 3)
            q["aesthetic"][name + "_mean_score"] = round(float(scorer(imgs).mean()), 3)
    card = json.loads((out / "aesthetic" / "scorer.json").read_text())
    q["aesthetic"]["heldout"] = card.get("heldout", {})
    q["aesthetic"]["calibration"] = card.get("calibration", {})
    (out / "quality.json").write_text(json.dumps(_jsonable(q), indent=1))
    return q


# ------------------------------------------------------------------------------------------------
# Installing into the package, with model cards
# ------------------------------------------------------------------------------------------------


def _parameters(folder: Path) -> int:
    """Number of weights in a model folder's safetensors files (read from the headers only)."""
    from safetensors import safe_open

    n = 0
    for f in sorted(Path(folder).rglob("*.safetensors")):
        with safe_open(str(f), framework="pt") as sf:
            for k in sf.keys():
                n += int(np.prod(sf.get_slice(k).get_shape()))
    return n


def _card_text(name: str, card: dict) -> str:
    lines = [f"# bridgedepth toy `{name}` model", "", f"Stands in for: {MODELS[name][0]}.", "",
             "Trained by `bridge zoo build` on procedural scenes only (no downloaded data). "
             "See docs/zoo.md for the toy world and the recipe.", "", "## Card", ""]
    for k in ("data", "seeds", "steps", "wall_seconds", "hardware", "parameters", "dtype", "sha256", "quality"):
        if k in card:
            lines.append(f"- **{k}**: `{json.dumps(card[k])}`")
    lines += ["", "## Configuration", "", "```json", json.dumps(card.get("config", {}), indent=1), "```", "",
              "Licence: Apache-2.0 (the project's). Intended use: the embedded CPU default, tests, demos.", ""]
    return "\n".join(lines)


def _built_date(target: Path, sha256: dict) -> str:
    """Today, unless ``target`` already holds a card for these very weights (same sha256 of every file):
    then that card's date, so that reinstalling an unchanged model does not change its card."""
    try:
        old = json.loads((target / CARD_JSON).read_text())
    except (OSError, ValueError):
        old = None
    if isinstance(old, dict) and old.get("sha256") == sha256 and isinstance(old.get("built"), str):
        return old["built"]
    return time.strftime("%Y-%m-%d")


def install_models(cfg: Config, out: Path, quality: dict, runner: StageRunner,
                   log: Callable[[str], None] = print, dest: Path | None = None) -> list[str]:
    """Copy the built models into ``dest`` (default: the package's zoo folder) with their cards.
    The D2I UNet is stored in float16 (loaded back in float32); the others in float32."""
    import torch
    from diffusers import UNet2DModel

    from ..d2i.scorer import SCORE_PHOTO, SCORE_SYNTHETIC

    dest = Path(dest) if dest else models_dir()
    dest.mkdir(parents=True, exist_ok=True)
    done = runner.done
    hw = _hardware()
    seeds = build_seeds(cfg)
    z = cfg.zoo

    cards: dict[str, dict] = {
        "depth": {"data": f"{z.teacher_scenes} synthetic-look procedural scenes {z.scene_size} (ground truth)",
                  "seeds": {"train": seeds["teacher_train"], "val": seeds["teacher_val"]},
                  "steps": z.depth_steps, "quality": quality.get("depth"),
                  "config": {k: v for k, v in to_dict(cfg.zoo).items() if k.startswith("depth")},
                  "output": "relative disparity (affine-invariant inverse depth)"},
        "d2i": {"data": f"{z.photo_scenes} real-look procedural 'photographs' conditioned on the depth "
                        f"model's estimated disparity (their ground truth is never used)",
                "seeds": {"photos": seeds["photos"]}, "steps": z.d2i_steps, "quality": quality.get("d2i"),
                "config": {k: v for k, v in to_dict(cfg.zoo).items() if k.startswith("d2i")}},
        "aesthetic": {"data": ("real-look photographs (label 1) vs synthetic-look renders, degraded photographs and "
                               f"{z.scorer_generated} samples of the untuned D2I foundation on training depth maps "
                               f"(label 0); score calibrated to photographs {SCORE_PHOTO:g}, renders {SCORE_SYNTHETIC:g}"
                               if z.scorer_target == "photo" else
                               "clean real-look photographs and synthetic-look renders (label 1) vs degraded copies of "
                               f"either and {z.scorer_generated} samples of the untuned D2I foundation on training depth "
                               f"maps (label 0); score calibrated to photographs {SCORE_PHOTO:g}, the held-out "
                               f"negatives' mean {SCORE_SYNTHETIC:g}"),
                      "seeds": {"photos": seeds["photos"], "synthetic": seeds["teacher_train"]},
                      "steps": z.scorer_steps, "quality": quality.get("aesthetic"),
                      "config": {k: v for k, v in to_dict(cfg.zoo).items() if k.startswith("scorer")}},
    }
    installed = []
    for name in MODELS:
        target = dest / name
        tmp = dest / f".{name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        if name == "depth":
            src = out / "depth" / "last"
            tmp.mkdir(parents=True)
            for f in ("config.json", "model.safetensors", "bridge.json", "preprocessor_config.json"):
                if (src / f).exists():
                    shutil.copy2(src / f, tmp / f)
            dtype = "float32"
        elif name == "d2i":
            src = out / "d2i"
            tmp.mkdir(parents=True)
            unet = UNet2DModel.from_pretrained(src / "unet")
            unet.to(torch.float16).save_pretrained(tmp / "unet")
            usual_permissions(tmp / "unet")  # safetensors writes 0600
            shutil.copytree(src / "scheduler", tmp / "scheduler")
            shutil.copy2(src / "bridge.json", tmp / "bridge.json")
            dtype = "float16 (loaded as float32)"
        else:
            shutil.copytree(out / "aesthetic", tmp)
            dtype = "float32"
        card = cards[name]
        stage = done.get(STAGES[name], {})
        card["wall_seconds"] = round(float(stage["seconds"]), 1) if stage else None
        # the threads the stage trained with (older builds did not record them: then install time's)
        card["hardware"] = {**hw, "torch_threads": (stage.get("summary") or {}).get("torch_threads",
                                                                                      hw["torch_threads"])}
        card["parameters"] = _parameters(tmp)
        card["dtype"] = dtype
        card["sha256"] = weights_sha256(tmp)
        card["megabytes"] = round(folder_bytes(tmp) / 2**20, 2)
        card["built"] = _built_date(target, card["sha256"])
        (tmp / CARD_JSON).write_text(json.dumps(_jsonable(card), indent=1))
        (tmp / "README.md").write_text(_card_text(name, card))
        old = dest / f".{name}.old"  # swapped, not removed first: a kill leaves one complete model in place
        if old.exists():
            shutil.rmtree(old)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
        if old.exists():
            shutil.rmtree(old)
        installed.append(str(target))
        log(f"installed {name} -> {target} ({card['megabytes']} MB)")
    return installed
