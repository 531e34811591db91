"""A shard set as a benchmark (``--dataset shards``): held-out procedural scenes or any converted
source, ground truth from the samples' ``depth``/``valid``. No crop. The evaluation range is
``min_depth`` (1e-3 m) to the data's own depth cap: the largest ``meta["max_depth"]`` of its samples
(procedural scenes record 80 m), so that an aligned disparity clipped at the floor is clipped to that
cap like every real benchmark's (NYU 10 m, KITTI 80 m); without such a record the whole positive
range. ``min_depth``/``max_depth`` options override both."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from .base import Benchmark, Item


class ShardSet(Benchmark):
    name = "shards"
    min_depth = 1e-3
    description = "a shard folder (bridge scenes / bridge sources convert output); GT from its depth"

    def __init__(self, root, split=None, **options: Any):
        self._max_depth: float | None = None
        super().__init__(root, split, **options)
        if not (self.root / "manifest.json").exists():
            raise InputError(f"{self.root}: not a shard folder (no manifest.json)")
        self._cache: dict[str, dict] | None = None

    @property
    def max_depth(self) -> float:
        """The data's depth cap (largest ``meta["max_depth"]``), or the ``max_depth`` option."""
        if self._max_depth is None:
            caps = [float((s.get("meta") or {}).get("max_depth") or 0) for s in self._samples().values()]
            self._max_depth = max(caps) if caps and max(caps) > 0 else math.inf
        return self._max_depth

    @max_depth.setter
    def max_depth(self, value: float) -> None:
        self._max_depth = float(value)

    def _samples(self) -> dict[str, dict]:
        if self._cache is None:
            from ..shards import iter_samples

            self._cache = {s["__key__"]: s for s in iter_samples(self.root, fields=["rgb", "depth", "valid", "meta"])}
        return self._cache

    def _list(self, limit):
        keys = sorted(self._samples())
        if self.split is not None:
            wanted = [ln.split()[0] for ln in Path(self.split).read_text().splitlines() if ln.strip()]
            missing = [k for k in wanted if k not in self._samples()]
            if missing:
                raise InputError(f"{self.split}: keys not in {self.root}: {', '.join(missing[:3])}")
            keys = wanted
        keys = keys[:limit] if limit else keys
        return [Item(k, self.root, None) for k in keys]

    def _required(self, item: Item) -> list[Path]:
        return []

    def read_depth(self, item: Item) -> tuple[np.ndarray, np.ndarray]:
        s = self._samples()[item.key]
        depth = np.asarray(s["depth"], np.float32)
        valid = np.asarray(s.get("valid", depth > 0), bool) & (depth > 0)
        return depth, valid

    def load_rgb(self, item: Item) -> np.ndarray:
        return np.asarray(self._samples()[item.key]["rgb"])

    def meta(self, item: Item) -> dict:
        """The sample's ``meta`` record (for procedural scenes: ``kind``, ``seed``, ``max_depth``, the
        camera...); an empty dict when the sample has none."""
        return dict(self._samples()[item.key].get("meta") or {})
