"""The FLUX.1-Depth-dev memory budget (docs/scaling.md): its weight terms from the published
configurations (built on the meta device: no memory, no download), and the GPU probe (gpu marker)."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_budget_weight_terms_match_the_published_configs():
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from gpu_d2i_memory import FLUX_DEPTH_TRANSFORMER, FLUX_VAE, TARGETS

    from bridgedepth.mde.model import build_model

    with torch.device("meta"):
        tr = FluxTransformer2DModel(**FLUX_DEPTH_TRANSFORMER)
        vae = AutoencoderKL(**FLUX_VAE)
        teacher = build_model("vitg")
    n_tr = sum(p.numel() for p in tr.parameters())
    n_vae = sum(p.numel() for p in vae.parameters())
    n_teacher = sum(p.numel() for p in teacher.parameters())
    lora_per_rank = sum(m.in_features + m.out_features for name, m in tr.named_modules()
                        if isinstance(m, torch.nn.Linear) and any(name == t or name.endswith("." + t) for t in TARGETS))
    gb = 1e9
    # the figures docs/scaling.md's budget table uses
    assert n_tr * 2 / gb == pytest.approx(23.8, abs=0.05)  # bf16 transformer
    assert n_tr * 4 / gb == pytest.approx(47.6, abs=0.05)  # what fp32 loading cost
    assert n_vae * 2 / gb == pytest.approx(0.17, abs=0.01)
    assert n_teacher * 2 / gb == pytest.approx(2.5, abs=0.05)
    assert lora_per_rank * 16 / 1e6 == pytest.approx(26.1, abs=0.05)
    assert lora_per_rank * 16 * 4 * 4 / gb == pytest.approx(0.42, abs=0.01)  # fp32 weights + grads + 2 Adam moments


@pytest.mark.gpu
def test_gpu_probe_runs_a_reward_step():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from gpu_d2i_memory import main

    assert main(["--res", "256", "--steps", "2", "--reps", "1"]) == 0
