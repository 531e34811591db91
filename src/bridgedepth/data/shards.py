"""The shard store: WebDataset tar shards plus a manifest, written atomically and resumable.

Layout of a dataset directory (see docs/shards.md)::

    shard-000000.tar        samples [0, n)          (WebDataset tar: "{__key__}.{field}.{ext}")
    shard-000000.tar.json   that shard's status: sample count, sha256, skipped samples
    shard-000001.tar ...
    manifest.json           the whole set, rebuilt from the status files

A writer builds each shard under a temporary name (``shard-000003.tar.tmp-<id>``), fsyncs it,
renames it into place and only then writes its status file (atomically). A shard is *complete*
when its status file exists and the tar's sha256 matches the one recorded there; anything else is
incomplete and is rewritten by the next run of the writer. Each rank writes only the shards it owns
(``i % world_size == rank``) and only its own status files; ``manifest.json`` is a summary rebuilt
from all status files under a file lock, so ranks never clobber each other's results.

Readers refuse a shard whose checksum does not match, and refuse tar members that are not plain
files or whose names are not flat ``key.field.ext`` names (absolute paths, ``..``, links, devices).
This module imports no torch; the PyTorch ``ShardDataset`` lives in ``bridgedepth.data.loader`` and
is re-exported here lazily.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import tarfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .. import faults
from ..errors import InputError, raise_if_storage

FORMAT = "bridgedepth-shards"
VERSION = 1
MANIFEST = "manifest.json"
SHARD_RE = re.compile(r"^shard-(\d{6,})\.tar$")
TMP_MARK = ".tmp-"
LOCK_NAME = ".manifest.lock"
_KEY_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_FIELD_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_IMAGE_EXTS = ("png", "jpg", "jpeg")

__all__ = [
    "ShardError",
    "ShardInfo",
    "Manifest",
    "Problem",
    "VerifyReport",
    "encode_sample",
    "decode_sample",
    "write_dataset",
    "map_dataset",
    "iter_samples",
    "iter_shard",
    "iter_shard_members",
    "IndexedShard",
    "SOURCE_CONTEXT",
    "load_manifest",
    "rebuild_manifest",
    "verify_dataset",
    "shard_name",
    "ShardDataset",
]


class ShardError(InputError):
    """A shard or dataset directory is unusable: bad checksum, unsafe or unreadable member, incomplete."""


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


# --------------------------------------------------------------------------------------------
# Sample encoding
# --------------------------------------------------------------------------------------------


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise InputError(
            f"sample key {key!r}: keys must be non-empty strings of letters, digits, '_' or '-' "
            "(no dots, no slashes)"
        )
    return key


def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def _encode_png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _is_png_array(v: np.ndarray) -> bool:
    if v.dtype == np.bool_:
        return v.ndim == 2 and v.size > 0
    if v.dtype == np.uint8:
        return v.size > 0 and (v.ndim == 2 or (v.ndim == 3 and v.shape[2] in (3, 4)))
    return False


def encode_field(name: str, value: Any) -> tuple[str, bytes]:
    """Encode one field value; returns (extension, bytes).

    bool (H, W) masks and uint8 (H, W[, 3|4]) images -> PNG (1-bit for bool); other arrays -> .npy
    (no pickles); dict / list / number / bool / None -> .json; str -> .txt; bytes -> .bin.
    """
    if isinstance(value, np.ndarray):
        if _is_png_array(value):
            return "png", _encode_png(np.ascontiguousarray(value))
        if value.dtype.hasobject:
            raise InputError(f"field {name!r}: object arrays cannot be stored")
        buf = io.BytesIO()
        np.save(buf, value, allow_pickle=False)
        return "npy", buf.getvalue()
    if isinstance(value, np.generic):
        return encode_field(name, np.asarray(value))
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bin", bytes(value)
    if isinstance(value, str):
        return "txt", value.encode("utf-8")
    if value is None or isinstance(value, (dict, list, tuple, int, float, bool)):
        try:
            text = json.dumps(value, sort_keys=True, default=_json_default, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise InputError(f"field {name!r}: not JSON-serialisable ({e})") from e
        return "json", text.encode("utf-8")
    if type(value).__module__.startswith("torch"):
        raise InputError(f"field {name!r}: convert torch tensors to numpy arrays before storing")
    raise InputError(f"field {name!r}: cannot store a value of type {type(value).__name__}")


def decode_field(ext: str, data: bytes, *, where: str = "") -> Any:
    """Decode the bytes of one member by its extension (inverse of :func:`encode_field`)."""
    try:
        if ext in _IMAGE_EXTS:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as img:
                img.load()
                if img.mode not in ("1", "L", "RGB", "RGBA", "I;16", "I"):
                    img = img.convert("RGBA" if "A" in img.mode else "RGB")
                return np.array(img)
        if ext == "npy":
            return np.load(io.BytesIO(data), allow_pickle=False)
        if ext == "json":
            return json.loads(data.decode("utf-8"))
        if ext == "txt":
            return data.decode("utf-8")
        if ext == "bin":
            return bytes(data)
    except Exception as e:  # noqa: BLE001 - any decoder failure is a bad member
        raise ShardError(f"{where or ext}: cannot decode .{ext} member ({type(e).__name__}: {e})") from e
    raise ShardError(f"{where or ext}: unknown member extension .{ext}")


def encode_sample(sample: dict) -> dict[str, bytes]:
    """Encode a sample dict into tar members ``{"{__key__}.{field}.{ext}": bytes}``."""
    if "__key__" not in sample:
        raise InputError("sample has no '__key__'")
    key = _check_key(sample["__key__"])
    out: dict[str, bytes] = {}
    for field, value in sample.items():
        if field.startswith("__"):
            continue
        if not isinstance(field, str) or not _FIELD_RE.match(field):
            raise InputError(f"sample {key!r}: field name {field!r} must be letters, digits, '_' or '-'")
        ext, data = encode_field(f"{key}.{field}", value)
        out[f"{key}.{field}.{ext}"] = data
    return out


def _split_member(name: str, where: str) -> tuple[str, str, str]:
    parts = name.split(".")
    if len(parts) != 3 or not all(parts):
        raise ShardError(f"{where}: member {name!r} is not named 'key.field.ext'")
    return parts[0], parts[1], parts[2].lower()


def decode_sample(members: dict[str, bytes], *, fields: Iterable[str] | None = None, where: str = "") -> dict:
    """Decode ``{"{key}.{field}.{ext}": bytes}`` members of one sample into a sample dict.

    ``fields`` limits decoding to those field names (the others are not decoded at all).
    """
    wanted = None if fields is None else set(fields)
    sample: dict[str, Any] = {}
    key = None
    for name, data in members.items():
        k, field, ext = _split_member(name, where or name)
        if key is None:
            key = k
        elif k != key:
            raise ShardError(f"{where or name}: members of different samples ({key!r}, {k!r}) mixed")
        if field in sample:
            raise ShardError(f"{where or name}: field {field!r} of sample {key!r} appears twice")
        if wanted is not None and field not in wanted:
            continue
        sample[field] = decode_field(ext, data, where=f"{where}:{name}" if where else name)
    if key is None:
        raise ShardError(f"{where or 'sample'}: no members")
    sample["__key__"] = key
    return sample


# --------------------------------------------------------------------------------------------
# Safe tar reading
# --------------------------------------------------------------------------------------------


def _check_member(info: tarfile.TarInfo, shard: str) -> None:
    name = info.name
    if not info.isreg():
        kind = (
            "symlink" if info.issym() else "hard link" if info.islnk() else
            "device" if (info.ischr() or info.isblk()) else "directory" if info.isdir() else
            "fifo" if info.isfifo() else "special member"
        )
        raise ShardError(f"{shard}: refusing {kind} member {name!r} (only plain files are allowed)")
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise ShardError(f"{shard}: refusing member {name!r} with an absolute path")
    if ".." in re.split(r"[/\\]", name):
        raise ShardError(f"{shard}: refusing member {name!r} that points outside the shard ('..')")
    if "/" in name or "\\" in name or "\x00" in name:
        raise ShardError(f"{shard}: refusing member {name!r} (members must be flat 'key.field.ext' names)")


def _check_tar_end(f, where: str) -> None:
    """A whole tar is a sequence of 512-byte blocks ending with two zero blocks; a file cut short
    (a copy or a write that stopped) is refused here, since tarfile treats a cut header as the end."""
    size = os.fstat(f.fileno()).st_size
    if size == 0:
        raise ShardError(f"{where}: empty file (0 bytes), not a tar shard")
    tail = b""
    if size % 512 == 0 and size >= 1024:
        f.seek(size - 1024)
        tail = f.read(1024)
        f.seek(0)
    if size % 512 or tail.count(0) != 1024:
        raise ShardError(f"{where}: truncated or not a tar: no end-of-archive marker "
                         f"({size} bytes{', not a multiple of 512' if size % 512 else ''})")


def _iter_tar_groups(path: Path, *, where: str | None = None) -> Iterator[dict[str, bytes]]:
    """Yield the members of each sample, grouped by key, in file order; refuses unsafe members."""
    where = where or str(path)
    seen: set[str] = set()
    group: dict[str, bytes] = {}
    current = None
    try:
        with open(path, "rb") as f:
            _check_tar_end(f, where)
            with tarfile.open(fileobj=f, mode="r|") as tar:
                for info in tar:
                    _check_member(info, where)
                    key, _field, _ext = _split_member(info.name, where)
                    if key != current:
                        if group:
                            yield group
                        if key in seen:
                            raise ShardError(f"{where}: sample key {key!r} appears twice (members not contiguous)")
                        seen.add(key)
                        group, current = {}, key
                    fobj = tar.extractfile(info)
                    assert fobj is not None  # regular file
                    data = fobj.read()
                    if len(data) != info.size:
                        raise ShardError(f"{where}: member {info.name!r} is truncated "
                                         f"({len(data)} of its declared {info.size} bytes)")
                    group[info.name] = data
    except tarfile.TarError as e:
        raise ShardError(f"{where}: unreadable tar ({e})") from e
    if group:
        yield group


# --------------------------------------------------------------------------------------------
# Checksums and atomic files
# --------------------------------------------------------------------------------------------

_SHA_CACHE: dict[tuple, str] = {}


def sha256_file(path: str | os.PathLike, *, cache: bool = False) -> str:
    """sha256 hex digest of a file. With ``cache``, reuse a digest for an unchanged (inode, size,
    mtime_ns) file within this process."""
    st = os.stat(path)
    ck = (os.fspath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if cache and ck in _SHA_CACHE:
        return _SHA_CACHE[ck]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    digest = h.hexdigest()
    if cache:
        _SHA_CACHE[ck] = digest
    return digest


def weights_sha256(path: str | os.PathLike) -> dict[str, str]:
    """What a model is, for telling two apart: the sha256 of every ``*.safetensors`` file under a
    model folder, by path relative to it (of the file itself when ``path`` is a file, e.g. an .onnx
    export). A retrained model at the same place gives other digests. Cached per unchanged file."""
    p = Path(path)
    if p.is_file():
        return {p.name: sha256_file(p, cache=True)}
    return {str(f.relative_to(p)): sha256_file(f, cache=True) for f in sorted(p.rglob("*.safetensors"))}


def weights_digest(path: str | os.PathLike) -> str:
    """One sha256 over :func:`weights_sha256` (every relative path with its digest): a model's identity
    as a single value for the settings a rerun compares."""
    h = hashlib.sha256()
    for rel, digest in weights_sha256(path).items():
        h.update(f"{rel}={digest}\n".encode())
    return h.hexdigest()


def _fsync_dir(d: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(f"{path.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=1, sort_keys=False, default=_json_default)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise_if_storage(e, path)
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@contextlib.contextmanager
def _dir_lock(d: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no lock (single-writer use only)
        yield
        return
    with open(d / LOCK_NAME, "a+") as lf:
        fcntl.flock(lf.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lf.fileno(), fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ShardInfo:
    """One shard's status (the content of ``shard-XXXXXX.tar.json``)."""

    name: str
    complete: bool = False
    samples: int = 0
    sha256: str | None = None
    bytes: int = 0
    skipped: list[dict] = dataclasses.field(default_factory=list)
    start: int | None = None  # write_dataset: first index (inclusive)
    stop: int | None = None  # write_dataset: last index (exclusive)
    source_sha256: str | None = None  # map_dataset: checksum of the input shard it was made from
    inputs: int | None = None  # map_dataset: samples read from the input shard

    def to_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict) -> ShardInfo:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclasses.dataclass
