"""Figures, tables and the self-contained HTML report of `bridge demo` (plus ``metrics.json``)."""

from __future__ import annotations

import html
import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config, LabelConfig
from .report import Table, image_grid, img_tag, write_html

BANNER = (
    "This is BRIDGE in miniature: procedural scenes in two looks instead of Hypersim/TartanAir and photographs, "
    "shipped toy foundations (a 1.3 M-parameter patch-8 depth model, a 7.5 M-parameter 96 px D2I diffusion "
    "model, a small CNN aesthetic scorer) instead of DINOv2-G, FLUX.1-Depth-dev and CLIP, minutes of CPU "
    "training instead of GPU-weeks, and a handful of real fixture images instead of the benchmarks' test "
    "sets. Every number below was measured in this run; none of them is the paper's, and none predicts it: "
    "at paper scale the absolute values change completely, and so may the size and even the sign of the "
    "ablation differences."
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


def _up_to_date(pngs: list[Path], inputs: list[Path]) -> bool:
    """Whether every figure in ``pngs`` exists and is newer than every file under ``inputs`` (the
    models and sets it is drawn from): a report rerun then keeps it instead of loading models again."""
    from .io.common import file_stamps

    if not all(p.is_file() for p in pngs):
        return False
    # files only, by their targets' times (the staged fixtures are links, re-made on every run)
    newest = max((mtime for _, _, mtime in file_stamps(inputs)), default=0)
    return min(p.stat().st_mtime_ns for p in pngs) >= newest


def fig_d2i_before_after(out: Path, cfg: Config, base: Path, n: int = 4) -> Path | None:
    import torch

    from .d2i.backend import load_backend
    from .d2i.generate import Generator
    from .data.shards import iter_samples

    base, tuned = Path(base), out / "d2i" / "finetuned"
    if not (base.exists() and tuned.exists()):
        return None
    png = out / "figures" / "d2i_before_after.png"
    if _up_to_date([png], [base, tuned, out / "scenes" / "val"]):
        return png  # drawn from these very models before: a report rerun loads no D2I model
    samples = [s for _, s in zip(range(n), iter_samples(out / "scenes" / "val"))]
    # the sampler steps the demo generates and scores with (d2i.num_steps), all maps in one batched call
    gens = [Generator(load_backend(p), images_per_depth=2, seed=1234, steps=cfg.d2i.num_steps) for p in (base, tuned)]
    rows = []
    with torch.no_grad():
        images = [g.batch(samples) for g in gens]
        for s, before, after in zip(samples, *images):
            for r in (before, after):
                if isinstance(r, Exception):
                    raise r
            disp, ok = _disp(s["depth"], s["valid"])
            rows.append([s["rgb"], _col(disp, ok)] + [b["rgb"] for b in before] + [a["rgb"] for a in after])
    grid = image_grid(rows, ["synthetic render", "source depth", "before, seed A", "before, seed B",
                             "after, seed A", "after, seed B"], cell=112)
    return _write_png(out / "figures" / "d2i_before_after.png", grid)


def fig_generated(out: Path, n: int = 8) -> Path | None:
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
    grid = image_grid(rows, ["synthetic render", "source depth"] + [f"generated #{i + 1}" for i in range(n_img)],
                      cell=112)
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
        # the fraction decides acceptance in the original's grid; the overlay is the mask moved into the
        # generated image's frame (where ground truth is used), so both are given
        titles.append(f"{'accepted' if s['meta']['accepted'] else 'rejected'}\nmask {m['final_fraction']:.2f}\n"
                      f"in image {float(np.mean(s['mask'])):.2f}\nORB {m['orb_matches']}")
    grid = image_grid(rows, ["generated", "original render", "similarity mask", "teacher pseudo-label",
                             "ground truth (disp.)"], titles, cell=112)
    return _write_png(out / "figures" / "masks_pseudo.png", grid)


def fig_looks(out: Path) -> Path | None:
    """The domain gap: the same geometry in the synthetic look (source data) and the real look (test)."""
    from .data.scenes import render_scene

    size = (112, 112)
    rows = []
    for i in range(4):
        syn = render_scene(0, "mixed", size, index=i, look="synthetic")
        real = render_scene(0, "mixed", size, index=i, look="real")
        disp, ok = _disp(syn["depth"], syn["valid"])
        rows.append([syn["rgb"], real["rgb"], _col(disp, ok)])
    grid = image_grid(rows, ["synthetic look (source)", "real look (test)", "depth (same)"], cell=112)
    return _write_png(out / "figures" / "looks.png", grid)


def _prediction_models(out: Path, foundations: dict) -> list[tuple[str, Path, bool]]:
    """(column title, checkpoint, metric) of the prediction figures' models that exist."""
    cands = [("teacher", Path(foundations["depth"]), False),
             ("source only", out / "rows" / "seed0" / "source_only" / "last", False),
             ("BRIDGE (hybrid)", out / "rows" / "seed0" / "finetune_hybrid" / "last", False),
             ("metric (m)", out / "metric" / "last", True)]
    return [c for c in cands if c[1].exists()]


def fig_predictions(out: Path, cfg: Config, fixtures: dict, foundations: dict, n_test: int = 4) -> list[Path]:
    models = _prediction_models(out, foundations)
    if not models:
        return []
    pngs = [out / "figures" / "predictions_real_look_test.png"] + (
        [out / "figures" / "predictions_fixtures.png"] if fixtures else [])
    if _up_to_date(pngs, [c for _, c, _ in models] + [out / "scenes" / "test"]
                   + [Path(f["root"]) for f in fixtures.values()]):
        return pngs  # drawn from these very checkpoints before: a report rerun loads no model
    from .data.benchmarks import get_benchmark
    from .data.shards import iter_samples
    from .mde.predictor import Predictor

    preds = {name: (Predictor.from_pretrained(ckpt, input_size=cfg.model.input_size, metric=metric), metric)
             for name, ckpt, metric in models}
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
    paths.append(_write_png(out / "figures" / "predictions_real_look_test.png", image_grid(rows, titles, cell=112)))
    rows, names = [], []
    for name, f in fixtures.items():
        b = get_benchmark("folder", f["root"], encoding=f["encoding"])
        item = b.items(1)[0]
        gt = b.load_gt(item)
        rows.append(row(b.load_rgb(item), gt.depth, gt.valid))
        names.append(name)
    if rows:
        paths.append(_write_png(out / "figures" / "predictions_fixtures.png", image_grid(rows, titles, names, cell=112)))
    return paths


def fig_reward_curve(out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = out / "d2i" / "finetuned" / "finetune_log.jsonl"
    if not p.exists():
        return None
    recs = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
    keys = [k for k in ("loss", "reward/depth", "reward/aesthetic", "grad_norm")
            if any(isinstance(r.get(k), (int, float)) for r in recs)]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8))
    axes = np.atleast_1d(axes)
    for ax, k in zip(axes, keys):
        pts = [(r.get("step", i), r[k]) for i, r in enumerate(recs) if isinstance(r.get(k), (int, float))]
        if pts:
            ax.plot(*zip(*pts), lw=1)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step")
    fig.tight_layout()
    path = out / "figures" / "d2i_reward_curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ tables


