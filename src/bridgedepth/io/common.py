"""Shared pieces of ``bridgedepth.io``: the typed error, safe file reading, the pixel limit and atomic
writes. Imports nothing of bridgedepth except ``errors``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from ..errors import InputError, raise_if_storage

# The largest image (in pixels) any reader decodes. A decompression bomb (a tiny file that claims a
# huge size) is refused before decoding. 150 M pixels (about 12000 x 12500) is well above real depth
# and image files (ETH3D's 6048 x 4032 is 24 M), well below what would exhaust memory as float32.
MAX_IMAGE_PIXELS = 150_000_000


class FormatError(InputError):
    """A depth or image file cannot be decoded (or an array cannot be encoded) as asked.

    ``path`` is the file, ``reason`` the plain-words cause; ``str(err)`` is ``"PATH: REASON"``.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path is not None else reason)


def read_file_bytes(path: str | os.PathLike, what: str = "file") -> bytes:
    """Read a whole file, turning missing / directory / empty into a :class:`FormatError`."""
    p = check_file(path, what)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise FormatError(p, f"cannot read: {e.strerror or e}") from e
    if not data:
        raise FormatError(p, "empty file (0 bytes)")
    return data


def check_file(path: str | os.PathLike, what: str = "file") -> Path:
    """The same checks as :func:`read_file_bytes` without reading (for libraries that take a path)."""
    p = Path(path)
    if not p.exists():
        raise FormatError(p, f"no such {what}")
    if p.is_dir():
        raise FormatError(p, f"is a directory, not a {what}")
    if p.stat().st_size == 0:
        raise FormatError(p, "empty file (0 bytes)")
    return p


def check_pixels(path, width: int, height: int, limit: int | None = None) -> None:
    """Refuse non-positive sizes and sizes above the pixel limit (decompression bombs)."""
    limit = MAX_IMAGE_PIXELS if limit is None else int(limit)
    if width <= 0 or height <= 0:
        raise FormatError(path, f"invalid size {width}x{height} in the header")
    if width * height > limit:
        raise FormatError(
            path,
            f"image of {width}x{height} = {width * height} pixels exceeds the limit of {limit} pixels "
            "(possible decompression bomb); raise bridgedepth.io.common.MAX_IMAGE_PIXELS if it is genuine",
        )


def file_stamps(paths) -> tuple[tuple[str, int, int], ...]:
    """(path, size, mtime_ns) of every file at or under ``paths`` (folders walked, links followed to
    their targets' stats), sorted: what a cache keys on to notice a checkpoint or set rewritten in
    place. Files that vanish while walking are left out."""
    out = []
    for root in paths:
        root = Path(root)
        for f in ([root] if root.is_file() else root.rglob("*") if root.is_dir() else []):
            try:
                if f.is_file():
                    st = f.stat()
                    out.append((str(f), st.st_size, st.st_mtime_ns))
            except OSError:
                continue
    return tuple(sorted(out))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _mkstemp(folder: Path, prefix: str, suffix: str) -> Path:
    """mkstemp creates 0600 files; give the result the usual permissions (0666 minus the umask)."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
    except (AttributeError, OSError):  # pragma: no cover - platforms without fchmod
        pass
    os.close(fd)
    return Path(tmp)


def usual_permissions(*paths: str | os.PathLike) -> None:
    """Give files (or every file under a folder) the mode an ordinary ``open()`` gives: 0666 minus
    the umask. ``tempfile.mkstemp`` and safetensors' ``save_file`` (0.8, also inside transformers'
    and diffusers' ``save_pretrained``) create private 0600 files, which the other users of a shared
    checkpoint or dataset folder cannot read."""
    mode = 0o666 & ~_UMASK
    for p in map(Path, paths):
        for f in (q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]:
            with contextlib.suppress(OSError):
                os.chmod(f, mode)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success fsync it and rename it onto ``path``.

    For libraries that insist on writing to a file name themselves (OpenEXR, h5py). The temporary
    name keeps the target's suffix (some libraries choose the format from it). On an exception the
    temporary file is removed and the target is left as it was.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    keep = target.suffix if suffix is None else suffix
    tmp_path = _mkstemp(folder, f".{target.name}.", f".tmp{keep}")
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
        _fsync_dir(folder)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(e, OSError):
            raise_if_storage(e, target)
            raise
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on success flush, fsync and rename it onto
    ``path``. Readers therefore see either the old file or the complete new one, never a partial one.
    On an exception the temporary file is removed and ``path`` is untouched.
    """
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write needs a 'w' mode ('w', 'wb', 'wt'), got {mode!r}")
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    tmp_path = _mkstemp(folder, f".{target.name}.", ".tmp")
    try:
        with open(tmp_path, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
        _fsync_dir(folder)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        if isinstance(e, OSError):
            raise_if_storage(e, target)
            raise
        raise
