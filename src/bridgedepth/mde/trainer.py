"""One trainer for every depth-model stage, on accelerate.

Stages (``TrainConfig.stage``):

* ``teacher``        synthetic RGB + GT disparity, SSI + GM loss (relative head)
* ``student-pseudo`` generated images with teacher pseudo-labels (+ source RGB-D with GT)
* ``student-hybrid`` as above, masked GT replacing the pseudo-label inside the fusion mask
* ``metric``         SiLog on metric GT depth (metric head, sigmoid x max_depth)
* ``scale-head``     frozen relative model; a small head predicts the scale and shift that turn its
                     disparity into metric disparity (see :mod:`bridgedepth.mde.scale_head`)

The data mixture is a list of :class:`TrainData` (shard folder, target kind, weight). Each source is
an endless :class:`~bridgedepth.data.loader.ShardStream` of this rank's share of its shards, read
``shuffle_group`` shards at a time in a seeded random permutation; with ``data.num_workers`` > 0 a
torch DataLoader decodes and augments (:func:`training_view`) in worker processes. A seeded generator
per rank picks the source of every sample by weight. Augmentation draws from a generator seeded by
(seed, source, epoch, key); every rank's position in every source, its mixing generator, its torch RNG
state and (fp16) GradScaler state are saved in the checkpoint, so a resumed run sees exactly the
batches an uninterrupted run would have seen, on every rank (with the same number of processes and
workers).

Checkpoints: ``OUT/last`` (every ``save_every`` steps and at the end) and ``OUT/best`` (best
validation score) hold the model in Hugging Face format plus ``trainer_state.json`` and
``optimizer.pt`` (tensors only; loaded with ``weights_only=True``). Only the main process writes; the
per-rank states are gathered to it first.
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

from ..config import Config, ConfigError, changed_settings, describe_changes, flatten, save_resolved, to_dict
from ..data.targets import TARGET_FIELDS, TargetKind, training_view
from .. import faults
from ..errors import InputError, raise_if_storage
from .model import apply_scale, decoder_channels_last, enable_checkpointing, forward_with_features, parameter_groups

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


class _MakeView:
    """What a data worker does per sample: :func:`training_view` with a generator seeded by
    (seed, source, epoch, key), then CHW uint8 / float tensors ready to stack."""

    def __init__(self, kind: str, train_cfg, index: int):
        self.kind, self.train_cfg, self.index = kind, train_cfg, index

    def __call__(self, sample: dict, epoch: int) -> dict:
        key = sample.get("__key__")
        rng = np.random.default_rng(_key_seed(self.train_cfg.seed, self.index, epoch, key))
        v = training_view(sample, self.kind, self.train_cfg, rng)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(np.asarray(v["rgb"], np.uint8).transpose(2, 0, 1))),
            "target": torch.from_numpy(np.ascontiguousarray(v["target"], np.float32)),
            "valid": torch.from_numpy(np.ascontiguousarray(v["valid"], bool)),
            "source": torch.from_numpy(np.ascontiguousarray(v["source"], np.uint8)),
            "__key__": key, "__epoch__": epoch,
        }


VIEWS_PER_MESSAGE = 8  # views a data worker packs into one buffer (one inter-process message)

_PACKED = (("target", torch.float32), ("image", torch.uint8), ("valid", torch.bool), ("source", torch.uint8))


def _pack_views(views: list[dict]) -> dict:
    """Views of :class:`_MakeView` as one uint8 buffer (one shared-memory block instead of four per
    view): per view ``target`` (float32), ``image`` (3 x H x W), ``valid``, ``source``, each block
    padded to 4 bytes."""
    shapes, parts, size = [], [], 0
    for v in views:
        h, w = v["target"].shape
        shapes.append((h, w))
        for name, dtype in _PACKED:
            b = v[name].to(dtype).contiguous().reshape(-1).view(torch.uint8)
            parts.append((size, b))
            size += -(-b.numel() // 4) * 4
    buf = torch.empty(size, dtype=torch.uint8)
    for off, b in parts:
        buf[off:off + b.numel()] = b
    return {"buffer": buf, "shapes": shapes, "keys": [v["__key__"] for v in views],
            "epochs": [v["__epoch__"] for v in views]}


def _unpack_views(item: dict) -> list[dict]:
    buf, off, out = item["buffer"], 0, []
    for (h, w), key, epoch in zip(item["shapes"], item["keys"], item["epochs"]):
        v = {"__key__": key, "__epoch__": epoch}
        for name, dtype in _PACKED:
            shape = (3, h, w) if name == "image" else (h, w)
            n = int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()
            v[name] = buf[off:off + n].view(dtype).view(shape)
            off += -(-n // 4) * 4
        out.append(v)
    return out


class _SourceStream:
    """Endless, resumable stream of training views from one shard folder for this rank.

    ``position`` = views taken so far (all epochs); with ``num_workers`` > 0 a torch DataLoader runs
    the decoding and :func:`training_view` in worker processes (:class:`_MakeView`)."""

    def __init__(self, data: TrainData, index: int, cfg: Config, rank: int, world_size: int,
                 num_workers: int = 0, position: int = 0, pin_memory: bool = False, **legacy):
        from ..data.loader import ShardDataset, ShardStream

        self.data, self.index, self.cfg = data, index, cfg
        self.dataset = ShardDataset([data.path], shuffle=True, seed=cfg.train.seed + index, rank=rank,
                                    fields=TARGET_FIELDS.get(data.target),
                                    world_size=world_size, shuffle_group=max(1, cfg.data.shuffle_group))
        limit = ShardStream.max_workers(self.dataset)
        if limit == 0:
            ShardStream(self.dataset)  # raises the error naming the folder
        self.num_workers = min(int(num_workers), limit)
        if "position" not in legacy and ("epoch" in legacy or "consumed" in legacy):
            position = self._legacy_position(int(legacy.get("epoch", 0)), int(legacy.get("consumed", 0)))
        self.position, self.epoch = int(position), 0
        self.pin_memory = pin_memory
        self._loader = None
        self._it: Iterator[dict] | None = None
        self._pending: list[dict] = []  # views of the last worker message not taken yet (reversed)
        # BRIDGE_TRACE_KEYS=1 records "epoch key" of every sample used (tests, debugging data order)
        self.trace: list[str] | None = [] if os.environ.get("BRIDGE_TRACE_KEYS") else None

    def _legacy_position(self, epoch: int, consumed: int) -> int:
        """A checkpoint of the one-process reader (state ``{epoch, consumed}``) as a position."""
        ds = self.dataset
        return sum(ds.reader_length(e, ds.rank, ds.world_size) for e in range(epoch)) + consumed

    def _open(self) -> None:
        from torch.utils.data import DataLoader

        from ..data.loader import ShardStream

        make = _MakeView(self.data.target, self.cfg.train, self.index)
        if self.num_workers == 0:
            self._it = iter(ShardStream(self.dataset, start=self.position, transform=make))
            return
        stream = ShardStream(self.dataset, start=self.position, num_workers=self.num_workers, transform=make,
                             chunk=VIEWS_PER_MESSAGE, pack=_pack_views)
        per_batch = self.cfg.train.batch_size * self.cfg.train.grad_accum
        self._loader = DataLoader(
            # no cv2.setNumThreads in the (forked) workers: reconfiguring the thread pool inherited
            # from a parent that used it can deadlock the child (seen in pthread_cond_destroy)
            stream, batch_size=None, num_workers=self.num_workers,
            prefetch_factor=max(2, math.ceil(2 * per_batch / (VIEWS_PER_MESSAGE * self.num_workers))),
            generator=torch.Generator().manual_seed(0),  # keep the global RNG untouched
        )
        self._it = iter(self._loader)

    def next(self) -> dict:
        if self._it is None:
            self._open()
        if self.num_workers == 0:
            view = next(self._it)
        else:
            if not self._pending:
                self._pending = _unpack_views(next(self._it))
                self._pending.reverse()
            view = self._pending.pop()
        self.position += 1
        self.epoch = int(view["__epoch__"])
        if self.trace is not None:
            self.trace.append(f"{self.epoch} {view['__key__']}")
        return view

    def state(self) -> dict:
        return {"position": self.position, "epoch": self.epoch, "num_workers": max(1, self.num_workers)}

    def close(self) -> None:
        it, self._it, self._loader, self._pending = self._it, None, None, []
        shutdown = getattr(it, "_shutdown_workers", None)  # a DataLoader's: stop its workers
        if shutdown is not None:
            shutdown()
        elif hasattr(it, "close"):  # the in-process generator: close its open shards
            it.close()


def normalize_images(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) in [0, 255] -> ImageNet-normalised float, on ``x``'s device."""
    mean, std = IMAGENET_MEAN.to(x.device), IMAGENET_STD.to(x.device)
    return (x.float().div_(255.0) - mean) / std


