"""`bridge predict INPUT... --model DIR`: depth for images, folders, globs or .txt lists."""

from __future__ import annotations

import glob
import json
import sys
import time
from pathlib import Path

from ..config import changed_settings, describe_changes
from ..errors import InputError
from ..io.image import IMAGE_SUFFIXES  # .png .jpg .jpeg .ppm .bmp .tif .tiff .webp
from ..io.video import VIDEO_SUFFIXES  # .mp4 .mov .avi .mkv .webm .m4v (cv2 is imported lazily there)

HELP = "predict depth for images, folders, globs or lists"

OUTPUT_KINDS = ("color", "png16", "npy", "side-by-side", "ply")
MANIFEST = "predictions.json"


def add_arguments(p):
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files, folders (their images, sorted), globs, .txt lists (one path a line) "
                   "or videos (.mp4, .avi, .mov, .mkv, .webm)")
    p.add_argument("--model", default=None, metavar="DIR|FILE.onnx",
                   help="checkpoint directory (bridge or transformers), or an exported .onnx file with "
                   "--backend onnx (default: the shipped toy depth model, relative disparity)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch",
                   help="torch (default) or onnx: run an exported model (bridge export) with onnxruntime")
    p.add_argument("--out", default="predictions", metavar="DIR|FILE.mp4",
                   help="output folder (default: predictions); for one video, a .mp4/.avi file name")
    p.add_argument("--input-size", type=int, default=None,
                   help="network shorter side, multiple of the patch size (default: the checkpoint's)")
    p.add_argument("--fixed-size", action="store_true",
                   help="feed input-size squares (aspect not kept) so that any images batch together")
    p.add_argument("--batch-size", type=int, default=1, help="images (or video frames) per batch")
    p.add_argument("--outputs", default="color",
                   help=f"comma list of: {', '.join(OUTPUT_KINDS)} (default: color)")
    p.add_argument("--metric", action="store_true",
                   help="metric depth in metres (metric model, or relative model + scale head)")
    p.add_argument("--grayscale", action="store_true", help="grey colouring (near = white) instead of Spectral_r")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "int8"],
                   help="fp32 (default); bf16 autocast (fast on CPUs with AVX512-BF16/AMX and on GPUs); "
                        "int8 dynamic quantisation of the linear layers (CPU). See docs/performance.md")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the network with weight freezing: a one-off compile per input size (13-17 "
                        "s for vits on 2 CPU cores), then faster (fp32 1.20x transformers SDPA against 1.11x; "
                        "docs/performance.md); for many images of one size (video, --fixed-size)")
    p.add_argument("--overwrite", action="store_true", help="recompute images whose outputs already exist")
    p.add_argument("--strict", action="store_true",
                   help="exit non-zero when any input fails (default: only when none succeeds)")
    g = p.add_argument_group("point clouds (--outputs ply)")
    g.add_argument("--fx", type=float, help="focal length in pixels (x)")
    g.add_argument("--fy", type=float, help="focal length in pixels (y; default fx)")
    g.add_argument("--cx", type=float, help="principal point x in pixels (default: the image centre)")
    g.add_argument("--cy", type=float, help="principal point y in pixels (default: the image centre)")
    g.add_argument("--fov", type=float, help="horizontal field of view in degrees, instead of --fx/--fy")
    g.add_argument("--depth-scale", type=float, default=None,
                   help="relative models only: metres = DEPTH_SCALE / disparity (assumes zero shift); "
                   "without it a relative model refuses to write point clouds")
    v = p.add_argument_group("videos")
    v.add_argument("--side-by-side", action="store_true", help="video: write input | depth side by side")
    v.add_argument("--smooth", type=float, default=0.0,
                   help="video: temporal smoothing in [0, 1) of the aligned predictions (0 = off)")


def collect_inputs(items: list[str], failures: list | None = None) -> list[Path]:
    """Expand files, folders, globs and .txt lists into an ordered, de-duplicated list of image (and
    video) paths. An unusable item raises :class:`InputError`, or, when ``failures`` is a list, is
    appended to it as ``(item, reason)`` and skipped."""
    out: list[Path] = []
    seen: set[Path] = set()
    known = IMAGE_SUFFIXES | VIDEO_SUFFIXES

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
            imgs = sorted(q for q in p.iterdir() if q.suffix.lower() in known and q.is_file())
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
            if p.suffix.lower() not in known:
                raise InputError(f"{p}: not an image or video file (suffix {p.suffix or 'none'})")
            add(p)
        elif glob.has_magic(str(p)):
            matches = sorted(glob.glob(str(p), recursive=True))
            imgs = [Path(m) for m in matches if Path(m).suffix.lower() in known and Path(m).is_file()]
            if not imgs:
                raise InputError(f"{item}: the pattern matches no images")
            for q in imgs:
                add(q)
        else:
            raise InputError(f"{p}: no such file, folder or pattern")

    for item in items:
        if failures is None:
            expand(item)
            continue
        try:
            expand(item)
        except InputError as e:
            failures.append((str(item), str(e)))
    return out


