"""`bridge label` — pseudo-labels and similarity masks for generated shards."""

from __future__ import annotations

import json
import sys

from ..cli import add_config_args, config_from_args

HELP = "pseudo-label generated shards with a teacher and add similarity masks"


def add_arguments(p):
    add_config_args(p)
    p.add_argument("--teacher", required=True, help="teacher checkpoint folder (bridge train output, e.g. teacher/last)")
    p.add_argument("--generated", required=True, help="generated shard folder (bridge generate output)")
    p.add_argument("--out", required=True, help="output shard folder (one shard per input shard)")
    p.add_argument("--workers", type=int, help="local worker processes, each owning whole shards (default label.workers)")
    p.add_argument("--embed-source", action="store_true",
                   help="store the source depth, valid mask and RGB in each labelled sample instead of the "
                        "generated samples' source_ref (a self-contained set)")
    p.add_argument("--overwrite", action="store_true",
                   help="label again from the start a --out folder labelled with another teacher or other "
                        "label settings (default: refuse it; a rerun with the same settings resumes)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any input sample was skipped (by default only when none was labelled)")


def run(args) -> int:
    from ..labels.label import label

    cfg = config_from_args(args)
    s = label(cfg, args.teacher, args.generated, args.out, workers=args.workers, progress=not args.no_progress,
              embed_source=args.embed_source, overwrite=args.overwrite)
    failed = 1 if (s.skipped and (args.strict or s.samples == 0)) else 0
    if args.json:
        print(json.dumps(s.to_json(), indent=2))
        return failed
    print(f"labelled {s.samples} samples in {s.seconds:.1f} s ({s.throughput:.1f} samples/s), "
          f"{s.skipped} skipped")
    print(f"accepted for ground-truth supervision: {s.accepted} ({100 * s.accepted_fraction:.1f} %)")
    print("final mask fraction histogram:")
    peak = max(s.histogram().values() or [1]) or 1
    for rng, n in s.histogram().items():
        print(f"  {rng}  {'#' * round(30 * n / peak):30s} {n}")
    for bad in s.bad_inputs[:20]:
        print(f"  skipped {bad.get('key', '?')} ({bad['shard']}): {bad.get('reason', '?')}")
    if len(s.bad_inputs) > 20:
        print(f"  ... and {len(s.bad_inputs) - 20} more (all in {args.out}/label_summary.json)")
    print(f"summary: {args.out}/label_summary.json")
    if failed:
        print("error: " + ("no sample could be labelled" if s.samples == 0 else
                           f"{s.skipped} bad input sample(s) and --strict"), file=sys.stderr)
    return failed
