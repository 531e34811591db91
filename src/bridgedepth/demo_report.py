"""Figures, tables and the self-contained HTML report of `bridge demo` (plus ``metrics.json``)."""

from __future__ import annotations

import html
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config
from .report import Table, image_grid, img_tag, write_html

BANNER = (
    "This is BRIDGE in miniature: procedural scenes instead of Hypersim/TartanAir/..., a tiny pixel-space "
    "D2I diffusion model (32 px) instead of FLUX.1-Depth-dev, tiny DINOv2+DPT models instead of ViT-G, a "
    "few minutes of CPU training instead of GPU-weeks, and a handful of real fixture images instead of the "
    "benchmarks' test sets. Every number below was measured in this run; none of them is the paper's, and "
    "none predicts it: at paper scale the absolute values change completely, and so may the size and even "
    "the sign of the ablation differences."
)


def _write_png(path: Path, img: np.ndarray) -> Path:
    from .io import write_image

    path.parent.mkdir(parents=True, exist_ok=True)
    write_image(str(path), img)
    return path


def _col(x, valid=None, kind="disparity"):
    from .io import colorize

    return colorize(np.asarray(x, np.float32), valid, kind=kind)


def _disp(depth, valid):
    out = np.zeros(depth.shape, np.float32)
    ok = valid & (depth > 0)
    out[ok] = 1.0 / depth[ok]
    return out, ok


