"""Shard store throughput against webdataset's own reader and writer (the reference).

Writes N samples of 256x256 (rgb uint8, depth float32, valid bool, meta) with
``bridgedepth.data.shards.write_dataset`` and with a plain ``webdataset.TarWriter`` (its default
encoder), then reads them back with ``iter_samples`` (sha256 check + member safety checks) and with
``webdataset.WebDataset(...).decode("rgb8")``. Prints samples/s and the ratio ours / reference.

    PYTHONPATH=src python benchmarks/bench_shards.py [--n 200] [--size 256]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--per", type=int, default=50)
    a = ap.parse_args()

    import webdataset as wds

    from bridgedepth.data.shards import iter_samples, write_dataset

    rng = np.random.default_rng(0)
    h = w = a.size
    base_rgb = (rng.random((h // 8, w // 8, 3)) * 255).astype(np.uint8).repeat(8, 0).repeat(8, 1)
    depth = rng.random((h, w), dtype=np.float32) * 10

    def make(i):
        return {"__key__": f"s{i:06d}", "rgb": base_rgb + np.uint8(i % 7), "depth": depth,
                "valid": depth > 1.0, "meta": {"i": i}}

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        write_dataset(tmp / "ours", a.n, make, samples_per_shard=a.per, progress=False)
        ours_w = a.n / (time.perf_counter() - t)

        (tmp / "ref").mkdir()
        t = time.perf_counter()
        for j in range(0, a.n, a.per):
            with wds.TarWriter(str(tmp / "ref" / f"ref-{j // a.per:06d}.tar")) as tw:
                for i in range(j, min(j + a.per, a.n)):
                    s = make(i)
                    tw.write({"__key__": s["__key__"], "rgb.png": s["rgb"], "depth.npy": s["depth"],
                              "valid.png": s["valid"].astype(np.uint8) * 255, "meta.json": s["meta"]})
        ref_w = a.n / (time.perf_counter() - t)

        t = time.perf_counter()
        n1 = sum(1 for _ in iter_samples(tmp / "ours"))
        ours_r = n1 / (time.perf_counter() - t)
        urls = sorted(str(p) for p in (tmp / "ref").glob("*.tar"))
        t = time.perf_counter()
        n2 = sum(1 for _ in wds.WebDataset(urls, shardshuffle=False).decode("rgb8"))
        ref_r = n2 / (time.perf_counter() - t)
        assert n1 == n2 == a.n

    print(f"{a.n} samples {h}x{w}, {a.per}/shard")
    print(f"write: bridgedepth {ours_w:8.1f} samples/s   webdataset.TarWriter(default encoder) {ref_w:8.1f}   "
          f"ratio {ours_w / ref_w:.2f}")
    print(f"read:  bridgedepth {ours_r:8.1f} samples/s   webdataset.WebDataset.decode('rgb8')   {ref_r:8.1f}   "
          f"ratio {ours_r / ref_r:.2f}")
    import sys as _sys
    from pathlib import Path as _Path

    _sys.path.insert(0, str(_Path(__file__).resolve().parent))
    from bench_common import write_row
    write_row("shards", ours=ours_w, reference=ref_w, unit="samples/s written (webdataset ref)", goal=None,
              extra={"read_ours": ours_r, "read_reference": ref_r})


if __name__ == "__main__":
    main()
