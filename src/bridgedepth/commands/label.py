"""`bridge label` — pseudo-labels and similarity masks for generated shards."""

from __future__ import annotations

import json

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
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    from ..labels.label import label

    cfg = config_from_args(args)
    s = label(cfg, args.teacher, args.generated, args.out, workers=args.workers, progress=not args.no_progress,
              embed_source=args.embed_source)
    if args.json:
        print(json.dumps(s.to_json(), indent=2))
        return 0
    print(f"labelled {s.samples} samples in {s.seconds:.1f} s ({s.throughput:.1f} samples/s), "
          f"{s.skipped} skipped")
    print(f"accepted for ground-truth supervision: {s.accepted} ({100 * s.accepted_fraction:.1f} %)")
    print("final mask fraction histogram:")
    peak = max(s.histogram().values() or [1]) or 1
    for rng, n in s.histogram().items():
        print(f"  {rng}  {'#' * round(30 * n / peak):30s} {n}")
    print(f"summary: {args.out}/label_summary.json")
    return 0