def _overlay(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = img.astype(np.float32)
    tint = np.array([40, 220, 60], np.float32)
    out[mask] = 0.55 * out[mask] + 0.45 * tint
    out[~mask] *= 0.55
    return out.clip(0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------ figures


def fig_d2i_before_after(out: Path, cfg: Config, n: int = 4) -> Path | None:
    import torch

    from .d2i.backend import load_backend
    from .d2i.generate import Generator
    from .data.shards import iter_samples

    base, tuned = out / "d2i" / "base", out / "d2i" / "finetuned"
    if not (base.exists() and tuned.exists()):
        return None
    samples = [s for _, s in zip(range(n), iter_samples(out / "scenes" / "val"))]
    gens = [Generator(load_backend(p), images_per_depth=2, seed=1234) for p in (base, tuned)]
    rows = []
    with torch.no_grad():
        for s in samples:
            before, after = (g(s) for g in gens)
            disp, ok = _disp(s["depth"], s["valid"])
            rows.append([s["rgb"], _col(disp, ok)] + [b["rgb"] for b in before] + [a["rgb"] for a in after])
    grid = image_grid(rows, ["source render", "source depth", "before, seed A", "before, seed B",
                             "after, seed A", "after, seed B"], cell=112)
    return _write_png(out / "figures" / "d2i_before_after.png", grid)


def fig_generated(out: Path, n: int = 4) -> Path | None:
    from .data.shards import iter_samples

    d = out / "generated"
    if not d.exists():
        return None
    groups: dict[str, list] = defaultdict(list)
    for s in iter_samples(d):
        k = s["meta"]["source_key"]
        if k not in groups and len(groups) >= n:
            break
        groups[k].append(s)
    rows = []
    for k, ss in groups.items():
        s0 = ss[0]
        disp, ok = _disp(s0["depth"], s0["valid"])
        rows.append([s0.get("source_rgb"), _col(disp, ok)] + [s["rgb"] for s in ss])
    n_img = max(len(v) for v in groups.values()) if groups else 0
    grid = image_grid(rows, ["original render", "source depth"] + [f"generated #{i + 1}" for i in range(n_img)], cell=112)
    return _write_png(out / "figures" / "generated.png", grid)


def fig_masks(out: Path, n: int = 6) -> Path | None:
    from .data.shards import iter_samples

    d = out / "labelled"
    if not d.exists():
        return None
    picked = []
    seen_acc = {True: 0, False: 0}
    for s in iter_samples(d):
        acc = bool(s["meta"].get("accepted"))
        if seen_acc[acc] < n // 2:
            picked.append(s)
            seen_acc[acc] += 1
        if len(picked) >= n:
            break
    rows, titles = [], []
    for s in picked:
        disp, ok = _disp(s["depth"], s["valid"])
        pseudo = s["pseudo"].astype(np.float32)
        rows.append([s["rgb"], s.get("source_rgb"), _overlay(s["rgb"], s["mask"]), _col(pseudo), _col(disp, ok)])
        m = s["meta"]["mask"]
        titles.append(f"{'accepted' if s['meta']['accepted'] else 'rejected'}\nmask {m['final_fraction']:.2f}\n"
                      f"ORB {m['orb_matches']}")
    grid = image_grid(rows, ["generated", "original render", "similarity mask", "teacher pseudo-label",
                             "ground truth (disp.)"], titles, cell=112)
    return _write_png(out / "figures" / "masks_pseudo.png", grid)


def _predictors(out: Path, cfg: Config):
    from .mde.predictor import Predictor

    preds = {}
    for name, ckpt, metric in [("baseline", "teacher/last", False), ("BRIDGE (hybrid)", "students/hybrid/last", False),
                               ("metric (m)", "metric/last", True)]:
        p = out / ckpt
        if p.exists():
            preds[name] = (Predictor.from_pretrained(p, input_size=cfg.model.input_size, metric=metric), metric)
    return preds


def fig_predictions(out: Path, cfg: Config, fixtures: dict, n_test: int = 4) -> list[Path]:
    from .data.benchmarks import get_benchmark
    from .data.shards import iter_samples

    preds = _predictors(out, cfg)
    if not preds:
        return []
    paths = []

    def row(rgb, depth, valid):
        disp, ok = _disp(depth, valid)
        r = [rgb, _col(disp, ok)]
        for name, (p, metric) in preds.items():
            res = p.predict(rgb)
            if metric:
                r.append(_col(res.depth, None, kind="depth"))
            else:
                r.append(_col(res.disparity))
        return r

    titles = ["image", "ground truth"] + list(preds)
    rows = [row(s["rgb"], s["depth"], s["valid"]) for _, s in zip(range(n_test), iter_samples(out / "scenes" / "test"))]
    paths.append(_write_png(out / "figures" / "predictions_test.png", image_grid(rows, titles, cell=112)))
    rows, names = [], []
    for name, f in fixtures.items():
        b = get_benchmark("folder", f["root"], encoding=f["encoding"])
        item = b.items(1)[0]
        gt = b.load_gt(item)
        rows.append(row(b.load_rgb(item), gt.depth, gt.valid))
        names.append(name)
    if rows:
        paths.append(_write_png(out / "figures" / "predictions_real.png", image_grid(rows, titles, names, cell=112)))
    return paths


def fig_reward_curve(out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = list((out / "d2i" / "finetuned").glob("*.jsonl"))
    if not logs:
        return None
    recs = [json.loads(x) for x in logs[0].read_text().splitlines() if x.strip()]
    keys = [k for k in ("loss", "depth", "reward_depth", "depth_loss", "aesthetic", "reward_aesthetic", "grad_norm")
            if any(k in r for r in recs)]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8))
    axes = np.atleast_1d(axes)
    for ax, k in zip(axes, keys):
        pts = [(r.get("step", i), r[k]) for i, r in enumerate(recs) if k in r and isinstance(r[k], (int, float))]
        if pts:
            ax.plot(*zip(*pts), lw=1)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step")
    fig.tight_layout()
    p = out / "figures" / "d2i_reward_curves.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    return p


# ------------------------------------------------------------------------------------------------ tables


def _rel_table(title: str, results: dict, rows: list[str], benches: list[str], note: str = "") -> Table:
    cols = ["model"]
    for b in benches:
        cols += [f"{b} δ1", f"{b} AbsRel"]
    t = Table(title, cols, [], note=note,
              higher_is_better={c for c in cols if c.endswith("δ1")},
              lower_is_better={c for c in cols if c.endswith("AbsRel")})
    for r in rows:
        if r not in results:
            continue
        line: list[Any] = [r]
        for b in benches:
            m = results[r].get(b, {}).get("metrics", {})
            line += [m.get("delta1"), m.get("abs_rel")]
        t.rows.append(line)
    return t


def _metric_table(results: dict, benches: list[str]) -> Table:
    cols = ["model"]
    for b in benches:
        cols += [f"{b} δ1", f"{b} AbsRel", f"{b} RMSE"]
    t = Table("Metric depth, no alignment (Tables 4/5 layout)", cols, [],
              note="Metres straight from the model: no per-image scale or shift. The procedural test split is "
                   "in-domain; the real fixtures are far outside the procedural training distribution.",
              higher_is_better={c for c in cols if c.endswith("δ1")},
              lower_is_better={c for c in cols if c.endswith(("AbsRel", "RMSE"))})
    for r, per in results.items():
        line: list[Any] = [r]
        for b in benches:
            m = per.get(b, {}).get("metrics", {})
            line += [m.get("delta1"), m.get("abs_rel"), m.get("rmse")]
        t.rows.append(line)
    return t


def write_report(out: Path, cfg: Config, runner, fixtures: dict) -> dict:
    from .pipeline import RELATIVE_MODELS

    res_path = out / "eval" / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {"relative": {}, "metric": {}}
    stages = runner.done
    benches = ["procedural test"] + list(fixtures)
    rel_rows = [r for r, _ in RELATIVE_MODELS]
    t_zero = _rel_table("Zero-shot relative depth (Table 1 layout)", results["relative"], rel_rows, benches,
                        note="δ1 and AbsRel after per-image least-squares scale and shift in disparity space "
                             "(the paper's protocol). Real fixtures: 3 NYU, 3 KITTI, 1 TUM, 1 SUN RGB-D and 5 "
                             "Redwood frames: read them as a sanity check, not as a benchmark.")
    t2 = _rel_table("Impact of generated data (Table 2 layout)", results["relative"], rel_rows[1:3], benches,
                    note="Same architecture and step budget; the baseline sees the source renders only, the "
                         "second row adds the D2I-generated images with teacher pseudo-labels.")
    t3 = _rel_table("Hybrid supervision (Table 3 layout)", results["relative"], rel_rows[3:], benches,
                    note="Both fine-tune the same '+ generated data' student for the same number of steps: with "
                         "pseudo-labels only, or with the exact ground truth inside the similarity mask.")
    t_metric = _metric_table(results["metric"], benches)
    ft = stages.get("3b D2I reward fine-tune", {}).get("summary", {})
    lab = stages.get("5 label", {}).get("summary", {})
    if lab and not lab.get("accepted"):
        t3.note += (f" In this run none of the {lab.get('samples', 0)} generated images passed the similarity test "
                    "(final mask > 50 % of the pixels), so the hybrid fine-tune saw no ground-truth pixels and is "
                    "the pseudo-label fine-tune again: the tiny D2I model's images are far from the renders.")
    timing = Table("Stage timings (this machine)", ["stage", "seconds", "status"], runner.timing_table())

    figs = {
        "d2i": fig_d2i_before_after(out, cfg),
        "gen": fig_generated(out),
        "masks": fig_masks(out),
        "reward": fig_reward_curve(out),
    }
    pred_figs = fig_predictions(out, cfg, fixtures)

    def kv_table(title, d: dict) -> Table:
        rows = [[k, v] for k, v in d.items() if isinstance(v, (int, float, str, bool)) or v is None]
        return Table(title, ["quantity", "value"], rows)

    metrics = {
        "relative": results["relative"], "metric": results["metric"], "d2i_finetune": ft, "label": lab,
        "stages": {k: v["seconds"] for k, v in stages.items()},
        "scale": "tiny models, procedural data, CPU: not the paper's numbers",
    }
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1, default=str))
    os.replace(tmp, out / "metrics.json")

    curves = [(out / p / "curves.png", cap) for p, cap in [
        ("teacher", "teacher (= baseline) training loss and validation AbsRel"),
        ("students/pseudo", "student with generated data (pseudo-labels)"),
        ("students/hybrid", "hybrid fine-tune"), ("metric", "metric fine-tune (SiLog)"),
        ("scale-head", "scale head (SiLog, frozen model)")]]
    sections = [
        ("", f"<p class='banner'>{html.escape(BANNER)}</p>"),
        ("Source data: procedural scenes", img_tag(out / "figures" / "scenes.png", "RGB render | depth (near = warm)")),
        ("Reward fine-tuning of the D2I model",
         (figs["d2i"] and img_tag(figs["d2i"], "the same depth maps and seeds before and after LoRA reward fine-tuning") or "")
         + kv_table("Depth-consistency reward on held-out depth maps", ft).to_html()
         + (figs["reward"] and img_tag(figs["reward"], "reward fine-tuning curves") or "")),
        ("Generated data", figs["gen"] and img_tag(figs["gen"], "4 generated images per source depth map") or ""),
        ("Labels: similarity masks and pseudo-labels",
         (figs["masks"] and img_tag(figs["masks"], "green = ground truth kept (SSIM > 0.85, registered or direct); "
                                    "teacher pseudo-label next to the exact ground truth") or "")
         + kv_table("Labelling summary", lab).to_html()),
        ("Zero-shot relative depth", t_zero.to_html()),
        ("Ablations", t2.to_html() + t3.to_html()),
        ("Metric depth", t_metric.to_html()),
        ("Predictions", "".join(img_tag(p, p.stem.replace("_", " ")) for p in pred_figs)),
        ("Training curves", "".join(img_tag(p, c, "70%") for p, c in curves if p.exists())),
        ("Stage timings", timing.to_html()),
    ]
    report = write_html(out / "report.html", "BRIDGE demo report", sections)
    md = "\n\n".join(t.to_markdown() for t in (t_zero, t2, t3, t_metric, timing))
    (out / "tables.md").write_text(md + "\n")
    return {"report": str(report), "metrics": str(out / "metrics.json"), "tables_markdown": md}
