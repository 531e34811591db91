"""`bridge app [--model DIR] [--host 127.0.0.1] [--port P]`: the Gradio web app."""

from __future__ import annotations

from ..errors import InputError

HELP = "the web app: upload an image, see and download its depth (needs the app extra: gradio)"


def add_arguments(p):
    p.add_argument("--model", default=None, metavar="DIR",
                   help="checkpoint directory (default: the shipped toy depth model)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    p.add_argument("--examples", nargs="*", default=None, metavar="IMAGE",
                   help="example images (default: a few from ../shared/data/rgbd when present)")
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload accepted (default 20 MB)")
    p.add_argument("--max-pixels", type=int, default=4096 * 4096,
                   help="largest image accepted, in pixels (default 4096x4096)")
    p.add_argument("--fov", type=float, default=60.0,
                   help="default horizontal field of view (degrees) for metric point clouds")


def run(args) -> int:
    from ..app import launch

    if not 0 < args.port < 65536:
        raise InputError(f"--port must be in 1..65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.max_pixels <= 0:
        raise InputError("--max-upload-mb and --max-pixels must be positive")
    print(f"bridge app on http://{args.host}:{args.port} (Ctrl+C stops it)", flush=True)
    launch(args.model, host=args.host, port=args.port, examples=args.examples, block=True,
           max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, fov=args.fov)
    return 0
