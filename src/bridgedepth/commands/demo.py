"""`bridge demo` — the whole BRIDGE pipeline on the embedded default, ending in a report."""

from __future__ import annotations

from ..cli import add_config_args

HELP = "run the whole BRIDGE pipeline end to end on the embedded default and write a report"


def add_arguments(p):
    add_config_args(p, default_preset=None)
    p.add_argument("--out", default=None, help="output folder (default: the preset's `out`, runs/demo); a rerun into it skips finished stages "
                        "and remakes those whose settings (--set) changed, with the stages that read them")
    p.add_argument("--fast", action="store_true",
                   help="smoke-test sizes (preset tiny-fast, about 3 minutes on 2 cores) unless --preset is given")
    p.add_argument("--fixtures", help="folder of real RGB-D fixtures (default: ../shared/data/rgbd if present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--seeds", type=int, default=None, metavar="N",
                   help="repeat every trained row over N training seeds; tables show mean and spread")
    p.add_argument("--from-scratch", action="store_true",
                   help="build the toy foundations first (demo.zoo_preset; CPU hours for the full recipe, "
                        "about a minute with --fast) instead of using the shipped ones")


def run(args) -> int:
    from ..config import load_config
    from ..pipeline import run_demo

    preset = args.preset or ("tiny-fast" if args.fast else "tiny")
    cfg = load_config(preset, args.overrides)
    if args.seeds is not None:
        if args.seeds < 1:
            from ..errors import InputError

            raise InputError(f"--seeds {args.seeds}: must be >= 1")
        cfg.demo.seeds = args.seeds
    out = args.out or cfg.out
    print(f"bridge demo: preset '{preset}', output {out}")
    runner_out = run_demo(cfg, out, fixtures_root=args.fixtures, progress=not args.no_progress,
                          from_scratch=args.from_scratch)
    print()
    print(runner_out["tables_markdown"])
    print()
    print(f"report:  {runner_out['report']}")
    print(f"metrics: {runner_out['metrics']}")
    return 0