def _cell(agg: dict | None, key: str) -> Any:
    if not agg:
        return None
    v = agg.get(key)
    if key == "absrel" and "absrel_std" in agg:
        return f"{v:.3f} ± {agg['absrel_std']:.3f}"
    return v


def _rows_table(title: str, rows: dict, ids: list[str], benches: list[str], note: str = "") -> Table:
    from .demo_rows import METRIC_ROWS, RELATIVE_ROWS

    labels = {**{k: v[0] for k, v in RELATIVE_ROWS.items()}, **{k: v[0] for k, v in METRIC_ROWS.items()}}
    cols = ["row", "id"]
    for b in benches:
        cols += [f"{b} δ1", f"{b} AbsRel"]
    t = Table(title, cols, [], note=note, higher_is_better={c for c in cols if c.endswith("δ1")},
              lower_is_better={c for c in cols if c.endswith("AbsRel")})
    for r in ids:
        if r not in rows:
            continue
        line: list[Any] = [labels.get(r, r), r]
        for b in benches:
            line += [_cell(rows[r].get(b), "delta1"), _cell(rows[r].get(b), "absrel")]
        t.rows.append(line)
    return t


def _rel(rows: dict, a: str, b: str, bench: str) -> float | None:
    """Relative AbsRel change of row b against row a (negative = b is better)."""
    try:
        x, y = rows[a][bench]["absrel"], rows[b][bench]["absrel"]
    except KeyError:
        return None
    return (y - x) / x if x else None