def _stack(items: list, pin_memory: bool) -> torch.Tensor:
    ts = [t if isinstance(t, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(t)) for t in items]
    if not pin_memory:
        return torch.stack(ts)
    out = torch.empty((len(ts), *ts[0].shape), dtype=ts[0].dtype, pin_memory=True)
    return torch.stack(ts, out=out)


def collate_views(views: list[dict], *, normalize: bool = True, pin_memory: bool = False) -> dict[str, torch.Tensor]:
    """Stack :func:`~bridgedepth.data.targets.training_view` outputs into a batch: ``image``
    (ImageNet-normalised float; with ``normalize=False`` the uint8 (B, 3, H, W) image, to normalise
    on the device with :func:`normalize_images`), ``target`` (float), ``valid`` (bool), ``source``
    (uint8 SOURCE_*). Views may also be the workers' tensors (``image`` CHW uint8 instead of ``rgb``
    HWC). ``pin_memory``: the batch lives in page-locked memory (for ``non_blocking`` copies)."""
    if "image" in views[0]:
        rgb = _stack([v["image"] for v in views], pin_memory)
    else:
        rgb = _stack([np.asarray(v["rgb"], np.uint8).transpose(2, 0, 1) for v in views], pin_memory)
    batch = {
        "image": normalize_images(rgb) if normalize else rgb,
        "target": _stack([v["target"] for v in views], pin_memory).float(),
        "valid": _stack([v["valid"] for v in views], pin_memory),
        "source": _stack([v["source"] for v in views], pin_memory),
    }
    return batch


