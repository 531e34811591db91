"""Fine-tuning data: several weighted sources, a held-out split by scene, streamed in aspect buckets.

``bridge d2i finetune --source A --source B:0.25`` draws from every given source (weights default to 1
and are normalised). Held-out depth maps come from scenes that are never used for training: the scene
id is the sample's ``meta.scene`` or ``meta.sequence`` where the source has one (Hypersim, VKITTI2, IRS,
BlendedMVS scenes; TartanAir, Spring sequences), otherwise the sample key (procedural scenes: one
scene per sample). Scenes are ranked by a hash of (seed, source, scene) and taken in that order until
``finetune.heldout`` samples are held out, spread over the sources in proportion to their weights.

Training samples are read one at a time by random access (:class:`SourceStream`): each drawn sample is
reduced at once to the three maps fine-tuning reads (disparity, valid mask, normalised condition) at
its aspect bucket's size; no full-resolution RGB-D sample is kept. A batch holds samples of one bucket
(one image size), and what step N draws depends only on the seed and N (exact resumption)."""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..errors import InputError
from .common import prepare_source


@dataclass
class Source:
    """One fine-tuning source: a shard directory (or an in-memory list of samples) and its weight."""

    data: object  # path or list of sample dicts
    weight: float = 1.0
    name: str = ""

    @property
    def is_dir(self) -> bool:
        return isinstance(self.data, (str, bytes)) or hasattr(self.data, "__fspath__")


def parse_source(spec) -> Source:
    """``DIR`` or ``DIR:WEIGHT`` (a weight is the text after the last ``:`` when it is a number)."""
    if isinstance(spec, Source):
        return spec
    if not (isinstance(spec, str) or hasattr(spec, "__fspath__")):
        return Source(list(spec), 1.0, "samples")
    s = os.fspath(spec)
    weight = 1.0
    head, sep, tail = s.rpartition(":")
    if sep and head:
        try:
            weight = float(tail)
            s = head
        except ValueError:
            pass
    if not weight > 0:
        raise InputError(f"--source {spec}: weight must be > 0")
    p = Path(s)
    if not p.exists():
        raise InputError(f"{p}: source shard directory does not exist")
    return Source(str(p), weight, p.name)


def parse_sources(specs) -> list[Source]:
    """A directory, a ``DIR:WEIGHT`` string, a list of those, or a list of sample dicts (one source)."""
    if isinstance(specs, (str, bytes)) or hasattr(specs, "__fspath__") or isinstance(specs, Source):
        specs = [specs]
    specs = list(specs)
    if specs and isinstance(specs[0], dict):
        return [Source(specs, 1.0, "samples")]
    out = [parse_source(s) for s in specs]
    if not out:
        raise InputError("no fine-tuning source given")
    names = [s.name for s in out]
    for i, s in enumerate(out):
        if names.count(s.name) > 1:
            s.name = f"{s.name}#{i}"
    return out


def scene_of(sample: dict) -> tuple[str, str]:
    """(scene id, what it is): ``meta.scene`` / ``meta.sequence`` where present, else the sample key."""
    meta = sample.get("meta") or {}
    for k in ("scene", "sequence"):
        if meta.get(k) is not None:
            return str(meta[k]), k
    return str(sample["__key__"]), "key"


def _iter_located(src: Source, fields=None) -> Iterator[tuple[str, int, dict]]:
    """One pass over a source in shard order: (shard name, position in the shard, sample). In-memory
    sources have the shard name ``""`` and their list index as position."""
    if not src.is_dir:
        for i, smp in enumerate(src.data):
            yield "", i, (smp if "__key__" in smp else {**smp, "__key__": f"{i:06d}"})
        return
    from ..data.shards import iter_shard, require_complete

    d = Path(src.data)
    for sh in require_complete(d, "finish writing the source first").shards:
        for pos, smp in enumerate(iter_shard(d / sh.name, fields=fields)):
            yield sh.name, pos, smp


class SampleReader:
    """Random access to source samples by (shard, position): a few open shards (LRU) and one resolver
    for source references. Reads only ``fields``."""

    def __init__(self, fields, open_shards: int = 8):
        self.fields = list(fields)
        self.open_shards = max(1, int(open_shards))
        self._open: dict[tuple[str, str], object] = {}
        self._resolver = None

    def read(self, src: Source, shard: str, pos: int) -> dict:
        if not src.is_dir:
            smp = src.data[pos]
            return smp if "__key__" in smp else {**smp, "__key__": f"{pos:06d}"}
        from ..data.refs import REF_FIELD, SourceResolver, fields_to_decode
        from ..data.shards import IndexedShard

        k = (str(src.data), shard)
        f = self._open.pop(k, None)
        if f is None:
            f = IndexedShard(Path(src.data) / shard)
            while len(self._open) >= self.open_shards:
                self._open.pop(next(iter(self._open))).close()
        self._open[k] = f  # most recently used last
        smp = f.sample(pos, fields=fields_to_decode(self.fields))
        if REF_FIELD in smp:
            if self._resolver is None:
                self._resolver = SourceResolver()
            self._resolver.resolve(smp, Path(src.data), where=str(Path(src.data) / shard), fields=self.fields)
        return smp

    def close(self) -> None:
        for f in self._open.values():
            f.close()
        self._open.clear()
        if self._resolver is not None:
            self._resolver.close()
            self._resolver = None


@dataclass
class HeldOut:
    samples: list[dict] = field(default_factory=list)
    keys: dict[str, set] = field(default_factory=dict)  # source name -> held-out sample keys
    scenes: dict[str, list] = field(default_factory=dict)  # source name -> held-out scene ids
    by: dict[str, str] = field(default_factory=dict)  # source name -> "scene" / "sequence" / "key"

    def describe(self) -> dict:
        return {name: {"samples": len(self.keys.get(name, ())), "scenes": len(self.scenes.get(name, [])),
                       "by": self.by.get(name), "scene_ids": sorted(self.scenes.get(name, []))[:20]}
                for name in self.keys}


