"""Write procedural scenes into the shard store (resumable, optionally in several processes), and read
a few back for a contact sheet."""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

from ...errors import BridgeError, InputError
from . import KINDS, parse_size, render_scene

GENERATOR = "bridgedepth.scenes/1"


def dataset_meta(kind: str, size, seed: int, aspect_range=None, look: str = "standard") -> dict:
    h, w = parse_size(size)
    return {
        "look": look,
        "generator": GENERATOR,
        "kind": kind,
        "size": [h, w],
        "seed": int(seed),
        "aspect_range": None if aspect_range is None else [float(a) for a in aspect_range],
    }


def _make(i: int, *, seed: int, kind: str, size, aspect_range, look="standard", first_index=0):
    return render_scene(seed, kind, size, index=first_index + i, aspect_range=aspect_range, look=look)


_DEFAULTS = {"look": "standard", "first_index": 0}


def _check_existing(out: Path, meta: dict) -> None:
    """Refuse to resume into a folder written with other options (it would mix two datasets)."""
    mpath = out / "manifest.json"
    if not mpath.exists():
        return
    from ..shards import load_manifest

    old = load_manifest(out).meta or {}
    if old.get("generator", "").startswith("bridgedepth.scenes"):
        diff = [k for k in ("kind", "size", "seed", "aspect_range", "look", "first_index")
                if old.get(k, _DEFAULTS.get(k)) != meta.get(k, _DEFAULTS.get(k))]
        if diff:
            raise InputError(
                f"{out}: already holds scenes written with different options "
                f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use another --out or delete it"
            )
    elif old:
        raise InputError(f"{out}: holds a dataset that is not procedural scenes; use another --out")


