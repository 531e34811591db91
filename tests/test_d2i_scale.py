"""D2I at paper scale, checked on tiny real components (issue 13): dtype policy, block checkpointing,
multi-process fine-tuning, the empty-prompt cache, aspect buckets, resume settings, the model folder's
own settings, the reward target, multi-source fine-tuning with a scene hold-out, streaming."""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from bridgedepth.config import load_config
from bridgedepth.d2i.backend import bucket_size, load_backend
from bridgedepth.d2i.lora import add_lora, lora_parameters
from bridgedepth.d2i.sampler import make_generators, sample
from bridgedepth.d2i.sd import EMPTY_EMBEDS, write_bridge_json
from bridgedepth.d2i.synthetic import toy_scenes
from bridgedepth.errors import InputError

from _memory import PeakMemory


@pytest.fixture(scope="module")
def flux_dir(tmp_path_factory):
    from diffusers import FluxControlPipeline

    from bridgedepth.d2i.flux import tiny_flux_components

    tmp = tmp_path_factory.mktemp("flux")
    d = tmp / "model"
    FluxControlPipeline(**tiny_flux_components(tmp)).save_pretrained(d)
    write_bridge_json(d, resolution=32, num_steps=3, backend="flux-depth", guidance_scale=3.5, max_sequence_length=16)
    return d


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    from diffusers import StableDiffusionControlNetPipeline

    from bridgedepth.d2i.sd import tiny_sd_components

    tmp = tmp_path_factory.mktemp("sd")
    d = tmp / "model"
    StableDiffusionControlNetPipeline(**tiny_sd_components(tmp), requires_safety_checker=False).save_pretrained(d)
    write_bridge_json(d, resolution=32, num_steps=3)
    return d


FT = ["device=cpu", "finetune.batch_size=1", "finetune.heldout=2", "finetune.sample_every=0", "finetune.save_every=0",
      "finetune.lora_rank=2", "finetune.lora_alpha=2", "finetune.lr=1e-2", "finetune.open_shards=2"]


# ---- 1. dtype policy ------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["flux", "sd"])
def test_frozen_parts_load_in_bf16_lora_stays_fp32_and_a_step_runs(which, flux_dir, sd_dir, teacher_dir, tmp_path):
    from bridgedepth.d2i.backend import resolve_dtype
    from bridgedepth.d2i.finetune import finetune

    assert resolve_dtype("auto", "cuda:0") == torch.bfloat16 and resolve_dtype("auto", "cpu") == torch.float32
    d = flux_dir if which == "flux" else sd_dir
    be = load_backend(d, "cpu", "bfloat16")
    add_lora(be.denoiser, 2, 2, ["to_q", "to_k", "to_v"])
    for name, m in be.frozen_modules().items():
        for n, p in m.named_parameters():
            want = torch.float32 if "lora_" in n else torch.bfloat16
            assert p.dtype == want, (name, n, p.dtype)
    assert any("lora_" in n for n, _ in be.denoiser.named_parameters())
    assert be.dtype == torch.bfloat16
    # a paper-like configuration (frozen bf16, K=1, block checkpointing, both cuts of the teacher) fine-tunes
    cfg = load_config("tiny", FT + ["d2i.dtype=bfloat16", "finetune.lora_targets=[to_q,to_k,to_v]"])
    s = finetune(cfg, d, teacher_dir, toy_scenes(6, 32), tmp_path / "ft", steps=1, progress=False)
    assert s["dtype"] == "bfloat16" and np.isfinite(s["heldout_after"]["depth_reward"])
    from safetensors.torch import load_file

    lora = load_file(str(tmp_path / "ft" / "pytorch_lora_weights.safetensors"))
    assert lora and all(v.dtype == torch.float32 for v in lora.values())


