"""Markdown and JSON tables: one run, the paper's Table 1 layout, several runs side by side."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import InputError
from .metrics import HIGHER_IS_BETTER, LOWER_IS_BETTER, METRICS

# The paper's Table 1: dataset order and columns.
TABLE1_DATASETS = ("kitti", "nyuv2", "scannet", "eth3d", "sintel", "da2k")
DATASET_TITLES = {
    "kitti": "KITTI", "nyuv2": "NYUv2", "scannet": "ScanNet", "eth3d": "ETH3D", "sintel": "Sintel",
    "diode": "DIODE", "da2k": "DA-2K", "folder": "folder",
}
METRIC_TITLES = {
    "abs_rel": "AbsRel↓", "sq_rel": "SqRel↓", "rmse": "RMSE↓", "rmse_log": "RMSElog↓", "log10": "log10↓",
    "silog": "SILog↓", "delta1": "δ1↑", "delta2": "δ2↑", "delta3": "δ3↑", "accuracy": "Acc (%)↑",
}


def fmt(metric: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if metric == "accuracy":
        return f"{100.0 * v:.1f}"
    if metric in ("rmse", "silog"):
        return f"{v:.3f}" if metric == "rmse" else f"{v:.2f}"
    return f"{v:.3f}"


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def per_image_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0].keys())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def result_markdown(res: dict[str, Any]) -> str:
    """One benchmark result (the JSON of ``EvalResult.to_json``) as a Markdown table."""
    title = DATASET_TITLES.get(res["dataset"], res["dataset"])
    head = (
        f"**{title}**: {res['n_images']} images evaluated, {res['n_skipped']} skipped; "
        f"alignment `{res['alignment']}`, predictions `{res.get('prediction_type', '?')}`\n\n"
    )
    if res["dataset"] == "da2k":
        rows = [["all", str(res.get("n_pairs", "")), fmt("accuracy", res["accuracy"])]]
        for s, v in res.get("per_scene", {}).items():
            rows.append([s, str(v["n_pairs"]), fmt("accuracy", v["accuracy"])])
        return head + _md(["scene", "pairs", METRIC_TITLES["accuracy"]], rows)
    keys = [k for k in METRICS if k in res["metrics"]]
    return head + _md([METRIC_TITLES[k] for k in keys], [[fmt(k, res["metrics"][k]) for k in keys]])


def _columns_for(dataset: str, all_metrics: bool) -> list[str]:
    if dataset == "da2k":
        return ["accuracy"]
    return list(METRICS) if all_metrics else ["delta1", "abs_rel"]


def _dataset_order(datasets: set[str]) -> list[str]:
    first = [d for d in TABLE1_DATASETS if d in datasets]
    return first + sorted(datasets - set(first))


def results_of(doc: dict[str, Any], source: str = "") -> dict[str, dict[str, Any]]:
    """dataset -> result, from a single-benchmark JSON or a suite JSON."""
    if "results" in doc and isinstance(doc["results"], dict):
        return doc["results"]
    if "dataset" in doc and "metrics" in doc:
        return {doc["dataset"]: doc}
    raise InputError(f"{source}: not a bridge eval JSON (needs 'dataset' + 'metrics', or 'results')")


def side_by_side(runs: list[tuple[str, dict[str, Any]]], *, all_metrics: bool = False) -> tuple[str, dict[str, Any]]:
    """Several runs (name, JSON document) as one Markdown table, best value of each column in bold.
    Returns (markdown, json with the table and the best run of each column)."""
    per_run = [(name, results_of(doc, name)) for name, doc in runs]
    datasets = _dataset_order({d for _, r in per_run for d in r})
    cols = [(d, m) for d in datasets for m in _columns_for(d, all_metrics)]
    values = [[(r.get(d) or {}).get("metrics", {}).get(m) for d, m in cols] for _, r in per_run]
    best: list[set[int]] = []
    for j, (d, m) in enumerate(cols):
        vals = [(i, v[j]) for i, v in enumerate(values) if isinstance(v[j], (int, float)) and math.isfinite(v[j])]
        if not vals:
            best.append(set())
            continue
        target = (min if m in LOWER_IS_BETTER else max)(v for _, v in vals)
        best.append({i for i, v in vals if v == target})
    header = ["run"] + [f"{DATASET_TITLES.get(d, d)} {METRIC_TITLES.get(m, m)}" for d, m in cols]
    rows = []
    for i, (name, _) in enumerate(per_run):
        cells = [name]
        for j, (d, m) in enumerate(cols):
            s = fmt(m, values[i][j])
            cells.append(f"**{s}**" if i in best[j] else s)
        rows.append(cells)
    md = _md(header, rows)
    doc = {
        "runs": [name for name, _ in per_run],
        "columns": [{"dataset": d, "metric": m, "higher_is_better": m in HIGHER_IS_BETTER} for d, m in cols],
        "values": [[values[i][j] for j in range(len(cols))] for i in range(len(per_run))],
        "best": [[per_run[i][0] for i in sorted(b)] for b in best],
    }
    return md, doc


def table1_markdown(results: dict[str, dict[str, Any]], name: str = "model") -> str:
    """The paper's Table 1 layout for one model: KITTI, NYUv2, ScanNet, ETH3D, Sintel (δ1, AbsRel)
    and DA-2K accuracy (any other evaluated dataset follows)."""
    md, _ = side_by_side([(name, {"results": results})])
    return md
