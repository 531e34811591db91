"""Pair RGB files with depth files: by identical stem, else by the digits in the names, else by an
explicit list file. Ambiguity is an error, never a guess."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from ...errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".tif", ".tiff", ".webp"}
_DIGITS = re.compile(r"\d+")


def _files(folder: Path, suffixes: set[str] | None = None) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    out = [p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    if suffixes is not None:
        out = [p for p in out if p.suffix.lower() in suffixes]
    return out


def _rel_stem(path: Path, root: Path) -> str:
    return str(path.relative_to(root).with_suffix(""))


def _digits_key(path: Path, root: Path) -> str | None:
    rel = path.relative_to(root)
    parent = str(rel.parent) if str(rel.parent) != "." else ""
    groups = _DIGITS.findall(rel.stem)
    return f"{parent}/{'_'.join(groups)}" if groups else None


def pair_files(
    rgb_dir: str | Path,
    depth_dir: str | Path,
    list_file: str | Path | None = None,
) -> list[tuple[Path, Path]]:
    """Return (rgb_path, depth_path) pairs sorted by RGB path.

    * ``list_file``: each non-empty, non-# line is ``RGB DEPTH`` (paths relative to the two folders,
      or absolute). Missing files are errors naming the line.
    * otherwise, identical relative stems pair (``a/0001.jpg`` with ``a/0001.png``);
    * otherwise, the digit groups of the names pair (``rgb_00050.jpg`` with ``sync_depth_00050.png``).
    A key that matches several files on either side is an error listing them.
    """
    rgb_dir, depth_dir = Path(rgb_dir), Path(depth_dir)
    if list_file is not None:
        pairs = []
        for no, line in enumerate(Path(list_file).read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2:
                raise InputError(f"{list_file}:{no}: expected 'RGB DEPTH', got {line!r}")
            r = Path(parts[0]) if Path(parts[0]).is_absolute() else rgb_dir / parts[0]
            d = Path(parts[1]) if Path(parts[1]).is_absolute() else depth_dir / parts[1]
            for p in (r, d):
                if not p.exists():
                    raise InputError(f"{list_file}:{no}: {p} does not exist")
            pairs.append((r, d))
        return pairs

    rgbs = _files(rgb_dir, IMAGE_SUFFIXES)
    depths = _files(depth_dir)
    if not rgbs:
        raise InputError(f"{rgb_dir}: no images found")
    if not depths:
        raise InputError(f"{depth_dir}: no depth files found")

    for keyfn in (lambda p, root: _rel_stem(p, root), _digits_key):
        rk, dk = defaultdict(list), defaultdict(list)
        for p in rgbs:
            k = keyfn(p, rgb_dir)
            if k is not None:
                rk[k].append(p)
        for p in depths:
            k = keyfn(p, depth_dir)
            if k is not None:
                dk[k].append(p)
        common = sorted(set(rk) & set(dk))
        if not common:
            continue
        for k in common:
            if len(rk[k]) > 1 or len(dk[k]) > 1:
                names = [str(p) for p in rk[k] + dk[k]]
                raise InputError(
                    f"ambiguous pairing for key '{k}': {', '.join(names)}; pass an explicit list file"
                )
        return sorted(((rk[k][0], dk[k][0]) for k in common), key=lambda t: str(t[0]))
    raise InputError(
        f"cannot pair {rgb_dir} with {depth_dir}: no common stems or digit groups; pass an explicit list file"
    )
