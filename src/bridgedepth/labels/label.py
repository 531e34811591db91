"""`bridge label`: teacher pseudo-labels plus similarity masks for every generated sample.

For each generated sample (schema in docs/architecture.md: ``rgb`` = generated image, ``source_rgb`` =
the original synthetic render, ``depth``/``valid`` = its exact ground truth; either stored in the
sample or added by the reader from its ``source_ref``, see :mod:`bridgedepth.data.refs`) this adds

* ``pseudo``  the teacher's relative disparity at the generated image's resolution (float16);
* ``mask``    the fusion similarity mask (bool, PNG in the shard) in the generated image's grid: the
              mask (computed in the original's grid) moved into the generated frame with the same
              map the hybrid reader moves ground truth with
              (:func:`bridgedepth.data.targets.generated_to_original`), so mask, ``rgb``, ``pseudo``
              and the moved ground truth line up pixel for pixel;
* ``meta``    ``mask`` statistics (the `bridge mask --json` object), ``accepted``, ``crop``,
              ``teacher`` (checkpoint path and architecture), ``label_version``.

It is a sharded map job (one output shard per input shard, resumable per shard): process ``rank`` of
``world_size`` owns input shards ``j % world_size == rank``. ``workers > 1`` starts that many local
processes, each a rank of its own (times the launcher's ranks when run under torchrun/accelerate).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import Config, LabelConfig, changed_settings, save_resolved, to_dict
from ..errors import InputError

# 1: mask in the original's grid (resized to the generated size when they differed)
# 2: mask moved into the generated frame; meta.mask has model, refined, target_homography
LABEL_VERSION = 2


@dataclass
class LabelSummary:
    samples: int = 0
    accepted: int = 0
    skipped: int = 0
    seconds: float = 0.0
    fractions: list[float] = field(default_factory=list)
    reasons: dict[str, int] = field(default_factory=dict)
    bad_inputs: list[dict] = field(default_factory=list)  # {"shard", "key", "reason"} of each skipped sample

    @property
    def accepted_fraction(self) -> float:
        return self.accepted / self.samples if self.samples else 0.0

    @property
    def throughput(self) -> float:
        return self.samples / self.seconds if self.seconds else 0.0

    def histogram(self, bins: int = 10) -> dict[str, int]:
        counts, edges = np.histogram(np.asarray(self.fractions, float), bins=bins, range=(0.0, 1.0))
        return {f"{edges[i]:.1f}-{edges[i + 1]:.1f}": int(c) for i, c in enumerate(counts)}

    def to_json(self) -> dict:
        return {
            "samples": self.samples, "accepted": self.accepted, "accepted_fraction": self.accepted_fraction,
            "skipped": self.skipped, "mean_mask_fraction": float(np.mean(self.fractions)) if self.fractions else 0.0,
            "mask_fraction_histogram": self.histogram(), "reasons": self.reasons,
            "seconds": self.seconds, "samples_per_s": self.throughput, "bad_inputs": self.bad_inputs,
        }


class Labeller:
    """Pseudo-label and mask generated samples (the map job's batched ``fn``: :meth:`batch`)."""

    def __init__(self, teacher_dir: str | os.PathLike, cfg: LabelConfig, device: str = "cpu",
                 input_size: int | None = None, *, generated_dir: str | os.PathLike | None = None,
                 out_dir: str | os.PathLike | None = None, embed_source: bool = False):
        import torch

        from ..mde import load_model

        self.generated_dir = None if generated_dir is None else Path(generated_dir)
        self.out_dir = None if out_dir is None else Path(out_dir)
        self.embed_source = bool(embed_source)
        self.torch = torch
        self.model = load_model(teacher_dir, device=device)
        self.device = device
        self.cfg = cfg
        self.input_size = input_size
        self.teacher_id = {"path": str(Path(teacher_dir).resolve()), "arch": getattr(self.model, "bridge_arch", None)}

    def _fast(self):
        fast = getattr(self, "_fast_model", None)
        if fast is None or getattr(self, "_fast_of", None) is not self.model:
            from ..mde.fast import optimize_for_inference

            fast = self._fast_model = optimize_for_inference(self.model)
            self._fast_of = self.model
        return fast

    def pseudo_label(self, rgb: np.ndarray) -> np.ndarray:
        """The teacher's disparity at ``rgb``'s resolution, computed by the fast inference copy of the
        teacher (:func:`bridgedepth.mde.fast.optimize_for_inference`, made on first use; it agrees
        with the plain model to float rounding)."""
        return self.pseudo_labels([rgb])[0]

    def pseudo_labels(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """:meth:`pseudo_label` of several images: those of one size go through the teacher together,
        ``cfg.batch_size`` at a time (equal to the one-by-one result up to float rounding)."""
        from ..mde.predictor import predict_tensor

        torch = self.torch
        fast = self._fast()
        out: list = [None] * len(images)
        groups: dict[tuple, list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.shape, []).append(i)
        bs = max(1, int(getattr(self.cfg, "batch_size", 1) or 1))
        for idx in groups.values():
            for j in range(0, len(idx), bs):
                part = idx[j:j + bs]
                x = torch.from_numpy(np.stack([np.ascontiguousarray(images[i]) for i in part]))
                x = x.permute(0, 3, 1, 2).float().div_(255).to(self.device)
                with torch.inference_mode():
                    disp = predict_tensor(fast, x, self.input_size).float().cpu().numpy()
                for k, i in enumerate(part):
                    out[i] = disp[k]
        return out

    def mask_threads(self) -> int:
        """Threads for a batch's masks: ``label.mask_threads``, or (0) torch's intra-op thread count,
        which is this process's share of the cores (1 in `bridge label --workers N` processes)."""
        n = int(self.cfg.mask_threads)
        return n if n > 0 else max(1, self.torch.get_num_threads())

    def _check(self, sample: dict) -> None:
        key = sample.get("__key__", "?")
        for f in ("rgb", "source_rgb"):
            if f not in sample:
                raise InputError(f"sample {key}: no '{f}' field (is this a `bridge generate` output?)")
        for f in ("rgb", "source_rgb"):
            im = sample[f]
            if not (isinstance(im, np.ndarray) and im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3
                    and min(im.shape[:2]) >= MIN_SIDE):
                what = f"{im.dtype} {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
                raise InputError(f"sample {key}: '{f}' must be an RGB uint8 image of at least {MIN_SIDE}x{MIN_SIDE} "
                                 f"pixels, got {what}")

    def __call__(self, sample: dict) -> list[dict]:
        out = self.batch([sample])[0]
        if isinstance(out, InputError):
            raise out
        return out

    def batch(self, samples: list[dict]) -> list[list[dict] | InputError]:
        """The map job's batched ``fn``: per sample its labelled sample (in a list) or the InputError
        that skips it. Pseudo-labels of equal-size images share teacher calls."""
        from .masks import similarity_mask_pairs

        results: list = [None] * len(samples)
        ok = []
        for i, s in enumerate(samples):
            try:
                self._check(s)
                ok.append(i)
            except InputError as e:
                results[i] = e
        pseudos = self.pseudo_labels([samples[i]["rgb"] for i in ok])
        masks = similarity_mask_pairs([(samples[i]["rgb"], samples[i]["source_rgb"]) for i in ok], self.cfg,
                                      threads=self.mask_threads())
        for i, pseudo, res in zip(ok, pseudos, masks):
            sample = samples[i]
            gen = sample["rgb"]
            stats = res.stats()
            mask = mask_in_generated_frame(res.mask, stats, gen.shape[:2])
            out = self._carry(sample)
            out["pseudo"] = pseudo.astype(np.float16)
            out["mask"] = mask
            meta = dict(sample.get("meta") or {})
            meta.update({"mask": stats, "accepted": bool(res.accepted), "crop": stats["crop"],
                         "teacher": self.teacher_id, "label_version": LABEL_VERSION})
            out["meta"] = meta
            results[i] = [out]
        return results

    def _carry(self, sample: dict) -> dict:
        """What the labelled sample keeps of the generated one. A referencing sample keeps its
        reference (rebased to the labelled set's folder) and not the source fields the reader added;
        with ``embed_source`` those are stored and the reference dropped."""
        from ..data.refs import REF_FIELD, SOURCE_FIELDS, rebase_ref

        out = dict(sample)
        ref = out.get(REF_FIELD)
        if ref is None:
            return out
        if self.embed_source:
            del out[REF_FIELD]
            return out
        if self.generated_dir is None or self.out_dir is None:
            raise InputError(f"sample {sample.get('__key__', '?')}: has a {REF_FIELD}; the Labeller needs "
                             "generated_dir and out_dir to keep it (or embed_source=True)")
        for f in SOURCE_FIELDS:
            out.pop(f, None)
        out[REF_FIELD] = rebase_ref(ref, self.generated_dir, self.out_dir)
        return out


MIN_SIDE = 8  # smaller images cannot hold an SSIM window or ORB features: refused per sample


def mask_in_generated_frame(mask: np.ndarray, stats: dict, generated_hw: tuple[int, int]) -> np.ndarray:
    """The similarity mask (original's grid) resampled into the generated image's grid (nearest),
    through :func:`bridgedepth.data.targets.generated_to_original` of its statistics; generated
    pixels that map outside the original are not in the mask."""
    from ..data.targets import generated_to_original, to_generated_frame

    transform = generated_to_original(stats, generated_hw, mask.shape[:2])
    return to_generated_frame(np.asarray(mask, bool), transform, generated_hw)


# label settings that change how the work is spread, not a single label: a rerun may change them
LABEL_FREE = ("workers", "batch_size", "mask_threads")


def label_settings(cfg: LabelConfig, teacher_dir: str | os.PathLike, input_size: int | None,
                   embed_source: bool) -> dict:
    """What a labelled set depends on: the teacher's weights (sha256 of its safetensors files), the
    network input size, the ``label.*`` settings (less ``LABEL_FREE``) and whether sources are embedded."""
    from ..data.shards import weights_digest

    return {"teacher_weights": weights_digest(teacher_dir), "input_size": input_size, "embed_source": bool(embed_source),
            "label": {k: v for k, v in to_dict(cfg).items() if k not in LABEL_FREE}}


def check_label_output(out: Path, settings: dict, teacher_dir: str | os.PathLike, overwrite: bool) -> None:
    """Refuse (or, with ``overwrite``, clear) an output folder whose shards were labelled with other
    settings: a rerun skips finished shards, so it would mix old and new labels under the new
    config.yaml. Folders from before settings were recorded are compared on what they recorded (the
    teacher's path and the label settings)."""
    from ..data.shards import check_rerun_output

    def compare(old: dict) -> list:
        if isinstance(old.get("settings"), dict):
            was, now = old["settings"], settings
        else:  # labelled before settings were recorded: what it did record
            was = {"teacher": (old.get("teacher") or {}).get("path"), "label": old.get("label") or {}}
            now = {"teacher": str(Path(teacher_dir).resolve()), "label": settings["label"]}
        return changed_settings(was, now)  # keys only one side has (LABEL_FREE, newer ones) are not compared

    check_rerun_output(out, "label", "labels", compare, overwrite, made="labelled", redo="label them again",
                       named={"teacher_weights": "the teacher's weights (another or a retrained teacher)"},
                       extra=("label_summary.json",))


def _label_rank(teacher_dir, generated_dir, out_dir, cfg: LabelConfig, device, input_size, rank, world_size,
                progress, embed_source=False, settings: dict | None = None) -> None:
    from ..data.shards import map_dataset

    labeller = Labeller(teacher_dir, cfg, device=device, input_size=input_size, generated_dir=generated_dir,
                        out_dir=out_dir, embed_source=embed_source)
    map_dataset(generated_dir, out_dir, labeller.batch, chunk=max(1, cfg.batch_size), desc=f"labelling (rank {rank})",
                rank=rank,
                world_size=world_size, meta={"stage": "label", "teacher": labeller.teacher_id,
                                             "label": to_dict(cfg), "settings": settings}, progress=progress)


def _worker(args) -> None:
    import cv2
    import torch

    # one thread per process for both: the processes already fill the cores, and OpenCV's own
    # thread pool in a forked or oversubscribed worker has deadlocked here before
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _label_rank(*args)


def _reason_kind(reason: str) -> str:
    """A mask reason without its numbers ("3 ORB matches < 10" -> "N ORB matches < N"): the summary
    counts kinds of outcome, not one entry per distinct value (each sample's exact reason stays in its
    ``meta.mask.reason``)."""
    import re

    return re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "N", str(reason))


def summarize(out_dir: str | os.PathLike) -> LabelSummary:
    """Read the labelled set's metadata (masks and stats only) into a summary."""
    from ..data.shards import iter_samples, load_manifest

    s = LabelSummary()
    for sample in iter_samples(out_dir, fields=["meta"]):
        meta = sample.get("meta", {})
        s.samples += 1
        s.accepted += int(bool(meta.get("accepted")))
        stats = meta.get("mask", {})
        s.fractions.append(float(stats.get("final_fraction", 0.0)))
        reason = _reason_kind(stats.get("reason", "ok"))
        s.reasons[reason] = s.reasons.get(reason, 0) + 1
    man = load_manifest(out_dir)
    s.skipped = sum(len(sh.skipped) for sh in man.shards)
    s.bad_inputs = [{"shard": sh.name, **item} for sh in man.shards for item in sh.skipped]
    return s


def label(cfg: Config, teacher_dir: str | os.PathLike, generated_dir: str | os.PathLike,
          out_dir: str | os.PathLike, *, workers: int | None = None, rank: int | None = None,
          world_size: int | None = None, progress: bool = True, embed_source: bool = False,
          overwrite: bool = False) -> LabelSummary:
    """Label every generated sample; returns (and writes ``label_summary.json``) the summary.

    Generated samples that reference their source (``source_ref``) are resolved for the mask and the
    labelled sample keeps the reference (only what labelling computes, the generated ``rgb`` and
    ``meta`` are stored); ``embed_source`` stores the source fields instead (self-contained set).
    A rerun into the same folder resumes; one with another teacher or other label settings is refused
    (:func:`check_label_output`), or with ``overwrite`` labels the folder again from the start."""
    if not Path(teacher_dir).is_dir():
        raise InputError(f"{teacher_dir}: teacher checkpoint folder not found")
    if not Path(generated_dir).is_dir():
        raise InputError(f"{generated_dir}: generated shard folder not found")
    out = Path(out_dir)
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    input_size = cfg.model.input_size
    settings = label_settings(cfg.label, teacher_dir, input_size, embed_source)
    if overwrite and world_size > 1 and (out / "manifest.json").exists():
        # no rank may write before another has cleared the folder
        raise InputError(f"{out}: --overwrite with {world_size} processes: remove the folder first (rm -r {out}) "
                         "and rerun without --overwrite, or relabel with one process")
    check_label_output(out, settings, teacher_dir, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, out)
    workers = max(1, cfg.label.workers if workers is None else workers)
    device = (f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cfg.device in ("auto", "cuda") and _cuda()
              else "cpu")
    t0 = time.perf_counter()
    if workers == 1:
        _label_rank(teacher_dir, generated_dir, out, cfg.label, device, input_size, rank, world_size, progress,
                    embed_source, settings)
    else:
        import multiprocessing as mp

        jobs = [(str(teacher_dir), str(generated_dir), str(out), cfg.label, device, input_size,
                 rank * workers + w, world_size * workers, progress and w == 0, embed_source, settings)
                for w in range(workers)]
        try:
            with mp.get_context("spawn").Pool(workers) as pool:
                pool.map(_worker, jobs)
        except BaseException:
            # stopped (SIGINT / SIGTERM) or failed: the pool's workers are terminated mid-shard; discard
            # their temporary files and record what is complete, so the rerun resumes cleanly
            _discard_partial(out)
            raise
    seconds = time.perf_counter() - t0
    summary = summarize(out)
    summary.seconds = seconds
    if rank == 0:
        tmp = out / "label_summary.json.tmp"
        tmp.write_text(json.dumps(summary.to_json(), indent=2))
        os.replace(tmp, out / "label_summary.json")
    return summary


def _discard_partial(out: Path) -> None:
    import contextlib

    from ..data.shards import TMP_MARK, rebuild_manifest

    for p in out.iterdir():
        if TMP_MARK in p.name:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    with contextlib.suppress(Exception):
        rebuild_manifest(out)


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False