@pytest.mark.parametrize("which", ["flux", "sd"])
def test_anchor_reference_is_the_base_models_sample_on_diffusers_classes(which, flux_dir, sd_dir):
    """The anchor reward's reference (LoRA switched off) equals the base model's image for the same
    noise on the real FluxTransformer2DModel / UNet2DConditionModel classes, in bf16 too."""
    from bridgedepth.d2i.lora import lora_disabled
    from bridgedepth.d2i.sampler import sample

    d = flux_dir if which == "flux" else sd_dir
    for dtype in ("float32", "bfloat16"):
        be = load_backend(d, "cpu", dtype)
        disp = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            base = sample(be, disp, num_steps=2, seeds=[7]).images
        torch.manual_seed(0)
        add_lora(be.denoiser, 2, 2, ["to_q", "to_k", "to_v"])
        with torch.no_grad():
            for n, p in be.denoiser.named_parameters():
                if "lora_B" in n:
                    p.normal_(std=0.5)
            tuned = sample(be, disp, num_steps=2, seeds=[7]).images
            with lora_disabled(be.denoiser):
                ref = sample(be, disp, num_steps=2, seeds=[7]).images
        assert (tuned.float() - base.float()).abs().max() > 1e-3, dtype
        torch.testing.assert_close(ref, base, rtol=0, atol=1e-6)
        assert all(p.requires_grad for n, p in be.denoiser.named_parameters() if "lora_" in n)


# ---- 2. block-level checkpointing -----------------------------------------------------------------

def _multiblock_flux(tmp_path):
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

    from bridgedepth.d2i.flux import FluxDepthBackend

    torch.manual_seed(0)
    tr = FluxTransformer2DModel(patch_size=1, in_channels=8, out_channels=4, num_layers=2, num_single_layers=6,
                                attention_head_dim=16, num_attention_heads=4, joint_attention_dim=32,
                                pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=True)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(4, 4), layers_per_block=1,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False)
    embeds = {"prompt_embeds": torch.randn(1, 4, 32), "pooled_prompt_embeds": torch.randn(1, 32),
              "text_ids": torch.zeros(4, 3)}
    be = FluxDepthBackend(tr.eval(), vae.eval(), FlowMatchEulerDiscreteScheduler(), embeds, 2, 64, 3.5)
    add_lora(be.denoiser, 2, 2, ["to_q", "to_k", "to_v"])
    for n, p in be.denoiser.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    return be


def test_block_checkpointing_lowers_peak_memory_with_the_same_gradients(tmp_path):
    """A K=1 reward step: whole-call checkpointing (the old way) holds every block's activations during
    the recompute; block checkpointing recomputes one block at a time. Peak live memory falls, the
    LoRA gradients agree to 1e-5."""
    be = _multiblock_flux(tmp_path)
    params = lora_parameters(be.denoiser)
    disp = torch.rand(1, 1, 64, 96)  # 4 x 6 packed tokens... of an 8x-downsampled 64 x 96 image
    results = {}
    for mode in ("step", "block", False):
        for p in params:
            p.grad = None
        with PeakMemory() as mem:
            roll = sample(be, disp, num_steps=2, seeds=[1], grad_steps=1, checkpointing=mode,
                          decoder_checkpointing=True)
            roll.images.square().mean().backward()
        results[mode] = (mem.peak, [p.grad.clone() for p in params])
    peak_step, g_step = results["step"]
    peak_block, g_block = results["block"]
    peak_none, g_none = results[False]
    for a, b, c in zip(g_step, g_block, g_none):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(c, a, atol=1e-5, rtol=1e-5)
    assert peak_block < 0.8 * peak_step, (peak_block, peak_step, peak_none)


def test_teacher_block_checkpointing_keeps_its_output(teacher_dir):
    from bridgedepth.d2i.teacher import enable_teacher_checkpointing, load_teacher, teacher_disparity

    t = load_teacher(teacher_dir)
    x = torch.rand(2, 3, 42, 56, requires_grad=True)
    a = teacher_disparity(t, x)
    a.sum().backward()
    ga = x.grad.clone()
    x.grad = None
    enable_teacher_checkpointing(t)
    with PeakMemory() as mem:
        b = teacher_disparity(t, x)
        b.sum().backward()
    torch.testing.assert_close(b, a)
    torch.testing.assert_close(x.grad, ga, atol=1e-5, rtol=1e-4)
    assert mem.peak > 0


# ---- 4. fine-tuning on 2 processes ------------------------------------------------------------------

