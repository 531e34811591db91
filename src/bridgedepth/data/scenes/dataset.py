"""Write procedural scenes into the shard store (resumable, optionally in several processes), and read
a few back for a contact sheet."""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
from pathlib import Path

import numpy as np

from ...errors import InputError
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


def _stop_on_sigterm() -> None:
    """In a worker: SIGTERM unwinds like Ctrl-C, so the shard being written is discarded cleanly."""
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def _rank_main(rank, world_size, out, count, kw, sps, meta, progress):
    _stop_on_sigterm()
    import cv2

    cv2.setNumThreads(1)
    from ..shards import write_dataset

    write_dataset(out, count, functools.partial(_make, **kw), samples_per_shard=sps,
                  desc="rendering scenes", rank=rank, world_size=world_size, meta=meta,
                  progress=progress)


def write_scenes(out, count: int, *, kind: str = "mixed", size=(256, 256), seed: int = 0,
                 samples_per_shard: int = 256, workers: int = 1, aspect_range=None, progress: bool = True,
                 look: str = "standard", first_index: int = 0):
    """Render scenes ``first_index .. first_index + count - 1`` of (seed, kind) into shards under
    ``out`` in ``look``; returns the manifest.

    Rerunning skips complete shards. ``workers > 1`` renders disjoint shards in that many processes
    (the shard store's rank / world-size split), with identical output. The same (seed, kind, index)
    in two looks has the same geometry and depth (the domain-gap world: docs/scenes.md)."""
    from ..shards import load_manifest, write_dataset
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
    num_shards = -(-count // samples_per_shard) if count else 0
    workers = max(1, min(int(workers), max(num_shards, 1)))
    if workers == 1:
        return write_dataset(out, count, functools.partial(_make, **kw), samples_per_shard=samples_per_shard,
                             desc="rendering scenes", meta=meta, progress=progress)
    # spawn, not fork: a forked child of a process that has started torch / OpenMP threads can hang
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank_main, args=(r, workers, str(out), count, kw, samples_per_shard, meta,
                                                  progress and r == 0))
             for r in range(workers)]
    for p in procs:
        p.start()
    codes = []
    try:
        for p in procs:
            p.join()
            codes.append(p.exitcode)
    except BaseException:  # interrupted (Ctrl-C, SIGTERM): stop the workers too, each drops its open shard
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join()
        raise
    if any(c != 0 for c in codes):
        raise InputError(f"{out}: a rendering worker failed (exit codes {codes}); rerun to resume")
    return load_manifest(out)


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