class Manifest:
    """A dataset directory's manifest (``manifest.json``)."""

    dir: str
    kind: str = "write"  # "write" (write_dataset) or "map" (map_dataset)
    shards: list[ShardInfo] = dataclasses.field(default_factory=list)
    samples_per_shard: int | None = None
    num_inputs: int | None = None  # write_dataset: num_samples requested
    source: str | None = None  # map_dataset: input directory
    meta: dict = dataclasses.field(default_factory=dict)

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards if s.complete)

    @property
    def num_skipped(self) -> int:
        return sum(len(s.skipped) for s in self.shards if s.complete)

    @property
    def complete(self) -> bool:
        return all(s.complete for s in self.shards)

    def incomplete(self) -> list[str]:
        return [s.name for s in self.shards if not s.complete]

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "kind": self.kind,
            "complete": self.complete,
            "num_shards": self.num_shards,
            "num_samples": self.num_samples,
            "num_skipped": self.num_skipped,
        }
        if self.samples_per_shard is not None:
            d["samples_per_shard"] = self.samples_per_shard
        if self.num_inputs is not None:
            d["num_inputs"] = self.num_inputs
        if self.source is not None:
            d["source"] = self.source
        d["meta"] = self.meta
        d["shards"] = [s.to_dict() for s in self.shards]
        return d


