"""Procedural scene rendering speed on one thread.

Reports scenes per second at 256x256 and 518x518 for each kind and for the mixed default, as wall
time and as process CPU time (CPU time is the fairer figure on a shared machine), and the ratio
against the named reference: the demo target of 20 scenes/s at 256x256 on one core (2000 scenes in
under two minutes on one core), scaled by pixel count for 518x518.

    python benchmarks/bench_scenes.py [--n 40] [--sizes 256 518]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import cv2  # noqa: E402

from bridgedepth.data.scenes import render_scene  # noqa: E402

TARGET_256 = 20.0  # scenes/s at 256x256 on one core: the reference


def bench(kind: str, size: int, n: int) -> tuple[float, float]:
    render_scene(1000, kind, (size, size), index=0)  # warm-up (bakes the noise textures)
    w0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        render_scene(0, kind, (size, size), index=i)
    return n / (time.perf_counter() - w0), n / (time.process_time() - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="scenes per measurement")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 518])
    ap.add_argument("--kinds", nargs="+", default=["indoor", "outdoor", "object", "mixed"])
    args = ap.parse_args()
    cv2.setNumThreads(1)
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    print(f"reference: target {TARGET_256:.0f} scenes/s at 256x256 on one core (scaled by pixels for other sizes)")
    print(f"{'size':>9} {'kind':>8} {'wall sc/s':>10} {'cpu sc/s':>9} {'ms/scene':>9} {'x target':>9}")
    ratios = {}
    for size in args.sizes:
        target = TARGET_256 * (256 * 256) / (size * size)
        for kind in args.kinds:
            wall, cpu = bench(kind, size, max(4, args.n if size <= 256 else args.n // 4))
            print(f"{size:>4}x{size:<4} {kind:>8} {wall:>10.1f} {cpu:>9.1f} {1000 / cpu:>9.1f} {cpu / target:>9.2f}")
            ratios[f"{size}/{kind}"] = (cpu, target)
    import sys as _sys
    from pathlib import Path as _Path

    _sys.path.insert(0, str(_Path(__file__).resolve().parent))
    from bench_common import write_row
    worst = min(ratios, key=lambda k: ratios[k][0] / ratios[k][1])
    write_row("scenes", ours=ratios[worst][0], reference=ratios[worst][1], unit=f"scenes/CPU-s, worst case {worst}",
              goal=1.0, extra={k: {"cpu_scenes_per_s": v[0], "target": v[1]} for k, v in ratios.items()})


if __name__ == "__main__":
    main()
