"""A shard set as a benchmark (``--dataset shards``): held-out procedural scenes or any converted
source, ground truth from the samples' ``depth``/``valid``. No crop; the depth range is the whole
positive range unless ``min_depth``/``max_depth`` are given."""

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
    max_depth = math.inf
    description = "a shard folder (bridge scenes / bridge sources convert output); GT from its depth"

    def __init__(self, root, split=None, **options: Any):
        super().__init__(root, split, **options)
        if not (self.root / "manifest.json").exists():
            raise InputError(f"{self.root}: not a shard folder (no manifest.json)")
        self._cache: dict[str, dict] | None = None

    def _samples(self) -> dict[str, dict]:
        if self._cache is None:
            from ..shards import iter_samples

            self._cache = {s["__key__"]: s for s in iter_samples(self.root, fields=["rgb", "depth", "valid"])}
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
