"""`bridge sources`: list the source-dataset adapters, or convert one dataset to shards."""

from __future__ import annotations

import argparse

from ..errors import InputError

HELP = "list source-dataset adapters and convert a dataset to shards"


def _parse_opts(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--opt {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import add_config_args

    sub = p.add_subparsers(dest="sources_command", metavar="ACTION")
    sub.add_parser("list", help="name each adapter and the on-disk layout it expects",
                   description="name each adapter and the on-disk layout it expects")
    c = sub.add_parser("convert", help="convert a dataset in its native layout to shards",
                       description="read a dataset in its native layout and write shards "
                                   "(bad frames are skipped, counted and reported with their path)")
    c.add_argument("name", help="adapter name (see `bridge sources list`)")
    c.add_argument("--root", required=True, help="dataset root folder")
    c.add_argument("--out", required=True, help="output shard folder")
    c.add_argument("--encoding", default=None, help="depth encoding (folder: any bridgedepth.io encoding)")
    c.add_argument("--limit", type=int, default=None, help="convert only the first N frames")
    c.add_argument("--samples-per-shard", type=int, default=None,
                   help="samples per shard (default: data.samples_per_shard of the preset)")
    c.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="adapter option, e.g. --opt rgb_dir=color (repeatable; see `bridge sources list`)")
    c.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any frame was skipped (by default only when every frame was)")
    add_config_args(c)


def _list() -> int:
    from ..data.sources import describe_adapters

    print(describe_adapters(), end="")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from ..cli import config_from_args
    from ..config import SourceConfig, save_resolved
    from ..data.sources import convert_source, get_adapter

    cfg = config_from_args(args)
    opts = _parse_opts(args.opt)
    if args.limit is not None and args.limit < 0:
        raise InputError(f"--limit {args.limit}: must be >= 0")
    sps = args.samples_per_shard if args.samples_per_shard is not None else cfg.data.samples_per_shard
    if sps < 1:
        raise InputError(f"--samples-per-shard {sps}: must be >= 1")
    adapter = get_adapter(args.name, args.root, encoding=args.encoding, **opts)
    manifest, report = convert_source(adapter, args.out, limit=args.limit, samples_per_shard=sps)
    cfg.data.samples_per_shard = sps
    cfg.data.sources = [SourceConfig(name=args.name, root=str(args.root), encoding=adapter.encoding,
                                     options=dict(opts))]
    save_resolved(cfg, args.out)
    print(f"wrote {report.loaded} samples from {args.name} ({args.root}) to {args.out}")
    print(report.summary())
    if report.total and report.loaded == 0:
        print("error: every frame was skipped; nothing usable was written")
        return 1
    if args.strict and report.skipped:
        print(f"error: {len(report.skipped)} frame(s) skipped and --strict")
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    if args.sources_command == "list":
        return _list()
    if args.sources_command == "convert":
        return _convert(args)
    print("usage: bridge sources {list,convert} ...  (see bridge sources --help)")
    return 2
