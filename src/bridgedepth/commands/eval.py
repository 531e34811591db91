"""`bridge eval`: one benchmark, the zero-shot suite, or several result files side by side.

    bridge eval --dataset NAME --root DIR (--model CKPT | --predictions DIR --prediction-type T)
                [--alignment A] [--split FILE] [--limit N] [--json OUT] [--per-image CSV]
    bridge eval (--model CKPT | --predictions DIR ...) --suite zero-shot --roots roots.yaml [--json OUT]
    bridge eval compare A.json B.json ... [--json OUT] [--markdown OUT]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "evaluate predictions or a model on a benchmark with the standard protocol"

DATASETS = ("nyuv2", "kitti", "eth3d", "scannet", "sintel", "diode", "da2k", "folder")


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..cli import add_config_args

    p.add_argument("--dataset", choices=DATASETS, help="benchmark to evaluate on")
    p.add_argument("--root", help="the benchmark's root folder (its official layout)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", metavar="CKPT", help="a bridgedepth checkpoint folder (predicts on the fly)")
    src.add_argument("--predictions", metavar="DIR", help="folder of .npy predictions named by image relative path stem")
    p.add_argument("--prediction-type", choices=("disparity", "depth"),
                   help="what the predictions hold (required with --predictions)")
    p.add_argument("--alignment", choices=("disparity", "depth", "median", "none"),
                   help="per-image alignment (default: disparity for disparity predictions, depth for depth)")
    p.add_argument("--split", metavar="FILE", help="replace the shipped split list (da2k: the annotations JSON)")
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N images of the split")
    p.add_argument("--json", metavar="OUT", help="write the result JSON here (--suite: default "
                   "runs/eval/<model>/zero-shot.json, with the Markdown table beside it)")
    p.add_argument("--per-image", metavar="CSV", help="write per-image metrics here")
    p.add_argument("--encoding", help="folder dataset: depth encoding of depth/ (png-mm, png-kitti, npy, ...)")
    p.add_argument("--suite", choices=("zero-shot",), help="run every benchmark of the suite that has a root")
    p.add_argument("--roots", metavar="YAML", help="--suite: mapping dataset -> root (or {root, split, encoding})")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8"),
                   help="--model: inference precision, as in bridge predict (default fp32; docs/performance.md)")
    p.add_argument("--compile", action="store_true",
                   help="--model: torch.compile with weight freezing, as in bridge predict (one compile per "
                        "network input size: worth it for a benchmark of one image size, e.g. NYUv2)")
    p.add_argument("--save-predictions", metavar="DIR",
                   help="--model: cache predictions here as .npy (a rerun reuses them)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first unreadable ground truth or prediction (by default each is recorded "
                        "in the result's bad_inputs, left out, and counted)")
    add_config_args(p)
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    cmp = sub.add_parser("compare", help="put several result JSON files side by side, best value of each column marked")
    cmp.add_argument("files", nargs="+", help="result JSON files of bridge eval (single benchmark or suite)")
    cmp.add_argument("--names", nargs="+", help="row names (default: file stems)")
    cmp.add_argument("--json", dest="compare_json", metavar="OUT", help="write the comparison as JSON")
    cmp.add_argument("--markdown", metavar="OUT", help="write the comparison as Markdown")
    cmp.add_argument("--all-metrics", action="store_true", help="every metric, not just Table 1's columns")


# ------------------------------------------------------------------ helpers
def _source(args, cfg, dataset: str | None = None):
    """(prediction source, prediction type)."""
    from ..errors import InputError
    from ..evaluation import FolderPredictions, ModelPredictions, predictor_settings

    if args.predictions:
        if not args.prediction_type:
            raise InputError("--predictions needs --prediction-type disparity|depth")
        d = Path(args.predictions) / dataset if dataset else Path(args.predictions)
        return FolderPredictions(d), args.prediction_type
    if args.model:
        predictor, ptype = _load_predictor(args.model, cfg, precision=getattr(args, "precision", "fp32"),
                                           compile=getattr(args, "compile", False))
        ptype = args.prediction_type or ptype
        cache = args.save_predictions
        if cache and dataset:
            cache = str(Path(cache) / dataset)
        settings = None
        if cache:  # the folder records what made its maps (a retrained checkpoint too) and refuses others
            settings = {"model": str(Path(args.model).resolve()), "precision": getattr(args, "precision", "fp32"),
                        **predictor_settings(predictor, ptype)}
        return ModelPredictions(predictor, cache, field_name=ptype, settings=settings), ptype
    raise InputError("pass --predictions DIR --prediction-type T, or --model CKPT")


_PREDICTOR_CACHE: dict = {}


def _load_predictor(ckpt: str, cfg, precision: str = "fp32", compile: bool = False):
    """Load a checkpoint through bridgedepth.mde (lazily: evaluation of saved predictions never needs
    the model code). Returns (predictor, prediction type)."""
    from ..errors import InputError

    from ..io.common import file_stamps

    size, device = cfg.eval.input_size or cfg.model.input_size, _device(cfg)
    # a checkpoint retrained or replaced in place, another input size or device: another predictor
    key = (str(Path(ckpt).resolve()), file_stamps([ckpt]), precision, bool(compile), size, device)
    if key in _PREDICTOR_CACHE:
        return _PREDICTOR_CACHE[key]
    try:
        from .. import mde

        load_model, Predictor = mde.load_model, mde.Predictor
    except (ImportError, AttributeError) as e:
        raise InputError(
            f"--model {ckpt}: this build has no depth model (bridgedepth.mde.load_model/Predictor: {e}); "
            "evaluate saved predictions with --predictions DIR --prediction-type T"
        ) from e
    if not Path(ckpt).exists():
        raise InputError(f"{ckpt}: checkpoint not found")
    model = load_model(ckpt)
    kind = getattr(getattr(model, "config", None), "depth_estimation_type", "relative")
    opts = {**({"precision": precision} if precision != "fp32" else {}), **({"compile": True} if compile else {})}
    try:
        # the fast inference path (mde/fast.py: fused QKV, folded layer scale, channels-last head),
        # as `bridge predict` uses it; the model was loaded for this predictor alone
        predictor = Predictor(model, input_size=size, device=device, fast=True, _owned=True, **opts)
    except TypeError:  # a Predictor without the speed options or a device argument
        if opts:
            raise InputError(f"--model {ckpt}: this build's Predictor has no {' / '.join(opts)} option") from None
        try:
            predictor = Predictor(model, input_size=size, device=device)
        except TypeError:  # it runs where the model is
            predictor = Predictor(model, input_size=size)
    ptype = "depth" if kind == "metric" else "disparity"
    _PREDICTOR_CACHE[key] = (predictor, ptype)
    return predictor, ptype


def _device(cfg) -> str:
    import torch

    d = cfg.device
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return d


def _benchmark(name: str, root: str, split, encoding, cfg):
    from ..data.benchmarks import get_benchmark

    e = cfg.eval
    opts = {"min_depth": e.min_depth, "max_depth": e.max_depth}
    if name == "kitti":
        opts.update(crop=e.kitti_crop, kb_crop=e.kitti_kb_crop)
    if name == "nyuv2":
        opts["layout"] = e.nyu_layout
    if name == "folder":
        opts["encoding"] = encoding
    return get_benchmark(name, root, split, **opts)


def _evaluate_one(name, root, split, encoding, args, cfg, dataset_subdir: bool):
    from ..evaluation import evaluate

    bench = _benchmark(name, root, split, encoding, cfg)
    source, ptype = _source(args, cfg, name if dataset_subdir else None)
    alignment = args.alignment or (cfg.eval.alignment if cfg.eval.alignment != "auto" else ptype)
    return evaluate(
        bench, source, prediction_type=ptype, alignment=alignment,
        disparity_floor=cfg.eval.disparity_floor, min_valid_pixels=cfg.eval.min_valid_pixels,
        limit=args.limit, batch_pixels=cfg.eval.batch_pixels, device=_device(cfg),
        progress=not args.quiet and sys.stderr.isatty(), threads=cfg.eval.cpu_threads,
        strict=getattr(args, "strict", False),
    )


def _report_bad(doc: dict) -> bool:
    """Print the bad inputs of one result to stderr; True when nothing at all could be evaluated."""
    bad = doc.get("bad_inputs") or []
    for b in bad[:20]:
        print(f"  bad input {b['key']}: {b['reason']}", file=sys.stderr)
    if len(bad) > 20:
        print(f"  ... and {len(bad) - 20} more (listed in the result JSON)", file=sys.stderr)
    if bad:
        print(f"{doc['dataset']}: {len(bad)} bad input(s) left out, {doc['n_images']} image(s) evaluated",
              file=sys.stderr)
    return bool(bad) and doc["n_images"] == 0


def _save_config(cfg, json_path: str) -> None:
    from ..config import save_resolved

    p = Path(json_path)
    save_resolved(cfg, p.parent if str(p.parent) else ".", name=f"{p.stem}.config.yaml")


# ------------------------------------------------------------------ actions
def _run_compare(args) -> int:
    import json

    from ..errors import InputError
    from ..evaluation.tables import atomic_write_text, side_by_side, write_json

    names = args.names or [Path(f).stem for f in args.files]
    if len(names) != len(args.files):
        raise InputError(f"--names gives {len(names)} names for {len(args.files)} files")
    runs = []
    for name, f in zip(names, args.files):
        try:
            runs.append((name, json.loads(Path(f).read_text())))
        except FileNotFoundError as e:
            raise InputError(f"{f}: not found") from e
        except json.JSONDecodeError as e:
            raise InputError(f"{f}: not valid JSON ({e})") from e
    md, doc = side_by_side(runs, all_metrics=args.all_metrics)
    print(md, end="")
    if args.compare_json:
        write_json(args.compare_json, doc)
    if args.markdown:
        atomic_write_text(args.markdown, md)
    return 0


def _run_suite(args, cfg) -> int:
    import yaml

    from ..errors import InputError
    from ..evaluation.tables import TABLE1_DATASETS, atomic_write_text, result_markdown, table1_markdown, write_json

    if not args.roots:
        raise InputError("--suite needs --roots roots.yaml (dataset -> root folder)")
    try:
        roots = yaml.safe_load(Path(args.roots).read_text()) or {}
    except FileNotFoundError as e:
        raise InputError(f"{args.roots}: not found") from e
    except yaml.YAMLError as e:
        raise InputError(f"{args.roots}: not valid YAML ({e})") from e
    if not isinstance(roots, dict):
        raise InputError(f"{args.roots}: expected a mapping dataset -> root")
    unknown = sorted(set(roots) - set(DATASETS) - {"folder"})
    if unknown:
        raise InputError(f"{args.roots}: unknown dataset(s) {', '.join(unknown)}; known: {', '.join(DATASETS)}")
    order = [d for d in TABLE1_DATASETS if d in roots] + sorted(d for d in roots if d not in TABLE1_DATASETS)
    results = {}
    for name in order:
        spec = roots[name]
        spec = {"root": spec} if isinstance(spec, str) else dict(spec or {})
        if not spec.get("root"):
            continue
        res = _evaluate_one(name, spec["root"], spec.get("split"), spec.get("encoding"), args, cfg, dataset_subdir=True)
        results[name] = res.to_json()
        print(result_markdown(results[name]), file=sys.stderr)
        _report_bad(results[name])
    if not results:
        raise InputError(f"{args.roots}: no dataset has a root")
    label = Path(args.model).name if args.model else Path(args.predictions).name
    md = table1_markdown(results, label)
    print(md, end="")
    out = Path(args.json) if args.json else Path("runs") / "eval" / label / f"{args.suite}.json"
    write_json(out, {"suite": args.suite, "model": args.model, "predictions": args.predictions, "results": results})
    atomic_write_text(out.with_suffix(".md"), md)
    _save_config(cfg, str(out))
    print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)
    return 1 if all(r.get("n_bad_inputs") and not r["n_images"] for r in results.values()) else 0


def run(args) -> int:
    from ..cli import config_from_args
    from ..errors import InputError
    from ..evaluation.tables import per_image_csv, result_markdown, write_json, atomic_write_text

    if getattr(args, "action", None) == "compare":
        return _run_compare(args)
    cfg = config_from_args(args)
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be >= 1, got {args.limit}")
    if args.suite:
        return _run_suite(args, cfg)
    if not args.dataset or not args.root:
        raise InputError("pass --dataset NAME --root DIR (or --suite zero-shot --roots roots.yaml, or compare)")
    if args.encoding and args.dataset != "folder":
        raise InputError("--encoding applies to --dataset folder only")
    res = _evaluate_one(args.dataset, args.root, args.split, args.encoding, args, cfg, dataset_subdir=False)
    doc = res.to_json()
    print(result_markdown(doc), end="")
    nothing = _report_bad(doc)
    if args.json:
        write_json(args.json, doc)
        _save_config(cfg, args.json)
    if args.per_image:
        atomic_write_text(args.per_image, per_image_csv(res.per_image))
    if nothing:
        print("error: no image could be evaluated", file=sys.stderr)
        return 1
    return 0
