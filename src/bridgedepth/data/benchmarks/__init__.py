"""Zero-shot depth benchmarks: each loader reads its official on-disk layout from a root folder, lists
the split's images and returns ground truth with the standard masks and crops.

``get_benchmark(name, root, split=None, **options)``; names: ``nyuv2, kitti, eth3d, scannet, sintel,
diode, da2k, folder``. The shipped split lists live in ``bridgedepth/data/splits``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import InputError
from .base import (
    KB_CROP_HW,
    NYU_EIGEN_CROP,
    SPLITS_DIR,
    Benchmark,
    GroundTruth,
    Item,
    eigen_crop_mask_kitti,
    garg_crop_mask,
    kb_crop_box,
    nyu_eigen_crop_mask,
    read_split,
    split_path,
)
from .da2k import DA2K, PairItem
from .datasets import DIODE, ETH3D, KITTI, Folder, NYUv2, ScanNet, Sintel

BENCHMARKS: dict[str, type] = {
    "nyuv2": NYUv2,
    "kitti": KITTI,
    "eth3d": ETH3D,
    "scannet": ScanNet,
    "sintel": Sintel,
    "diode": DIODE,
    "da2k": DA2K,
    "folder": Folder,
}


def get_benchmark(name: str, root: str | Path, split: str | Path | None = None, **options: Any):
    """Build the loader ``name`` over ``root``; ``split`` replaces the shipped split list."""
    cls = BENCHMARKS.get(name)
    if cls is None:
        raise InputError(f"unknown dataset {name!r}; choose one of {', '.join(BENCHMARKS)}")
    if split is not None:
        options["split_given"] = True
    return cls(root, split, **options)


__all__ = [
    "BENCHMARKS", "DA2K", "DIODE", "ETH3D", "KITTI", "Folder", "NYUv2", "ScanNet", "Sintel",
    "Benchmark", "GroundTruth", "Item", "PairItem", "get_benchmark", "read_split", "split_path",
    "SPLITS_DIR", "KB_CROP_HW", "NYU_EIGEN_CROP", "kb_crop_box", "garg_crop_mask",
    "eigen_crop_mask_kitti", "nyu_eigen_crop_mask",
]