def _separated(rows: dict, a: str, b: str, bench: str) -> bool | None:
    """With several seeds: do the AbsRel ranges of the two rows not overlap? (None with one seed.)"""
    try:
        ra, rb = rows[a][bench], rows[b][bench]
    except KeyError:
        return None
    if "absrel_min" not in ra or "absrel_min" not in rb:
        return None
    return ra["absrel_max"] < rb["absrel_min"] or rb["absrel_max"] < ra["absrel_min"]


D2I_FINETUNE_STAGE = "2 D2I reward fine-tune"
PAPER_SSIM_THRESHOLD = LabelConfig().ssim_threshold  # the paper's similarity threshold: the default


def d2i_finetune_stage(cfg: Config) -> str:
    """The D2I fine-tune's stage name, with its reward weights: "2 D2I reward fine-tune (depth 0.9 +
    aesthetic 0.1)" for the paper's; the report finds the stage by its first words."""
    r = cfg.finetune.reward
    return f"{D2I_FINETUNE_STAGE} (depth {float(r.depth_weight):g} + aesthetic {float(r.aesthetic_weight):g})"


def finetune_summary(stages: dict) -> dict:
    """The D2I fine-tune's summary from a ``stages.json`` record, whatever its weights ({} if none)."""
    return next((v for k, v in stages.items() if k.startswith(D2I_FINETUNE_STAGE)), {}).get("summary", {})


def _reward_terms(ft: dict) -> str:
    """" Reward terms: depth 0.9, aesthetic 0.1, anchor 20 (...)." from a fine-tuning summary ('' if none)."""
    terms = {n: t for n, t in (ft.get("rewards") or {}).items() if t.get("on")}
    if not terms:
        return ""
    first = ["depth", "aesthetic", "anchor"]
    names = [n for n in first if n in terms] + sorted(n for n in terms if n not in first)
    desc = ", ".join(f"{n} {float(terms[n]['weight']):g}" for n in names)
    extra = (" (anchor: the squared difference to the base model's image for the same noise, against reward "
             "hacking; not in the paper)") if "anchor" in terms else ""
    return f" Reward terms of this fine-tune: {desc}{extra}."


