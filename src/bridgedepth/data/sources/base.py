"""The adapter protocol shared by every source dataset.

An adapter does two things:

* ``index()`` walks the dataset's native layout and returns one :class:`SampleRef` per frame it
  finds (cheap: file names only). A frame whose depth or RGB file is missing is still listed, so
  that loading it reports the missing path instead of the frame vanishing.
* ``load(ref)`` reads one frame and returns a sample dict in the schema of docs/architecture.md
  (``__key__``, ``rgb``, ``depth`` metres float32 with 0 where invalid, ``valid``, ``intrinsics``,
  ``meta``), or raises :class:`SampleError` naming the file and the reason.

``iter_samples`` and the converter skip a bad frame, record it in a :class:`SourceReport` and go on:
nothing is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...errors import InputError

_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-]+")


class SampleError(InputError):
    """One frame of a source dataset is unusable. ``path`` is the offending file."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass
class SampleRef:
    """Everything ``load`` needs to read one frame: its key and its files (some may not exist)."""

    key: str
    files: dict[str, Path]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Skipped:
    key: str
    path: str
    reason: str

    def to_dict(self) -> dict:
        return {"key": self.key, "path": self.path, "reason": self.reason}


@dataclass
class SourceReport:
    """What happened to every indexed frame: loaded, or skipped with the path and the reason."""

    dataset: str
    total: int = 0
    loaded: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def add_skip(self, key: str, path: str, reason: str) -> None:
        self.skipped.append(Skipped(key, path, reason))

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "total": self.total,
            "loaded": self.loaded,
            "skipped": len(self.skipped),
            "skipped_samples": [s.to_dict() for s in self.skipped],
        }

    def summary(self) -> str:
        lines = [f"{self.dataset}: {self.loaded} of {self.total} samples read, {len(self.skipped)} skipped"]
        for s in self.skipped:
            lines.append(f"  skipped {s.key}: {s.path}: {s.reason}")
        return "\n".join(lines)


def make_key(*parts: str) -> str:
    """A sample key from path parts: only letters, digits, '_' and '-' (no dots, no slashes)."""
    pieces = [_KEY_BAD.sub("_", str(p)).strip("_") for p in parts if str(p) not in ("", ".")]
    key = "-".join(p for p in pieces if p)
    if not key:
        raise InputError(f"cannot build a sample key from {parts!r}")
    return key


def unique_keys(refs: list[SampleRef]) -> list[SampleRef]:
    """Make keys unique (sanitising can merge two names): later duplicates get a numeric suffix."""
    seen: dict[str, int] = {}
    for r in refs:
        if r.key in seen:
            seen[r.key] += 1
            r.key = f"{r.key}_{seen[r.key]}"
        else:
            seen[r.key] = 0
    return refs


def check_same_size(rgb: np.ndarray, depth: np.ndarray, rgb_path: Path, depth_path: Path) -> None:
    if rgb.shape[:2] != depth.shape[:2]:
        raise SampleError(
            depth_path,
            f"size mismatch: depth is {depth.shape[1]}x{depth.shape[0]} (WxH) but the RGB image "
            f"{rgb_path} is {rgb.shape[1]}x{rgb.shape[0]}",
        )


def finalize_depth(depth: np.ndarray, valid: np.ndarray | None = None, max_depth: float | None = None):
    """Float32 metres with 0 wherever invalid, plus the explicit bool mask (finite, > 0, <= max)."""
    depth = np.asarray(depth, dtype=np.float32)
    ok = np.isfinite(depth) & (depth > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    if max_depth is not None:
        ok &= depth <= max_depth
    out = np.where(ok, depth, np.float32(0)).astype(np.float32)
    return out, ok


def intrinsics_array(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    return np.array([fx, fy, cx, cy], dtype=np.float32)


def rel(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


class SourceAdapter:
    """Base class. Subclasses set ``name``, ``description`` (one line), ``layout`` (a short tree of
    the expected files), ``encodings`` (accepted depth encodings, default first) and ``options``
    (option name -> one-line help), and implement ``index`` and ``load``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    layout: ClassVar[str] = ""
    encodings: ClassVar[tuple[str, ...]] = ()
    options: ClassVar[dict[str, str]] = {}
    metric: ClassVar[bool] = True

    def __init__(self, root: str | Path, encoding: str | None = None, **options: Any):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: dataset root is not a folder")
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            valid = ", ".join(sorted(self.options)) or "none"
            raise InputError(f"{self.name}: unknown option(s) {', '.join(unknown)}; valid options: {valid}")
        if encoding is not None and self.encodings and encoding not in self.encodings:
            raise InputError(
                f"{self.name}: depth encoding {encoding!r} is not one this dataset uses; "
                f"expected one of {', '.join(self.encodings)}"
            )
        self.encoding = encoding or (self.encodings[0] if self.encodings else None)
        self.opts = dict(options)
        self.validate()

    def validate(self) -> None:
        """Check option values up front (raise InputError); subclasses extend."""
        for name in ("focal", "baseline", "max_depth"):
            if name in self.options:
                v = self.opt(name, None, float)
                if v is not None and not v > 0:
                    raise InputError(f"{self.name}: option {name}={v}: must be positive")

    # -- to implement -------------------------------------------------------------------------
    def index(self) -> list[SampleRef]:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, ref: SampleRef) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------
    def opt(self, name: str, default: Any = None, cast: type | None = None) -> Any:
        v = self.opts.get(name, default)
        if v is None or cast is None:
            return v
        try:
            return cast(v)
        except (TypeError, ValueError) as e:
            raise InputError(f"{self.name}: option {name}={v!r} is not a valid {cast.__name__}") from e

    def refs(self) -> list[SampleRef]:
        refs = unique_keys(self.index())
        if not refs:
            raise InputError(f"{self.root}: no {self.name} frames found; expected layout:\n{self.layout}")
        return refs

    def base_meta(self, ref: SampleRef, **extra: Any) -> dict:
        meta = {
            "dataset": self.name,
            "kind": "source",
            "metric": self.metric,
            "encoding": self.encoding,
            "files": {k: rel(v, self.root) for k, v in ref.files.items() if v is not None},
        }
        meta.update(ref.info)
        meta.update(extra)
        return meta

    def try_load(self, ref: SampleRef, report: SourceReport | None = None) -> dict | None:
        """``load`` that turns any per-file failure into a recorded skip (and returns None)."""
        try:
            sample = self.load(ref)
        except SampleError as e:
            if report is None:
                raise
            report.add_skip(ref.key, e.path, e.reason)
            return None
        except (InputError, OSError, ValueError, KeyError) as e:
            path = next((str(p) for p in ref.files.values() if p is not None), "?")
            if report is None:
                raise SampleError(path, f"unreadable: {e}") from e
            report.add_skip(ref.key, path, f"unreadable: {e}")
            return None
        if report is not None:
            report.loaded += 1
        return sample

    def iter_samples(self, report: SourceReport | None = None, limit: int | None = None) -> Iterator[dict]:
        """Yield good samples; bad ones go to ``report`` (one is made if not given)."""
        report = report if report is not None else SourceReport(self.name)
        refs = self.refs()
        if limit is not None:
            refs = refs[:limit]
        report.total += len(refs)
        for ref in refs:
            s = self.try_load(ref, report)
            if s is not None:
                yield s