def test_finetune_under_accelerate_on_two_processes(flux_dir, sd_dir, teacher_dir, tmp_path):
    """`accelerate launch --cpu --num_processes 2` (gloo): tiny FLUX and tiny SD fine-tune 2 steps; the
    LoRA is identical on both ranks (ranks draw different batches, so only the all-reduce makes it so)
    and written once."""
    out = tmp_path / "ddp"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29537",
           str(Path(__file__).with_name("_ddp_d2i.py")), str(out), str(flux_dir), str(sd_dir), str(teacher_dir)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    for name in ("flux", "sd"):
        r0 = (out / f"{name}-rank0.txt").read_text().split()
        r1 = (out / f"{name}-rank1.txt").read_text().split()
        assert r0[1] == r1[1] == "2"
        assert r0[0] == r1[0], name
        files = list((out / name).rglob("pytorch_lora_weights.safetensors"))
        assert len(files) == 1
        summary = json.loads((out / name / "finetune_summary.json").read_text())
        assert summary["processes"] == 2 and summary["lora_sha256"] == r0[0]


# ---- 6. empty-prompt cache --------------------------------------------------------------------------

def test_empty_prompt_cache_races_and_read_only_folders(tmp_path, monkeypatch):
    from bridgedepth.d2i import sd as sdm

    d = tmp_path / "model"
    d.mkdir()
    calls = []
    gate = threading.Barrier(3)

    def compute():
        calls.append(1)
        gate.wait(timeout=10)  # three "ranks" compute at the same moment
        return {"prompt_embeds": torch.ones(1, 4, 8)}

    res = []
    th = [threading.Thread(target=lambda: res.append(sdm.cached_empty_prompt(d, compute, tmp_path / "c")))
          for _ in range(3)]
    [t.start() for t in th]
    [t.join() for t in th]
    assert len(res) == 3 and all(torch.equal(r["prompt_embeds"], torch.ones(1, 4, 8)) for r in res)
    assert (d / EMPTY_EMBEDS).exists() and not list(d.glob("*.tmp"))
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(d / EMPTY_EMBEDS))["prompt_embeds"], torch.ones(1, 4, 8))
    # a read-only model folder: written to the cache folder with a warning, read from there next time
    ro = tmp_path / "ro"
    ro.mkdir()
    import tempfile

    real = tempfile.mkstemp

    def mkstemp(dir=None, **kw):
        if Path(dir) == ro:
            raise PermissionError(13, "Permission denied")
        return real(dir=dir, **kw)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.warns(UserWarning, match="not writable"):
        sdm.cached_empty_prompt(ro, compute_once := (lambda: {"prompt_embeds": torch.zeros(2)}), tmp_path / "c")
    assert not (ro / EMPTY_EMBEDS).exists()
    n = len(calls)
    again = sdm.cached_empty_prompt(ro, lambda: pytest.fail("recomputed"), tmp_path / "c")
    assert torch.equal(again["prompt_embeds"], torch.zeros(2)) and len(calls) == n
    # neither writable: a clear error, never a silent recomputation in every job
    ro2 = tmp_path / "ro2"
    ro2.mkdir()
    cache2 = tmp_path / "c2"
    monkeypatch.setattr(tempfile, "mkstemp", lambda dir=None, **kw: (_ for _ in ()).throw(PermissionError(13, "no")))
    with pytest.raises(InputError, match="cannot store the empty-prompt embedding"):
        sdm.cached_empty_prompt(ro2, compute_once, cache2)


# ---- 7. aspect buckets ------------------------------------------------------------------------------