class MixtureLoader:
    """Batches from a weighted mixture of sources; its whole position is a JSON-able state.

    Each source is a :class:`_SourceStream` (``num_workers`` DataLoader workers each, default
    ``cfg.data.num_workers``); a generator seeded by (seed, rank) picks the source of every sample in
    this process. ``state`` is what :meth:`state` returned (on the same rank)."""

    def __init__(self, datas: list[TrainData], cfg: Config, rank: int = 0, world_size: int = 1,
                 state: dict | None = None, *, num_workers: int | None = None, pin_memory: bool = False):
        if not datas:
            raise InputError("no training data given")
        for d in datas:
            if not Path(d.path).exists():
                raise InputError(f"{d.path}: training data folder does not exist")
        state = state or {}
        src_states = state.get("sources") or [{}] * len(datas)
        if len(src_states) != len(datas):
            raise InputError(f"the checkpoint's loader state has {len(src_states)} sources, the mixture {len(datas)}")
        workers = cfg.data.num_workers if num_workers is None else num_workers
        if workers < 0:
            raise InputError(f"data.num_workers must be >= 0, got {workers}")
        self.pin_memory = pin_memory
        self.sources = []
        for i, d in enumerate(datas):
            st = {k: v for k, v in src_states[i].items() if k in ("position", "epoch", "consumed")}
            if "position" in st:
                st.pop("epoch", None)
            self.sources.append(_SourceStream(d, i, cfg, rank, world_size, workers, pin_memory=pin_memory, **st))
            saved = src_states[i].get("num_workers")
            if saved is not None and int(saved) != max(1, self.sources[-1].num_workers):
                import warnings

                warnings.warn(f"{d.path}: the checkpoint read this source with {saved} worker(s), this run with "
                              f"{max(1, self.sources[-1].num_workers)}: the order of the remaining samples "
                              "differs from an uninterrupted run", stacklevel=2)
        w = np.array([max(d.weight, 0.0) for d in datas], np.float64)
        if w.sum() <= 0:
            raise InputError("training data weights must not all be zero")
        self.p = w / w.sum()
        self.rng = np.random.default_rng(_key_seed(cfg.train.seed, "mix", rank))
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]
        elif len(self.sources) > 1:  # a state without this rank's generator: replay its draws
            draws = sum(s.position for s in self.sources)
            while draws > 0:
                n = min(draws, 1 << 20)
                self.rng.random(n)
                draws -= n
        self.batch_size = cfg.train.batch_size

    def next_views(self) -> list[dict]:
        views = []
        for _ in range(self.batch_size):
            i = int(self.rng.choice(len(self.sources), p=self.p)) if len(self.sources) > 1 else 0
            views.append(self.sources[i].next())
        return views

    def next_batch(self, *, normalize: bool = True) -> dict[str, torch.Tensor]:
        return collate_views(self.next_views(), normalize=normalize, pin_memory=self.pin_memory)

    def state(self) -> dict:
        return {"sources": [s.state() for s in self.sources], "rng": self.rng.bit_generator.state}

    def close(self) -> None:
        """Stop the worker processes (the position is kept: :meth:`state` still holds)."""
        for s in self.sources:
            s.close()


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
        # predictions are ordered like depth, not like the relative disparity (relative_to_metric);
        # the trainer then calibrates its scale on data (_calibrate_metric_head)
        from .model import relative_to_metric

        model = relative_to_metric(model, cfg.model.max_depth)
        model.train()
        model.bridge_needs_calibration = True
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
                     save_model_fn, extra: dict, scale_head=None, rank_tensors: list | None = None) -> Path:
    """Write ``out/name`` atomically: everything goes to ``out/.name.tmp`` first, then one rename.
    ``rank_tensors``: per-rank RNG / GradScaler states, stored in ``optimizer.pt``."""
    target = out / name
    tmp = out / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        save_model_fn(model, tmp, extra=extra, scale_head=scale_head)
        if optimizer is not None:
            blob = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
            if rank_tensors is not None:
                blob["ranks"] = rank_tensors
            torch.save(blob, tmp / "optimizer.pt")
        faults.point("ckpt-write", tmp)
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))  # written last: marks it whole
        old = out / f".{name}.old"
        if target.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        faults.point("ckpt-swap", target)
        os.replace(tmp, target)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise_if_storage(e, target)
        raise
    if old.exists():
        shutil.rmtree(old)
    return target


