"""GPU probe: one FLUX.1-Depth-dev reward fine-tuning step at 768 x 768 (batch 1, K = 1), random weights.

Builds the real FLUX.1-Depth-dev transformer and VAE from their published configurations and a
Depth-Anything-V2 ViT-G teacher (``vitg``) with random weights, in bf16 on the GPU (frozen) with fp32
LoRA (rank 16 on the attention projections, as configs/paper.yaml), then runs reward steps through our
sampler (block checkpointing of the transformer, the VAE decoder and the teacher) and prints, per
configuration, the peak GPU memory (``torch.cuda.max_memory_allocated``) and seconds per step, next to
the budget of docs/scaling.md. Nothing is downloaded; the text embeddings are random tensors of the
right shapes (T5-XXL 512 x 4096, CLIP pooled 768), as the cache would hold.

    PYTHONPATH=src python benchmarks/gpu_d2i_memory.py [--res 768] [--steps 28] [--no-teacher] [--json OUT]

Needs a CUDA GPU with about 40 GB free; exits with a message without one. ``tests/test_gpu_probe.py``
(``gpu`` marker) runs it at a small size.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

# FLUX.1-Depth-dev (black-forest-labs/FLUX.1-Depth-dev, transformer/config.json and vae/config.json)
FLUX_DEPTH_TRANSFORMER = dict(patch_size=1, in_channels=128, out_channels=64, num_layers=19, num_single_layers=38,
                              attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                              pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=[16, 56, 56])
FLUX_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=[128, 256, 512, 512],
                layers_per_block=2, down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                norm_num_groups=32, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                use_post_quant_conv=False, sample_size=1024)
TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]


def build(res: int, with_teacher: bool):
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    from bridgedepth.d2i.flux import FluxDepthBackend
    from bridgedepth.d2i.lora import add_lora

    dev, dt = torch.device("cuda"), torch.bfloat16
    with torch.device(dev):
        tr = FluxTransformer2DModel(**FLUX_DEPTH_TRANSFORMER).to(dt)
        vae = AutoencoderKL(**FLUX_VAE).to(dt)
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                            base_image_seq_len=256, max_image_seq_len=4096)
    embeds = {"prompt_embeds": torch.randn(1, 512, 4096, device=dev), "pooled_prompt_embeds": torch.randn(1, 768, device=dev),
              "text_ids": torch.zeros(512, 3, device=dev)}
    be = FluxDepthBackend(tr.eval(), vae.eval(), sched, embeds, 28, res, 10.0)
    be.denoiser.requires_grad_(False)
    add_lora(be.denoiser, 16, 16, TARGETS)
    be.denoiser.to(dev)
    teacher = None
    if with_teacher:
        from bridgedepth.mde.model import build_model

        teacher = build_model("vitg").to(dev, dt).eval().requires_grad_(False)
    return be, teacher


def step(be, teacher, res: int, steps: int, block: bool, opt):
    import torch

    from bridgedepth.d2i.rewards import masked_cosine
    from bridgedepth.d2i.sampler import sample
    from bridgedepth.d2i.teacher import teacher_disparity

    disp = torch.rand(1, 1, res, res, device="cuda")
    roll = sample(be, disp, num_steps=steps, seeds=[0], grad_steps=1, checkpointing="block" if block else "step",
                  decoder_checkpointing=True)
    if teacher is not None:
        pred = teacher_disparity(teacher, roll.images)
        loss = 1 - masked_cosine(pred, disp[:, 0], torch.ones_like(disp[:, 0], dtype=torch.bool)).mean()
    else:
        loss = roll.images.square().mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--res", type=int, default=768)
    ap.add_argument("--steps", type=int, default=28, help="sampler steps (the last one keeps gradients)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--no-teacher", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_d2i_memory: no CUDA device; nothing measured (docs/scaling.md has the estimated budget)")
        return 0
    from bridgedepth.d2i.lora import lora_parameters
    from bridgedepth.d2i.teacher import enable_teacher_checkpointing

    be, teacher = build(a.res, not a.no_teacher)
    if teacher is not None:
        enable_teacher_checkpointing(teacher)
    params = lora_parameters(be.denoiser)
    opt = torch.optim.AdamW(params, lr=1e-5)
    gib = 2**30
    weights = torch.cuda.memory_allocated() / gib
    rows = []
    for block in (True, False):
        torch.cuda.reset_peak_memory_stats()
        times = []
        try:
            for _ in range(a.reps):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                step(be, teacher, a.res, a.steps, block, opt)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            row = {"checkpointing": "block" if block else "step", "peak_gib": torch.cuda.max_memory_allocated() / gib,
                   "s_per_step": min(times)}
        except torch.cuda.OutOfMemoryError:
            row = {"checkpointing": "block" if block else "step", "peak_gib": None, "s_per_step": None, "oom": True}
            torch.cuda.empty_cache()
        rows.append(row)
        print(json.dumps(row))
    out = {"device": torch.cuda.get_device_name(), "res": a.res, "sampler_steps": a.steps,
           "weights_gib": weights, "lora_params": sum(p.numel() for p in params), "rows": rows,
           "budget_gib_docs": 36.0}
    print(json.dumps(out, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