def test_wide_source_keeps_its_aspect_and_matches_the_pipeline(flux_dir, monkeypatch):
    """A 3.3:1 source (VKITTI2-like, 1242 x 375) generates within one latent cell of its aspect; FLUX's
    img_ids and the shift mu at that size are the pipeline's (our images equal FluxControlPipeline's)."""
    from diffusers import FluxControlPipeline
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

    be = load_backend(flux_dir)
    be.configure(load_config("tiny").d2i)
    f = be.factor  # 2 here (a one-level test VAE); 16 for FLUX.1-Depth-dev's 8x VAE + 2x2 packing
    assert be.resolution == 32 and f == 2 * 2 ** (len(be.vae.config.block_out_channels) - 1)
    for res, fac in ((768, 16), (1024, 16)):  # the real FLUX factor at the paper's sizes
        hh, ww = bucket_size(375, 1242, res, fac)
        assert hh % 16 == 0 and ww % 16 == 0 and abs(ww - hh * 1242 / 375) <= 16, (hh, ww)
        assert 0.9 < hh * ww / res**2 < 1.1
    h, w = be.bucket(375, 1242)
    assert h % f == 0 and w % f == 0 and w > 3 * h
    assert abs(w - h * 1242 / 375) <= f, (h, w)  # within one latent cell of the source's aspect
    disp = torch.rand(1, 1, h, w)
    ours = sample(be, disp, num_steps=3, seeds=[4]).images
    assert ours.shape == (1, 3, h, w)
    pipe = FluxControlPipeline.from_pretrained(flux_dir)
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mode())
    with torch.no_grad():
        ref = pipe(prompt=[""], control_image=disp.expand(-1, 3, -1, -1) * 2 - 1, height=h, width=w,
                   num_inference_steps=3, guidance_scale=3.5, generator=make_generators([4]),
                   max_sequence_length=16, output_type="pt").images
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_condition_resize_is_area_down_and_bilinear_up():
    import torch.nn.functional as F

    from bridgedepth.d2i.common import prepare_source, resize_map

    x = torch.rand(1, 1, 8, 12)
    torch.testing.assert_close(resize_map(x, (16, 24)), F.interpolate(x, size=(16, 24), mode="bilinear"))
    torch.testing.assert_close(resize_map(x, (4, 6)), F.interpolate(x, size=(4, 6), mode="area"))
    # an upscaled condition is smooth, not blocky: no 2x2 blocks of equal values
    depth = np.linspace(1, 5, 8 * 12, dtype=np.float32).reshape(8, 12)
    up = prepare_source([{"depth": depth}], size=(16, 24))["disp"][0, 0]
    assert not torch.equal(up[0::2, 0::2], up[1::2, 0::2])


def test_generate_makes_wide_images_at_their_bucket(tmp_path, flux_dir):
    from bridgedepth.d2i.generate import Generator

    be = load_backend(flux_dir).configure(load_config("tiny").d2i)
    depth = np.random.default_rng(0).uniform(1, 10, (30, 99)).astype(np.float32)
    out = Generator(be, images_per_depth=1, steps=2)({"__key__": "wide", "depth": depth})
    assert out[0]["meta"]["generated_size"] == list(be.bucket(30, 99))
    gh, gw = out[0]["meta"]["generated_size"]
    assert gw / gh > 2 and out[0]["rgb"].shape == (30, 99, 3)


# ---- 8. resume that knows what made the output -----------------------------------------------------

def test_generate_refuses_other_settings_in_the_same_folder(tmp_path, run_cli):
    from bridgedepth.d2i.tiny import TinyBackend
    from bridgedepth.data.shards import load_manifest, write_dataset

    scenes = toy_scenes(3, 16)
    write_dataset(tmp_path / "src", len(scenes), lambda i: scenes[i], samples_per_shard=2, progress=False)
    torch.manual_seed(0)
    TinyBackend.create(16, (8, 16), 1, 2).save(tmp_path / "d2i")
    out = tmp_path / "gen"
    args = ["generate", "--d2i", str(tmp_path / "d2i"), "--source", str(tmp_path / "src"), "--out", str(out),
            "--images-per-depth", "1", "--set", "device=cpu"]
    r = run_cli(*args, "--seed", "7")
    assert r.code == 0, r.err
    first = load_manifest(out)
    assert first.meta["settings"]["seed"] == 7 and first.meta["settings"]["model"]["weights_sha256"]
    r = run_cli(*args, "--seed", "8")
    assert r.code != 0 and "seed: 7 in the folder, 8 now" in r.err and "Traceback" not in r.err
    assert load_manifest(out).meta["settings"]["seed"] == 7  # untouched
    r = run_cli(*args, "--seed", "7")  # same settings: resumes (nothing to do)
    assert r.code == 0
    r = run_cli(*args, "--seed", "8", "--overwrite")
    assert r.code == 0, r.err
    m = load_manifest(out)
    assert m.complete and m.meta["settings"]["seed"] == 8 and m.num_samples == 3
    # another model (retrained weights) counts as another setting too
    torch.manual_seed(1)
    TinyBackend.create(16, (8, 16), 1, 2).save(tmp_path / "d2i")
    r = run_cli(*args, "--seed", "8")
    assert r.code != 0 and "model: other weights (sha256) than the folder's" in r.err


