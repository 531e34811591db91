"""Pair RGB files with depth files: by identical stem, else by the digits in the names, else by an
explicit list file. Ambiguity is an error, never a guess."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import InputError
from ...io.image import IMAGE_SUFFIXES
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


@dataclass
class PairingResult:
    """Pairs plus what did not pair: files on one side without a partner, and list-file lines
    naming a file that does not exist (``(line, path)``)."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    unpaired_rgb: list[Path] = field(default_factory=list)
    unpaired_depth: list[Path] = field(default_factory=list)
    missing: list[tuple[str, Path]] = field(default_factory=list)


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
    return pair_files_report(rgb_dir, depth_dir, list_file, strict=True).pairs


def pair_files_report(
    rgb_dir: str | Path,
    depth_dir: str | Path,
    list_file: str | Path | None = None,
    *,
    strict: bool = False,
) -> PairingResult:
    """Like :func:`pair_files`, but also returns the files that did not pair. With ``strict=False``
    a list-file line naming a missing file is recorded in ``missing`` instead of raising (the line
    is still an error if malformed). Ambiguity is always an error."""
    rgb_dir, depth_dir = Path(rgb_dir), Path(depth_dir)
    result = PairingResult()
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
            gone = [p for p in (r, d) if not p.exists()]
            if gone and strict:
                raise InputError(f"{list_file}:{no}: {gone[0]} does not exist")
            if gone:
                result.missing.extend((f"{list_file}:{no}", p) for p in gone)
                continue
            pairs.append((r, d))
        result.pairs = pairs
        return result

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
        result.pairs = sorted(((rk[k][0], dk[k][0]) for k in common), key=lambda t: str(t[0]))
        paired_r = {p for p, _ in result.pairs}
        paired_d = {p for _, p in result.pairs}
        result.unpaired_rgb = [p for p in rgbs if p not in paired_r]
        result.unpaired_depth = [p for p in depths if p not in paired_d]
        return result
    raise InputError(
        f"cannot pair {rgb_dir} with {depth_dir}: no common stems or digit groups; pass an explicit list file"
    )
