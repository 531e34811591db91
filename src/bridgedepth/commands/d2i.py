"""`bridge d2i pretrain|finetune`: train the tiny depth-to-image backend; reward fine-tune with LoRA."""

from __future__ import annotations

import json
from pathlib import Path

from ..cli import add_config_args, config_from_args
from ..config import save_resolved

HELP = "depth-to-image model: pretrain the tiny backend, reward fine-tune with LoRA"


def add_arguments(p):
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    pre = sub.add_parser("pretrain", help="train the tiny d2i backend from source RGB-D shards")
    pre.add_argument("--source", required=True, help="source RGB-D shard directory")
    pre.add_argument("--out", required=True, help="output d2i directory (diffusers layout + bridge.json)")
    pre.add_argument("--steps", type=int, default=None, help="training steps (default d2i.pretrain_steps)")
    add_config_args(pre)
    ft = sub.add_parser("finetune", help="reward-gradient LoRA fine-tuning (depth consistency + aesthetic)")
    ft.add_argument("--d2i", required=True, help="d2i model directory (from pretrain, or diffusers-format backend)")
    ft.add_argument("--teacher", required=True, help="teacher depth model directory (bridge train output)")
    ft.add_argument("--source", required=True, action="append", metavar="DIR[:WEIGHT]",
                    help="source depth shard directory; repeat to draw from several (optional weight, default 1)")
    ft.add_argument("--heldout", default=None, action="append",
                    help="held-out source shards (default: finetune.heldout samples from whole scenes of the sources)")
    ft.add_argument("--out", required=True, help="output directory (LoRA weights, logs, sample grids)")
    ft.add_argument("--steps", type=int, default=None, help="fine-tuning steps (default finetune.steps)")
    ft.add_argument("--log-with", default=None, metavar="TRACKER[,TRACKER]",
                    help="also log to these accelerate trackers: tensorboard (OUT/d2i_finetune/), wandb, ...")
    add_config_args(ft)


def run(args) -> int:
    cfg = config_from_args(args)
    out = Path(args.out)
    name = f"{args.action}_config.yaml"
    from ..d2i.common import has_checkpoint

    if args.action == "pretrain":
        from ..d2i.pretrain import CHECKPOINT
    else:
        from ..d2i.finetune import CHECKPOINT
    if not has_checkpoint(out / CHECKPOINT):
        save_resolved(cfg, out, name)  # a resumed run's settings are checked first (a refused one leaves it)
    if args.action == "pretrain":
        from ..d2i.pretrain import pretrain

        summary = pretrain(cfg, args.source, out, steps=args.steps)
    else:
        from ..d2i.finetune import finetune

        accelerator = None
        if args.log_with:
            import torch
            from accelerate import Accelerator

            from ..mde.tracking import hparams, parse_log_with
            from ..config import to_dict

            cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
            accelerator = Accelerator(mixed_precision=cfg.finetune.mixed_precision, cpu=cpu,
                                      log_with=parse_log_with(args.log_with), project_dir=str(out))
            accelerator.init_trackers("d2i_finetune", config=hparams(to_dict(cfg.finetune)))
        try:
            summary = finetune(cfg, args.d2i, args.teacher, args.source, out, heldout=args.heldout,
                               steps=args.steps, accelerator=accelerator)
        finally:
            if accelerator is not None:
                accelerator.end_training()
        b, a = summary["heldout_before"], summary["heldout_after"]
        off = [n for n, d in summary["rewards"].items() if not d["on"]]
        for n in off:
            print(f"reward '{n}' is OFF: {summary['rewards'][n]['why']}")
        print(f"held-out depth reward: {b['depth_reward']:.4f} -> {a['depth_reward']:.4f}; "
              f"teacher AbsRel: {b['teacher_absrel']:.4f} -> {a['teacher_absrel']:.4f}")
        for name, h in (summary.get("heldout") or {}).items():
            if isinstance(h, dict) and "by" in h:
                print(f"held out from {name}: {h['samples']} samples from {h['scenes']} scenes (by {h['by']})")
    save_resolved(cfg, out, name)
    print(json.dumps(summary, indent=2, default=str))
    return 0