def _load_resume(out: Path) -> tuple[Path, dict] | None:
    """The checkpoint to resume from: ``last``, or the previous one moved aside to ``.last.old`` when
    a kill came between the two renames of :func:`_save_checkpoint`. A ``.last.tmp`` (half-written)
    is never used: ``trainer_state.json`` is written last, and only a renamed folder is read."""
    last = out / "last"
    if not (last / "trainer_state.json").exists() and (out / ".last.old" / "trainer_state.json").exists():
        try:
            os.replace(out / ".last.old", last)
        except OSError:  # another rank did it first
            pass
    state_file = last / "trainer_state.json"
    if not state_file.exists():
        return None
    try:
        return last, json.loads(state_file.read_text())
    except ValueError as e:
        raise InputError(f"{state_file}: unreadable trainer state ({e}); delete {last} to start over") from e


# train.* settings a resumed run may change: the length (to extend a run), cadences, validation and
# memory/speed options that do not change what is learnt; every other train.*, model.* and the data
# mixture must match the checkpoint's
RESUME_FREE = ("train.steps", "train.save_every", "train.val_every", "train.val_limit", "train.val",
               "train.channels_last", "train.gradient_checkpointing", "train.data", "model.input_size")


def resume_mismatch(ckpt: Path, cfg: Config, data: list) -> list[tuple]:
    """The training settings (``train.*`` less ``RESUME_FREE``, ``model.*``, ``data.shuffle_group``,
    the data mixture) that differ between checkpoint ``ckpt`` (its ``bridge.json``) and this run, as
    :func:`~bridgedepth.config.changed_settings` gives them. Empty for a checkpoint that did not record
    its configuration."""
    from .model import read_metadata

    extra = read_metadata(ckpt).get("extra") or {}
    old_cfg = extra.get("config") if isinstance(extra, dict) else None
    if not isinstance(old_cfg, dict):
        return []
    new_cfg = to_dict(cfg)

    def view(c: dict, mixture: list) -> dict:
        flat = flatten({"train": c.get("train") or {}, "model": c.get("model") or {}})
        flat = {k: v for k, v in flat.items() if not any(k == f or k.startswith(f + ".") for f in RESUME_FREE)}
        flat["data.shuffle_group"] = (c.get("data") or {}).get("shuffle_group")
        if mixture is not None:
            # resolved: the same folder given as a relative and as an absolute path is the same source
            flat["data (the mixture)"] = [(str(Path(str(m.get("path"))).resolve()), m.get("target"),
                                           float(m.get("weight", 1.0))) for m in mixture]
        return flat

    return changed_settings(view(old_cfg, extra.get("data")), view(new_cfg, [d.__dict__ for d in data]))


