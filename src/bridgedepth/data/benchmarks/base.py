"""The benchmark loader interface, split files and the standard crops.

A benchmark lists :class:`Item` s (one per test image, in split-file order) and loads, for one item,
the ground truth as a :class:`GroundTruth`: depth in metres, the *evaluation* mask (decoded validity
AND the dataset's depth range AND its crop) and, where the protocol crops the image (KITTI's KB
crop), the crop box in the original frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...errors import InputError
from ._decode import read_gt_depth, read_rgb

SPLITS_DIR = Path(__file__).resolve().parent.parent / "splits"


def split_path(rel: str) -> Path:
    """A shipped split list (see ``bridgedepth/data/splits/README.md``)."""
    return SPLITS_DIR / rel


def read_split(path: str | Path) -> list[list[str]]:
    """Non-empty, non-comment lines of a split file, split on whitespace."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: split file not found")
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split())
    if not rows:
        raise InputError(f"{path}: split file is empty")
    return rows


def rel_key(rel: str) -> str:
    """The prediction name of an image: its relative path without suffix, POSIX separators."""
    p = Path(rel.replace("\\", "/"))
    return p.with_suffix("").as_posix()


@dataclass
class Item:
    key: str  # relative path stem of the RGB image: predictions are "{key}.npy"
    rgb_path: Path
    depth_path: Path | None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class GroundTruth:
    depth: np.ndarray  # float32 (H, W) metres, 0 where invalid
    valid: np.ndarray  # bool (H, W): evaluation mask (validity, range, crop)
    full_shape: tuple[int, int]  # (H, W) of the original frame
    crop: tuple[int, int, int, int] | None = None  # (top, left, height, width) in the original frame


# ------------------------------------------------------------------ crops
KB_CROP_HW = (352, 1216)


def kb_crop_box(h: int, w: int) -> tuple[int, int, int, int]:
    """KITTI benchmark crop: the bottom 352 rows, the central 1216 columns.
    ``top = H - 352``, ``left = (W - 1216) // 2``."""
    ch, cw = KB_CROP_HW
    if h < ch or w < cw:
        raise InputError(f"KITTI frame {h}x{w} is smaller than the KB crop {ch}x{cw}")
    return h - ch, (w - cw) // 2, ch, cw


def garg_crop_mask(h: int, w: int) -> np.ndarray:
    """Garg crop, as fractions of the (KB-cropped) frame:
    rows [int(0.40810811 H), int(0.99189189 H)), cols [int(0.03594771 W), int(0.96405229 W))."""
    m = np.zeros((h, w), bool)
    m[int(0.40810811 * h) : int(0.99189189 * h), int(0.03594771 * w) : int(0.96405229 * w)] = True
    return m


def eigen_crop_mask_kitti(h: int, w: int) -> np.ndarray:
    """Eigen crop for KITTI: rows [int(0.3324324 H), int(0.91351351 H)),
    cols [int(0.0359477 W), int(0.96405229 W))."""
    m = np.zeros((h, w), bool)
    m[int(0.3324324 * h) : int(0.91351351 * h), int(0.0359477 * w) : int(0.96405229 * w)] = True
    return m


NYU_EIGEN_CROP = (45, 471, 41, 601)  # rows [45, 471), cols [41, 601) of the 480x640 frame


def nyu_eigen_crop_mask(h: int, w: int) -> np.ndarray:
    if (h, w) != (480, 640):
        raise InputError(f"NYUv2 ground truth must be 480x640 for the Eigen crop, got {h}x{w}")
    r0, r1, c0, c1 = NYU_EIGEN_CROP
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True
    return m


# ------------------------------------------------------------------ base class
class Benchmark:
    """Base of every loader. Subclasses set the class constants and implement :meth:`_list`."""

    name: ClassVar[str] = ""
    min_depth: float = 1e-3
    max_depth: float = math.inf
    encoding: ClassVar[str | None] = None
    default_split: ClassVar[str | None] = None  # path under bridgedepth/data/splits
    description: ClassVar[str] = ""

    def __init__(self, root: str | Path, split: str | Path | None = None, **options: Any):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: benchmark root is not a folder")
        self.split = Path(split) if split else (split_path(self.default_split) if self.default_split else None)
        self.options = options
        if options.get("min_depth") is not None:
            self.min_depth = float(options["min_depth"])
        if options.get("max_depth") is not None:
            self.max_depth = float(options["max_depth"])

    # -- listing
    def _list(self, limit: int | None) -> list[Item]:
        raise NotImplementedError

    def items(self, limit: int | None = None) -> list[Item]:
        """The test items in split order (the first ``limit`` when given). Missing files are an
        error naming the first few."""
        items = self._list(limit)
        missing = [p for it in items for p in self._required(it) if not p.exists()]
        if missing:
            more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
            raise InputError(
                f"{self.name}: {len(missing)} listed file(s) missing under {self.root}: "
                + ", ".join(str(p) for p in missing[:3]) + more
            )
        return items

    def _required(self, item: Item) -> list[Path]:
        return [item.rgb_path] + ([item.depth_path] if item.depth_path is not None else [])

    # -- loading
    def range_mask(self, depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return valid & (depth > self.min_depth) & (depth < self.max_depth)

    def crop_box(self, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
        return None

    def crop_mask(self, shape: tuple[int, int]) -> np.ndarray | None:
        return None

    def read_depth(self, item: Item) -> tuple[np.ndarray, np.ndarray]:
        return read_gt_depth(item.depth_path, self.encoding)

    def load_gt(self, item: Item) -> GroundTruth:
        depth, valid = self.read_depth(item)
        full = depth.shape[:2]
        box = self.crop_box(full)
        if box is not None:
            t, l, h, w = box
            depth, valid = depth[t : t + h, l : l + w], valid[t : t + h, l : l + w]
        mask = self.range_mask(depth, valid)
        cm = self.crop_mask(depth.shape[:2])
        if cm is not None:
            mask &= cm
        return GroundTruth(
            depth=np.ascontiguousarray(depth, dtype=np.float32),
            valid=np.ascontiguousarray(mask),
            full_shape=(int(full[0]), int(full[1])),
            crop=box,
        )

    def load_rgb(self, item: Item) -> np.ndarray:
        """The image as the model should see it (cropped like the ground truth)."""
        rgb = read_rgb(item.rgb_path)
        box = self.crop_box(rgb.shape[:2])
        if box is not None:
            t, l, h, w = box
            rgb = np.ascontiguousarray(rgb[t : t + h, l : l + w])
        return rgb

    def constants(self) -> dict[str, Any]:
        return {"min_depth": self.min_depth, "max_depth": self.max_depth}
