"""Fine-tuning data: several weighted sources, a held-out split by scene, streamed in aspect buckets.

``bridge d2i finetune --source A --source B:0.25`` draws from every given source (weights default to 1
and are normalised). Held-out depth maps come from scenes that are never used for training: the scene
id is the sample's ``meta.scene`` or ``meta.sequence`` where the source has one (Hypersim, VKITTI2, IRS,
BlendedMVS scenes; TartanAir, Spring sequences), otherwise the sample key (procedural scenes: one
scene per sample). Scenes are ranked by a hash of (seed, source, scene) and taken in that order until
``finetune.heldout`` samples are held out, spread over the sources in proportion to their weights.

Training samples are streamed (:class:`SourceStream`): shards are read in a shuffled order, each
sample is reduced at once to the three maps fine-tuning reads (disparity, valid mask, normalised
condition) at its aspect bucket's size, and only a shuffle buffer of those is kept in memory, never the
full-resolution RGB-D samples. A batch holds samples of one bucket (one image size)."""

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


def _iter_source(src: Source, fields=None, rng: random.Random | None = None) -> Iterator[dict]:
    """One pass over a source; shards in a shuffled order when ``rng`` is given."""
    if not src.is_dir:
        items = list(src.data)
        for i, s in enumerate(items):
            yield s if "__key__" in s else {**s, "__key__": f"{i:06d}"}
        return
    from ..data.shards import iter_shard, require_complete

    d = Path(src.data)
    m = require_complete(d, "finish writing the source first")
    shards = list(m.shards)
    if rng is not None:
        rng.shuffle(shards)
    for sh in shards:
        yield from iter_shard(d / sh.name, fields=fields)


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
        metas = [(s["__key__"], *scene_of(s)) for s in _iter_source(src, fields=("meta",))]
        if not metas:
            raise InputError(f"{src.data if src.is_dir else 'source'}: no source samples")
        scenes: dict[str, list[str]] = {}
        kinds = set()
        for key, scene, kind in metas:
            scenes.setdefault(scene, []).append(key)
            kinds.add(kind)
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
        if keys:
            held.samples.extend(s for s in _iter_source(src) if s["__key__"] in keys)
    return held


class SourceStream:
    """Endless batches of prepared fine-tuning maps from weighted sources (see the module docstring).

    ``bucket(h, w) -> (H, W)``: the generation size of a source of ``h x w``. Each source keeps a shuffle
    buffer of ``buffer`` prepared samples; a batch takes one sample from a source drawn by weight, then
    fills up with buffered samples of the same bucket. Seeded per rank: ranks see different orders."""

    def __init__(self, sources: list[Source], bucket: Callable[[int, int], tuple[int, int]], *, exclude=None,
                 buffer: int = 64, seed: int = 0, condition: str = "depth"):
        self.sources, self.bucket, self.condition = sources, bucket, condition
        self.exclude = exclude or {}
        self.buffer = max(1, int(buffer))
        self.rng = random.Random(seed)
        self.weights = [s.weight for s in sources]
        self._iters = [self._endless(s) for s in sources]
        self._bufs: list[list[dict]] = [[] for _ in sources]
        self.seen = [0] * len(sources)

    def _endless(self, src: Source) -> Iterator[dict]:
        ex = self.exclude.get(src.name, set())
        while True:
            n = 0
            for s in _iter_source(src, fields=("depth", "valid", "pseudo", "meta"), rng=self.rng):
                if s["__key__"] in ex:
                    continue
                n += 1
                h, w = s["depth"].shape[:2] if "depth" in s else s["pseudo"].shape[:2]
                size = self.bucket(h, w)
                item = prepare_source([s], size=size, condition=self.condition, rgb=False)
                item["size"] = size
                yield item
            if n == 0:
                raise InputError(f"{src.data if src.is_dir else 'source'}: no training samples left after "
                                 f"holding out {len(ex)}")

    def _fill(self, i: int) -> None:
        while len(self._bufs[i]) < self.buffer:
            self._bufs[i].append(next(self._iters[i]))

    def next_batch(self, batch_size: int) -> dict[str, torch.Tensor]:
        i = self.rng.choices(range(len(self.sources)), weights=self.weights)[0]
        self._fill(i)
        first = self._bufs[i].pop(self.rng.randrange(len(self._bufs[i])))
        items, srcs = [first], [i]
        order = [i] + [j for j in range(len(self.sources)) if j != i]
        for j in order:
            if len(items) >= batch_size:
                break
            self._fill(j)
            same = [k for k, it in enumerate(self._bufs[j]) if it["size"] == first["size"]]
            self.rng.shuffle(same)
            for k in sorted(same[:batch_size - len(items)], reverse=True):
                items.append(self._bufs[j].pop(k))
                srcs.append(j)
        for j in srcs:
            self.seen[j] += 1
        return {k: torch.cat([it[k] for it in items]) for k in ("disp01", "disp", "valid")}
