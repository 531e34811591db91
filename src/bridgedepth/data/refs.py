"""Source references: generated and labelled samples that point at their source sample instead of
storing a copy of it.

A generated sample (``bridge generate``) needs its source's depth, valid mask, RGB render, sky mask
and intrinsics downstream (labelling, hybrid targets), but storing them again beside each of the 4
generated images makes up most of a generated set's bytes. Instead the sample holds one small JSON
field, ``source_ref``::

    {"dir": "../src/hypersim",            # the source dataset directory, relative to the directory
                                          # of the set holding the reference (or absolute)
     "shard": "shard-000012.tar",         # the source shard
     "key": "ai_001_001_cam00_0042",      # the source sample's key in it
     "sha256": "9f2c..."}                 # the source shard's checksum when the reference was made

Readers resolve it (:class:`SourceResolver`): the referenced sample's fields are added under the
names an embedded sample uses (:data:`SOURCE_FIELDS`: source ``rgb`` -> ``source_rgb``, ``depth``,
``valid`` (``depth > 0`` when the source has none), ``sky``, ``intrinsics``). A missing source set,
shard or key, or a source shard whose checksum differs from the reference's, is a
:class:`SourceRefError` naming the referencing file and key, the source it looked for and why.

Resolution keeps an LRU of open :class:`~bridgedepth.data.shards.IndexedShard` objects (random
access by key: opening one scans its tar headers, and, with ``verify``, checks the file's sha256
once per process and unchanged file). This module imports no torch.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .shards import IndexedShard, Manifest, ShardError, load_manifest, sha256_file

__all__ = ["REF_FIELD", "SOURCE_FIELDS", "SourceRefError", "SourceResolver", "make_ref", "rebase_ref",
           "ref_source_dir", "check_ref", "fields_to_decode"]

REF_FIELD = "source_ref"
# field of the referencing sample -> field of the source sample it comes from
SOURCE_FIELDS: dict[str, str] = {"source_rgb": "rgb", "depth": "depth", "valid": "valid", "sky": "sky",
                                 "intrinsics": "intrinsics"}
_MAX_DEPTH = 4  # a source may itself reference a source (generated from a generated set); no deeper


def fields_to_decode(fields: Iterable[str] | None) -> list[str] | None:
    """The fields to decode from a possibly referencing sample when ``fields`` are wanted:
    ``source_ref`` too when any of them may come from the source."""
    if fields is None:
        return None
    wanted = list(fields)
    return [*wanted, REF_FIELD] if set(wanted) & set(SOURCE_FIELDS) and REF_FIELD not in wanted else wanted


class SourceRefError(ShardError):
    """A sample's ``source_ref`` cannot be resolved: the source set, shard or key is missing, or the
    source shard changed since the reference was made."""


def make_ref(source_dir: str | os.PathLike, shard: str, key: str, sha256: str | None,
             holder_dir: str | os.PathLike) -> dict:
    """The ``source_ref`` of sample ``key`` of ``source_dir/shard``, for a sample stored in the set
    ``holder_dir``: ``dir`` is relative to ``holder_dir`` (so that moving the whole tree keeps it
    valid), absolute where no relative path exists (another drive)."""
    src = Path(source_dir).resolve()
    try:
        rel = os.path.relpath(src, Path(holder_dir).resolve())
    except ValueError:
        rel = str(src)
    return {"dir": rel, "shard": str(shard), "key": str(key), "sha256": sha256}


def ref_source_dir(ref: dict, holder_dir: str | os.PathLike) -> Path:
    """The absolute source dataset directory a reference held in ``holder_dir`` points to."""
    d = Path(str(ref["dir"]))
    return d if d.is_absolute() else (Path(holder_dir) / d).resolve()


def rebase_ref(ref: dict, from_dir: str | os.PathLike, to_dir: str | os.PathLike) -> dict:
    """The same reference, held in ``to_dir`` instead of ``from_dir`` (``dir`` made relative to it)."""
    return make_ref(ref_source_dir(ref, from_dir), ref["shard"], ref["key"], ref.get("sha256"), to_dir)


def _valid_ref(ref: Any, where: str, key: str) -> dict:
    if not isinstance(ref, dict) or not all(isinstance(ref.get(k), str) and ref.get(k) for k in ("dir", "shard", "key")):
        raise SourceRefError(f"{where}: sample {key!r}: malformed {REF_FIELD} {ref!r} "
                             "(need a JSON object with 'dir', 'shard', 'key' and 'sha256')")
    if "/" in ref["shard"] or "\\" in ref["shard"] or ref["shard"] in ("", ".", ".."):
        raise SourceRefError(f"{where}: sample {key!r}: {REF_FIELD} shard {ref['shard']!r} is not a file name")
    return ref


class SourceResolver:
    """Resolve ``source_ref`` fields, keeping up to ``max_open`` source shards open (LRU).

    ``verify``: check each source shard file's sha256 against the reference when it is opened (once
    per process and unchanged file, see :func:`~bridgedepth.data.shards.sha256_file`); without it
    only the checksum its status file records is compared (a regenerated source is still caught, a
    corrupted file is not). Not thread-safe; one per reader (each DataLoader worker makes its own).
    """

    def __init__(self, *, max_open: int = 16, verify: bool = True):
        self.max_open = max(1, int(max_open))
        self.verify = bool(verify)
        self._open: OrderedDict[tuple[str, str], tuple[IndexedShard, dict[str, int]]] = OrderedDict()
        self._manifests: dict[str, Manifest] = {}

    # -- helpers ---------------------------------------------------------------------------------

    def _fail(self, where: str, key: str, ref: dict, src: Path, reason: str) -> SourceRefError:
        return SourceRefError(
            f"{where}: sample {key!r} references source sample {ref.get('key')!r} of "
            f"{src / str(ref.get('shard'))}: {reason}; restore the source set, or regenerate this set from "
            "the current one (`bridge generate --embed-source` writes self-contained shards)")

    def _manifest(self, src: Path) -> Manifest:
        k = str(src)
        m = self._manifests.get(k)
        if m is None:
            m = self._manifests[k] = load_manifest(src)
        return m

    def _shard(self, ref: dict, src: Path, where: str, key: str) -> tuple[IndexedShard, dict[str, int]]:
        ck = (str(src), ref["shard"])
        hit = self._open.get(ck)
        if hit is not None:
            self._open.move_to_end(ck)
            return hit
        if not src.is_dir():
            raise self._fail(where, key, ref, src, "the source dataset directory does not exist")
        try:
            m = self._manifest(src)
        except ShardError as e:
            raise self._fail(where, key, ref, src, f"the source set is unreadable ({e})") from e
        info = next((s for s in m.shards if s.name == ref["shard"]), None)
        path = src / ref["shard"]
        if info is None or not path.exists():
            raise self._fail(where, key, ref, src, "the source shard is missing")
        want = ref.get("sha256")
        if not info.complete:
            raise self._fail(where, key, ref, src, "the source shard is incomplete (no valid status file)")
        if want is not None and info.sha256 != want:
            raise self._fail(where, key, ref, src, f"the source shard changed since this sample was made "
                             f"(reference sha256 {want[:16]}..., source status {str(info.sha256)[:16]}...)")
        try:
            shard = IndexedShard(path, sha256=want if (self.verify and want) else None, cache_checksum=True,
                                 expected=info.samples)
        except ShardError as e:
            raise self._fail(where, key, ref, src, f"the source shard is unusable ({e})") from e
        index = {k: i for i, k in enumerate(shard.keys())}
        self._open[ck] = (shard, index)
        while len(self._open) > self.max_open:
            _, (old, _) = self._open.popitem(last=False)
            old.close()
        return shard, index

    # -- API -------------------------------------------------------------------------------------

    def source_sample(self, ref: dict, holder_dir: str | os.PathLike, *, where: str, key: str,
                      fields: Iterable[str] | None = None, _depth: int = 0) -> dict:
        """The referenced source sample (decoded; only the source ``fields`` when given)."""
        ref = _valid_ref(ref, where, key)
        src = ref_source_dir(ref, holder_dir)
        shard, index = self._shard(ref, src, where, key)
        i = index.get(ref["key"])
        if i is None:
            raise self._fail(where, key, ref, src, "no sample with that key in the source shard")
        wanted = None if fields is None else set(fields) | {REF_FIELD}
        s = shard.sample(i, wanted)
        if REF_FIELD in s:  # the source is itself a referencing set
            if _depth >= _MAX_DEPTH:
                raise self._fail(where, key, ref, src, f"references nested more than {_MAX_DEPTH} deep")
            s = self.resolve(s, src, where=str(shard.path), fields=None, _depth=_depth + 1)
        return s

    def resolve(self, sample: dict, holder_dir: str | os.PathLike, *, where: str = "",
                fields: Iterable[str] | None = None, _depth: int = 0) -> dict:
        """``sample`` with the fields of its ``source_ref`` added (in place; returned). Samples
        without a reference, and fields the sample already has, are left alone. ``fields``: add
        only these (of :data:`SOURCE_FIELDS`)."""
        ref = sample.get(REF_FIELD)
        if ref is None:
            return sample
        key = str(sample.get("__key__", "?"))
        where = where or str(holder_dir)
        want = [f for f in SOURCE_FIELDS if (fields is None or f in fields) and f not in sample]
        if not want:
            return sample
        src_fields = {SOURCE_FIELDS[f] for f in want} | ({"depth"} if "valid" in want else set())
        s = self.source_sample(ref, holder_dir, where=where, key=key, fields=src_fields, _depth=_depth)
        for f in want:
            v = s.get(SOURCE_FIELDS[f])
            if f == "valid" and v is None and s.get("depth") is not None:
                v = np.asarray(s["depth"]) > 0
            if f == "intrinsics" and v is not None:
                v = np.asarray(v, np.float32)  # as `bridge generate --embed-source` stores them
            if v is not None:
                sample[f] = v
        return sample

    def close(self) -> None:
        for shard, _ in self._open.values():
            shard.close()
        self._open.clear()

    def __enter__(self) -> SourceResolver:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_ref(ref: Any, holder_dir: str | os.PathLike, *, where: str, key: str,
              cache: dict | None = None) -> str | None:
    """Why ``ref`` (held in ``holder_dir``) does not resolve, or None when it does: the source set,
    shard (listed, complete, checksum of the file equal to the reference's) and key all exist.
    ``cache`` (a dict) keeps per-shard results between calls (``bridge shards verify``)."""
    cache = {} if cache is None else cache
    try:
        ref = _valid_ref(ref, where, key)
    except SourceRefError as e:
        return str(e)
    src = ref_source_dir(ref, holder_dir)
    ck = (str(src), ref["shard"], ref.get("sha256"))
    if ck not in cache:
        cache[ck] = _check_shard(src, ref)
    problem, keys = cache[ck]
    if problem is None and ref["key"] not in keys:
        problem = "no sample with that key in the source shard"
    if problem is None:
        return None
    return (f"{where}: sample {key!r} references source sample {ref['key']!r} of {src / ref['shard']}: "
            f"{problem}")


def _check_shard(src: Path, ref: dict) -> tuple[str | None, set[str]]:
    if not src.is_dir():
        return "the source dataset directory does not exist", set()
    try:
        m = load_manifest(src)
    except ShardError as e:
        return f"the source set is unreadable ({e})", set()
    info = next((s for s in m.shards if s.name == ref["shard"]), None)
    path = src / ref["shard"]
    if info is None or not path.exists():
        return "the source shard is missing", set()
    want = ref.get("sha256")
    got = sha256_file(path, cache=True)
    if want is not None and got != want:
        return f"the source shard changed since this sample was made (reference sha256 {want[:16]}..., " \
               f"file {got[:16]}...)", set()
    try:
        with IndexedShard(path) as shard:
            return None, set(shard.keys())
    except ShardError as e:
        return f"the source shard is unusable ({e})", set()