def depth_like(info: dict) -> str | None:
    """Why an input (its :func:`bridgedepth.io.image.image_info`) looks like a depth map rather than a
    photograph, or None: single-channel 16-bit images are how KITTI, NYUv2, ScanNet and most depth
    sensors store depth (millimetres or 1/256 m), and read as a photograph (16 -> 8 bit, grey) they
    give a dark, flat picture. Grey 16-bit photographs exist (scientific and infrared cameras), so the
    input is still predicted."""
    if len(info["shape"]) == 2 and info["bits"] == 16:
        return f"a single-channel 16-bit {info['format']}: depth maps are stored so, photographs rarely"
    return None


def output_paths(out_dir: Path, stem: str, kinds: list[str], metric: bool) -> dict[str, Path]:
    tag = "depth" if metric else "disp"
    names = {"color": f"{stem}_color.png", "png16": f"{stem}_{tag}16.png", "npy": f"{stem}_{tag}.npy",
             "side-by-side": f"{stem}_side.png", "ply": f"{stem}_points.ply"}
    return {k: out_dir / names[k] for k in kinds}


def _load_predictor(args):
    """(predictor, description of the model) for --model/--backend; the shipped toy model by default."""
    model = args.model
    if args.backend == "onnx":
        if not model or not str(model).endswith(".onnx"):
            raise InputError("--backend onnx needs --model FILE.onnx (made by `bridge export`)")
        if args.metric or args.input_size or args.fixed_size:
            raise InputError("--metric, --input-size and --fixed-size are fixed when the ONNX model is "
                             "exported (bridge export --input-size ... [--metric])")
        if args.precision != "fp32":
            raise InputError(f"--precision {args.precision}: not for --backend onnx (the ONNX model runs fp32)")
        if args.compile:
            raise InputError("--compile: not for --backend onnx (onnxruntime optimises the graph itself)")
        from ..mde.export import OnnxPredictor

        return OnnxPredictor(model), f"{model} (onnxruntime)"
    if model and str(model).endswith(".onnx"):
        raise InputError(f"{model}: an ONNX file; run it with --backend onnx")
    if model is None:
        from ..zoo import model_path

        model = model_path("depth")  # a clear message when it is not installed
        print(f"using the shipped toy depth model ({model}); pass --model DIR for your own", file=sys.stderr)
    from ..mde.predictor import Predictor

    # (the predictor runs under torch.inference_mode; never switch autograd off process-wide: the CLI
    # is also called in-process, e.g. from tests and notebooks)
    predictor = Predictor.from_pretrained(
        model, input_size=args.input_size, metric=args.metric, fixed_size=args.fixed_size, device=args.device,
        precision=args.precision, compile=args.compile,
    )
    patch = predictor.patch
    if args.input_size is not None and args.input_size % patch:
        lo = max(patch, args.input_size // patch * patch)
        raise InputError(f"--input-size {args.input_size}: must be a multiple of the model's patch size {patch} "
                         f"(e.g. {lo} or {lo + patch})")
    return predictor, str(model)


def prediction_settings(args, predictor, model_desc: str) -> dict:
    """What the files in --out depend on (besides the image): the model and its weights, how it is run
    and how its values are written. Thread, batch, device and compile options are left out."""
    from ..data.shards import weights_digest

    model = model_desc.split(" (onnxruntime)")[0]
    return {"model": str(Path(model).resolve()), "weights": weights_digest(model), "backend": args.backend,
            "input_size": getattr(predictor, "input_size", None), "fixed_size": bool(args.fixed_size),
            "metric": bool(args.metric), "precision": args.precision, "grayscale": bool(args.grayscale),
            "depth_scale": args.depth_scale, "fx": args.fx, "fy": args.fy, "cx": args.cx, "cy": args.cy,
            "fov": args.fov, "side_by_side": bool(args.side_by_side), "smooth": args.smooth}


def check_previous(out_dir: Path, settings: dict, overwrite: bool) -> None:
    """Refuse to add to a folder whose predictions were made with other settings (another model, say):
    its existing files count as already done, so the folder would mix two models' outputs under a
    ``predictions.json`` naming only the second. ``--overwrite`` recomputes them instead."""
    path = out_dir / MANIFEST
    if overwrite or not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except ValueError:
        return
    was = old.get("settings")
    if not isinstance(was, dict):  # written before settings were recorded: compare what it said
        model = str(old.get("model") or "").split(" (onnxruntime)")[0]
        was = {"model": str(Path(model).resolve()) if model else None, "grayscale": old.get("colormap") == "gray"}
    changes = changed_settings(was, settings)
    if changes:
        shown = describe_changes(changes, named={"weights": "the model's weights"})
        raise InputError(f"{out_dir}: holds predictions made with other settings ({shown}); they would be kept as "
                         "already done. Use another --out, or --overwrite to recompute them")


def _earlier_images(out_dir: Path, settings: dict, done: list[dict]) -> list[dict]:
    """The images an earlier run with the same settings wrote into ``out_dir`` (still there, not
    predicted again now): a folder filled over several runs lists them all in predictions.json."""
    try:
        old = json.loads((out_dir / MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    if old.get("settings") != settings:  # another model's files are not this folder's predictions any more
        return []
    now = {d["input"] for d in done}
    return [e for e in old.get("images") or [] if isinstance(e, dict) and e.get("input") not in now
            and all(Path(o).exists() for o in (e.get("outputs") or {}).values())]


def _metres(res, depth_scale: float | None):
    """Metric depth of a result for point clouds; relative disparity needs an explicit scale."""
    import numpy as np

    if res.kind == "depth":
        return res.values
    d = res.values
    return np.where(d > 0, depth_scale / np.maximum(d, 1e-12), 0.0).astype(np.float32)


def run(args) -> int:
    from tqdm import tqdm

    from ..io.pointcloud import Intrinsics, depth_to_ply
    from ..io.image import read_image_info
    from ..mde.predictor import describe_values

    kinds = [k.strip() for k in args.outputs.split(",") if k.strip()]
    bad = [k for k in kinds if k not in OUTPUT_KINDS]
    if bad or not kinds:
        raise InputError(f"--outputs: unknown kind(s) {bad}; choose from {', '.join(OUTPUT_KINDS)}")
    if args.batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    if args.input_size is not None and args.input_size < 1:
        raise InputError(f"--input-size must be positive, got {args.input_size}")
    if args.depth_scale is not None and not args.depth_scale > 0:
        raise InputError(f"--depth-scale must be positive, got {args.depth_scale}")
    if "ply" in kinds:
        Intrinsics.resolve(2, 2, fx=args.fx, fy=args.fy, cx=args.cx, cy=args.cy, fov=args.fov)  # fail early
    failures: list[tuple[str, str]] = []
    paths = collect_inputs(args.inputs, failures)
    videos = [p for p in paths if p.suffix.lower() in VIDEO_SUFFIXES]
    images = [p for p in paths if p.suffix.lower() not in VIDEO_SUFFIXES]
    out_arg = Path(args.out)
    video_file = out_arg.suffix.lower() in VIDEO_SUFFIXES
    if video_file and (images or len(videos) > 1):
        raise InputError(f"--out {out_arg}: a video file name takes exactly one video input "
                         f"(got {len(videos)} video(s), {len(images)} image(s)); give a folder instead")
    stems: dict[str, Path] = {}
    for p in images:
        if p.stem in stems:
            raise InputError(f"two inputs share the name '{p.stem}': {stems[p.stem]} and {p}; "
                             "predict them into different --out folders")
        stems[p.stem] = p
    if not paths:
        for item, why in failures:
            print(f"skipped {item}: {why}", file=sys.stderr)
        raise InputError(f"no usable input: {len(failures)} input(s) failed ({failures[0][1]})" if failures
                         else "no inputs")

    predictor, model_desc = _load_predictor(args)
    is_depth = predictor.kind == "depth"
    values = describe_values(predictor.kind)
    if "ply" in kinds and not is_depth and args.depth_scale is None:
        raise InputError("point clouds need metric depth, and this model predicts relative disparity: use a "
                         "metric model (or --metric with a scale head), or pass --depth-scale S "
                         "(metres = S / disparity)")
    out_dir = out_arg.parent if video_file else out_arg
    settings = prediction_settings(args, predictor, model_desc)
    if not video_file:
        check_previous(out_dir, settings, args.overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = []
    for p in images:
        outs = output_paths(out_dir, p.stem, kinds, is_depth)
        if args.overwrite or not all(o.exists() for o in outs.values()):
            todo.append((p, outs))
    skipped = len(images) - len(todo)
    done: list[dict] = []
    notes: set[str] = set()
    depth_maps: list[Path] = []  # inputs that look like depth maps (see depth_like)
    t0 = time.perf_counter()
    with tqdm(total=len(todo), desc="predict", unit="img", disable=None if todo else True) as bar:
        for i in range(0, len(todo), args.batch_size):
            chunk = []
            for p, outs in todo[i : i + args.batch_size]:
                try:
                    # as read_rgb reads a photograph (EXIF orientation), with the header's facts
                    chunk.append((p, outs, *read_image_info(p, orient=True)))
                except InputError as e:
                    failures.append((str(p), str(e)))
            results = predictor.predict_batch([rgb for _, _, rgb, _ in chunk]) if chunk else []
            for (p, outs, _, info), res in zip(chunk, results):
                for kind, target in outs.items():
                    if kind == "ply":
                        h, w = res.values.shape
                        intr = Intrinsics.resolve(w, h, fx=args.fx, fy=args.fy, cx=args.cx, cy=args.cy,
                                                  fov=args.fov)
                        if intr.centre_default:
                            notes.add("point clouds: principal point = the image centre ((W-1)/2, (H-1)/2); "
                                      "pass --cx/--cy to set it")
                        scale_note = (f"metres = {args.depth_scale} / relative disparity (--depth-scale, "
                                      "zero shift assumed)" if not is_depth else "metric depth (m)")
                        depth_to_ply(target, _metres(res, args.depth_scale), res.rgb, intr,
                                     [f"bridgedepth: {scale_note}", f"source {p.name}"])
                    else:
                        res.save(target, kind, grayscale=args.grayscale)
                entry = {"input": str(p), "outputs": {k: str(v) for k, v in outs.items()}}
                why = depth_like(info)
                if why:
                    entry["warning"] = f"looks like a depth map, not a photograph ({why})"
                    depth_maps.append(p)
                done.append(entry)
            bar.update(len(chunk))
    dt = time.perf_counter() - t0
    video_summaries = []
    if videos:
        from ..mde.video import predict_video

        if kinds != ["color"]:
            notes.add("videos: --outputs does not apply (a colourised clip is written; "
                      "use --side-by-side for input | depth)")
        for v in videos:
            target = out_arg if video_file else out_dir / f"{v.stem}_depth.mp4"
            if target.exists() and not args.overwrite:
                print(f"{target} exists (use --overwrite); skipped", file=sys.stderr)
                continue
            try:
                s = predict_video(predictor, v, target, side_by_side=args.side_by_side, smooth=args.smooth,
                                  batch_size=args.batch_size, grayscale=args.grayscale,
                                  log=lambda m: print(m, file=sys.stderr))
            except InputError as e:
                failures.append((str(v), str(e)))
                continue
            video_summaries.append(s)
            print(f"video {v} -> {target}: {s['frames']} frames in {s['seconds']:.1f} s; one colour range for "
                  f"the clip [{s['range'][0]:.4g}, {s['range'][1]:.4g}]; flicker {s['flicker_clip_normalisation']:.2f} "
                  f"(per-frame normalisation would give {s['flicker_per_frame_normalisation']:.2f}); "
                  f"details in {target}.json")
    manifest = {"model": model_desc, "backend": args.backend, "settings": settings, **values,
                "colormap": "gray" if args.grayscale else "Spectral_r",
                "near": "white" if args.grayscale else "red", "far": "black" if args.grayscale else "blue",
                "images": (_earlier_images(out_dir, settings, done) if not video_file else []) + done,
                "videos": video_summaries,
                "failures": [{"input": i, "reason": r} for i, r in failures]}
    if not video_file:
        from ..io import atomic_write

        with atomic_write(out_dir / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1)
    if depth_maps:
        more = f" and {len(depth_maps) - 1} more" if len(depth_maps) > 1 else ""
        notes.add(f"{len(depth_maps)} input(s) look like depth maps, not photographs ({depth_maps[0]}{more}: "
                  "single-channel 16-bit images, as KITTI, NYUv2 and ScanNet store depth); they were predicted "
                  "as grey photographs (16 -> 8 bit). Give the colour images instead"
                  + (f"; the list is in {out_dir / MANIFEST} ('warning')" if not video_file else ""))
    for n in sorted(notes):
        print(f"note: {n}", file=sys.stderr)
    for item, why in failures:
        print(f"failed {item}: {why}", file=sys.stderr)
    colour = (f"colour: {'gray' if args.grayscale else 'Spectral_r'}, near = {'white' if args.grayscale else 'red'}, "
              f"far = {'black' if args.grayscale else 'blue'}")
    parts = []
    if done or skipped or not videos:
        parts.append(f"{len(done)} image(s) ({skipped} already done) in {dt:.1f} s")
    if videos:
        parts.append(f"{len(video_summaries)} video(s)")
    print(f"predicted {' and '.join(parts)} -> {out_dir} [{values['meaning']}; {colour}]")
    ok = len(done) + len(video_summaries) + skipped
    if failures:
        print(f"{len(failures)} input(s) failed, {ok} succeeded"
              + (f"; the list is in {out_dir / MANIFEST}" if not video_file else ""), file=sys.stderr)
        if ok == 0 or args.strict:
            print("error: " + ("no input succeeded" if ok == 0 else "--strict: some inputs failed"), file=sys.stderr)
            return 2
    return 0