def _load_optimizer_blob(path: Path) -> dict:
    """``optimizer.pt`` through ``torch.load(weights_only=True)``: tensors and plain containers only; a
    pickle that would build any other object (run code) is refused before anything of it runs."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - unpickling refusals and corrupt files alike
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise InputError(f"{path}: refused: not a tensors-only PyTorch file ({type(e).__name__}: {first}); "
                         f"delete {path.parent} to start over") from None
    if not isinstance(blob, dict) or "optimizer" not in blob or "scheduler" not in blob:
        raise InputError(f"{path}: not an optimiser state written by bridge train")
    return blob


def _trim_log(log_path: Path, step: int) -> None:
    """Drop log records after ``step`` (written by a run killed after its last checkpoint), so a
    resumed run's log has each step once."""
    if not log_path.exists():
        return
    keep = []
    for line in log_path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue  # a line cut by the kill
        if int(rec.get("step", 0)) <= step:
            keep.append(line + "\n")
    tmp = log_path.with_name(log_path.name + ".tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, log_path)


def _gather(accelerator, obj) -> list:
    """``obj`` of every rank, in rank order (a collective: every rank must call it)."""
    if accelerator.num_processes == 1:
        return [obj]
    out = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(out, obj)
    return out


def _rank_tensors(accelerator) -> dict:
    """This rank's torch RNG states and fp16 GradScaler state (saved per rank in optimizer.pt)."""
    st: dict = {"torch_rng": torch.get_rng_state()}
    if accelerator.device.type == "cuda":
        st["cuda_rng"] = torch.cuda.get_rng_state(accelerator.device)
    if getattr(accelerator, "scaler", None) is not None:
        st["scaler"] = accelerator.scaler.state_dict()
    return st


def _restore_rank_tensors(accelerator, st: dict) -> None:
    if "torch_rng" in st:
        torch.set_rng_state(st["torch_rng"])
    if "cuda_rng" in st and accelerator.device.type == "cuda":
        torch.cuda.set_rng_state(st["cuda_rng"], accelerator.device)
    if "scaler" in st and getattr(accelerator, "scaler", None) is not None:
        accelerator.scaler.load_state_dict(st["scaler"])


def _rank_resume_state(state: dict, rank: int, world_size: int) -> tuple[dict | None, bool]:
    """(this rank's loader state, exact) from a checkpoint's trainer_state.json. ``exact`` is False
    when the checkpoint was written by another number of processes (or before per-rank states): then
    every rank continues at rank 0's positions in its own share of the data, with its own mixing
    generator advanced by as many draws."""
    ranks = state.get("ranks")
    if ranks and len(ranks) == world_size:
        return ranks[rank].get("loader"), True
    loader = state.get("loader") or {}
    if world_size == 1 and not ranks:
        return loader, True  # a one-process checkpoint: its loader state is this rank's
    return {"sources": loader.get("sources")}, False


def _unused_parameters(model, patch_size: int) -> list[str]:
    """Trainable parameters that receive no gradient: one dry forward/backward (eval mode, a zero
    image of 4 x 4 patches, on the model's device). For the DINOv2 + DPT models: DINOv2's mask token
    (used only for masked-image pre-training), the residual unit of the first DPT fusion layer (it
    has no residual input) and any block after the last tapped one."""
    was_training = model.training
    model.eval()
    p0 = next(model.parameters())
    x = torch.zeros(1, 3, 4 * patch_size, 4 * patch_size, device=p0.device, dtype=p0.dtype)
    try:
        model(pixel_values=x).predicted_depth.float().sum().backward()
        unused = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        for p in model.parameters():
            p.grad = None
        model.train(was_training)
    return unused


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
    log_with=None,
) -> TrainResult:
    """Train ``cfg.train.stage`` on ``data``; resumes from ``out_dir/last`` when it exists.

    ``validate(model) -> metrics`` runs every ``train.val_every`` steps and at the end on the main
    process; the lowest ``val_key`` is kept as ``best``. ``stop_after`` stops early after that many
    steps in this call (used to test resumption); the schedule still spans ``train.steps``.
    ``log_with`` (``"tensorboard"``, ``"wandb"``, a list): accelerate trackers that receive every log
    record too (TensorBoard: ``out_dir/train/``).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
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
    if cfg.data.shuffle_group < 1:
        raise ConfigError(f"data.shuffle_group: must be >= 1, got {cfg.data.shuffle_group}")
    if cfg.data.num_workers < 0:
        raise ConfigError(f"data.num_workers: must be >= 0, got {cfg.data.num_workers}")
    out = Path(out_dir)
    # DDP runs with find_unused_parameters=False: the parameters that get no gradient are found by a
    # dry pass and frozen below (see _unused_parameters), so DDP's per-step graph search is not needed.
    from .tracking import hparams, parse_log_with, scalars

    trackers = parse_log_with(log_with)
    accelerator = Accelerator(
        mixed_precision=t.mixed_precision,
        gradient_accumulation_steps=t.grad_accum,
        cpu=cfg.device == "cpu",
        log_with=trackers or None,
        project_dir=str(out) if trackers else None,
    )
    if trackers:
        accelerator.init_trackers("train", config=hparams({"stage": t.stage, **to_dict(t)}))
    device = accelerator.device
    set_seed(t.seed)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
    resume = _load_resume(out)
    start_step, state, blob = 0, {}, None
    if resume is not None and (changes := resume_mismatch(resume[0], cfg, data)):
        raise InputError(f"{resume[0]}: this run would resume a checkpoint trained with other settings "
                         f"({describe_changes(changes)}); "
                         f"it would mix them. Use another --out, start from it with --init-from {resume[0]} in "
                         f"another --out, or delete {out} to start over (train.steps may change: that extends "
                         "or shortens a run)")
    if accelerator.is_main_process:
        save_resolved(cfg, out)  # after the check: a refused run leaves the folder's record as it was
    if resume is not None:
        init_from = str(resume[0])
        state = resume[1]
        start_step = int(state["step"])
        if (resume[0] / "optimizer.pt").exists():
            blob = _load_optimizer_blob(resume[0] / "optimizer.pt")
    model = _build_stage_model(cfg, init_from)
    t.check_crop(model.config.patch_size)
    scale_head = None
    if t.stage == "scale-head":
        from .model import ScaleHead, load_scale_head

        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        model = model.to(device)
        if t.channels_last:
            decoder_channels_last(model)
        scale_head = load_scale_head(resume[0]) if resume else None
        if scale_head is None:
            scale_head = ScaleHead(model.config.backbone_config.hidden_size, max_depth=cfg.model.max_depth).to(device)
            _initialise_on_main(accelerator, data, cfg, scale_head.parameters(),
                                lambda loader: _init_scale_from_data(model, scale_head, loader, accelerator, batches=4))
        scale_head.train()
        params = [{"params": list(scale_head.parameters()), "lr": t.lr * t.decoder_lr_mult, "weight_decay": t.weight_decay}]
    else:
        if t.gradient_checkpointing:
            enable_checkpointing(model)
        params = parameter_groups(model, t.lr, t.decoder_lr_mult, t.weight_decay)
        # frozen after the optimiser's groups are built, so its state layout does not change
        model = model.to(device)
        if t.channels_last:
            decoder_channels_last(model)
        for name in _unused_parameters(model, model.config.patch_size):
            model.get_parameter(name).requires_grad_(False)
        if model.__dict__.pop("bridge_needs_calibration", False):  # a metric head just made from a relative one
            _initialise_on_main(accelerator, data, cfg, model.head.conv3.parameters(),
                                lambda loader: _calibrate_metric_head(model, loader, accelerator, batches=4))
    optimizer = torch.optim.AdamW(params, lr=t.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, poly_lambda(t.steps, t.warmup_steps, t.poly_power))
    if blob is not None:
        optimizer.load_state_dict(blob["optimizer"])
        scheduler.load_state_dict(blob["scheduler"])
    trainable = scale_head if scale_head is not None else model
    trainable, optimizer = accelerator.prepare(trainable, optimizer)
    if scale_head is not None:
        scale_head = trainable
    else:
        model = trainable
    rank, world = accelerator.process_index, accelerator.num_processes
    loader_state, exact = _rank_resume_state(state, rank, world) if resume is not None else (None, True)
    if not exact and accelerator.is_main_process:
        import warnings

        warnings.warn(f"{resume[0]}: written by {len(state.get('ranks') or [])} process(es) with per-rank "
                      f"states, resumed by {world}: each rank continues at rank 0's data positions in "
                      "its own share; the data order differs from an uninterrupted run", stacklevel=2)
    loader = MixtureLoader(data, cfg, rank, world, state=loader_state, pin_memory=device.type == "cuda")
    ranks_blob = (blob or {}).get("ranks")
    if exact and ranks_blob and len(ranks_blob) == world:
        _restore_rank_tensors(accelerator, ranks_blob[rank])
    loss_fn = _stage_loss(cfg)
    log_path = out / "log.jsonl"
    if accelerator.is_main_process:
        _trim_log(log_path, start_step)
    best = state.get("best_score")
    extra_meta = {"stage": t.stage, "config": to_dict(cfg), "data": [d.__dict__ for d in data]}

    def write_checkpoint(name: str, step: int, ranks: list | None = None) -> None:
        """Main process only. ``ranks`` (every rank's loader, RNG and GradScaler states) makes it
        resumable: ``last`` has them and the optimiser; ``best`` is for use only."""
        st = {"step": step, "loader": loader.state(), "best_score": best, "stage": t.stage}
        if ranks is not None:
            st["world_size"] = len(ranks)
            st["ranks"] = [r[0] for r in ranks]
        _save_checkpoint(out, name, accelerator.unwrap_model(model) if scale_head is None else model,
                         optimizer if ranks is not None else None, scheduler, st, save_model, extra_meta,
                         scale_head=accelerator.unwrap_model(scale_head) if scale_head is not None else None,
                         rank_tensors=[r[1] for r in ranks] if ranks is not None else None)

    def checkpoint(name: str, step: int) -> None:
        accelerator.wait_for_everyone()
        ranks = _gather(accelerator, ({"loader": loader.state()}, _rank_tensors(accelerator)))
        if accelerator.is_main_process:
            write_checkpoint(name, step, ranks)
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
        extra_meta["eval"] = {"step": step, "data": cfg.train.val, "metrics": metrics}  # for the model card
        score = metrics.get(val_key)
        if score is not None and math.isfinite(score) and (best is None or score < best):
            best = float(score)
            write_checkpoint("best", step)
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
            batches = [loader.next_batch(normalize=False) for _ in range(t.grad_accum)]
            t_data = time.perf_counter() - t0
            for batch in batches:
                with accelerator.accumulate(trainable):
                    image = normalize_images(batch["image"].to(device, non_blocking=True))
                    target = batch["target"].to(device, non_blocking=True)
                    valid = batch["valid"].to(device, non_blocking=True)
                    source = batch["source"].to(device, non_blocking=True)
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
            if trackers:
                accelerator.log(scalars(rec), step=step + 1)
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}")
            faults.point("train-step")
            if t.save_every and (step + 1) % t.save_every == 0 and step + 1 < end:
                checkpoint("last", step + 1)
        if end == t.steps and validate is not None:
            metrics = run_validation(end)
            if log_f is not None and metrics:
                log_f.write(json.dumps({"step": end, **{f"val_{k}": v for k, v in metrics.items()}}) + "\n")
            if trackers and metrics:
                accelerator.log(scalars({f"val_{k}": v for k, v in metrics.items()}), step=end)
        checkpoint("last", end)
    finally:
        bar.close()
        loader.close()
        if log_f is not None:
            log_f.close()
        if trackers:
            accelerator.end_training()
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


def _initialise_on_main(accelerator, data, cfg: Config, params, fn: Callable) -> None:
    """Run ``fn(loader)`` on the main process only, with a loader of its own (the training stream stays
    untouched, so resumption is exact), then broadcast ``params`` from it to the other ranks."""
    params = list(params)
    if accelerator.is_main_process:
        loader = MixtureLoader(data, cfg, 0, 1, num_workers=0)
        try:
            fn(loader)
        finally:
            loader.close()
    if accelerator.num_processes > 1:
        for p in params:
            torch.distributed.broadcast(p.data, src=0)


def _calibration_batches(model, loader: "MixtureLoader", accelerator, batches: int):
    """``batches`` batches of ``loader`` as (normalised image on the model's device, float target, valid),
    with the context the forward pass runs under (the run's autocast when ``accelerator`` is given)."""
    from contextlib import nullcontext

    dev = next(model.parameters()).device
    for _ in range(max(1, int(batches))):
        batch = loader.next_batch(normalize=False)
        ctx = accelerator.autocast() if accelerator is not None else nullcontext()
        yield (normalize_images(batch["image"].to(dev)), batch["target"].to(dev).float(), batch["valid"].to(dev),
               ctx)


@torch.no_grad()
def _init_scale_from_data(model, head, loader: "MixtureLoader", accelerator=None, batches: int = 1) -> None:
    """Start the scale head at the global affine map, relative disparity -> metric disparity, that fits
    ``batches`` batches best: least squares ``1 / depth ~ scale * disparity + shift`` over their valid
    pixels (ground truth beyond ``head.max_depth`` left out, as the loss leaves it out). A model trained with the
    scale-and-shift-invariant loss predicts disparity up to a scale *and a shift*, so a scale alone (the
    previous start: the median ratio) cannot fit it. On the demo's validation scenes the least-squares
    start gives AbsRel 0.67 / SiLog 0.75 against 2.25 / 0.89 for the median ratio (docs/training.md).
    Falls back to the median ratio (shift 0) when the fit's scale is not positive. Runs on the model's
    device, under ``accelerator.autocast()`` when given (the trainer calls it on the main process only
    and broadcasts the head)."""
    disps, targets, oks = [], [], []
    for image, target, valid, ctx in _calibration_batches(model, loader, accelerator, batches):
        with ctx:
            d, _ = forward_with_features(model, image)
        d = d.float()
        ok = valid & (target > 0) & torch.isfinite(d)
        if head.max_depth:
            ok &= target <= head.max_depth
        disps.append(d)
        targets.append(target)
        oks.append(ok)
    disp, target, ok = torch.cat(disps), torch.cat(targets), torch.cat(oks)
    if int(ok.sum()) <= 10:
        return
    x = disp[ok].double()
    y = 1.0 / target[ok].double()
    a = torch.stack([x, torch.ones_like(x)], dim=1)
    scale, shift = torch.linalg.lstsq(a.cpu(), y.cpu()[:, None]).solution[:, 0].tolist()
    if scale > 0 and math.isfinite(scale) and math.isfinite(shift):
        head.mlp[2].bias[0] = math.log(scale)
        head.mlp[2].bias[1] = shift
        return
    ratios = []  # the fit failed: the median ratio of each image's valid, positive disparities
    for d, g, v in zip(disp, target, ok):
        v = v & (d > 0)
        if v.sum() > 10:
            ratios.append(torch.log((1.0 / g[v]).median() / d[v].median()))
    if ratios:
        head.mlp[2].bias[0] = torch.stack(ratios).median()


@torch.no_grad()
def _calibrate_metric_head(model, loader: "MixtureLoader", accelerator=None, batches: int = 4):
    """Calibrate a metric head just made from a relative model (:func:`relative_to_metric`): its depth is
    ``max_depth * sigmoid(z)`` with ``z`` the last conv's output, whose order is right but whose scale is
    arbitrary (``-0.3`` times the relative output: about ``max_depth / 2`` everywhere at first). Fit
    ``z' = alpha * z + beta`` to ``logit(depth / max_depth)`` of the ground truth of ``batches`` batches by
    least squares (valid pixels below ``max_depth``) and fold it into the conv; ``alpha`` is kept at 1 when
    the fit's is not positive (order first). On the demo's validation scenes this start gives AbsRel 0.74 /
    SiLog 0.72 against 8.7 / 1.5 uncalibrated (docs/training.md). Returns (alpha, beta) or None."""
    conv = model.head.conv3
    max_depth = float(model.config.max_depth)
    outs: list[torch.Tensor] = []
    hook = conv.register_forward_hook(lambda _m, _i, o: outs.append(o.detach().float()))
    was_training = model.training
    model.eval()
    zs, ts = [], []
    try:
        for image, target, valid, ctx in _calibration_batches(model, loader, accelerator, batches):
            with ctx:
                model(pixel_values=image)
            z = outs.pop()[:, 0]
            if z.shape[-2:] != target.shape[-2:]:
                z = torch.nn.functional.interpolate(z[:, None], size=target.shape[-2:], mode="bilinear",
                                                    align_corners=False)[:, 0]
            ok = valid & (target > 0) & (target < max_depth) & torch.isfinite(z)
            r = (target[ok] / max_depth).double()
            zs.append(z[ok].double())
            ts.append(torch.log(r) - torch.log1p(-r))
    finally:
        hook.remove()
        model.train(was_training)
    z, t = torch.cat(zs).cpu(), torch.cat(ts).cpu()
    if z.numel() <= 10:
        return None
    alpha, beta = torch.linalg.lstsq(torch.stack([z, torch.ones_like(z)], 1), t[:, None]).solution[:, 0].tolist()
    if not (alpha > 0 and math.isfinite(alpha) and math.isfinite(beta)):
        alpha, beta = 1.0, float((t - z).mean())
    conv.weight.mul_(alpha)
    conv.bias.mul_(alpha).add_(beta)
    return alpha, beta


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