def _worker_init() -> None:
    """In a rendering worker: one OpenCV thread (the workers are the parallelism), and Ctrl-C is left
    to the parent, which stops the pool and discards the shard being written."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import cv2

    cv2.setNumThreads(1)


def scene_pool(workers: int):
    """A pool of ``workers`` rendering processes for :func:`write_scenes` (``pool=``): one pool for
    several sets starts the workers (a fresh interpreter each, then the texture bake: about a second)
    once. Use it as a context manager."""
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child of a process that has started torch / OpenMP threads can hang
    return ProcessPoolExecutor(max(1, int(workers)), mp_context=mp.get_context("spawn"), initializer=_worker_init)


def _render(i: int, kw: dict) -> dict:
    from ... import faults

    faults.point("scene-render")
    return _make(i, **kw)


class _RenderAhead:
    """``make_sample`` for :func:`write_dataset` that renders ahead in a process pool: asked for
    sample ``i``, it has ``i .. i + ahead - 1`` rendering and returns ``i`` when it is done. The shards
    are written in this process, in index order, so they are byte-identical to one process's, and a
    set of any size (a single shard included) keeps every worker busy."""

    def __init__(self, pool, kw: dict, count: int, ahead: int, out: Path):
        self.pool, self.kw, self.count, self.ahead, self.out = pool, kw, count, ahead, out
        self.pending: dict = {}

    def __call__(self, i: int) -> dict:
        from concurrent.futures.process import BrokenProcessPool

        for j in [j for j in self.pending if j < i]:  # skipped over (a complete shard): not needed
            self.pending.pop(j).cancel()
        for j in range(i, min(i + self.ahead, self.count)):
            if j not in self.pending:
                self.pending[j] = self.pool.submit(_render, j, self.kw)
        try:
            return self.pending.pop(i).result()
        except BrokenProcessPool:
            # not an InputError: that would skip the sample and go on; this aborts the open shard
            raise BridgeError(f"{self.out}: a rendering worker died (killed, or out of memory); "
                              "rerun to resume") from None


def write_scenes(out, count: int, *, kind: str = "mixed", size=(256, 256), seed: int = 0,
                 samples_per_shard: int = 256, workers: int = 1, aspect_range=None, progress: bool = True,
                 look: str = "standard", first_index: int = 0, pool=None):
    """Render scenes ``first_index .. first_index + count - 1`` of (seed, kind) into shards under
    ``out`` in ``look``; returns the manifest.

    Rerunning skips complete shards. ``workers > 1`` renders scenes ahead in that many processes while
    this one writes them in order: identical shards, every worker busy whatever the number of shards.
    Each worker is a fresh interpreter (about a second to start, with the texture bake): for several
    sets pass one :func:`scene_pool` as ``pool`` (``workers`` is then the pool's). The same (seed, kind, index)
    in two looks has the same geometry and depth (the domain-gap world: docs/scenes.md)."""
    from ..shards import write_dataset
    from . import LOOKS

    if look not in LOOKS:
        raise InputError(f"--look {look!r}: expected one of {', '.join(LOOKS)}")
    if first_index < 0:
        raise InputError(f"first index {first_index}: must be >= 0")
    if kind not in KINDS:
        raise InputError(f"--kind {kind!r}: expected one of {', '.join(KINDS)}")
    if count < 0:
        raise InputError(f"--count {count}: must be >= 0")
    if samples_per_shard < 1:
        raise InputError(f"--samples-per-shard {samples_per_shard}: must be >= 1")
    if seed < 0:
        raise InputError(f"--seed {seed}: must be >= 0")
    if aspect_range is not None:
        lo, hi = (float(a) for a in aspect_range)
        if not (0.2 <= lo <= hi <= 5.0):
            raise InputError(f"aspect range {aspect_range}: need 0.2 <= lo <= hi <= 5")
        aspect_range = (lo, hi)
    h, w = parse_size(size)
    out = Path(out)
    meta = dataset_meta(kind, (h, w), seed, aspect_range, look)
    if first_index:
        meta["first_index"] = int(first_index)
    _check_existing(out, meta)
    kw = dict(seed=int(seed), kind=kind, size=(h, w), aspect_range=aspect_range, look=look,
              first_index=int(first_index))
    workers = max(1, min(int(workers), count))
    if pool is None and workers == 1:
        return write_dataset(out, count, functools.partial(_make, **kw), samples_per_shard=samples_per_shard,
                             desc="rendering scenes", meta=meta, progress=progress)
    with contextlib.ExitStack() as stack:
        if pool is None:
            pool = stack.enter_context(scene_pool(workers))
        # a few scenes per worker in flight keep each busy while this process writes. On an interruption
        # (Ctrl-C, SIGTERM) write_dataset discards the open shard and what is still queued is cancelled.
        maker = _RenderAhead(pool, kw, count, ahead=4 * getattr(pool, "_max_workers", workers), out=out)
        try:
            return write_dataset(out, count, maker, samples_per_shard=samples_per_shard,
                                 desc="rendering scenes", meta=meta, progress=progress)
        finally:
            for f in maker.pending.values():
                f.cancel()


def preview_samples(in_dir, limit: int = 24) -> list[dict]:
    """Up to ``limit`` samples spread over the dataset in ``in_dir`` (complete shards only)."""
    from ..shards import iter_samples, load_manifest

    m = load_manifest(in_dir)
    total = m.num_samples
    if total == 0:
        raise InputError(f"{in_dir}: no complete samples to preview")
    step = max(1, total // max(limit, 1))
    picked = []
    for i, s in enumerate(iter_samples(in_dir, allow_incomplete=True, fields=["rgb", "depth", "valid", "meta"])):
        if i % step == 0:
            picked.append(s)
            if len(picked) >= limit:
                break
    return picked


def write_contact_sheet(in_dir, out_png, *, limit: int = 24, columns: int = 4, cell: int = 192) -> np.ndarray:
    from ...io import write_image
    from .preview import contact_sheet

    sheet = contact_sheet(preview_samples(in_dir, limit), cell=cell, columns=columns)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    write_image(os.fspath(out_png), sheet)
    return sheet
