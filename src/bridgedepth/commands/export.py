"""`bridge export --model DIR --format onnx --out model.onnx`: an ONNX graph verified with onnxruntime."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

HELP = "export a depth checkpoint to ONNX, verified against PyTorch with onnxruntime"


def add_arguments(p):
    p.add_argument("--model", default=None, metavar="DIR",
                   help="checkpoint directory (default: the shipped toy depth model)")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="export format (onnx)")
    p.add_argument("--out", required=True, metavar="FILE.onnx", help="output file")
    p.add_argument("--input-size", type=int, default=None,
                   help="the graph's square input size, a multiple of the patch size "
                   "(default: the checkpoint's, 518 for real models)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch, height and width (multiples of the patch size; needs onnxscript)")
    p.add_argument("--metric", action="store_true", help="include the checkpoint's scale head: output metres")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="maximum absolute difference allowed against PyTorch (default 1e-4)")
    p.add_argument("--fixture", action="append", default=[], metavar="IMAGE",
                   help="also verify on this image (repeatable; default: none besides a random input)")


def run(args) -> int:
    from ..io import read_image
    from ..mde.export import export_onnx

    model = args.model
    if model is None:
        from ..zoo import model_path

        model = model_path("depth")
        print(f"exporting the shipped toy depth model ({model})")
    if not Path(model).is_dir():
        raise InputError(f"{model}: model directory not found")
    fixtures = [read_image(f) for f in args.fixture]
    rep = export_onnx(model, args.out, input_size=args.input_size, dynamic=args.dynamic, metric=args.metric,
                      opset=args.opset, fixtures=fixtures, tolerance=args.tolerance)
    diffs = ", ".join(f"{k} {v:.2e}" for k, v in rep.max_abs_diff.items())
    hw = "H, W" if rep.dynamic else f"{rep.input_size}, {rep.input_size}"
    print(f"exported {rep.path} ({rep.path.stat().st_size / 2**20:.1f} MB): input image float32 "
          f"(B, 3, {hw}) RGB in [0, 1]"
          f"{' (B dynamic, H and W any multiples of the patch; predict resizes the shorter side to ' + str(rep.input_size) + ')' if rep.dynamic else ', B = 1'}; "
          f"output {'depth in metres' if rep.kind == 'depth' else 'relative disparity'} (B, {hw})")
    print(f"verified with onnxruntime against PyTorch: max |diff| {diffs} (tolerance {rep.tolerance:g})")
    return 0
