"""`bridge mask --generated A.png --original B.png [--out mask.png] [--overlay o.png] [--json]`.

The per-pair debugging tool for similarity masks: prints the statistics (JSON with --json) and
writes the fusion mask as a 0/255 PNG in the original image's pixel grid.
"""

from __future__ import annotations

import json

from ..cli import add_config_args, config_from_args

HELP = "similarity mask for one (generated, original) image pair, with JSON statistics"


def add_arguments(p) -> None:
    p.add_argument("--generated", "-g", required=True, help="the generated image (any size)")
    p.add_argument("--original", "-r", required=True, help="the original render (its grid is the mask's)")
    p.add_argument("--out", "-o", default=None, help="write the mask here (PNG, 0/255, original's size)")
    p.add_argument("--overlay", default=None,
                   help="write a picture of the mask over the generated image (green kept, red dropped, "
                        "crop in yellow)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    add_config_args(p)


def _print_text(stats: dict, args) -> None:
    verdict = "accepted" if stats["accepted"] else "rejected"
    x, y, w, h = stats["crop"]
    print(f"generated            {args.generated}")
    print(f"original             {args.original}")
    print(f"orb matches          {stats['orb_matches']} ({stats['inliers']} RANSAC inliers)")
    print(f"registered fraction  {stats['registered_fraction']:.4f}  (mask A)")
    print(f"direct fraction      {stats['direct_fraction']:.4f}  (mask B)")
    print(f"final fraction       {stats['final_fraction']:.4f}  -> {verdict}")
    print(f"crop [x, y, w, h]    [{x}, {y}, {w}, {h}]")
    print(f"reason               {stats['reason']}")
    if args.out:
        print(f"mask written to      {args.out}")
    if args.overlay:
        print(f"overlay written to   {args.overlay}")


def run(args) -> int:
    import numpy as np

    from ..io import read_image, write_image
    from ..labels.masks import mask_overlay, similarity_mask

    cfg = config_from_args(args).label
    generated = read_image(args.generated)
    original = read_image(args.original)
    result = similarity_mask(generated, original, cfg)
    stats = {"generated": str(args.generated), "original": str(args.original), **result.stats()}
    if args.out:
        write_image(args.out, np.where(result.mask, 255, 0).astype(np.uint8))
    if args.overlay:
        write_image(args.overlay, mask_overlay(generated, result))
    if args.json:
        print(json.dumps(stats))
    else:
        _print_text(stats, args)
    return 0
