"""`bridge generate`: N images per source depth map with a d2i model, written as shards."""

from __future__ import annotations

import json
import os
import sys

from ..cli import add_config_args, config_from_args

HELP = "generate RGB images from source depth shards with a D2I model"


def add_arguments(p):
    p.add_argument("--d2i", required=True, help="d2i model directory (pretrained or fine-tuned)")
    p.add_argument("--source", required=True, help="source RGB-D shard directory")
    p.add_argument("--out", required=True, help="output shard directory")
    p.add_argument("--images-per-depth", type=int, default=None, help="images per source map (default generate.images_per_depth)")
    p.add_argument("--seed", type=int, default=None, help="run seed (default generate.seed)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default generate.steps or d2i.num_steps)")
    p.add_argument("--overwrite", action="store_true",
                   help="regenerate when --out holds shards made with other settings (default: refuse)")
    p.add_argument("--embed-source", action="store_true", default=None,
                   help="store copies of the source depth, valid mask and RGB in each generated sample "
                        "(self-contained shards; default: a source_ref to the source sample, see generate.embed_source)")
    p.add_argument("--rank", type=int, default=int(os.environ.get("RANK", 0)), help="this process's rank")
    p.add_argument("--world-size", type=int, default=int(os.environ.get("WORLD_SIZE", 1)), help="number of ranks")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any source sample was skipped (by default only when none was used)")
    add_config_args(p)


def run(args) -> int:
    from ..d2i.generate import generate

    cfg = config_from_args(args)
    summary = generate(cfg, args.d2i, args.source, args.out, images_per_depth=args.images_per_depth,
                       seed=args.seed, steps=args.steps, rank=args.rank, world_size=args.world_size,
                       overwrite=args.overwrite, embed_source=args.embed_source)
    print(json.dumps(summary, indent=2))
    from ..data.shards import load_manifest

    bad = [{"shard": sh.name, **item} for sh in load_manifest(args.out).shards for item in sh.skipped]
    for b in bad[:20]:
        print(f"  skipped {b.get('key', '?')} ({b['shard']}): {b.get('reason', '?')}", file=sys.stderr)
    if bad:
        print(f"{len(bad)} bad source sample(s) skipped (recorded in the shard status files)", file=sys.stderr)
    if bad and (args.strict or summary.get("samples_total", 0) == 0):
        print("error: " + ("no source sample could be used" if not summary.get("samples_total") else
                           f"{len(bad)} bad source sample(s) and --strict"), file=sys.stderr)
        return 1
    return 0
