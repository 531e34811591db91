"""Depth/image reading speed of ``bridgedepth.io`` against the plain library calls (the reference).

On the shared fixtures: ``read_depth(png, "png-mm")`` vs ``cv2.imread(IMREAD_UNCHANGED) / 1000``;
``read_depth(pfm, "pfm-disparity")`` vs a bare ``np.frombuffer`` + flip + formula; ``read_image(jpg)``
vs ``cv2.imread`` + BGR->RGB. Ours does more (validation, masks, error checks); the ratio says what
that costs. Prints ms per call and the ratio ours / reference.

    PYTHONPATH=src python benchmarks/bench_io.py [--repeat 30] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def _time(fn, repeat: int) -> float:
    fn()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - t) / repeat)
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[1].parent / "shared" / "data"))
    a = ap.parse_args()

    import cv2

    from bridgedepth.io import read_depth, read_image

    cv2.setNumThreads(1)
    root = Path(a.data) / "rgbd"
    png = root / "kitti_annotated/depth/0000000005.png"
    mb = root / "stereo/MIDDLEBURY_2014/trainingQ/Motorcycle"
    jpg = root / "nyu_sync/rgb/rgb_00000.jpg"

    def ref_png():
        v = cv2.imread(str(png), cv2.IMREAD_UNCHANGED)
        return v / 256.0, v > 0

    def ref_pfm():
        data = (mb / "disp0GT.pfm").read_bytes()
        d = np.frombuffer(data[21:], "<f4").reshape(497, 741)[::-1]
        return 999.421 * 193.001 / (d + 32.778) / 1000

    rows = [
        ("png-kitti 1242x375", lambda: read_depth(png, "png-kitti"), ref_png, "cv2.imread / 256"),
        ("pfm-disparity 741x497", lambda: read_depth(mb / "disp0GT.pfm", "pfm-disparity", calib=mb / "calib.txt"),
         ref_pfm, "np.frombuffer + formula"),
        ("read_image jpg 640x480", lambda: read_image(jpg), lambda: cv2.imread(str(jpg))[..., ::-1], "cv2.imread"),
    ]
    print(f"{'case':26s} {'ours ms':>9s} {'ref ms':>9s} {'ratio':>7s}  reference")
    tot_o = tot_r = 0.0
    cases = {}
    for name, ours, ref, ref_name in rows:
        t_o, t_r = _time(ours, a.repeat), _time(ref, a.repeat)
        print(f"{name:26s} {t_o:9.2f} {t_r:9.2f} {t_o / t_r:7.2f}  {ref_name}")
        tot_o, tot_r = tot_o + t_o, tot_r + t_r
        cases[name] = {"ours_ms": t_o, "reference_ms": t_r}
    import sys as _sys
    from pathlib import Path as _Path

    _sys.path.insert(0, str(_Path(__file__).resolve().parent))
    from bench_common import write_row
    write_row("io", ours=tot_o, reference=tot_r, higher_is_better=False, unit="ms, 3 reads (cv2/numpy ref)",
              goal=None, extra=cases)


if __name__ == "__main__":
    main()