def split_heldout(sources: list[Source], count: int, seed: int = 0) -> HeldOut:
    """Choose ``count`` held-out samples from whole scenes (see the module docstring)."""
    held = HeldOut()
    total_w = sum(s.weight for s in sources)
    quotas = [max(1, round(count * s.weight / total_w)) for s in sources] if count > 0 else [0] * len(sources)
    for src, quota in zip(sources, quotas):
        where: dict[str, tuple[str, int]] = {}  # key -> (shard, position)
        scenes: dict[str, list[str]] = {}
        kinds = set()
        for shard, pos, smp in _iter_located(src, fields=("meta",)):  # the meta member only
            scene, kind = scene_of(smp)
            where[smp["__key__"]] = (shard, pos)
            scenes.setdefault(scene, []).append(smp["__key__"])
            kinds.add(kind)
        if not where:
            raise InputError(f"{src.data if src.is_dir else 'source'}: no source samples")
        ranked = sorted(scenes, key=lambda sc: hashlib.sha256(f"{seed}/{src.name}/{sc}".encode()).hexdigest())
        keys: set[str] = set()
        chosen = []
        for sc in ranked:
            if len(keys) >= quota:
                break
            if len(chosen) + 1 >= len(scenes):  # keep at least one scene for training
                break
            chosen.append(sc)
            keys.update(scenes[sc])
        if quota and not keys:
            raise InputError(f"{src.data if src.is_dir else 'source'}: {len(scenes)} scene(s): too few to hold "
                             f"one out for the before/after evaluation (give --heldout)")
        held.keys[src.name], held.scenes[src.name] = keys, chosen
        held.by[src.name] = "key" if kinds == {"key"} else "/".join(sorted(kinds - {"key"}))
        reader = SampleReader(SourceStream.FIELDS)
        try:  # the held-out samples alone, by random access (not another pass over the source)
            held.samples.extend(reader.read(src, *where[k]) for k in sorted(keys, key=where.get))
        finally:
            reader.close()
    return held


def _step_rng(seed: int, *parts) -> random.Random:
    """A random stream that depends only on (seed, parts): draws are a function of the step, so a
    resumed run draws exactly what an uninterrupted one would."""
    h = hashlib.sha256("/".join(str(x) for x in (seed, *parts)).encode()).digest()
    return random.Random(int.from_bytes(h[:8], "little"))


class SourceStream:
    """Batches of prepared fine-tuning maps from weighted sources (see the module docstring).

    Random access, not a buffer: on opening, each source's training samples are indexed as (shard,
    position) pairs from the shards' tar headers (held-out keys left out); ``next_batch(n, step)`` then
    draws a source by weight and a sample uniformly, reads that sample alone, and fills the batch with
    further draws of the same aspect bucket (up to ``2 n`` tries; a batch may come out smaller). Every
    draw is a function of (seed, step), so a resumed run repeats an uninterrupted one exactly. Memory:
    the index (two integers per sample) and a few open shards (``open_shards``), never the samples."""

    FIELDS = ("depth", "valid", "pseudo", "meta")

    def __init__(self, sources: list[Source], bucket: Callable[[int, int], tuple[int, int]], *, exclude=None,
                 seed: int = 0, condition: str = "depth", open_shards: int = 8):
        self.sources, self.bucket, self.condition = sources, bucket, condition
        self.exclude = exclude or {}
        self.seed = int(seed)
        self.weights = [s.weight for s in sources]
        self.reader = SampleReader(self.FIELDS, open_shards)
        self.index: list[list[tuple[str, int]]] = [self._index(i, s) for i, s in enumerate(sources)]
        self.seen = [0] * len(sources)

    def _index(self, i: int, src: Source) -> list[tuple[str, int]]:
        ex = self.exclude.get(src.name, set())
        if not src.is_dir:
            items = [("", j) for j, smp in enumerate(src.data) if smp.get("__key__", f"{j:06d}") not in ex]
        else:
            from ..data.shards import IndexedShard, require_complete

            d = Path(src.data)
            items = []
            for sh in require_complete(d, "finish writing the source first").shards:
                with IndexedShard(d / sh.name, expected=sh.samples) as f:
                    items += [(sh.name, j) for j, k in enumerate(f.keys()) if k not in ex]
        if not items:
            raise InputError(f"{src.data if src.is_dir else 'source'}: no training samples left after "
                             f"holding out {len(ex)}")
        return items

    def _prepared(self, i: int, item: tuple[str, int]) -> dict:
        s = self.reader.read(self.sources[i], *item)
        h, w = s["depth"].shape[:2] if "depth" in s else s["pseudo"].shape[:2]
        size = self.bucket(h, w)
        out = prepare_source([s], size=size, condition=self.condition, rgb=False)
        out["size"] = size
        return out

    def next_batch(self, batch_size: int, step: int = 0) -> dict[str, torch.Tensor]:
        rng = _step_rng(self.seed, "batch", step)
        i = rng.choices(range(len(self.sources)), weights=self.weights)[0]
        idx = self.index[i]
        first = self._prepared(i, idx[rng.randrange(len(idx))])
        items = [first]
        for _ in range(2 * (batch_size - 1)):
            if len(items) >= batch_size:
                break
            cand = self._prepared(i, idx[rng.randrange(len(idx))])
            if cand["size"] == first["size"]:
                items.append(cand)
        self.seen[i] += len(items)
        return {k: torch.cat([it[k] for it in items]) for k in ("disp01", "disp", "valid")}

    def close(self) -> None:
        self.reader.close()