def test_generate_compares_only_settings_both_sides_know(tmp_path):
    """A setting a later version adds to the manifest does not refuse a folder an older one made (at its
    default it reproduces the older output); a changed model fingerprint is one changed value."""
    from bridgedepth.d2i.generate import check_output_settings
    from bridgedepth.data.shards import MANIFEST

    out = tmp_path / "gen"
    out.mkdir()
    old = {"seed": 7, "num_steps": 4, "model": {"weights_sha256": "a", "files": 1}}
    (out / MANIFEST).write_text(json.dumps({"meta": {"stage": "generate", "settings": old}}))
    check_output_settings(out, {**old, "new_option": True}, overwrite=False)
    with pytest.raises(InputError, match="other weights"):
        check_output_settings(out, {**old, "model": {"lora_sha256": "b", "base": old["model"]}}, overwrite=False)


# ---- 9. a model folder's own settings win ----------------------------------------------------------

def test_model_folder_settings_win_unless_set_explicitly(flux_dir):
    be = load_backend(flux_dir)
    be.configure(load_config("tiny").d2i)  # a tiny preset says nothing about FLUX models
    assert (be.resolution, be.default_steps, be.guidance_scale) == (32, 3, 3.5)
    assert set(be.settings_origin.values()) == {"model"}
    cfg = load_config("tiny", ["d2i.resolution=48", "d2i.guidance_scale=2.0"])
    be.configure(cfg.d2i, {"d2i.resolution", "d2i.guidance_scale"})
    assert (be.resolution, be.default_steps, be.guidance_scale) == (48, 3, 2.0)
    assert be.settings_origin["resolution"] == "user"
    # a preset written for this kind of model applies its values
    paper = load_config("paper")
    be.configure(paper.d2i)
    assert be.resolution == paper.d2i.resolution and be.settings_origin["resolution"] == "preset"
    with pytest.raises(InputError, match=r"multiple of 2 \(nearest valid: 32 or 34\)"):  # test VAE: factor 2
        be.configure(load_config("tiny", ["d2i.resolution=33"]).d2i, {"d2i.resolution"})
    from bridgedepth.d2i.backend import check_resolution

    with pytest.raises(InputError, match=r"multiple of 16 \(nearest valid: 752 or 768\)"):
        check_resolution(760, 16, "flux-depth")


# ---- 10. reward target = the condition's normalisation ---------------------------------------------

