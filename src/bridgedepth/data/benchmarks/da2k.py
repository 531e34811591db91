"""DA-2K: sparse relative-depth pairs (Depth Anything V2).

``annotations.json`` maps an image path (relative to the root) to a list of
``{"point1": [row, col], "point2": [row, col], "closer_point": "point1" | "point2"}``. The scene type
of an image is the name of the folder that holds it (``images/indoor/x.jpg`` -> ``indoor``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import InputError
from ._decode import image_size, read_rgb
from .base import rel_key


@dataclass
class PairItem:
    key: str  # relative path stem: predictions are "{key}.npy"
    rgb_path: Path
    scene: str
    points: np.ndarray  # int64 (N, 4): row1, col1, row2, col2 at the original resolution
    closer_is_1: np.ndarray  # bool (N,): point1 is the closer one


class DA2K:
    name = "da2k"
    description = "DA-2K relative-depth pairs: share of pairs ordered correctly, overall and per scene type"

    def __init__(self, root: str | Path, split: str | Path | None = None, **options):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: benchmark root is not a folder")
        self.annotations = Path(split) if split else self.root / "annotations.json"
        self.options = options

    def items(self, limit: int | None = None) -> list[PairItem]:
        path = self.annotations
        if not path.is_file():
            raise InputError(f"da2k: {path} not found (expected annotations.json under the root)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a mapping image -> list of pairs")
        items = []
        for rel, pairs in data.items():
            if not isinstance(pairs, list) or not pairs:
                raise InputError(f"{path}: entry {rel!r} must be a non-empty list of pairs")
            pts, closer = [], []
            for i, p in enumerate(pairs):
                try:
                    r1, c1 = (int(v) for v in p["point1"])
                    r2, c2 = (int(v) for v in p["point2"])
                    cp = p["closer_point"]
                except (KeyError, TypeError, ValueError) as e:
                    raise InputError(f"{path}: {rel!r} pair {i}: malformed ({e!r})") from e
                if cp not in ("point1", "point2"):
                    raise InputError(f"{path}: {rel!r} pair {i}: closer_point must be point1 or point2, got {cp!r}")
                pts.append((r1, c1, r2, c2))
                closer.append(cp == "point1")
            rgb = self.root / rel
            if not rgb.is_file():
                raise InputError(f"da2k: image {rgb} listed in {path} not found")
            scene = Path(rel).parent.name or "all"
            items.append(PairItem(rel_key(rel), rgb, scene, np.asarray(pts, np.int64), np.asarray(closer, bool)))
            if limit and len(items) >= limit:
                break
        return items

    def image_size(self, item: PairItem) -> tuple[int, int]:
        return image_size(item.rgb_path)

    def load_rgb(self, item: PairItem) -> np.ndarray:
        return read_rgb(item.rgb_path)
