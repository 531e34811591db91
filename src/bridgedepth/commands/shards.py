"""`bridge shards verify DIR [--json]`, `bridge shards info DIR`, `bridge shards ls DIR`."""

from __future__ import annotations

import json

HELP = "verify shard sets (manifest, checksums, completeness)"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    v = sub.add_parser(
        "verify",
        help="check every shard: manifest, completeness, sha256, member safety, decoding; exit 1 on any problem",
    )
    v.add_argument("dir", help="dataset directory (holds manifest.json and shard-*.tar)")
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.add_argument("--no-decode", dest="decode", action="store_false",
                   help="skip decoding the members (checksums and tar structure only; faster)")
    v.add_argument("--no-refs", dest="refs", action="store_false",
                   help="skip checking that samples' source_ref references resolve (source shard, key, sha256)")
    i = sub.add_parser("info", help="summarise a dataset's manifest (shards, samples, skipped, meta)")
    i.add_argument("dir")
    i.add_argument("--json", action="store_true", help="print the manifest (refreshed from status files) as JSON")
    ls = sub.add_parser("ls", help="list sample keys and their fields, shard by shard")
    ls.add_argument("dir")
    ls.add_argument("--limit", type=int, default=None, metavar="N", help="list at most N samples")
    ls.add_argument("--json", action="store_true", help="one JSON object per sample (JSON lines)")


def run(args) -> int:
    return {"verify": _verify, "info": _info, "ls": _ls}[args.action](args)


def _verify(args) -> int:
    from ..data.shards import verify_dataset

    rep = verify_dataset(args.dir, decode=args.decode, refs=args.refs)
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2))
        return 0 if rep.ok else 1
    print(f"{rep.dir}: {rep.num_shards} shard(s), {rep.num_complete} complete and valid, "
          f"{rep.num_samples} sample(s), {rep.num_skipped} skipped input(s)"
          + (f", {rep.num_refs} source reference(s) checked" if rep.num_refs else ""))
    for s in rep.shards:
        state = "ok" if s["ok"] else "BAD"
        print(f"  {s['name']}  {s['samples']:>7d} samples  {state}")
    if rep.ok:
        print("OK: no problems found")
        return 0
    print(f"{len(rep.problems)} problem(s):")
    for p in rep.problems:
        print(f"  [{p.kind}] {p.message}")
    return 1


def _info(args) -> int:
    from ..data.shards import load_manifest, temp_files

    m = load_manifest(args.dir)
    if args.json:
        print(json.dumps(m.to_dict(), indent=2))
        return 0
    print(f"{m.dir}: {m.kind} dataset, {'complete' if m.complete else 'INCOMPLETE'}")
    print(f"  shards {m.num_shards} ({m.num_shards - len(m.incomplete())} complete), "
          f"samples {m.num_samples}, skipped inputs {m.num_skipped}")
    if m.samples_per_shard is not None:
        print(f"  samples per shard {m.samples_per_shard}, inputs {m.num_inputs}")
    if m.source:
        print(f"  source {m.source}")
    if m.meta:
        print(f"  meta {json.dumps(m.meta, sort_keys=True)}")
    for name in m.incomplete():
        print(f"  incomplete: {name}")
    for s in m.shards:
        for sk in s.skipped:
            what = sk.get("key", sk.get("index"))
            print(f"  skipped {s.name} {what}: {sk.get('reason')}")
    tmps = temp_files(args.dir)
    if tmps:
        print(f"  temporary files: {', '.join(tmps)}")
    return 0


def _ls(args) -> int:
    from pathlib import Path

    from ..data.shards import iter_shard_members, load_manifest

    m = load_manifest(args.dir)
    n = 0
    for s in m.shards:
        p = Path(args.dir) / s.name
        if not p.exists():
            continue
        for members in iter_shard_members(p):
            if args.limit is not None and n >= args.limit:
                return 0
            key = next(iter(members)).split(".", 1)[0]
            fields = sorted(name.split(".", 1)[1] for name in members)
            size = sum(len(b) for b in members.values())
            if args.json:
                print(json.dumps({"shard": s.name, "key": key, "fields": fields, "bytes": size}))
            else:
                print(f"{s.name}  {key}  {' '.join(fields)}  ({size} bytes)")
            n += 1
    return 0
