"""`bridge train` — train one depth-model stage from a preset plus overrides."""

from __future__ import annotations

from ..cli import add_config_args, config_from_args
from ..errors import InputError

HELP = "train a depth model stage (teacher, students, metric, scale head)"
STAGES = ["teacher", "student-pseudo", "student-hybrid", "metric", "scale-head"]


def add_arguments(p):
    add_config_args(p)
    p.add_argument("--stage", choices=STAGES, help="training stage (default: train.stage of the preset)")
    p.add_argument(
        "--data", action="append", default=[], metavar="DIR[:TARGET[:WEIGHT]]",
        help="shard folder of the mixture; TARGET is gt|pseudo|hybrid|metric (default by stage), "
        "WEIGHT its sampling weight (repeatable; adds to train.data of the preset)",
    )
    p.add_argument("--out", required=True, help="output folder (checkpoints last/ and best/, log.jsonl, curves.png)")
    p.add_argument("--init-from", help="start from this checkpoint folder (e.g. the teacher for students)")
    p.add_argument("--val", help="held-out shard folder for validation (AbsRel/δ1 after disparity alignment)")
    p.add_argument("--steps", type=int, help="number of optimiser steps (overrides train.steps)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--log-with", default=None, metavar="TRACKER[,TRACKER]",
                   help="also log to these accelerate trackers: tensorboard (OUT/train/), wandb, ...")


DEFAULT_TARGET = {"teacher": "gt", "student-pseudo": "pseudo", "student-hybrid": "hybrid",
                  "metric": "metric", "scale-head": "metric"}


TARGETS = ("gt", "pseudo", "hybrid", "metric")


def parse_data_arg(item: str, stage: str):
    """``DIR``, ``DIR:TARGET`` or ``DIR:TARGET:WEIGHT`` -> TrainData."""
    from ..mde.trainer import TrainData

    parts = item.split(":")
    if len(parts) >= 3 and parts[-2] in TARGETS:
        try:
            weight = float(parts[-1])
        except ValueError:
            raise InputError(f"--data {item}: weight '{parts[-1]}' is not a number") from None
        return TrainData(":".join(parts[:-2]), parts[-2], weight)
    if len(parts) >= 2 and parts[-1] in TARGETS:
        return TrainData(":".join(parts[:-1]), parts[-1], 1.0)
    return TrainData(item, DEFAULT_TARGET[stage], 1.0)


def run(args) -> int:
    from ..mde.trainer import TrainData, train

    cfg = config_from_args(args)
    if args.stage:
        cfg.train.stage = args.stage
    if args.steps is not None:
        cfg.train.steps = args.steps
    if args.val:
        cfg.train.val = args.val
    data = [TrainData(d.path, d.target, d.weight) for d in cfg.train.data]
    data += [parse_data_arg(item, cfg.train.stage) for item in args.data]
    if not data:
        raise InputError("no training data: pass --data DIR (or set train.data in the preset)")
    validate = None
    if cfg.train.val:
        from ..evaluation.validate import make_shard_validator

        validate = make_shard_validator(cfg.train.val, cfg)
    res = train(cfg, data, args.out, init_from=args.init_from, validate=validate,
                progress=not args.no_progress, log_with=args.log_with)
    print(f"trained {cfg.train.stage}: {res.steps} steps (resumed from {res.resumed_from}), "
          f"final loss {res.final_loss:.4f}" + (f", best val {res.best_score:.4f}" if res.best_score is not None else ""))
    print(f"checkpoint: {res.out_dir / 'last'}")
    return 0
