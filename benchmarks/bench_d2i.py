"""Benchmark the d2i engine on the tiny backend.

1. Fine-tuning step (rollout + depth reward + backward) for 10 / 25 / 50 sampler steps, at K = 1
   (truncated, checkpointed) and at full backprop (K = steps, no checkpointing): time per step and peak
   memory; the printed ratio is full / K=1 (reference: K = 1).
2. Generation throughput (images/s) with gradients off.

Peak memory: CUDA max_memory_allocated on a GPU; on CPU the growth of the process's peak RSS
(ru_maxrss) over the baseline before each case, measured in a fresh subprocess per case so peaks do
not mask each other.

    PYTHONPATH=src python benchmarks/bench_d2i.py [--res 64] [--batch 4] [--steps 10 25 50]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def case(res: int, batch: int, steps: int, k: int, ckpt: bool, reps: int) -> dict:
    import torch
    from transformers import DepthAnythingForDepthEstimation

    from bridgedepth.d2i.lora import add_lora, lora_parameters
    from bridgedepth.d2i.rewards import masked_cosine
    from bridgedepth.d2i.sampler import sample
    from bridgedepth.d2i.teacher import teacher_disparity, tiny_teacher_config
    from bridgedepth.d2i.tiny import TinyBackend

    torch.set_num_threads(2)
    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    be = TinyBackend.create(res).to(dev)
    add_lora(be.denoiser, 8, 8)
    teacher = DepthAnythingForDepthEstimation(tiny_teacher_config()).to(dev).eval().requires_grad_(False)
    disp = torch.rand(batch, 1, res, res, device=dev)
    params = lora_parameters(be.denoiser)

    def one():
        roll = sample(be, disp, num_steps=steps, seeds=list(range(batch)), grad_steps=k, checkpointing=ckpt)
        loss = (1 - masked_cosine(teacher_disparity(teacher, roll.images), disp[:, 0], disp[:, 0] > -1)).mean()
        loss.backward()
        for p in params:
            p.grad = None

    if dev == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        one()
        if dev == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    if dev == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
    return {"steps": steps, "k": k, "checkpointing": ckpt, "seconds": min(ts), "peak_mb": peak / 2**20, "device": dev}


def gen_case(res: int, batch: int, steps: int, reps: int) -> dict:
    import torch

    from bridgedepth.d2i.sampler import sample
    from bridgedepth.d2i.tiny import TinyBackend

    torch.set_num_threads(2)
    be = TinyBackend.create(res)
    disp = torch.rand(batch, 1, res, res)
    sample(be, disp, num_steps=2, seeds=list(range(batch)))
    t0 = time.perf_counter()
    for r in range(reps):
        sample(be, disp, num_steps=steps, seeds=list(range(batch)))
    dt = time.perf_counter() - t0
    return {"images_per_s": batch * reps / dt, "steps": steps, "batch": batch, "res": res}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 25, 50])
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--case", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.case:
        kind, steps, k, ck = a.case.split(",")
        if kind == "gen":
            print(json.dumps(gen_case(a.res, a.batch, int(steps), a.reps)))
        else:
            print(json.dumps(case(a.res, a.batch, int(steps), int(k), ck == "1", a.reps)))
        return

    def run(spec):
        r = subprocess.run([sys.executable, __file__, "--res", str(a.res), "--batch", str(a.batch), "--reps",
                            str(a.reps), "--case", spec], capture_output=True, text=True, check=True)
        return json.loads(r.stdout.strip().splitlines()[-1])

    print(f"tiny backend {a.res}px, batch {a.batch}; reference = K=1 with per-step checkpointing")
    print(f"{'steps':>5} | {'K=1 s/step':>10} {'K=1 MB':>8} | {'full s/step':>11} {'full MB':>8} | time x | mem x")
    rows = []
    for n in a.steps:
        k1 = run(f"ft,{n},1,1")
        full = run(f"ft,{n},{n},0")
        rows.append({"k1": k1, "full": full})
        print(f"{n:>5} | {k1['seconds']:>10.2f} {k1['peak_mb']:>8.0f} | {full['seconds']:>11.2f} {full['peak_mb']:>8.0f} | "
              f"{full['seconds'] / k1['seconds']:>6.2f} | {full['peak_mb'] / max(k1['peak_mb'], 1):>5.1f}")
    g = run("gen,20,0,0")
    print(f"generation: {g['images_per_s']:.1f} images/s ({g['steps']} DDIM steps, batch {g['batch']}, {g['res']}px)")
    print(json.dumps({"finetune": rows, "generate": g}))
    import sys as _sys
    from pathlib import Path as _Path

    _sys.path.insert(0, str(_Path(__file__).resolve().parent))
    from bench_common import write_row
    last = rows[-1]
    write_row("d2i", ours=last["k1"]["peak_mb"], reference=last["full"]["peak_mb"], higher_is_better=False,
              unit=f"MB peak, K=1 vs all {a.steps[-1]} steps", goal=None,
              extra={"finetune": rows, "generate": g})


if __name__ == "__main__":
    main()
