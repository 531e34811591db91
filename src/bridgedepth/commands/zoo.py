"""`bridge zoo`: the toy foundation models that ship with the package.

    bridge zoo list [--json]
    bridge zoo build [--out runs/zoo] [--install] [--preset zoo|zoo-fast] [--set zoo.d2i_steps=...]

`build` is resumable: rerun the same command after an interruption and it continues from the last
checkpoint of the stage it was in (finished stages are skipped). In a finished folder, a deleted
model folder or a changed setting remakes only the stages that depend on it (docs/zoo.md).
"""

from __future__ import annotations

import argparse
import json

HELP = "the shipped toy foundation models: list them, or build (train) them from procedural scenes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import add_config_args

    sub = p.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="what ships: each model, its role, size and measured quality")
    ls.add_argument("--json", action="store_true", help="print JSON")
    b = sub.add_parser("build", help="train the toy foundations (CPU hours; resumable)",
                       description="Train the toy foundations from procedural scenes (docs/zoo.md). Resumable; "
                                   "in a finished folder, a deleted model folder (e.g. OUT/d2i) or a changed "
                                   "setting (--set zoo.d2i_steps=...) remakes only the stages that depend on it.")
    b.add_argument("--out", default="runs/zoo", help="build folder (checkpoints, data, quality.json)")
    b.add_argument("--resume", action="store_true",
                   help="continue an interrupted build in --out (the default behaviour; kept for clarity)")
    b.add_argument("--install", action="store_true",
                   help="copy the finished models with their cards into the package (bridgedepth/zoo/models)")
    b.add_argument("--quiet", action="store_true", help="no progress bars")
    add_config_args(b, default_preset="zoo")


def _list(args) -> int:
    from ..zoo import list_models

    entries = [e.to_json() for e in list_models()]
    if args.json:
        print(json.dumps(entries, indent=1))
        return 0
    for e in entries:
        state = f"{e['megabytes']:.1f} MB" if e["present"] else "not installed (bridge zoo build --install)"
        print(f"{e['name']:10s} {state:>12s}  {e['role']}")
        q = (e.get("card") or {}).get("quality")
        if q:
            print(f"{'':10s} quality: {json.dumps(q)[:160]}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.zoo_command == "list":
        return _list(args)
    from ..cli import config_from_args
    from ..zoo.build import build

    cfg = config_from_args(args)
    res = build(cfg, args.out, install=args.install, progress=not args.quiet)
    print(json.dumps({"quality": res["quality"], "installed": res["installed"]}, indent=1))
    return 0
