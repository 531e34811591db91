"""One trainer for every depth-model stage, on accelerate.

Stages (``TrainConfig.stage``):

* ``teacher``        synthetic RGB + GT disparity, SSI + GM loss (relative head)
* ``student-pseudo`` generated images with teacher pseudo-labels (+ source RGB-D with GT)
* ``student-hybrid`` as above, masked GT replacing the pseudo-label inside the fusion mask
* ``metric``         SiLog on metric GT depth (metric head, sigmoid x max_depth)
* ``scale-head``     frozen relative model; a small head predicts the scale and shift that turn its
                     disparity into metric disparity (see :mod:`bridgedepth.mde.scale_head`)

The data mixture is a list of :class:`TrainData` (shard folder, target kind, weight). Each source is
read by a rank- and worker-aware :class:`~bridgedepth.data.shards.ShardDataset`; a seeded generator
picks the source of every sample by weight. Augmentation draws from a generator seeded by
(seed, source, epoch, key), and the position in every source plus the mixing generator are saved in
the checkpoint, so a resumed run sees exactly the batches an uninterrupted run would have seen.

Checkpoints: ``OUT/last`` (every ``save_every`` steps and at the end) and ``OUT/best`` (best
validation score) hold the model in Hugging Face format plus ``trainer_state.json`` and
``optimizer.pt`` (tensors only; loaded with ``weights_only=True``). Only the main process writes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from ..config import Config, save_resolved, to_dict
from ..data.targets import TargetKind, training_view
from ..errors import InputError
from .model import apply_scale, enable_checkpointing, forward_with_features, parameter_groups

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

STAGE_TARGETS: dict[str, tuple[str, ...]] = {
    "teacher": ("gt",),
    "student-pseudo": ("pseudo", "gt"),
    "student-hybrid": ("hybrid", "pseudo", "gt"),
    "metric": ("metric",),
    "scale-head": ("metric",),
}


@dataclass
class TrainData:
    """One source of the training mixture."""

    path: str
    target: TargetKind = "gt"
    weight: float = 1.0


@dataclass
class TrainResult:
    out_dir: Path
    steps: int
    final_loss: float
    best_score: Optional[float]
    log_path: Path
    resumed_from: int = 0


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


def _key_seed(*parts) -> int:
    return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


class _SourceStream:
    """Endless, resumable stream of (rgb, target, valid) crops from one shard folder."""

    def __init__(self, data: TrainData, index: int, cfg: Config, rank: int, world_size: int,
                 epoch: int = 0, consumed: int = 0):
        from ..data.shards import ShardDataset

        self.data, self.index, self.cfg = data, index, cfg
        self.dataset = ShardDataset([data.path], shuffle=True, seed=cfg.train.seed + index,
                                    rank=rank, world_size=world_size)
        self.epoch, self.consumed = epoch, consumed
        self._it: Iterator[dict] | None = None
        # BRIDGE_TRACE_KEYS=1 records "epoch key" of every sample used (tests, debugging data order)
        self.trace: list[str] | None = [] if os.environ.get("BRIDGE_TRACE_KEYS") else None

    def _start_epoch(self) -> None:
        self.dataset.set_epoch(self.epoch)
        self._it = iter(self.dataset)
        for _ in range(self.consumed):  # resume inside an epoch: skip what was already used
            next(self._it)

    def next(self) -> dict:
        if self._it is None:
            self._start_epoch()
        for _attempt in range(2):
            try:
                sample = next(self._it)
                break
            except StopIteration:
                if self.consumed == 0:
                    raise InputError(f"{self.data.path}: no training samples for this rank")
                self.epoch, self.consumed = self.epoch + 1, 0
                self._start_epoch()
        self.consumed += 1
        if self.trace is not None:
            self.trace.append(f"{self.epoch} {sample.get('__key__')}")
        t = self.cfg.train
        rng = np.random.default_rng(_key_seed(t.seed, self.index, self.epoch, sample.get("__key__")))
        return training_view(sample, self.data.target, t, rng)

    def state(self) -> dict:
        return {"epoch": self.epoch, "consumed": self.consumed}


def collate_views(views: list[dict]) -> dict[str, torch.Tensor]:
    """Stack :func:`~bridgedepth.data.targets.training_view` outputs into a batch: ``image``
    (ImageNet-normalised float), ``target`` (float), ``valid`` (bool), ``source`` (uint8 SOURCE_*)."""
    x = torch.from_numpy(np.stack([v["rgb"] for v in views])).permute(0, 3, 1, 2).float().div_(255.0)
    return {
        "image": (x - IMAGENET_MEAN) / IMAGENET_STD,
        "target": torch.from_numpy(np.stack([v["target"] for v in views])).float(),
        "valid": torch.from_numpy(np.stack([v["valid"] for v in views])),
        "source": torch.from_numpy(np.stack([v["source"] for v in views])),
    }


class MixtureLoader:
    """Batches from a weighted mixture of sources; its whole position is a JSON-able state."""

    def __init__(self, datas: list[TrainData], cfg: Config, rank: int = 0, world_size: int = 1,
                 state: dict | None = None):
        if not datas:
            raise InputError("no training data given")
        for d in datas:
            if not Path(d.path).exists():
                raise InputError(f"{d.path}: training data folder does not exist")
        state = state or {}
        src_states = state.get("sources", [{}] * len(datas))
        self.sources = [
            _SourceStream(d, i, cfg, rank, world_size, **src_states[i]) for i, d in enumerate(datas)
        ]
        w = np.array([max(d.weight, 0.0) for d in datas], np.float64)
        if w.sum() <= 0:
            raise InputError("training data weights must not all be zero")
        self.p = w / w.sum()
        self.rng = np.random.default_rng(_key_seed(cfg.train.seed, "mix", rank))
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]
        self.batch_size = cfg.train.batch_size

    def next_batch(self) -> dict[str, torch.Tensor]:
        views = []
        for _ in range(self.batch_size):
            i = int(self.rng.choice(len(self.sources), p=self.p)) if len(self.sources) > 1 else 0
            views.append(self.sources[i].next())
        return collate_views(views)

    def state(self) -> dict:
        return {"sources": [s.state() for s in self.sources], "rng": self.rng.bit_generator.state}


# ------------------------------------------------------------------------------------------------
# Model, optimiser, schedule
# ------------------------------------------------------------------------------------------------


def _build_stage_model(cfg: Config, init_from: str | None):
    from . import build_model, load_model

    head = "metric" if cfg.train.stage == "metric" else "relative"
    src = init_from or cfg.model.init_from
    if not src:
        return build_model(cfg.model.name, head=head, max_depth=cfg.model.max_depth,
                           encoder_init=cfg.model.encoder_init, seed=cfg.train.seed)
    model = load_model(src)
    model.train()
    if head == "metric" and model.config.depth_estimation_type != "metric":
        # Encoder and decoder are kept; the last conv is negated (and damped) so that the first metric
        # predictions are ordered like depth, not like the relative disparity (relative_to_metric).
        from .model import relative_to_metric

        model = relative_to_metric(model, cfg.model.max_depth)
        model.train()
    return model


def poly_lambda(total: int, warmup: int, power: float) -> Callable[[int], float]:
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        frac = (step - warmup) / max(1, total - warmup)
        return max(0.0, 1.0 - frac) ** power

    return f


# ------------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------------


def _save_checkpoint(out: Path, name: str, model, optimizer, scheduler, state: dict,
                     save_model_fn, extra: dict, scale_head=None) -> Path:
    target = out / name
    tmp = out / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_model_fn(model, tmp, extra=extra, scale_head=scale_head)
    if optimizer is not None:
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                   tmp / "optimizer.pt")
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    old = out / f".{name}.old"
    if target.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    if old.exists():
        shutil.rmtree(old)
    return target


def _load_resume(out: Path) -> tuple[Path, dict] | None:
    last = out / "last"
    state_file = last / "trainer_state.json"
    if not state_file.exists():
        return None
    return last, json.loads(state_file.read_text())


# ------------------------------------------------------------------------------------------------
# The loop
# ------------------------------------------------------------------------------------------------


def _stage_loss(cfg: Config):
    from .losses import DepthLoss

    loss = DepthLoss(cfg.train.loss)
    if cfg.train.stage in ("metric", "scale-head"):
        # GT beyond the head's range (sigmoid * max_depth, or the scale head's depth cap) is masked out,
        # as Depth-Anything-V2's metric training does: no prediction can reach it.
        cap = float(cfg.model.max_depth) if cfg.train.loss.mask_beyond_max_depth else None

        def metric_loss(pred, target, valid, source):
            if cap is not None:
                valid = valid & (target <= cap)
            return loss.metric(pred, target, valid)

        return metric_loss
    # the source map decides which pixels may be trimmed (loss.trim_sources)
    return lambda pred, target, valid, source: loss(pred, target, valid, source).total


def train(
    cfg: Config,
    data: list[TrainData],
    out_dir: str | os.PathLike,
    *,
    init_from: str | None = None,
    validate: Callable[[torch.nn.Module], dict] | None = None,
    val_key: str = "abs_rel",
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``cfg.train.stage`` on ``data``; resumes from ``out_dir/last`` when it exists.

    ``validate(model) -> metrics`` runs every ``train.val_every`` steps and at the end on the main
    process; the lowest ``val_key`` is kept as ``best``. ``stop_after`` stops early after that many
    steps in this call (used to test resumption); the schedule still spans ``train.steps``.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed
    from tqdm.auto import tqdm

    from . import save_model

    t = cfg.train
    if t.stage not in STAGE_TARGETS:
        raise InputError(f"unknown stage '{t.stage}'")
    for d in data:
        if d.target not in STAGE_TARGETS[t.stage]:
            raise InputError(
                f"stage '{t.stage}' takes targets {STAGE_TARGETS[t.stage]}, got '{d.target}' for {d.path}"
            )
    out = Path(out_dir)
    accelerator = Accelerator(
        mixed_precision=t.mixed_precision,
        gradient_accumulation_steps=t.grad_accum,
        cpu=cfg.device == "cpu",
        # DINOv2's mask token (and blocks after the last tapped one) get no gradient
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    set_seed(t.seed)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, out)
    resume = _load_resume(out)
    start_step, state = 0, {}
    if resume is not None:
        init_from = str(resume[0])
        state = resume[1]
        start_step = int(state["step"])
    model = _build_stage_model(cfg, init_from)
    scale_head = None
    if t.stage == "scale-head":
        from .model import ScaleHead, load_scale_head

        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        scale_head = load_scale_head(resume[0]) if resume else None
        if scale_head is None:
            scale_head = ScaleHead(model.config.backbone_config.hidden_size, max_depth=cfg.model.max_depth)
            _init_scale_from_data(model, scale_head, MixtureLoader(data, cfg, 0, 1))
        scale_head.train()
        params = [{"params": list(scale_head.parameters()), "lr": t.lr * t.decoder_lr_mult, "weight_decay": t.weight_decay}]
    else:
        if t.gradient_checkpointing:
            enable_checkpointing(model)
        params = parameter_groups(model, t.lr, t.decoder_lr_mult, t.weight_decay)
    optimizer = torch.optim.AdamW(params, lr=t.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(t.steps, t.warmup_steps, t.poly_power))
    if resume is not None and (resume[0] / "optimizer.pt").exists():
        blob = torch.load(resume[0] / "optimizer.pt", map_location="cpu", weights_only=True)
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
    trainable = scale_head if scale_head is not None else model
    trainable, optimizer = accelerator.prepare(trainable, optimizer)
    if scale_head is not None:
        scale_head = trainable
        model = model.to(accelerator.device)
    else:
        model = trainable
    loader = MixtureLoader(data, cfg, accelerator.process_index, accelerator.num_processes,
                           state=state.get("loader"))
    loss_fn = _stage_loss(cfg)
    log_path = out / "log.jsonl"
    best = state.get("best_score")
    extra_meta = {"stage": t.stage, "config": to_dict(cfg), "data": [d.__dict__ for d in data]}

    def write_checkpoint(name: str, step: int, with_optimizer: bool) -> None:
        """Main process only. ``best`` has no optimiser state: only ``last`` is resumed from."""
        st = {"step": step, "loader": loader.state(), "best_score": best, "stage": t.stage}
        _save_checkpoint(out, name, accelerator.unwrap_model(model) if scale_head is None else model,
                         optimizer if with_optimizer else None, scheduler, st, save_model, extra_meta,
                         scale_head=accelerator.unwrap_model(scale_head) if scale_head is not None else None)

    def checkpoint(name: str, step: int) -> None:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_checkpoint(name, step, with_optimizer=True)
        accelerator.wait_for_everyone()

    def run_validation(step: int) -> dict:
        nonlocal best
        if validate is None or not accelerator.is_main_process:
            return {}
        m = accelerator.unwrap_model(model) if scale_head is None else _ScaledModel(model, accelerator.unwrap_model(scale_head), cfg.model.max_depth)
        was_training = m.training
        m.eval()
        with torch.no_grad():
            metrics = validate(m)
        m.train(was_training)
        score = metrics.get(val_key)
        if score is not None and math.isfinite(score) and (best is None or score < best):
            best = float(score)
            write_checkpoint("best", step, with_optimizer=False)
        return metrics

    end = t.steps if stop_after is None else min(t.steps, start_step + stop_after)
    bar = tqdm(total=t.steps, initial=start_step, desc=f"train {t.stage}", unit="step",
               disable=not (progress and accelerator.is_main_process), leave=False)
    (scale_head if scale_head is not None else model).train()
    last_loss = float("nan")
    log_f = open(log_path, "a") if accelerator.is_main_process else None
    try:
        for step in range(start_step, end):
            t0 = time.perf_counter()
            batches = [loader.next_batch() for _ in range(t.grad_accum)]
            t_data = time.perf_counter() - t0
            for batch in batches:
                with accelerator.accumulate(trainable):
                    image = batch["image"].to(accelerator.device)
                    target = batch["target"].to(accelerator.device)
                    valid = batch["valid"].to(accelerator.device)
                    source = batch["source"].to(accelerator.device)
                    if scale_head is not None:
                        with torch.no_grad():
                            disp, feats = forward_with_features(model, image)
                        pred = apply_scale(disp, *scale_head(feats[-1]), max_depth=cfg.model.max_depth)
                    else:
                        pred = model(pixel_values=image).predicted_depth
                    loss = loss_fn(pred, target, valid, source)
                    accelerator.backward(loss)
                    grad_norm = None
                    if accelerator.sync_gradients and t.grad_clip:
                        grad_norm = float(accelerator.clip_grad_norm_(trainable.parameters(), t.grad_clip))
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            last_loss = float(accelerator.gather(loss.detach().reshape(1)).mean())
            dt = time.perf_counter() - t0
            rec = {
                "step": step + 1, "loss": last_loss, "lr": scheduler.get_last_lr()[0],
                "samples_per_s": t.batch_size * t.grad_accum * accelerator.num_processes / dt,
                "data_wait_frac": t_data / dt, "time": time.time(),
            }
            if grad_norm is not None:
                rec["grad_norm"] = grad_norm
            if t.val_every and (step + 1) % t.val_every == 0 and step + 1 < t.steps:
                rec.update({f"val_{k}": v for k, v in run_validation(step + 1).items()})
            if log_f is not None:
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}")
            if t.save_every and (step + 1) % t.save_every == 0 and step + 1 < end:
                checkpoint("last", step + 1)
        if end == t.steps and validate is not None:
            metrics = run_validation(end)
            if log_f is not None and metrics:
                log_f.write(json.dumps({"step": end, **{f"val_{k}": v for k, v in metrics.items()}}) + "\n")
        checkpoint("last", end)
    finally:
        bar.close()
        if log_f is not None:
            log_f.close()
        for i, src in enumerate(loader.sources):
            if src.trace is not None:
                with open(out / f"trace_rank{accelerator.process_index}_source{i}.txt", "a") as f:
                    f.write("".join(line + "\n" for line in src.trace))
    if accelerator.is_main_process and end == t.steps:
        plot_curves(log_path, out / "curves.png")
    return TrainResult(out, end, last_loss, best, log_path, resumed_from=start_step)


# ------------------------------------------------------------------------------------------------
# Scale head plumbing
# ------------------------------------------------------------------------------------------------


@torch.no_grad()
def _init_scale_from_data(model, head, loader: "MixtureLoader") -> None:
    """Start the scale head at the log-scale that maps the median predicted disparity of one batch to
    the median metric disparity of its ground truth (instead of 1 m for disparity 1)."""
    batch = loader.next_batch()
    disp, _ = forward_with_features(model, batch["image"])
    ratios = []
    for d, g, v in zip(disp, batch["target"], batch["valid"]):
        ok = v & (g > 0) & (d > 0)
        if ok.sum() > 10:
            ratios.append(torch.log((1.0 / g[ok]).median() / d[ok].median()))
    if ratios:
        head.mlp[2].bias[0] = torch.stack(ratios).median()


class _ScaledModel(torch.nn.Module):
    """A frozen relative model plus a scale head, called like a metric model (depth in metres)."""

    def __init__(self, model, head, max_depth: float):
        super().__init__()
        self.model, self.head, self.max_depth = model, head, max_depth

    def forward(self, pixel_values):
        from types import SimpleNamespace

        disp, feats = forward_with_features(self.model, pixel_values)
        return SimpleNamespace(predicted_depth=apply_scale(disp, *self.head(feats[-1]), max_depth=self.max_depth))


# ------------------------------------------------------------------------------------------------
# Curves
# ------------------------------------------------------------------------------------------------


def read_log(path: str | os.PathLike) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def plot_curves(log_path: str | os.PathLike, out_png: str | os.PathLike) -> Path | None:
    """Loss (and validation) curves as a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_log(log_path)
    steps = [r["step"] for r in recs if "loss" in r]
    if not steps:
        return None
    losses = [r["loss"] for r in recs if "loss" in r]
    vals = [(r["step"], r[k]) for r in recs for k in r if k.startswith("val_abs_rel")]
    fig, axes = plt.subplots(1, 2 if vals else 1, figsize=(9 if vals else 5, 3.2))
    axes = np.atleast_1d(axes)
    axes[0].plot(steps, losses, lw=0.8, color="0.6", label="loss")
    if len(losses) >= 10:
        k = max(1, len(losses) // 20)
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        axes[0].plot(steps[k - 1:], smooth, color="C0", label=f"mean of {k}")
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss")
    axes[0].legend(frameon=False)
    if vals:
        axes[1].plot(*zip(*vals), "o-", color="C3")
        axes[1].set_xlabel("step")
        axes[1].set_ylabel("validation AbsRel")
    fig.tight_layout()
    tmp = Path(str(out_png) + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, out_png)
    return Path(out_png)
