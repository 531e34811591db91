"""`bridge predict INPUT... --model DIR`: depth for images, folders, globs or .txt lists."""

from __future__ import annotations

import glob
import time
from pathlib import Path

from ..errors import InputError

HELP = "predict depth for images, folders, globs or lists"

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
OUTPUT_KINDS = ("color", "png16", "npy", "side-by-side")


def add_arguments(p):
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (their images, sorted), globs, or .txt lists (one path a line)")
    p.add_argument("--model", required=True, metavar="DIR", help="checkpoint directory (bridge or transformers)")
    p.add_argument("--out", default="predictions", metavar="DIR", help="output folder (default: predictions)")
    p.add_argument("--input-size", type=int, default=None,
                   help="network shorter side, multiple of 14 (default: the checkpoint's, 518 for real models)")
    p.add_argument("--fixed-size", action="store_true",
                   help="feed input-size squares (aspect not kept) so that any images batch together")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--outputs", default="color",
                   help="comma list of: color, png16, npy, side-by-side (default: color)")
    p.add_argument("--metric", action="store_true",
                   help="metric depth in metres (metric model, or relative model + scale head)")
    p.add_argument("--grayscale", action="store_true", help="grey colouring (near = white) instead of Spectral_r")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"],
                   help="fp32 (default); bf16 autocast (fast on CPUs with AVX512-BF16/AMX and on GPUs); "
                        "int8 dynamic quantisation of the linear layers (CPU). See docs/performance.md")
    p.add_argument("--overwrite", action="store_true", help="recompute images whose outputs already exist")


def collect_inputs(items: list[str]) -> list[Path]:
    """Expand files, folders, globs and .txt lists into an ordered, de-duplicated list of image paths."""
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        r = p.resolve()
        if r not in seen:
            seen.add(r)
            out.append(p)

    def expand(item: str, base: Path | None = None) -> None:
        p = Path(item)
        if base is not None and not p.is_absolute():
            p = base / p
        if p.is_dir():
            imgs = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file())
            if not imgs:
                raise InputError(f"{p}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            for q in imgs:
                add(q)
        elif p.suffix.lower() == ".txt":
            if not p.is_file():
                raise InputError(f"{p}: list file not found")
            for line in p.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    expand(line, p.parent)
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(f"{p}: not an image file (suffix {p.suffix or 'none'})")
            add(p)
        elif glob.has_magic(str(p)):
            matches = sorted(glob.glob(str(p), recursive=True))
            imgs = [Path(m) for m in matches if Path(m).suffix.lower() in IMAGE_SUFFIXES and Path(m).is_file()]
            if not imgs:
                raise InputError(f"{item}: the pattern matches no images")
            for q in imgs:
                add(q)
        else:
            raise InputError(f"{p}: no such file, folder or pattern")

    for item in items:
        expand(item)
    return out


def output_paths(out_dir: Path, stem: str, kinds: list[str], metric: bool) -> dict[str, Path]:
    tag = "depth" if metric else "disp"
    names = {"color": f"{stem}_color.png", "png16": f"{stem}_{tag}16.png", "npy": f"{stem}_{tag}.npy",
             "side-by-side": f"{stem}_side.png"}
    return {k: out_dir / names[k] for k in kinds}


def run(args) -> int:
    from tqdm import tqdm

    kinds = [k.strip() for k in args.outputs.split(",") if k.strip()]
    bad = [k for k in kinds if k not in OUTPUT_KINDS]
    if bad or not kinds:
        raise InputError(f"--outputs: unknown kind(s) {bad}; choose from {', '.join(OUTPUT_KINDS)}")
    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if args.input_size is not None and args.input_size < 1:
        raise InputError(f"--input-size must be positive, got {args.input_size}")
    paths = collect_inputs(args.inputs)
    stems: dict[str, Path] = {}
    for p in paths:
        if p.stem in stems:
            raise InputError(f"two inputs share the name '{p.stem}': {stems[p.stem]} and {p}; "
                             "predict them into different --out folders")
        stems[p.stem] = p

    from ..mde.predictor import Predictor, read_rgb

    # (the predictor runs under torch.inference_mode; never switch autograd off process-wide: the CLI
    # is also called in-process, e.g. from tests and notebooks)
    predictor = Predictor.from_pretrained(
        args.model, input_size=args.input_size, metric=args.metric, fixed_size=args.fixed_size, device=args.device,
        precision=args.precision,
    )
    patch = predictor.patch
    if args.input_size is not None and args.input_size % patch:
        lo = max(patch, args.input_size // patch * patch)
        raise InputError(f"--input-size {args.input_size}: must be a multiple of the model's patch size {patch} "
                         f"(e.g. {lo} or {lo + patch})")
    is_depth = predictor.kind == "depth"
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = []
    for p in paths:
        outs = output_paths(out_dir, p.stem, kinds, is_depth)
        if args.overwrite or not all(o.exists() for o in outs.values()):
            todo.append((p, outs))
    skipped = len(paths) - len(todo)
    t0 = time.perf_counter()
    with tqdm(total=len(todo), desc="predict", unit="img", disable=None) as bar:
        for i in range(0, len(todo), args.batch_size):
            chunk = todo[i : i + args.batch_size]
            results = predictor.predict_batch([read_rgb(p) for p, _ in chunk])
            for (p, outs), res in zip(chunk, results):
                for kind, target in outs.items():
                    res.save(target, kind, grayscale=args.grayscale)
            bar.update(len(chunk))
    dt = time.perf_counter() - t0
    what = "metric depth (m)" if is_depth else "relative disparity (larger = nearer)"
    print(f"predicted {len(todo)} image(s) ({skipped} already done) in {dt:.1f} s -> {out_dir} [{what}; "
          f"colour: Spectral_r, near = {'white' if args.grayscale else 'red'}, far = "
          f"{'black' if args.grayscale else 'blue'}]")
    return 0