def claims(rows: dict, d2i: dict, lab: dict, bench: str, metric_rows: dict | None = None,
           ssim_threshold: float = PAPER_SSIM_THRESHOLD) -> list[tuple[str, str, str]]:
    """(paper claim, what this run measured, holds / does not hold / not measured) at this scale."""
    out = []

    def verdict(ok, sep=None):
        """``sep``: the seed ranges are apart (True), overlap (False) or unknown (None, one seed). A
        difference inside the seed spread settles nothing, whichever way it points."""
        if ok is None:
            return "not measured"
        if sep is False:
            return "not settled here: within the seed spread"
        return "holds here" if ok else "does not hold here"

    def spread(sep):
        return "" if sep is None else (", seed ranges separate" if sep else ", seed ranges overlap")

    g = _rel(rows, "source_only", "generated_pseudo", bench)
    sep = _separated(rows, "source_only", "generated_pseudo", bench)
    out.append(("Generated data improves zero-shot depth over source data alone (Table 2)",
                "n/a" if g is None else f"AbsRel {100 * g:+.1f} % relative" + spread(sep),
                verdict(None if g is None else g < 0, sep)))
    b = _rel(rows, "source_only", "finetune_hybrid", bench)
    sep = _separated(rows, "source_only", "finetune_hybrid", bench)
    out.append(("The BRIDGE student (hybrid fine-tune) beats the source-only baseline",
                "n/a" if b is None else f"AbsRel {100 * b:+.1f} % relative" + spread(sep),
                verdict(None if b is None else b < 0, sep)))
    h = _rel(rows, "finetune_pseudo", "finetune_hybrid", bench)
    gt = lab.get("gt_pixel_fraction")
    no_gt = not gt  # no generated image passed the mask: the two fine-tunes saw the same targets
    out.append(("Hybrid supervision (masked GT + pseudo-labels) is at least as good as pseudo-labels alone (Table 3)",
                "n/a" if h is None else f"AbsRel {100 * h:+.1f} % relative; GT is {100 * (gt or 0):.1f} % of the "
                f"hybrid set's supervised pixels" + (f" (masks at SSIM > {ssim_threshold:g}, not the paper's "
                                                      f"{PAPER_SSIM_THRESHOLD:g})"
                                                      if ssim_threshold != PAPER_SSIM_THRESHOLD else ""),
                "not tested here: no ground-truth pixels reached the hybrid set"
                if no_gt else verdict(None if h is None else h <= 0)))
    r = _rel(rows, "no_rl_d2i", "generated_pseudo", bench)
    sep = _separated(rows, "no_rl_d2i", "generated_pseudo", bench)
    out.append(("Reward fine-tuning the D2I model makes better training data (RL ablation)",
                "n/a" if r is None else f"AbsRel {100 * r:+.1f} % relative (tuned vs untuned generator)" + spread(sep),
                verdict(None if r is None else r < 0, sep)))

    def num(k, fmt):  # a figure the run may not have (an ablation without the aesthetic model)
        v = (d2i or {}).get(k)
        return "n/a" if v is None else format(v, fmt)

    dr0, dr1 = (d2i or {}).get("depth_reward_before"), (d2i or {}).get("depth_reward_after")
    gain = None if dr0 is None or dr1 is None else dr1 - dr0
    out.append(("Reward fine-tuning raises geometric consistency (depth reward on held-out depth maps)",
                "n/a" if gain is None else f"{num('depth_reward_before', '.3f')} -> {num('depth_reward_after', '.3f')}; "
                f"aesthetic {num('aesthetic_before', '.2f')} -> {num('aesthetic_after', '.2f')}",
                verdict(None if gain is None else gain > 0)))
    dv = _rel(rows, "dav2_style", "generated_pseudo", bench)
    out.append(("BRIDGE's generated data rivals real images with pseudo-labels (DA-V2 style)",
                "n/a" if dv is None else f"AbsRel {100 * dv:+.1f} % relative to the DA-V2-style row",
                verdict(None if dv is None else dv <= 0.05)))
    if metric_rows:
        ref = (metric_rows.get("median_depth_prior") or {}).get(bench, {}).get("absrel")
        got = {k: (metric_rows.get(k) or {}).get(bench, {}).get("absrel") for k in ("metric_finetune", "scale_head")}
        got = {k: v for k, v in got.items() if v is not None}
        ok = None if ref is None or not got else all(v < ref for v in got.values())
        out.append(("The metric models give metric depth without alignment (Tables 4/5): better than a constant "
                    "depth at the training scenes' median",
                    "n/a" if ok is None else ", ".join(f"{k} AbsRel {v:.3f}" for k, v in got.items())
                    + f" vs constant {ref:.3f}", verdict(ok)))
    return out


