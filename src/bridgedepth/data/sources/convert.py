"""Convert a source dataset to shards: ``bridge sources convert`` calls :func:`convert_source`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .base import SampleError, SourceAdapter, SourceReport

REPORT_NAME = "sources_report.json"


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _check_existing(out: Path, meta: dict, count: int, samples_per_shard: int) -> None:
    """Refuse to resume into a folder converted from another source, root, encoding, adapter options,
    frame count or shard size: its complete shards would be kept (the rerun would mix two datasets
    under a manifest naming only the second)."""
    from ...errors import InputError
    from ..shards import MANIFEST, _read_manifest_json

    if not (out / MANIFEST).exists():
        return
    man = _read_manifest_json(out)
    old = man.get("meta") or {}
    if "source" not in old or "root" not in old:
        raise InputError(f"{out}: holds a dataset that was not converted from a source; use another --out")
    from ...config import changed_settings, describe_changes

    def one_value(d: dict) -> dict:  # the adapter options compare whole: their keys vary by adapter
        return {k: json.dumps(v, sort_keys=True) if isinstance(v, dict) else v for k, v in d.items()}

    # keys both sides know (the shared rule: a field a later version records is not a difference)
    was = {**one_value({k: old[k] for k in meta if k in old}), "frames": man.get("num_inputs"),
           "samples per shard": man.get("samples_per_shard")}
    now = {**one_value(meta), "frames": count, "samples per shard": samples_per_shard}
    changes = changed_settings(was, now)
    if changes:
        diff = describe_changes(changes, limit=len(changes), form="{key}: {old!r} in the folder, {new!r} now")
        raise InputError(f"{out}: already holds shards converted with other options ({diff}); a rerun "
                         f"would keep its complete shards and mix two datasets. Use another --out or delete it")


def convert_source(
    adapter: SourceAdapter,
    out_dir: str | Path,
    *,
    limit: int | None = None,
    samples_per_shard: int = 256,
    rank: int = 0,
    world_size: int = 1,
):
    """Write the adapter's samples as shards (``bridgedepth.data.shards.write_dataset``).

    Bad frames are skipped (``make_sample`` raises :class:`SampleError`, which the manifest counts
    with its reason) and recorded with their path and reason in ``OUT/sources_report.json``; a
    rerun skips complete shards and keeps the earlier records for the frames it did not read again.
    Returns (manifest, report).
    """
    from ..shards import write_dataset

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    refs = adapter.refs()
    if limit is not None:
        refs = refs[: max(0, int(limit))]
    report = SourceReport(adapter.name, total=len(refs))
    index_of = {r.key: i for i, r in enumerate(refs)}
    touched: set[int] = set()

    def make_sample(i: int):
        touched.add(i)
        sample = adapter.try_load(refs[i], report)
        if sample is None:
            # write_dataset records an InputError's message as the skip reason in the manifest
            last = report.skipped[-1]
            raise SampleError(last.path, last.reason)
        return sample

    meta = {
        "source": adapter.name,
        "root": str(adapter.root.resolve()),
        "encoding": adapter.encoding,
        "options": {k: (v if isinstance(v, (str, int, float, bool)) or v is None else str(v))
                    for k, v in adapter.opts.items()},
        "metric": adapter.metric,
    }
    _check_existing(out, meta, len(refs), samples_per_shard)
    manifest = write_dataset(out, len(refs), make_sample, samples_per_shard=samples_per_shard,
                             desc=f"convert {adapter.name}", rank=rank, world_size=world_size, meta=meta)

    # Carry over earlier skip records for frames this run did not read (their shards were complete).
    old_path = out / REPORT_NAME
    if old_path.exists():
        try:
            old = json.loads(old_path.read_text())
        except (OSError, json.JSONDecodeError):
            old = {}
        for item in old.get("skipped_samples", []):
            i = index_of.get(item.get("key"))
            if i is not None and i not in touched:
                report.add_skip(item["key"], item.get("path", "?"), item.get("reason", "?"))
    report.loaded = report.total - len(report.skipped)
    if world_size == 1:
        _write_json_atomic(old_path, report.to_dict())
    else:
        _write_json_atomic(out / f"sources_report.rank{rank}.json", report.to_dict())
    return manifest, report