def _status_path(d: Path, name: str) -> Path:
    return d / f"{name}.json"


def _read_status(d: Path, name: str) -> ShardInfo | None:
    p = _status_path(d, name)
    try:
        with open(p, encoding="utf-8") as f:
            return ShardInfo.from_dict(json.load(f))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        return None  # unreadable status = incomplete shard


def _shard_files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if SHARD_RE.match(p.name))


def _status_files(d: Path) -> list[str]:
    out = []
    for p in d.iterdir():
        if p.name.endswith(".tar.json") and SHARD_RE.match(p.name[: -len(".json")]):
            out.append(p.name[: -len(".json")])
    return sorted(out)


def temp_files(d: str | os.PathLike) -> list[str]:
    """Temporary files left in a dataset directory (by a writer that is running or was interrupted)."""
    return sorted(p.name for p in Path(d).iterdir() if TMP_MARK in p.name)


def rebuild_manifest(
    out_dir: str | os.PathLike,
    shard_names: Iterable[str] | None = None,
    *,
    kind: str | None = None,
    samples_per_shard: int | None = None,
    num_inputs: int | None = None,
    source: str | None = None,
    meta: dict | None = None,
) -> Manifest:
    """Rebuild ``manifest.json`` from the per-shard status files, under a directory lock.

    ``shard_names`` is the list of shards the dataset should have (missing ones are listed as
    incomplete); by default the previous manifest's list plus every status file present. Dataset
    fields left as None keep their values from the previous manifest.
    """
    d = Path(out_dir)
    with _dir_lock(d):
        for p in d.glob(f"{MANIFEST}{TMP_MARK}*"):  # left by a killed rebuild (rebuilds hold the lock)
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        prev = _read_manifest_json(d)
        if shard_names is None:
            names = set(s["name"] for s in prev.get("shards", [])) | set(_status_files(d))
        else:
            names = set(shard_names)
        shards = []
        for name in sorted(names):
            info = _read_status(d, name)
            if info is None or not (d / name).exists():
                info = ShardInfo(name=name, complete=False)
            shards.append(info)
        m = Manifest(
            dir=str(d),
            kind=kind or prev.get("kind", "write"),
            shards=shards,
            samples_per_shard=samples_per_shard if samples_per_shard is not None else prev.get("samples_per_shard"),
            num_inputs=num_inputs if num_inputs is not None else prev.get("num_inputs"),
            source=source if source is not None else prev.get("source"),
            meta=meta if meta is not None else prev.get("meta", {}),
        )
        _write_json_atomic(d / MANIFEST, m.to_dict())
    return m


