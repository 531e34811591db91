"""Bytes per generated and labelled sample: source references (the default) against embedded copies
of the source (``--embed-source``, the reference: what every generated sample stored before).

Renders N procedural scenes (``bridge scenes``, synthetic look) at SIZE x SIZE, generates 4 images
per depth map with the shipped toy D2I foundation and labels them with the shipped toy depth model,
once in each form. Prints per-field mean bytes (from the tar members), bytes per sample of each set
(whole shard files, tar headers included), the ratio references / embedded and an extrapolation to 768 x 768 sources (raw arrays scale exactly with the pixel
count; PNG members are scaled by it, which assumes the same compression per pixel).

    PYTHONPATH=src python benchmarks/bench_generated_bytes.py [--n 16] [--size 128] [--steps 10]
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path


def field_bytes(d: Path) -> tuple[dict[str, float], int, int]:
    """Mean bytes per sample of each field's member, total shard bytes, sample count."""
    from bridgedepth.data.shards import iter_shard_members, load_manifest

    m = load_manifest(d)
    per: dict[str, int] = defaultdict(int)
    n = 0
    for s in m.shards:
        for members in iter_shard_members(d / s.name):
            n += 1
            for name, data in members.items():
                per[".".join(name.split(".")[1:])] += len(data)
    return {k: v / max(n, 1) for k, v in sorted(per.items())}, sum(s.bytes for s in m.shards), n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16, help="source scenes")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="sampler steps")
    ap.add_argument("--target", type=int, default=768, help="extrapolate to this square source size")
    a = ap.parse_args()

    import torch

    from bridgedepth.config import load_config
    from bridgedepth.d2i.generate import generate
    from bridgedepth.data.scenes.dataset import write_scenes
    from bridgedepth.labels.label import label
    from bridgedepth.zoo import model_path

    torch.set_num_threads(1)
    cfg = load_config("tiny", ["device=cpu", f"generate.steps={a.steps}", "label.workers=1"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_scenes(root / "src", a.n, size=(a.size, a.size), seed=0, samples_per_shard=8, progress=False)
        sets = {}
        for form, embed in (("embedded", True), ("references", False)):
            generate(cfg, model_path("d2i"), root / "src", root / f"gen_{form}", embed_source=embed, progress=False)
            label(cfg, model_path("depth"), root / f"gen_{form}", root / f"lab_{form}", progress=False)
            for stage in ("gen", "lab"):
                sets[stage, form] = field_bytes(root / f"{stage}_{form}")
        src_fields, src_total, src_n = field_bytes(root / "src")

    scale = (a.target / a.size) ** 2
    print(f"{a.n} procedural scenes at {a.size}x{a.size}, 4 generated images each, {a.steps} sampler steps")
    print(f"source set: {src_total / src_n:,.0f} bytes per source sample")
    for stage, title in (("gen", "generated"), ("lab", "labelled")):
        for form in ("embedded", "references"):
            fields, total, n = sets[stage, form]
            detail = ", ".join(f"{k} {v:,.0f}" for k, v in fields.items())
            print(f"{title:9s} {form:10s}: {total / n:9,.0f} bytes/sample ({n} samples; members: {detail})")
        (fe, te, ne), (fr, tr, nr) = sets[stage, "embedded"], sets[stage, "references"]
        ratio = (tr / nr) / (te / ne)
        print(f"{title:9s} ratio references / embedded = {ratio:.3f}  (saves {100 * (1 - ratio):.0f} %)")
        # extrapolation: each member scaled by the pixel count, except meta / source_ref (constant)
        const = {"meta.json", "source_ref.json", "intrinsics.npy"}

        def at_target(fields):
            return sum(v if k in const else v * scale for k, v in fields.items())

        e768, r768 = at_target(fe), at_target(fr)
        print(f"{title:9s} at {a.target}x{a.target} (extrapolated): embedded {e768 / 1e6:.2f} MB, "
              f"references {r768 / 1e6:.2f} MB per sample")


if __name__ == "__main__":
    main()
