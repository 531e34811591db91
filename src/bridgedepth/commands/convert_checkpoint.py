"""`bridge convert-checkpoint --from depth-anything-v2 --encoder vits IN.pth OUT_DIR`."""

from __future__ import annotations

HELP = "convert an original Depth-Anything-V2 checkpoint"


def add_arguments(p):
    p.add_argument("input", metavar="IN.pth", help="original checkpoint (.pth read weights-only, or .safetensors)")
    p.add_argument("out", metavar="OUT_DIR", help="checkpoint directory to write (ours + transformers format)")
    p.add_argument("--from", dest="source", default="depth-anything-v2", choices=["depth-anything-v2"],
                   help="layout of the input checkpoint")
    p.add_argument("--encoder", required=True, choices=["vits", "vitb", "vitl", "vitg"])
    p.add_argument("--metric", action="store_true",
                   help="the checkpoint is a metric Depth-Anything-V2 (sigmoid head times --max-depth)")
    p.add_argument("--max-depth", type=float, default=20.0,
                   help="metric head range in metres (20 indoor / Hypersim, 80 outdoor / VKITTI)")
    p.add_argument("--input-size", type=int, default=518, help="inference size stored with the checkpoint")


def run(args) -> int:
    from pathlib import Path

    from ..errors import InputError
    from ..mde.convert import convert_depth_anything_v2
    from ..mde.model import count_parameters, save_model

    if args.input_size % 14:
        raise InputError(f"--input-size must be a multiple of 14, got {args.input_size}")
    model = convert_depth_anything_v2(args.input, args.encoder, metric=args.metric, max_depth=args.max_depth)
    out = save_model(
        model, args.out, input_size=args.input_size,
        extra={"converted_from": args.source, "source_file": str(Path(args.input).resolve()),
               "encoder": args.encoder},
    )
    head = f"metric (0..{args.max_depth:g} m)" if args.metric else "relative disparity"
    print(f"converted {args.input} ({args.encoder}, {count_parameters(model) / 1e6:.1f} M parameters, {head}) "
          f"-> {out}")
    return 0