def check_rerun_output(out: Path, stage: str, what: str, compare: Callable[[dict], list], overwrite: bool, *,
                       made: str, redo: str, named: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> None:
    """Refuse, or with ``overwrite`` clear, an output folder that another job made, or this job with other
    settings: a rerun skips finished shards, so it would mix old and new work under the new settings.
    ``stage``: what the manifest's ``meta.stage`` must say (``what`` names it for the message);
    ``compare(meta)``: the :func:`~bridgedepth.config.changed_settings` between what the folder's
    manifest recorded and this run; ``made`` / ``redo``: the job's verbs for the message; ``named``:
    fixed texts for values that mean nothing to a reader; ``extra``: files the job writes beside its
    shards, cleared with them."""
    from ..config import describe_changes

    if not (out / MANIFEST).exists():
        return
    meta = _read_manifest_json(out).get("meta", {}) or {}
    if meta.get("stage") != stage:
        raise InputError(f"{out}: holds a {meta.get('stage') or 'different'} dataset, not {what}; choose another --out")
    changes = compare(meta)
    if not changes:
        return
    if not overwrite:
        shown = describe_changes(changes, limit=6, form="{key}: {old!r} in the folder, {new!r} now", named=named)
        raise InputError(f"{out}: its shards were {made} with other settings ({shown}); a rerun would mix old and "
                         f"new work. Use another --out, or --overwrite to {redo}")
    for f in out.iterdir():
        if f.name.startswith("shard-") or f.name in (MANIFEST, *extra):
            f.unlink()


def _read_manifest_json(d: Path) -> dict:
    try:
        with open(d / MANIFEST, encoding="utf-8") as f:
            obj = json.load(f)
        return obj if isinstance(obj, dict) else {}
    except (OSError, ValueError):
        return {}


def load_manifest(in_dir: str | os.PathLike) -> Manifest:
    """Load a dataset directory's manifest, refreshed from the per-shard status files (which are the
    source of truth; ``manifest.json`` may lag behind a rank that is still running)."""
    d = Path(in_dir)
    if not d.is_dir():
        raise InputError(f"{d}: not a directory")
    raw_path = d / MANIFEST
    raw: dict = {}
    if raw_path.exists():
        try:
            with open(raw_path, encoding="utf-8") as f:
                raw = json.load(f)
        except (OSError, ValueError) as e:
            raise ShardError(f"{raw_path}: unreadable manifest ({e})") from e
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ShardError(f"{raw_path}: not a {FORMAT} manifest")
        if int(raw.get("version", 0)) > VERSION:
            raise ShardError(f"{raw_path}: manifest version {raw.get('version')} is newer than this bridgedepth")
    names = set(s["name"] for s in raw.get("shards", []) if isinstance(s, dict) and "name" in s)
    names |= set(_status_files(d))
    if not raw and not names:
        if _shard_files(d):
            names = set(_shard_files(d))
        else:
            raise InputError(f"{d}: not a shard dataset (no {MANIFEST}, no shard-*.tar)")
    shards = []
    for name in sorted(names):
        info = _read_status(d, name)
        if info is None or not (d / name).exists():
            info = ShardInfo(name=name, complete=False)
        shards.append(info)
    return Manifest(
        dir=str(d),
        kind=raw.get("kind", "write"),
        shards=shards,
        samples_per_shard=raw.get("samples_per_shard"),
        num_inputs=raw.get("num_inputs"),
        source=raw.get("source"),
        meta=raw.get("meta", {}) or {},
    )


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------



def require_complete(in_dir: str | os.PathLike, hint: str, allow_incomplete: bool = False) -> Manifest:
    """The manifest of ``in_dir``; a :class:`ShardError` naming the incomplete shards (and ``hint``,
    what to do about them) unless every shard is complete or ``allow_incomplete``."""
    m = load_manifest(in_dir)
    if not m.complete and not allow_incomplete:
        bad = m.incomplete()
        raise ShardError(
            f"{in_dir}: {len(bad)} incomplete shard(s) ({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}); {hint}"
        )
    return m


def _shard_is_complete(d: Path, name: str, check: Callable[[ShardInfo], bool] = lambda s: True) -> bool:
    info = _read_status(d, name)
    if info is None or not info.complete or not check(info):
        return False
    p = d / name
    if not p.exists():
        return False
    return sha256_file(p) == info.sha256


def _remove_temps(d: Path, name: str) -> None:
    for p in [*d.glob(f"{name}{TMP_MARK}*"), *d.glob(f"{name}.json{TMP_MARK}*")]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


class _HashingFile:
    """A write-only file wrapper that computes the sha256 of everything written through it."""

    def __init__(self, f):
        self.f = f
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, b) -> int:
        n = self.f.write(b)
        self.h.update(b)
        self.size += len(b)
        return n

    def flush(self) -> None:
        self.f.flush()


_STOP = object()


