"""Rows of `make bench`: every benchmark writes ``runs/bench/NAME.json`` with

``benchmark``, ``ours``, ``reference`` (with ``unit``), ``ratio`` (ours over the reference, oriented so
that larger is better), ``goal`` (the ratio the issue asks for, or null), ``met`` (ratio >= goal and any
extra condition), plus the machine (CPU, cores, load average) and benchmark-specific ``extra``.

    python benchmarks/bench_common.py     # print the table of every row in runs/bench
    python benchmarks/bench_common.py --spread runs/bench/run1 runs/bench/run2 runs/bench/run3
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

OUT = Path(os.environ.get("BRIDGE_BENCH_DIR", "runs/bench"))


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_average": [round(v, 2) for v in os.getloadavg()]}


def write_row(name: str, *, ours: float, reference: float, unit: str, goal: float | None,
              higher_is_better: bool = True, met: bool | None = None, extra: dict | None = None) -> Path:
    """Write one benchmark's row atomically; returns its path. ``higher_is_better=False`` for times
    (the ratio is then reference / ours)."""
    ratio = (ours / reference if higher_is_better else reference / ours) if ours and reference else float("nan")
    ok = (goal is None or ratio >= goal) if met is None else bool(met)
    row = {"benchmark": name, "ours": ours, "reference": reference, "unit": unit, "ratio": ratio, "goal": goal,
           "met": ok if goal is not None or met is not None else None, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
           "machine": machine(), "extra": extra or {}}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(row, indent=2, default=float))
    os.replace(tmp, path)
    return path


def table(folder: Path = OUT) -> str:
    rows = []
    for p in sorted(folder.glob("*.json")):
        try:
            rows.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            rows.append({"benchmark": p.stem, "unit": f"unreadable: {e}"})
    head = f"{'benchmark':16s} {'ours':>10s} {'reference':>10s}  {'unit':34s} {'ratio':>7s} {'goal':>6s}  met"
    lines = [head, "-" * len(head)]
    for r in rows:
        def num(v):
            return f"{v:10.3g}" if isinstance(v, (int, float)) else f"{'-':>10s}"
        goal = r.get("goal")
        met = r.get("met")
        lines.append(f"{r.get('benchmark', '?'):16s} {num(r.get('ours'))} {num(r.get('reference'))}  "
                     f"{str(r.get('unit', ''))[:34]:34s} {r.get('ratio', float('nan')):6.2f}x "
                     f"{(f'{goal:5.2f}x' if isinstance(goal, (int, float)) else '     -')}  "
                     f"{'-' if met is None else ('yes' if met else 'NO')}")
    if rows:
        m = rows[-1].get("machine", {})
        lines.append(f"machine: {m.get('cpu')}, {m.get('cores')} cores, load average {m.get('load_average')}")
    return "\n".join(lines)


def random_vits(size: int):
    """Depth-Anything-V2 ViT-S (``vits``) with seeded random weights that give a non-degenerate output
    (layer scales and norms at 1): the model the inference benchmarks time."""
    import torch

    from bridgedepth.mde.model import build_model

    with torch.device("meta"):
        model = build_model("vits")
    model = model.to_empty(device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lambda1") or ("norm" in name and name.endswith("weight")):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.05 if p.dim() > 1 else 0.01)
    model.eval()
    model.bridge_meta = {"input_size": size}
    return model


def demo_study(demo: Path):
    """(config, scene seeds, teacher checkpoint) of a finished `bridge demo` folder, for the studies
    that retrain its rows and score them on its val seed (row_budget.py, mask_threshold.py); refuses a
    folder whose val seed reaches any training set."""
    import json as _json

    from bridgedepth.config import load_config
    from bridgedepth.pipeline import demo_seeds
    from bridgedepth.zoo.build import training_seeds

    cfg = load_config(demo / "config.yaml")
    seeds = demo_seeds(cfg)
    if seeds["val"] in training_seeds(load_config(cfg.demo.zoo_preset)) or seeds["val"] in (seeds["train"],
                                                                                           seeds["photos"]):
        raise SystemExit(f"the val seed {seeds['val']} reaches a training set: no validation possible")
    teacher = _json.loads((demo / "stages.json").read_text())["0 foundations"]["summary"]["foundations"]["depth"]
    return cfg, seeds, teacher


def write_demo_scenes(cfg, dest: Path, count: int, seed: int, look: str) -> dict:
    """``count`` scenes of ``seed`` in ``look``, the demo's kind, size and shard size (a stage function's body)."""
    from bridgedepth.data.scenes.dataset import write_scenes

    write_scenes(dest, count, seed=seed, look=look, kind=cfg.scenes.kind, size=tuple(cfg.demo.scene_size),
                 samples_per_shard=cfg.scenes.samples_per_shard, progress=False)
    return {"scenes": count, "seed": seed, "look": look}


def spread(folders: list[Path]) -> str:
    """One line per benchmark over several runs (``make bench BENCH_RUNS=3``): the ratio's median and
    range, the goal, and in how many runs it was met."""
    runs: dict[str, list[dict]] = {}
    for f in folders:
        for p in sorted(Path(f).glob("*.json")):
            try:
                r = json.loads(p.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            runs.setdefault(r.get("benchmark", p.stem), []).append(r)
    head = (f"{'benchmark':16s} {'runs':>4s} {'ours (median)':>13s}  {'unit':34s} {'ratio median':>12s} "
            f"{'min':>6s} {'max':>6s} {'goal':>6s}  met")
    lines = [head, "-" * len(head)]
    for name, rs in sorted(runs.items()):
        ratios = sorted(float(r["ratio"]) for r in rs if isinstance(r.get("ratio"), (int, float)))
        ours = sorted(float(r["ours"]) for r in rs if isinstance(r.get("ours"), (int, float)))
        if not ratios:
            continue
        goal = rs[0].get("goal")
        mets = [r.get("met") for r in rs if r.get("met") is not None]
        med = statistics.median(ratios)
        omed = statistics.median(ours) if ours else float("nan")
        lines.append(f"{name:16s} {len(rs):4d} {omed:13.3g}  {str(rs[0].get('unit', ''))[:34]:34s} {med:11.2f}x "
                     f"{ratios[0]:5.2f}x {ratios[-1]:5.2f}x "
                     f"{(f'{goal:5.2f}x' if isinstance(goal, (int, float)) else '     -')}  "
                     f"{f'{sum(mets)}/{len(mets)}' if mets else '-'}")
    loads = [r.get("machine", {}).get("load_average") for rs in runs.values() for r in rs]
    if loads:
        m = next(iter(runs.values()))[0].get("machine", {})
        lines.append(f"machine: {m.get('cpu')}, {m.get('cores')} cores; load averages at the rows "
                     f"{min(la[0] for la in loads if la)}-{max(la[0] for la in loads if la)} (1 min)")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--spread":
        print(spread([Path(a) for a in sys.argv[2:]]))
    else:
        print(table(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT))