def test_condition_scores_itself_at_one():
    """1 % of the pixels at 0.05 m: against the raw disparity the condition scores well below 1; against
    the condition's clipped normalisation (the target now) it scores 1."""
    from bridgedepth.d2i.common import prepare_source
    from bridgedepth.d2i.rewards import depth_target, masked_cosine

    rng = np.random.default_rng(0)
    depth = rng.uniform(2, 10, (40, 40)).astype(np.float32)
    idx = rng.choice(depth.size, depth.size // 100, replace=False)
    depth.flat[idx] = 0.05
    batch = prepare_source([{"depth": depth}], size=(40, 40))
    perfect = batch["disp01"][:, 0]  # a teacher that sees exactly the condition
    raw = masked_cosine(perfect, batch["disp"][:, 0], batch["valid"][:, 0])
    ours = masked_cosine(perfect, depth_target(batch), batch["valid"][:, 0])
    assert float(ours) == pytest.approx(1.0, abs=1e-6)
    assert float(raw) < 0.5


# ---- 5 and 11. multi-source, scene hold-out, streaming ---------------------------------------------

def _scene_source(d, n_scenes, per_scene, size=(16, 24), seed=0):
    from bridgedepth.data.shards import write_dataset

    rng = np.random.default_rng(seed)

    def make(i):
        return {"__key__": f"s{i // per_scene}_f{i % per_scene}", "depth": rng.uniform(1, 9, size).astype(np.float32),
                "rgb": rng.integers(0, 255, (*size, 3), dtype=np.uint8), "meta": {"scene": f"scene{i // per_scene}"}}

    write_dataset(d, n_scenes * per_scene, make, samples_per_shard=4, progress=False)
    return d


def test_heldout_by_scene_and_weighted_sources(tmp_path):
    from bridgedepth.d2i.source import SourceStream, parse_sources, split_heldout

    a = _scene_source(tmp_path / "a", 5, 3)
    b = _scene_source(tmp_path / "b", 4, 2, size=(24, 16), seed=1)
    srcs = parse_sources([str(a), f"{b}:0.5"])
    assert [s.weight for s in srcs] == [1.0, 0.5]
    held = split_heldout(srcs, 4, seed=0)
    desc = held.describe()
    assert desc["a"]["by"] == "scene" and desc["b"]["by"] == "scene"
    for name in ("a", "b"):  # whole scenes: every frame of a held-out scene is held out
        scenes = held.scenes[name]
        assert scenes and all(k.split("_")[0].replace("s", "scene") in scenes for k in held.keys[name])
        assert len(held.keys[name]) == sum(3 if name == "a" else 2 for _ in scenes)
    stream = SourceStream(srcs, lambda h, w: bucket_size(h, w, 32, 8), exclude=held.keys, seed=0, open_shards=2)
    # the index holds exactly the training samples: every key of a held-out scene is left out
    for i, src in enumerate(srcs):
        from bridgedepth.data.shards import IndexedShard

        keys = {IndexedShard(Path(src.data) / sh).keys()[pos] for sh, pos in stream.index[i]}
        assert keys and not keys & held.keys[src.name]
    sizes = set()
    for step in range(60):
        batch = stream.next_batch(2, step)
        assert batch["disp01"].shape[0] in (1, 2) and "rgb" not in batch
        sizes.add(tuple(batch["disp01"].shape[-2:]))
        assert len(stream.reader._open) <= 2  # bounded: a few open shards, never the samples
    assert sizes == {(24, 40), (40, 24)}  # both sources' aspect buckets (16 x 24 and 24 x 16 maps)
    drawn = dict(zip(("a", "b"), stream.seen))
    assert drawn["a"] > drawn["b"] > 0  # weights 1 : 0.5
    # what a step draws depends on (seed, step) only: a second stream repeats step 17 exactly
    again = SourceStream(srcs, lambda h, w: bucket_size(h, w, 32, 8), exclude=held.keys, seed=0, open_shards=2)
    a, b = stream.next_batch(2, 17), again.next_batch(2, 17)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_summary_names_sources_and_heldout(tmp_path, teacher_dir):
    from bridgedepth.d2i.finetune import finetune
    from bridgedepth.d2i.tiny import TinyBackend

    a = _scene_source(tmp_path / "a", 4, 2)
    b = _scene_source(tmp_path / "b", 3, 2, seed=1)
    torch.manual_seed(0)
    TinyBackend.create(16, (8, 16), 1, 2).save(tmp_path / "d2i")
    cfg = load_config("tiny", FT + ["d2i.num_steps=2", "finetune.lora_targets=[to_q,to_k,to_v]"])
    s = finetune(cfg, tmp_path / "d2i", teacher_dir, [str(a), f"{b}:2"], tmp_path / "ft", steps=3, progress=False)
    assert [x["weight"] for x in s["sources"]] == [1.0, 2.0]
    assert sum(x["drawn_rank0"] for x in s["sources"]) == 3
    assert s["heldout"]["a"]["by"] == "scene" and s["heldout"]["a"]["samples"] >= 1
    assert s["heldout_before"]["count"] == sum(h["samples"] for h in s["heldout"].values())