class _ShardWriter:
    """Write one shard: temp file -> fsync -> rename -> status file.

    The sha256 is computed while the bytes are written (no second read of the file). With
    ``threaded``, encoding (PNG compression, ``.npy``), tar writing and hashing run in a writer
    thread fed by a bounded queue of ``queue_size`` samples, so the caller (a GPU loop) only hands
    samples over; samples are written in the order given, so the shard is byte-identical either way.
    An error in the thread (a field that cannot be stored) is raised by the next ``write`` or by
    ``commit``."""

    def __init__(self, d: Path, name: str, *, threaded: bool = False, queue_size: int = 64):
        from webdataset import TarWriter

        self.d, self.name = d, name
        _remove_temps(d, name)  # a previous interrupted attempt at this shard (we own it)
        with contextlib.suppress(FileNotFoundError):
            _status_path(d, name).unlink()  # the old shard (if any) is no longer trusted
        self.tmp = d / f"{name}{TMP_MARK}{uuid.uuid4().hex[:12]}"
        self.f = open(self.tmp, "wb")
        self.hf = _HashingFile(self.f)
        # mtime fixed: identical content gives an identical shard (and checksum)
        self.tw = TarWriter(self.hf, encoder=False, mtime=0, mode=0o644, user="bridge", group="bridge")
        self.keys: set[str] = set()
        self.samples = 0
        self._thread = None
        self._error: BaseException | None = None
        self._aborting = False  # abort(): the thread drops what is still queued
        if threaded:
            import queue
            import threading

            self._q: queue.Queue = queue.Queue(maxsize=max(1, int(queue_size)))
            self._thread = threading.Thread(target=self._run, name=f"shard-writer {name}", daemon=True)
            self._thread.start()

    def _write_now(self, sample: dict) -> None:
        members = encode_sample(sample)
        key = sample["__key__"]
        prefix = key + "."
        obj: dict[str, Any] = {"__key__": key}
        for member, data in members.items():
            obj[member[len(prefix):]] = data
        try:
            faults.point("shard-write", self.tmp)
            self.tw.write(obj)
        except OSError as e:
            raise_if_storage(e, self.d / self.name)
            raise

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            if self._error is None and not self._aborting:
                try:
                    self._write_now(item)
                except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def _stop_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join()
        self._thread = None

    def write(self, sample: dict) -> None:
        if "__key__" not in sample:
            raise InputError("sample has no '__key__'")
        key = _check_key(sample["__key__"])
        if key in self.keys:
            raise InputError(f"{self.d / self.name}: duplicate sample key {key!r}")
        self.keys.add(key)
        self.samples += 1
        if self._thread is None:
            self._write_now(sample)
        else:
            self._raise()
            self._q.put(sample)

    def commit(self, **status: Any) -> ShardInfo:
        self._stop_thread()
        self._raise()
        final = self.d / self.name
        try:
            self.tw.close()
            self.f.flush()
            os.fsync(self.f.fileno())
            self.f.close()
            digest = self.hf.h.hexdigest()
            size = self.tmp.stat().st_size
            if size != self.hf.size:  # pragma: no cover - would mean bytes bypassed the hashing wrapper
                raise ShardError(f"{self.tmp}: {size} bytes on disk, {self.hf.size} written")
            os.replace(self.tmp, final)
            _fsync_dir(self.d)
        except OSError as e:
            raise_if_storage(e, final)
            raise
        faults.point("shard-commit", final)
        info = ShardInfo(name=self.name, complete=True, samples=self.samples, sha256=digest, bytes=size, **status)
        _write_json_atomic(_status_path(self.d, self.name), info.to_dict())
        faults.point("shard-done", final)
        return info

    def abort(self) -> None:
        self._aborting = True
        with contextlib.suppress(Exception):
            self._stop_thread()
        with contextlib.suppress(Exception):
            self.tw.close()
        with contextlib.suppress(Exception):
            self.f.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def _progress(total: int, desc: str, rank: int, world_size: int, progress: bool):
    from tqdm.auto import tqdm

    label = desc if world_size == 1 else f"{desc} [rank {rank}/{world_size}]"
    return tqdm(total=total, desc=label, unit="sample", disable=not progress, dynamic_ncols=True)


def _check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise InputError(f"rank {rank} / world_size {world_size}: need 0 <= rank < world_size")


def write_dataset(
    out_dir: str | os.PathLike,
    num_samples: int,
    make_sample: Callable[[int], dict | None],
    *,
    samples_per_shard: int = 256,
    desc: str = "writing shards",
    rank: int = 0,
    world_size: int = 1,
    meta: dict | None = None,
    progress: bool = True,
) -> Manifest:
    """Write ``make_sample(i)`` for ``i in range(num_samples)`` into shards of ``samples_per_shard``.

    Shard ``j`` holds indices ``[j*n, (j+1)*n)``; this rank writes the shards with
    ``j % world_size == rank``. Complete shards (status file present, checksum matching, same index
    range) are skipped, so a rerun after an interruption redoes only the missing ones.
    ``make_sample`` may return None, or raise :class:`InputError`, for a bad input: the sample is
    then recorded in the shard's ``skipped`` list with the reason. Any other exception aborts the
    run (the shard being written is discarded; completed shards stay).
    Returns the manifest as rebuilt after this rank's work.
    """
    _check_rank(rank, world_size)
    if num_samples < 0 or samples_per_shard < 1:
        raise InputError(f"num_samples={num_samples}, samples_per_shard={samples_per_shard}: invalid")
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    n = samples_per_shard
    num_shards = math.ceil(num_samples / n)
    names = [shard_name(j) for j in range(num_shards)]
    mine = [j for j in range(num_shards) if j % world_size == rank]

    spec = dict(kind="write", samples_per_shard=n, num_inputs=num_samples, meta=meta)
    rebuild_manifest(d, names, **spec)  # records the expected shards before any is written

    todo = []
    for j in mine:
        start, stop = j * n, min((j + 1) * n, num_samples)
        if not _shard_is_complete(d, names[j], lambda s, a=start, b=stop: s.start == a and s.stop == b):
            todo.append((j, start, stop))
    try:
        _write_todo(d, names, todo, make_sample, _progress(sum(b - a for _, a, b in todo), desc, rank,
                                                           world_size, progress))
    finally:
        manifest = rebuild_manifest(d, names, **spec)
    return manifest


def _write_todo(d, names, todo, make_sample, bar) -> None:
    with bar:
        for j, start, stop in todo:
            w = _ShardWriter(d, names[j])
            skipped: list[dict] = []
            try:
                for i in range(start, stop):
                    try:
                        sample = make_sample(i)
                    except InputError as e:
                        sample, reason = None, str(e)
                    else:
                        reason = "make_sample returned None"
                    if sample is None:
                        skipped.append({"index": i, "reason": reason})
                    else:
                        if "__key__" not in sample:
                            sample = {**sample, "__key__": f"{i:09d}"}
                        w.write(sample)  # errors here (bad field, duplicate key) are bugs: abort
                    bar.update(1)
                w.commit(start=start, stop=stop, skipped=skipped)
            except BaseException:
                w.abort()
                raise


SOURCE_CONTEXT = "__source__"  # map_dataset: {"dir", "shard", "sha256"} of each input sample's shard