def write_report(out: Path, cfg: Config, runner, fixtures: dict, foundations: dict) -> dict:
    from .demo_rows import METRIC_ROWS, REAL_LOOK_TEST, RELATIVE_ROWS

    res_path = out / "eval" / "results.json"
    results = json.loads(res_path.read_text()) if res_path.exists() else {"rows": {}, "metric_rows": {}, "full": {}}
    rows, mrows = results["rows"], results["metric_rows"]
    stages = runner.done
    benches = [REAL_LOOK_TEST] + list(fixtures)
    seeds = max(1, int(cfg.demo.seeds))
    spread = f" With {seeds} training seeds: mean ± standard deviation of AbsRel." if seeds > 1 else ""
    cj = float(cfg.train.color_jitter)
    jitter = f", every one with colour jitter of ±{cj:g} (train.color_jitter)" if cj else ""
    t_all = _rows_table("Zero-shot relative depth, every row (Table 1 layout)", rows, list(RELATIVE_ROWS), benches,
                        note="δ1 and AbsRel after per-image least-squares scale and shift in disparity space (the "
                             "paper's protocol). real_look_test: held-out real-look scenes (their seed reaches no "
                             "training set). Fixtures: 3 NYU, 3 KITTI, 1 TUM, 1 SUN RGB-D, 5 Redwood frames: a sanity "
                             "check, not a benchmark. Trained rows start from the shipped depth foundation and train "
                             f"for the same number of steps{jitter}.{spread}")
    t2 = _rows_table("Impact of generated data (Table 2 layout)", rows, ["source_only", "generated_pseudo"], benches,
                     note="Same initialisation and step budget; the baseline sees the synthetic-look source renders "
                          "only, the second row adds the D2I-generated images with teacher pseudo-labels.")
    t3 = _rows_table("Hybrid supervision (Table 3 layout)", rows, ["finetune_pseudo", "finetune_hybrid"], benches,
                     note="Both fine-tune the same '+ generated data' student for the same number of steps: with "
                          "pseudo-labels only, or with the exact ground truth inside the similarity mask.")
    t_rl = _rows_table("Reward fine-tuning of the D2I model (RL ablation)", rows, ["no_rl_d2i", "generated_pseudo"],
                       benches, note="Generated data from the untuned vs the reward-tuned D2I model, otherwise equal.")
    t_alt = _rows_table("What users would pick instead, and the upper bound", rows,
                        ["source_only", "generated_pseudo", "dav2_style", "oracle"], benches,
                        note="DA-V2 style: real-look images pseudo-labelled by the teacher. Oracle: the same images "
                             "with their exact depth (impossible for real photographs).")
    t_metric = _rows_table("Metric depth, no alignment (Tables 4/5 layout)", mrows, list(METRIC_ROWS), benches,
                           note="Metres straight from the model: no per-image scale or shift.")
    ft = finetune_summary(stages)
    lab = stages.get("4a label", {}).get("summary", {})
    cons = stages.get("7b D2I geometric consistency on the test depth maps", {}).get("summary", {})
    before, after = ft.get("heldout_before", {}), ft.get("heldout_after", {})
    d2i = {"depth_reward_before": before.get("depth_reward"), "depth_reward_after": after.get("depth_reward"),
           "aesthetic_before": before.get("aesthetic"), "aesthetic_after": after.get("aesthetic"),
           "teacher_absrel_generated": cons.get("teacher_absrel_generated"),
           "teacher_absrel_real_look": cons.get("teacher_absrel_real_look")}
    for k in ("saturation", "texture", "dominant_colour_share", "teacher_absrel"):
        d2i[f"{k}_before"], d2i[f"{k}_after"] = before.get(k), after.get(k)
    label_doc = {"accepted_fraction": lab.get("accepted_fraction"), "gt_pixel_fraction": lab.get("gt_pixel_fraction"),
                 **{k: v for k, v in lab.items() if k not in ("accepted_fraction", "gt_pixel_fraction")}}
    thr, acc = float(cfg.label.ssim_threshold), float(cfg.label.accept_fraction)
    not_paper = f" (label.ssim_threshold; the paper's: {PAPER_SSIM_THRESHOLD:g})" if thr != PAPER_SSIM_THRESHOLD else ""
    if thr != PAPER_SSIM_THRESHOLD:
        t3.note += f" The similarity masks of this run keep pixels with SSIM > {thr:g}{not_paper}."
    if lab and not lab.get("accepted"):
        t3.note += (f" In this run none of the {lab.get('samples', 0)} generated images passed the similarity test "
                    f"(final mask > {acc:.0%} of the pixels), so the hybrid fine-tune saw no ground-truth pixels and "
                    "is the pseudo-label fine-tune again.")
    claim_rows = claims(rows, d2i, lab, REAL_LOOK_TEST, mrows, ssim_threshold=thr)
    t_claims = Table("The paper's claims at this scale", ["claim", "measured here", "verdict"],
                     [list(c) for c in claim_rows])
    timing = Table("Stage timings (this machine)", ["stage", "seconds", "cores busy", "status"], runner.timing_table(),
                   note=f"cores busy = CPU seconds over wall seconds (this machine has {os.cpu_count()} cores): "
                        "where it is below the core count, cores idle.")
    t_d2i = Table("D2I before / after reward fine-tuning, held-out depth maps", ["quantity", "before", "after"],
                  [[k, before.get(k), after.get(k)] for k in ("depth_reward", "aesthetic", "teacher_absrel",
                                                              "saturation", "texture", "dominant_colour_share")
                   if k in before or k in after]
                  + [["teacher AbsRel: D2I images vs real-look renders of the test depth maps",
                      cons.get("teacher_absrel_real_look"), cons.get("teacher_absrel_generated")]],
                  note="before = the shipped D2I foundation, after = + LoRA reward fine-tuning; depth reward = "
                       "Pearson correlation of the teacher's disparity of the image with the source disparity; "
                       "aesthetic = the toy scorer's logit; texture = mean |Laplacian|; dominant colour share = the "
                       "fraction of the image in its most common of 64 coarse colours (1 = collapse). Last row: "
                       "'before' column = real-look renders, 'after' column = D2I images." + _reward_terms(ft))

    figs = {"looks": fig_looks(out), "d2i": fig_d2i_before_after(out, cfg, Path(foundations["d2i"])),
            "gen": fig_generated(out), "masks": fig_masks(out), "reward": fig_reward_curve(out)}
    pred_figs = fig_predictions(out, cfg, fixtures, foundations)

    def kv_table(title, d: dict) -> Table:
        rows_ = [[k, v] for k, v in d.items() if isinstance(v, (int, float, str, bool)) or v is None]
        return Table(title, ["quantity", "value"], rows_)

    labels = {k: v[0] for k, v in RELATIVE_ROWS.items()}
    mlabels = {k: v[0] for k, v in METRIC_ROWS.items()}
    metrics = {
        "rows": rows, "metric_rows": mrows, "d2i": d2i, "label": label_doc,
        "relative": {labels[k]: v for k, v in rows.items()},
        "metric": {mlabels[k]: v for k, v in mrows.items()},
        "claims": [{"claim": c, "measured": m, "verdict": v} for c, m, v in claim_rows],
        "d2i_finetune": ft, "foundations": foundations, "seeds": seeds,
        "stages": {k: v["seconds"] for k, v in stages.items()},
        "stage_cores_busy": {k: v.get("cores_busy") for k, v in stages.items()},
        "scale": "toy models, procedural data, CPU: not the paper's numbers",
    }
    tmp = out / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=1, default=str))
    os.replace(tmp, out / "metrics.json")

    curves = [(out / p / "curves.png", cap) for p, cap in [
        ("rows/seed0/source_only", "source-only row"), ("rows/seed0/generated_pseudo", "+ generated data"),
        ("rows/seed0/finetune_hybrid", "hybrid fine-tune"), ("metric", "metric fine-tune (SiLog)"),
        ("scale-head", "scale head (SiLog, frozen model)")]]
    sections = [
        ("", f"<p class='banner'>{html.escape(BANNER)}</p>"),
        ("The claims at a glance", t_claims.to_html()),
        ("Source data and the domain gap",
         (figs["looks"] and img_tag(figs["looks"], "one geometry, two looks: the source data are synthetic-look "
                                    "renders; the test set is real-look") or "")
         + img_tag(out / "figures" / "scenes.png", "source renders | depth (near = warm)")),
        ("Reward fine-tuning of the D2I model",
         (figs["d2i"] and img_tag(figs["d2i"], "the same held-out depth maps and seeds before and after LoRA reward "
                                  "fine-tuning") or "")
         + t_d2i.to_html() + (figs["reward"] and img_tag(figs["reward"], "reward fine-tuning curves") or "")),
        ("Generated data", figs["gen"] and img_tag(figs["gen"], "contact sheet: 4 generated images per source "
                                                   "depth map") or ""),
        ("Labels: similarity masks and pseudo-labels",
         (figs["masks"] and img_tag(figs["masks"], f"green = ground truth kept (SSIM > {thr:g}{not_paper}, registered "
                                    "or direct); teacher pseudo-label next to the exact ground truth") or "")
         + kv_table("Labelling summary (ground-truth share of the hybrid set included)", label_doc).to_html()),
        ("Zero-shot relative depth", t_all.to_html()),
        ("Ablations", t2.to_html() + t3.to_html() + t_rl.to_html() + t_alt.to_html()),
        ("Metric depth", t_metric.to_html()),
        ("Predictions", "".join(img_tag(p, p.stem.replace("_", " ")) for p in pred_figs)),
        ("Training curves", "".join(img_tag(p, c, "70%") for p, c in curves if p.exists())),
        ("Stage timings", timing.to_html()),
    ]
    report = write_html(out / "report.html", "BRIDGE demo report", sections)
    md = "\n\n".join(t.to_markdown() for t in (t_claims, t_all, t2, t3, t_rl, t_alt, t_metric, t_d2i, timing))
    (out / "tables.md").write_text(md + "\n")
    return {"report": str(report), "metrics": str(out / "metrics.json"), "tables_markdown": md}
