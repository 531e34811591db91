"""`bridge config show PRESET` / `bridge config list`."""

from __future__ import annotations

import json

from ..config import dump_yaml, load_config, preset_names, to_dict

HELP = "show presets and the fully resolved configuration"


def add_arguments(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print the fully resolved configuration of a preset")
    show.add_argument("preset", nargs="?", default="tiny", help="preset name or YAML file")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    sub.add_parser("list", help="list the shipped presets")


def run(args) -> int:
    if args.action == "list":
        for name in preset_names():
            cfg = load_config(name)
            print(f"{name:24s} {cfg.description}")
        return 0
    cfg = load_config(args.preset, args.overrides)
    print(json.dumps(to_dict(cfg), indent=2) if args.json else dump_yaml(cfg), end="" if not args.json else "\n")
    return 0