def map_dataset(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    fn: Callable[[dict], list[dict]] | Callable[[list[dict]], list],
    *,
    desc: str = "mapping shards",
    rank: int = 0,
    world_size: int = 1,
    meta: dict | None = None,
    fields: Iterable[str] | None = None,
    progress: bool = True,
    chunk: int = 0,
    writer_thread: bool = True,
) -> Manifest:
    """Apply ``fn`` to every sample of ``in_dir``; write one output shard per input shard (same name).

    ``fn(sample)`` returns a list of output samples (possibly empty). Raising :class:`InputError`
    marks the input sample as skipped (its key and the reason are recorded). With ``chunk`` > 0,
    ``fn`` is batched: it gets a list of up to ``chunk`` consecutive samples of one input shard and
    returns one entry per sample, its list of outputs or an :class:`InputError` *instance* (that
    sample is skipped with that reason; an InputError raised skips the whole chunk).
    Each input sample carries ``sample["__source__"] = {"dir", "shard", "sha256"}`` (absolute input
    directory, input shard name and checksum: what a ``source_ref`` needs; ``__`` fields are never
    stored). Input samples with a ``source_ref`` are resolved (:func:`iter_shard`).

    This rank handles the input shards at positions ``j % world_size == rank`` of the sorted shard
    list. An output shard is complete when its status file and checksum match and it was made from
    the current input shard (same input checksum); complete output shards are skipped, others are
    (re)written: the unit of resumption is one shard. ``fields`` limits which input fields are
    decoded. ``writer_thread``: encode and write output samples in a writer thread (see
    ``_ShardWriter``). The input set must be complete.
    """
    _check_rank(rank, world_size)
    if int(chunk) < 0:
        raise InputError(f"map_dataset: chunk must be >= 0, got {chunk}")
    src = require_complete(in_dir, "finish writing the input first")
    d = Path(out_dir)
    if d.resolve() == Path(in_dir).resolve():
        raise InputError(f"{out_dir}: output directory must differ from the input directory")
    d.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in src.shards]
    mine = [s for j, s in enumerate(src.shards) if j % world_size == rank]
    todo = [
        s for s in mine
        if not _shard_is_complete(d, s.name, lambda o, sha=s.sha256: o.source_sha256 == sha)
    ]
    spec = dict(kind="map", source=str(Path(in_dir).resolve()), meta=meta)
    rebuild_manifest(d, names, **spec)  # records the expected shards before any is written
    try:
        _map_todo(Path(in_dir), d, todo, fn, fields,
                  _progress(sum(s.samples for s in todo), desc, rank, world_size, progress),
                  int(chunk), writer_thread)
    finally:
        manifest = rebuild_manifest(d, names, **spec)
    return manifest


def _chunks(it: Iterator[dict], n: int) -> Iterator[list[dict]]:
    group: list[dict] = []
    for x in it:
        group.append(x)
        if len(group) == n:
            yield group
            group = []
    if group:
        yield group


def _decoded(path: Path, fields, resolver, skipped: list, count: list) -> Iterator[dict]:
    """The samples of one input shard, decoded and with their source references resolved. A sample
    that does not decode is recorded in ``skipped`` (key and reason) and left out; a source reference
    that cannot be resolved (:class:`~bridgedepth.data.refs.SourceRefError`) fails the whole shard."""
    from .refs import REF_FIELD, SourceRefError, fields_to_decode

    wanted = None if fields is None else list(fields)
    decode = fields_to_decode(wanted)
    for members in _iter_tar_groups(path):
        count[0] += 1
        key = next(iter(members)).split(".", 1)[0]
        try:
            sample = decode_sample(members, fields=decode, where=str(path))
        except SourceRefError:
            raise
        except InputError as e:
            skipped.append({"key": key, "reason": str(e)})
            continue
        if REF_FIELD in sample:
            resolver.resolve(sample, path.parent, where=str(path), fields=wanted)
        yield sample


