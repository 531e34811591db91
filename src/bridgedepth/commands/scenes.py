"""`bridge scenes`: render procedural RGB-D scenes into shards, or draw a contact sheet of a scene set.

    bridge scenes --count 2000 --kind mixed --size 256x256 --seed 0 --out runs/data/scenes
    bridge scenes --preview runs/data/scenes --out scenes.png
"""

from __future__ import annotations

import argparse
import time

from ..errors import InputError

HELP = "render procedural RGB-D scenes into shards, or a contact sheet of them"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import add_config_args

    p.add_argument("--out", required=True,
                   help="output shard folder (rendering) or PNG file (with --preview)")
    p.add_argument("--count", type=int, default=None, help="number of scenes (default: scenes.train_count)")
    p.add_argument("--kind", default=None, choices=["indoor", "outdoor", "object", "mixed"],
                   help="scene kind (default: scenes.kind)")
    p.add_argument("--size", default=None, metavar="HxW", help="image size, e.g. 256x256 (default: scenes.size)")
    p.add_argument("--seed", type=int, default=None, help="dataset seed (default: scenes.seed)")
    p.add_argument("--samples-per-shard", type=int, default=None,
                   help="samples per shard (default: scenes.samples_per_shard)")
    p.add_argument("--workers", type=int, default=None,
                   help="rendering processes, each writing whole shards (default: scenes.workers)")
    p.add_argument("--aspect-range", type=float, nargs=2, default=None, metavar=("LO", "HI"),
                   help="draw each scene's width/height ratio from [LO, HI] at about the same pixel count")
    p.add_argument("--look", default=None, choices=["standard", "synthetic", "real"],
                   help="image look: standard (full shader), synthetic (flat palette, like synthetic source "
                        "sets) or real (full shader + camera effects); depth is the same (default: scenes.look)")
    p.add_argument("--preview", default=None, metavar="DIR",
                   help="instead of rendering, write a contact sheet (RGB | depth) of the scenes in DIR to --out")
    p.add_argument("--max", type=int, default=24, help="--preview: number of scenes on the sheet")
    p.add_argument("--columns", type=int, default=4, help="--preview: (RGB, depth) pairs per row")
    p.add_argument("--cell", type=int, default=192, help="--preview: pixel size of each image on the sheet")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_args(p)


def _preview(args) -> int:
    from ..data.scenes.dataset import write_contact_sheet

    if args.max < 1 or args.columns < 1 or args.cell < 16:
        raise InputError("--max and --columns must be >= 1 and --cell >= 16")
    if not str(args.out).lower().endswith((".png", ".jpg", ".jpeg")):
        raise InputError(f"--out {args.out}: the contact sheet must be a .png or .jpg file")
    sheet = write_contact_sheet(args.preview, args.out, limit=args.max, columns=args.columns, cell=args.cell)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.preview is not None:
        return _preview(args)

    from ..cli import config_from_args
    from ..config import save_resolved
    from ..data.scenes import parse_size
    from ..data.scenes.dataset import write_scenes

    cfg = config_from_args(args)
    sc = cfg.scenes
    if args.count is not None:
        sc.train_count = args.count
    if args.kind is not None:
        sc.kind = args.kind
    if args.size is not None:
        sc.size = list(parse_size(args.size))
    if args.seed is not None:
        sc.seed = args.seed
    if args.samples_per_shard is not None:
        sc.samples_per_shard = args.samples_per_shard
    if args.workers is not None:
        sc.workers = args.workers
    if args.aspect_range is not None:
        sc.aspect_range = list(args.aspect_range)
    if args.look is not None:
        sc.look = args.look
    if sc.workers < 1:
        raise InputError(f"--workers {sc.workers}: must be >= 1")
    size = parse_size(sc.size)
    t0 = time.perf_counter()
    manifest = write_scenes(args.out, sc.train_count, kind=sc.kind, size=size, seed=sc.seed,
                            samples_per_shard=sc.samples_per_shard, workers=sc.workers,
                            aspect_range=sc.aspect_range, progress=not args.quiet, look=sc.look)
    dt = time.perf_counter() - t0
    save_resolved(cfg, args.out)
    print(f"{args.out}: {manifest.num_samples} {sc.kind} {sc.look}-look scenes at {size[0]}x{size[1]} in "
          f"{manifest.num_shards} shard(s); {'complete' if manifest.complete else 'INCOMPLETE'} "
          f"({dt:.1f} s this run)")
    return 0 if manifest.complete else 1
