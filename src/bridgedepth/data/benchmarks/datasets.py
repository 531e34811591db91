"""Loaders for the zero-shot benchmarks, each reading its official on-disk layout from a root folder.
See docs/evaluation.md for every constant and crop."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from .base import (
    Benchmark,
    Item,
    eigen_crop_mask_kitti,
    garg_crop_mask,
    kb_crop_box,
    nyu_eigen_crop_mask,
    read_split,
    rel_key,
    split_path,
)

MARIGOLD = "marigold/data_split/"


def _first_existing(candidates: list[Path]) -> Path:
    for c in candidates:
        if c.exists():
            return c
    return candidates[0]


class NYUv2(Benchmark):
    """NYUv2 Eigen test split, 654 images, 480x640, uint16 PNG millimetres.

    Two layouts: Marigold's (``test/<scene>/rgb_XXXX.png`` with raw ``depth_XXXX.png``; list
    ``filename_list_test.txt``) and the BTS/ZoeDepth ``sync`` layout (``<scene>/rgb_XXXXX.jpg`` with
    ``sync_depth_XXXXX.png`` under ``official_splits/test``; list
    ``nyudepthv2_test_files_with_gt.txt``). ``layout="auto"`` picks the one present under the root.
    """

    name = "nyuv2"
    min_depth = 1e-3
    max_depth = 10.0
    encoding = "png-mm"
    description = "NYUv2 Eigen test (654), depth/1000, 1e-3..10 m, Eigen crop [45:471, 41:601]"
    SPLITS = {
        "marigold": MARIGOLD + "nyu_depth/labeled/filename_list_test.txt",
        "sync": "zoedepth/train_test_inputs/nyudepthv2_test_files_with_gt.txt",
    }

    def _bases(self, layout: str) -> list[Path]:
        if layout == "sync":
            return [self.root, self.root / "official_splits" / "test", self.root / "test"]
        return [self.root, self.root / "nyu_labeled_extracted"]

    def _detect(self) -> tuple[str, Path, list[list[str]]]:
        layout = self.options.get("layout") or "auto"
        if self.options.get("split_given"):
            rows = read_split(self.split)
            if len(rows[0]) < 2:
                raise InputError(f"{self.split}: NYUv2 split lines need at least 'RGB DEPTH'")
            kind = "sync" if "sync_depth" in rows[0][1] else "marigold"
            if layout not in ("auto", kind):
                kind = layout
            cands = [kind]
        else:
            cands = ["marigold", "sync"] if layout == "auto" else [layout]
        tried = []
        for kind in cands:
            split = self.split if self.options.get("split_given") else split_path(self.SPLITS[kind])
            rows = read_split(split)
            for base in self._bases(kind):
                if (base / rows[0][0]).exists():
                    return kind, base, rows
                tried.append(str(base / rows[0][0]))
        raise InputError(
            f"nyuv2: no known layout under {self.root}; looked for {', '.join(tried)} "
            "(Marigold: test/<scene>/rgb_XXXX.png; sync: <scene>/rgb_XXXXX.jpg)"
        )

    def _list(self, limit):
        kind, base, rows = self._detect()
        self.layout = kind
        rows = rows[:limit] if limit else rows
        return [
            Item(rel_key(r[0]), base / r[0], base / r[1], {"layout": kind, "focal": r[2] if kind == "sync" and len(r) > 2 else None})
            for r in rows
        ]

    def crop_mask(self, shape):
        return nyu_eigen_crop_mask(*shape)


class KITTI(Benchmark):
    """KITTI Eigen test split: 697 listed frames, the 652 with annotated ground truth (lines whose depth
    column is ``None`` are skipped); uint16 PNG / 256; 1e-5..80 m; KB crop to 352x1216 and then the
    Garg crop (``crop="eigen"`` for the Eigen crop, ``"none"`` for none)."""

    name = "kitti"
    min_depth = 1e-5
    max_depth = 80.0
    encoding = "png-kitti"
    default_split = MARIGOLD + "kitti_depth/eigen_test_files_with_gt.txt"
    description = "KITTI Eigen test (652 with GT), depth/256, 1e-5..80 m, KB crop 352x1216 + Garg crop"
    RGB_ANCHORS = ("raw_data/", "raw/", "kitti_raw/")
    DEPTH_ANCHORS = ("data_depth_annotated/",)

    def _resolve(self, entry: str, kind: str) -> tuple[str, Path]:
        anchors = self.RGB_ANCHORS if kind == "rgb" else self.DEPTH_ANCHORS
        rel = entry
        if entry.startswith("/"):
            for a in anchors:
                if a in entry:
                    rel = entry[entry.index(a) + len(a) :]
                    if kind == "depth":  # data_depth_annotated/{train,val}/...
                        rel = rel.split("/", 1)[1] if rel.split("/", 1)[0] in ("train", "val") else rel
                    break
            else:
                rel = entry.lstrip("/")
            if Path(entry).exists():
                return rel, Path(entry)
        r = self.root
        if kind == "rgb":
            cands = [r / rel, r / "raw_data" / rel, r / "raw" / rel, r / "rgb" / rel]
        else:
            cands = [
                r / rel,
                r / "data_depth_annotated" / "val" / rel,
                r / "data_depth_annotated" / "train" / rel,
                r / "val" / rel,
                r / "train" / rel,
                r / "depth" / rel,
            ]
        return rel, _first_existing(cands)

    def _list(self, limit):
        rows = [r for r in read_split(self.split) if len(r) < 2 or r[1] != "None"]
        rows = rows[:limit] if limit else rows
        items = []
        for r in rows:
            if len(r) < 2:
                raise InputError(f"{self.split}: KITTI split lines need 'RGB DEPTH [focal]': {' '.join(r)}")
            rel, rgb = self._resolve(r[0], "rgb")
            _, depth = self._resolve(r[1], "depth")
            items.append(Item(rel_key(rel), rgb, depth, {"focal": float(r[2]) if len(r) > 2 else None}))
        return items

    def crop_box(self, shape):
        if not self.options.get("kb_crop", True):
            return None
        return kb_crop_box(*shape)

    def crop_mask(self, shape):
        crop = self.options.get("crop") or "garg"
        if crop == "garg":
            return garg_crop_mask(*shape)
        if crop == "eigen":
            return eigen_crop_mask_kitti(*shape)
        if crop == "none":
            return None
        raise InputError(f"kitti: unknown crop {crop!r}; choose garg, eigen or none")


def _rgb_depth_split(bench, limit) -> list[Item]:
    """Items of a split list whose lines are ``RGB DEPTH`` (paths relative to the root)."""
    rows = read_split(bench.split)
    rows = rows[:limit] if limit else rows
    bad = [r for r in rows if len(r) < 2]
    if bad:
        raise InputError(f"{bench.split}: {bench.name} split lines need 'RGB DEPTH': {' '.join(bad[0])}")
    return [Item(rel_key(r[0]), bench.root / r[0], bench.root / r[1]) for r in rows]


class ETH3D(Benchmark):
    """ETH3D high-res multi-view DSLR images (454). Ground truth: headerless little-endian float32
    4032x6048 files (named like the JPEG), inf = invalid; 1e-5..inf m."""

    name = "eth3d"
    min_depth = 1e-5
    max_depth = math.inf
    encoding = "eth3d-raw"
    default_split = MARIGOLD + "eth3d_depth/eth3d_filename_list.txt"
    description = "ETH3D (454), raw float32 4032x6048, inf invalid, 1e-5..inf m"

    def _list(self, limit):
        return _rgb_depth_split(self, limit)


class ScanNet(Benchmark):
    """ScanNet validation, 800 sampled frames (Marigold's list), uint16 PNG / 1000, 1e-3..10 m."""

    name = "scannet"
    min_depth = 1e-3
    max_depth = 10.0
    encoding = "png-mm"
    default_split = MARIGOLD + "scannet_depth/scannet_val_sampled_list_800_1.txt"
    description = "ScanNet val (800 sampled), depth/1000, 1e-3..10 m"

    def _list(self, limit):
        return _rgb_depth_split(self, limit)


class DIODE(Benchmark):
    """DIODE validation, indoor (325) and outdoor (446): ``*_depth.npy`` (H, W, 1) metres and
    ``*_depth_mask.npy``; 0.6..350 m. The root is the ``val`` folder (or its parent)."""

    name = "diode"
    min_depth = 0.6
    max_depth = 350.0
    encoding = "npy"
    default_split = MARIGOLD + "diode_depth/diode_val_all_filename_list.txt"
    description = "DIODE val (771 = 325 indoor + 446 outdoor), npy + mask, 0.6..350 m"

    def _list(self, limit):
        rows = read_split(self.split)
        base = self.root / "val" if not (self.root / rows[0][0]).exists() and (self.root / "val").is_dir() else self.root
        rows = rows[:limit] if limit else rows
        out = []
        for r in rows:
            if len(r) < 3:
                raise InputError(f"{self.split}: DIODE lines need RGB, depth and mask columns: {' '.join(r)}")
            out.append(Item(rel_key(r[0]), base / r[0], base / r[1], {"mask_path": base / r[2], "scene": r[0].split("/")[0]}))
        return out

    def _required(self, item):
        return super()._required(item) + [item.extra["mask_path"]]

    def read_depth(self, item):
        depth, valid = super().read_depth(item)
        mask = np.load(item.extra["mask_path"], allow_pickle=False)
        mask = np.asarray(mask).squeeze()
        if mask.shape != depth.shape:
            raise InputError(f"{item.extra['mask_path']}: mask shape {mask.shape} != depth shape {depth.shape}")
        return depth, valid & (mask > 0)


class Sintel(Benchmark):
    """MPI-Sintel training set, final pass: every frame of each listed sequence
    (``training/final/<seq>/frame_XXXX.png`` with ``training/depth/<seq>/frame_XXXX.dpt``); the split
    file lists sequence names (default: all 23). 1e-3..70 m."""

    name = "sintel"
    min_depth = 1e-3
    max_depth = 70.0
    encoding = "dpt"
    default_split = "sintel_training_sequences.txt"
    description = "MPI-Sintel training, final pass, all frames of the 23 sequences, .dpt, 1e-3..70 m"

    def _list(self, limit):
        seqs = [r[0] for r in read_split(self.split)]
        base = self.root / "training" if (self.root / "training").is_dir() else self.root
        if not (base / "final").is_dir():
            raise InputError(f"sintel: {base / 'final'} not found (expected MPI-Sintel's training/final/<sequence>/)")
        items = []
        for seq in seqs:
            frames = sorted((base / "final" / seq).glob("frame_*.png"))
            if not frames:
                raise InputError(f"sintel: no frames in {base / 'final' / seq}")
            for f in frames:
                items.append(Item(f"final/{seq}/{f.stem}", f, base / "depth" / seq / (f.stem + ".dpt"), {"scene": seq}))
                if limit and len(items) >= limit:
                    return items
        return items


class Folder(Benchmark):
    """Anyone's own data: ``rgb/`` and ``depth/`` folders paired by
    :func:`bridgedepth.data.sources.pairing.pair_files` (identical stems, else digit groups, else a
    list file given as the split), depth decoded with a named ``encoding``; 1e-3..inf m by default."""

    name = "folder"
    min_depth = 1e-3
    max_depth = math.inf
    description = "rgb/ + depth/ folders with a named encoding, 1e-3..inf m (overridable)"

    def __init__(self, root, split=None, **options: Any):
        super().__init__(root, split, **options)
        self.encoding = options.get("encoding")
        if not self.encoding:
            raise InputError("folder: pass --encoding (e.g. png-mm, png-kitti, npy, pfm, exr)")

    def _list(self, limit):
        from ..sources.pairing import pair_files

        rgb_dir, depth_dir = self.root / "rgb", self.root / "depth"
        for d in (rgb_dir, depth_dir):
            if not d.is_dir():
                raise InputError(f"folder: {d} not found (expected rgb/ and depth/ under {self.root})")
        pairs = pair_files(rgb_dir, depth_dir, self.split)
        pairs = pairs[:limit] if limit else pairs
        out = []
        for r, d in pairs:
            try:
                rel = str(r.relative_to(rgb_dir))
            except ValueError:  # an absolute path in a list file
                rel = r.name
            out.append(Item(rel_key(rel), r, d))
        return out