def _map_todo(in_d, d, todo, fn, fields, bar, chunk: int = 0, writer_thread: bool = True) -> None:
    """A sample that cannot be decoded, or for which ``fn`` raises InputError, is recorded as skipped
    (key and reason) and the shard goes on. An input shard that cannot be read at all (checksum
    mismatch, unsafe or unreadable tar, a missing or changed referenced source) is left without output
    (incomplete) while the other shards are written; then one ShardError names every such shard."""
    from .refs import SourceResolver

    src_dir = str(in_d.resolve())
    failed: list[str] = []
    with bar, SourceResolver() as resolver:
        for s in todo:
            w = _ShardWriter(d, s.name, threaded=writer_thread)
            skipped: list[dict] = []
            inputs = 0
            context = {"dir": src_dir, "shard": s.name, "sha256": s.sha256}
            path = in_d / s.name
            count = [0]
            try:
                if s.sha256:
                    _check_sha(path, s.sha256, False)
                samples = _decoded(path, fields, resolver, skipped, count)
                for group in _chunks(samples, max(1, chunk)):
                    for sample in group:
                        sample[SOURCE_CONTEXT] = context
                    if chunk:
                        try:
                            results = fn(group)
                        except InputError as e:
                            results = [e] * len(group)
                        if not isinstance(results, list) or len(results) != len(group):
                            raise TypeError(f"map_dataset: batched fn returned {type(results).__name__} "
                                            f"of length {len(results) if isinstance(results, list) else '?'} "
                                            f"for {len(group)} samples; return one entry per sample")
                    else:
                        try:
                            results = [fn(group[0])]
                        except InputError as e:
                            results = [e]
                    for sample, outs in zip(group, results):
                        if isinstance(outs, InputError):
                            skipped.append({"key": sample["__key__"], "reason": str(outs)})
                            continue
                        if outs is None:
                            raise TypeError(f"map_dataset: fn returned None for {sample['__key__']!r}; "
                                            "return [] to drop")
                        for o in outs:
                            w.write(o)  # errors here (bad field, duplicate key) are bugs: abort
                    bar.update(len(group))
                inputs = count[0]
                w.commit(skipped=skipped, source_sha256=s.sha256, inputs=inputs)
            except ShardError as e:
                w.abort()
                failed.append(e)
            except BaseException:
                w.abort()
                raise
    if failed:
        # the most specific class all failures share (e.g. SourceRefError when every source is missing)
        cls = next(c for c in type(failed[0]).__mro__ if all(isinstance(e, c) for e in failed))
        cls = cls if issubclass(cls, ShardError) else ShardError
        raise cls(f"{len(failed)} of {len(todo)} input shard(s) unusable, their output not written "
                  f"(the other shards are complete; fix or rewrite these and rerun): "
                  + "; ".join(str(e) for e in failed))


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def iter_shard(
    path: str | os.PathLike,
    *,
    sha256: str | None = None,
    fields: Iterable[str] | None = None,
    cache_checksum: bool = False,
    resolve: bool = True,
    resolver=None,
) -> Iterator[dict]:
    """Decode the samples of one shard file. With ``sha256``, the file is checked first and refused
    when it does not match.

    ``resolve``: samples holding a ``source_ref`` get the referenced source fields added
    (:mod:`bridgedepth.data.refs`; a :class:`~bridgedepth.data.refs.SourceRefError` when the source
    is missing or changed), through ``resolver`` (a ``SourceResolver``; by default one for this call)."""
    p = Path(path)
    if sha256 is not None:
        _check_sha(p, sha256, cache_checksum)
    wanted = None if fields is None else list(fields)
    decode = wanted
    own = None
    if resolve:
        from .refs import REF_FIELD, SourceResolver, fields_to_decode

        decode = fields_to_decode(wanted)
        if resolver is None:
            resolver = own = SourceResolver()
    try:
        for members in _iter_tar_groups(p):
            sample = decode_sample(members, fields=decode, where=str(p))
            if resolve and REF_FIELD in sample:
                resolver.resolve(sample, p.parent, where=str(p), fields=wanted)
            yield sample
    finally:
        if own is not None:
            own.close()


def _check_sha(p: Path, sha256: str, cache: bool) -> None:
    got = sha256_file(p, cache=cache)
    if got != sha256:
        raise ShardError(
            f"{p}: checksum mismatch (manifest sha256 {sha256[:16]}..., file {got[:16]}...); "
            "the shard is corrupt or was modified; rewrite it (rerun the writer) or restore it"
        )


class IndexedShard:
    """Random access to the samples of one shard file, for shuffled reading.

    Opening checks the sha256 (when given) and scans the tar headers only (no member data is read),
    with the same safety checks as :func:`iter_shard`; ``sample(i)`` then reads and decodes sample
    ``i`` alone (its members are contiguous in the file). ``expected``: the sample count the manifest
    records; a different count in the file is refused.
    """

    def __init__(self, path: str | os.PathLike, *, sha256: str | None = None, cache_checksum: bool = True,
                 expected: int | None = None):
        self.path = Path(path)
        where = str(self.path)
        if sha256 is not None:
            _check_sha(self.path, sha256, cache_checksum)
        self._f = open(self.path, "rb")
        groups: list[list[tuple[str, int, int]]] = []
        seen: set[str] = set()
        current = None
        try:
            _check_tar_end(self._f, where)
            tar = tarfile.open(fileobj=self._f, mode="r:")
            for info in tar:
                _check_member(info, where)
                key, _field, _ext = _split_member(info.name, where)
                if key != current:
                    if key in seen:
                        raise ShardError(f"{where}: sample key {key!r} appears twice (members not contiguous)")
                    seen.add(key)
                    groups.append([])
                    current = key
                groups[-1].append((info.name, info.offset_data, info.size))
        except tarfile.TarError as e:
            self._f.close()
            raise ShardError(f"{where}: unreadable tar ({e})") from e
        except BaseException:
            self._f.close()
            raise
        if expected is not None and len(groups) != expected:
            self._f.close()
            raise ShardError(f"{where}: {len(groups)} samples in the file, the manifest says {expected}; "
                             "rebuild the manifest or rewrite the shard")
        self._groups = groups

    def __len__(self) -> int:
        return len(self._groups)

    def keys(self) -> list[str]:
        """The sample keys, in file order (``keys()[i]`` is sample ``i``'s)."""
        return [g[0][0].split(".", 1)[0] for g in self._groups]

    def members(self, i: int, fields: Iterable[str] | None = None) -> dict[str, bytes]:
        """The raw members of sample ``i`` (only those of ``fields`` when given: the others are not read)."""
        wanted = None if fields is None else set(fields)
        out = {}
        for name, offset, size in self._groups[i]:
            if wanted is not None and name.split(".")[1] not in wanted:
                continue
            self._f.seek(offset)
            data = self._f.read(size)
            if len(data) != size:
                raise ShardError(f"{self.path}: member {name!r} is truncated")
            out[name] = data
        return out

    def sample(self, i: int, fields: Iterable[str] | None = None) -> dict:
        members = self.members(i, fields)
        if not members:  # none of the wanted fields: the key alone (as decode_sample gives)
            return {"__key__": self._groups[i][0][0].split(".", 1)[0]}
        return decode_sample(members, fields=fields, where=str(self.path))

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> IndexedShard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_shard_members(path: str | os.PathLike) -> Iterator[dict[str, bytes]]:
    """The raw members of each sample of one shard (``{"key.field.ext": bytes}``), undecoded, with
    the same safety checks as :func:`iter_shard` (no checksum check)."""
    yield from _iter_tar_groups(Path(path))


def iter_samples(
    in_dir: str | os.PathLike,
    *,
    verify: bool = True,
    fields: Iterable[str] | None = None,
    allow_incomplete: bool = False,
    resolve: bool = True,
) -> Iterator[dict]:
    """Yield every sample of a dataset directory, shard by shard, in order.

    Refuses an incomplete dataset (unless ``allow_incomplete``: then only complete shards are read)
    and, with ``verify``, any shard whose sha256 differs from its status file. ``resolve``: add the
    fields of each sample's ``source_ref`` (see :func:`iter_shard`).
    """
    m = require_complete(in_dir, "rerun the writer to finish them", allow_incomplete)
    wanted = None if fields is None else list(fields)
    from .refs import SourceResolver

    with SourceResolver(verify=verify) as resolver:
        for s in m.shards:
            if not s.complete:
                continue
            yield from iter_shard(Path(in_dir) / s.name, sha256=s.sha256 if verify else None, fields=wanted,
                                  resolve=resolve, resolver=resolver)


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Problem:
    shard: str | None
    kind: str  # missing | incomplete | checksum | unreadable | count | temporary | unlisted | duplicate | manifest | reference
    message: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class VerifyReport:
    dir: str
    num_shards: int = 0
    num_complete: int = 0
    num_samples: int = 0
    num_skipped: int = 0
    num_refs: int = 0
    shards: list[dict] = dataclasses.field(default_factory=list)
    problems: list[Problem] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {
            "dir": self.dir,
            "ok": self.ok,
            "num_shards": self.num_shards,
            "num_complete": self.num_complete,
            "num_samples": self.num_samples,
            "num_skipped": self.num_skipped,
            "num_refs": self.num_refs,
            "shards": self.shards,
            "problems": [p.to_dict() for p in self.problems],
        }


def verify_dataset(in_dir: str | os.PathLike, *, decode: bool = True, refs: bool = True) -> VerifyReport:
    """Check a dataset directory and report every problem found (never raises for a bad shard).

    Checks: manifest readable; every listed shard present and complete; sha256 matches; every member
    safe and (with ``decode``) decodable; sample counts match; sample keys unique across the set; no
    temporary files left; no shard files that the manifest does not list. With ``refs``, every
    sample's ``source_ref`` (:mod:`bridgedepth.data.refs`) resolves: the source set, shard and key
    exist and the source shard's sha256 is the one the reference records (each source shard is
    hashed once). Problems of that kind are ``reference``; ``VerifyReport.num_refs`` counts the
    references checked.
    """
    from .refs import REF_FIELD, check_ref

    ref_cache: dict = {}
    d = Path(in_dir)
    rep = VerifyReport(dir=str(d))
    if not d.is_dir():
        raise InputError(f"{d}: not a directory")
    try:
        m = load_manifest(d)
    except ShardError as e:
        rep.problems.append(Problem(None, "manifest", str(e)))
        m = Manifest(dir=str(d), shards=[ShardInfo(name=n) for n in _shard_files(d)])
    if not (d / MANIFEST).exists():
        rep.problems.append(Problem(None, "manifest", f"{d / MANIFEST}: missing"))
    rep.num_shards = m.num_shards
    listed = {s.name for s in m.shards}
    keys: dict[str, str] = {}
    for s in m.shards:
        entry: dict[str, Any] = {"name": s.name, "samples": s.samples, "complete": s.complete, "ok": True}
        rep.shards.append(entry)
        p = d / s.name

        def bad(kind: str, msg: str, _e=entry, _n=s.name) -> None:
            _e["ok"] = False
            rep.problems.append(Problem(_n, kind, msg))

        if not p.exists():
            bad("missing", f"{s.name}: listed in the manifest but the file is missing")
            entry["complete"] = False
            continue
        info = _read_status(d, s.name)
        if info is None or not info.complete:
            bad("incomplete", f"{s.name}: no valid status file ({s.name}.json); the writer did not finish it")
            entry["complete"] = False
            continue
        got = sha256_file(p)
        if got != info.sha256:
            bad("checksum", f"{s.name}: checksum mismatch (status {str(info.sha256)[:16]}..., file {got[:16]}...)")
            entry["complete"] = False
            continue
        count = 0
        ref_bad: list[str] = []
        try:
            for members in _iter_tar_groups(p, where=s.name):
                key = next(iter(members)).split(".", 1)[0]
                if key in keys:
                    bad("duplicate", f"{s.name}: sample key {key!r} also in {keys[key]}")
                keys[key] = s.name
                if decode:
                    decode_sample(members, where=s.name)
                ref_member = f"{key}.{REF_FIELD}.json"
                if refs and ref_member in members:
                    ref = decode_field("json", members[ref_member], where=f"{s.name}:{ref_member}")
                    rep.num_refs += 1
                    why = check_ref(ref, d, where=s.name, key=key, cache=ref_cache)
                    if why is not None:
                        ref_bad.append(why)
                count += 1
        except ShardError as e:
            bad("unreadable", str(e))
        if ref_bad:
            more = f" (and {len(ref_bad) - 1} more unresolvable reference(s) in this shard)" if len(ref_bad) > 1 else ""
            bad("reference", ref_bad[0] + more)
        if count != info.samples and entry["ok"]:
            bad("count", f"{s.name}: {count} samples in the tar, {info.samples} in its status file")
        if entry["ok"]:
            rep.num_complete += 1
            rep.num_samples += count
            rep.num_skipped += len(info.skipped)
    for name in _shard_files(d):
        if name not in listed:
            rep.problems.append(Problem(name, "unlisted", f"{name}: shard file not listed in the manifest"))
    for name in temp_files(d):
        rep.problems.append(
            Problem(name, "temporary", f"{name}: temporary file of an interrupted (or running) writer")
        )
    return rep


def __getattr__(name: str):  # lazy: keep torch out of `import bridgedepth.data.shards`
    if name == "ShardDataset":
        from .loader import ShardDataset

        return ShardDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
