"""``sd-controlnet`` backend: Stable Diffusion 1.5 UNet + depth ControlNet + VAE (diffusers components).

Loads from a local diffusers directory laid out like a saved StableDiffusionControlNetPipeline
(``unet/ controlnet/ vae/ scheduler/`` and, only to compute the empty-prompt embedding once,
``text_encoder/ tokenizer/``). The empty-prompt embedding is cached in
``empty_prompt_embeds.safetensors`` beside them; after that the text encoder is never loaded.
The control image is the normalised disparity (near = 1) repeated to 3 channels in [0, 1], as for the
MiDaS-depth ControlNet. Sampling: DDIM (eta = 0) through our loop; no classifier-free guidance (the
prompt is empty)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import InputError
from .backend import BRIDGE_JSON, Backend, Schedule, ddim_schedule, load_kwargs, read_bridge_json, write_json_atomic

EMPTY_EMBEDS = "empty_prompt_embeds.safetensors"


def encode_empty_prompt(tokenizer, text_encoder) -> torch.Tensor:
    ids = tokenizer([""], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids.to(text_encoder.device))[0].float().cpu()


def default_cache_dir() -> Path:
    """``$BRIDGE_CACHE`` or ``~/.cache/bridgedepth``."""
    return Path(os.environ.get("BRIDGE_CACHE") or Path.home() / ".cache" / "bridgedepth")


def _cache_copy(d: Path, cache_dir) -> Path:
    import hashlib

    tag = hashlib.sha256(str(Path(d).resolve()).encode()).hexdigest()[:16]
    return Path(cache_dir or default_cache_dir()) / "empty_prompt" / f"{Path(d).name}-{tag}" / EMPTY_EMBEDS


def cached_empty_prompt(d: Path, compute, cache_dir=None) -> dict[str, torch.Tensor]:
    """The empty-prompt embedding of model directory ``d``: ``d/EMPTY_EMBEDS``, else the cache copy
    (``cache_dir``, default :func:`default_cache_dir`), else ``compute()`` it once and write it.

    Writes are atomic with a unique temporary name (several ranks may compute it at once; the last
    rename wins and every copy is identical). A read-only model directory sends the file to the cache
    folder with a warning; if neither can be written the error says so (never a silent recomputation of
    the text encoders in every job)."""
    import warnings

    from safetensors.torch import load_file, save_file

    from ..io import atomic_path, usual_permissions

    d = Path(d)
    p, c = d / EMPTY_EMBEDS, _cache_copy(d, cache_dir)
    for cand in (p, c):
        if cand.exists():
            return load_file(str(cand))
    embeds = {k: v.contiguous() for k, v in compute().items()}
    errors = []
    for target in (p, c):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                save_file(embeds, str(tmp))
                usual_permissions(tmp)  # safetensors writes 0600
        except OSError as e:
            errors.append(f"{target.parent}: {e.strerror or e}")
            continue
        if target == c:
            warnings.warn(f"{d} is not writable ({errors[0]}): the empty-prompt embedding was cached in {c}",
                          stacklevel=2)
        return embeds
    raise InputError(f"{d}: cannot store the empty-prompt embedding ({'; '.join(errors)}); make the model "
                     f"folder writable or set d2i.cache_dir / $BRIDGE_CACHE to a writable folder")


class SDControlNetBackend(Backend):
    name = "sd-controlnet"

    def __init__(self, unet, controlnet, vae, scheduler, prompt_embeds: torch.Tensor, default_steps: int = 20,
                 resolution: int = 512, conditioning_scale: float = 1.0):
        self.denoiser = unet
        self.controlnet, self.vae, self.scheduler = controlnet, vae, scheduler
        self.prompt_embeds = prompt_embeds
        self.default_steps, self.resolution = default_steps, resolution
        self.conditioning_scale = conditioning_scale
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.info = {}
        for m in (controlnet, vae):
            m.requires_grad_(False).eval()

    @property
    def factor(self) -> int:
        return self.vae_scale  # the UNet forwards upsample sizes, so any latent size works

    def to(self, device, dtype=None):
        super().to(device, dtype)
        self.prompt_embeds = self.prompt_embeds.to(device)
        return self

    def encode_condition(self, disp01):
        return disp01.expand(-1, 3, -1, -1).to(next(self.controlnet.parameters()).dtype)

    def initial_latents(self, generators, device, size=None):
        h, w = self.check_size(size or (self.resolution, self.resolution))
        c = self.denoiser.config.in_channels
        shape = (1, c, h // self.vae_scale, w // self.vae_scale)
        x = torch.cat([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
        return x.to(device=device, dtype=self.dtype) * self.scheduler.init_noise_sigma

    def schedule(self, num_steps, device, size=None) -> Schedule:
        return ddim_schedule(self.scheduler, num_steps, device)

    def predict(self, latents, t, cond, size=None):
        emb = self.prompt_embeds.to(latents.dtype).expand(latents.shape[0], -1, -1)
        down, mid = self.controlnet(latents, t, encoder_hidden_states=emb, controlnet_cond=cond,
                                    conditioning_scale=self.conditioning_scale, guess_mode=False, return_dict=False)
        return self.denoiser(latents, t, encoder_hidden_states=emb, down_block_additional_residuals=down,
                             mid_block_additional_residual=mid, return_dict=False)[0]

    def decode(self, latents, size=None):
        img = self.vae.decode(latents.to(self.vae.dtype) / self.vae.config.scaling_factor, return_dict=False)[0]
        return (img.float() / 2 + 0.5).clamp(0, 1)

    @classmethod
    def load(cls, d, dtype: torch.dtype | None = None, cache_dir=None, device=None) -> "SDControlNetBackend":
        from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel

        d = Path(d)
        kw = load_kwargs(dtype, device)
        info = read_bridge_json(d)
        for sub in ("unet", "controlnet", "vae", "scheduler"):
            if not (d / sub).is_dir():
                raise InputError(f"{d}: sd-controlnet directory has no {sub}/ folder")

        def compute():
            from transformers import CLIPTextModel, CLIPTokenizer

            if not (d / "text_encoder").is_dir():
                raise InputError(f"{d}: no {EMPTY_EMBEDS} and no text_encoder/ to compute it")
            tok = CLIPTokenizer.from_pretrained(d / "tokenizer")
            te = CLIPTextModel.from_pretrained(d / "text_encoder")
            return {"prompt_embeds": encode_empty_prompt(tok, te)}

        emb = cached_empty_prompt(d, compute, cache_dir)["prompt_embeds"]
        sched = DDIMScheduler.from_pretrained(d / "scheduler")
        return cls(UNet2DConditionModel.from_pretrained(d / "unet", **kw),
                   ControlNetModel.from_pretrained(d / "controlnet", **kw),
                   AutoencoderKL.from_pretrained(d / "vae", **kw), sched, emb, int(info.get("num_steps", 20)),
                   int(info.get("resolution", 512)), float(info.get("conditioning_scale", 1.0)))


def write_bridge_json(d, resolution: int, num_steps: int = 20, backend: str = "sd-controlnet", **extra) -> None:
    write_json_atomic(Path(d) / BRIDGE_JSON, {"backend": backend, "resolution": resolution, "num_steps": num_steps,
                                              **extra})


# ---- tiny random components (tests): the diffusers test-suite pattern, our own configs ----

def tiny_clip_tokenizer(tmp_dir):
    """A CLIPTokenizer over a 40-token vocabulary written locally (no downloads)."""
    import json

    from transformers import CLIPTokenizer

    d = Path(tmp_dir)
    d.mkdir(parents=True, exist_ok=True)
    chars = "abcdefghijklmnopqrstuvwxyz"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=16,
                         pad_token="<|endoftext|>")


def tiny_clip_text_encoder(vocab_size: int = 54, hidden: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=37,
                                        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=16,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))


def tiny_sd_components(tmp_dir, seed: int = 0) -> dict:
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, UNet2DConditionModel

    torch.manual_seed(seed)
    blocks = dict(block_out_channels=(4, 8), layers_per_block=2, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                  cross_attention_dim=32, norm_num_groups=1, attention_head_dim=2)
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4,
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **blocks)
    torch.manual_seed(seed + 1)
    controlnet = ControlNetModel(in_channels=4, conditioning_embedding_out_channels=(16, 32), **blocks)
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(block_out_channels=[4, 8], in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, latent_channels=4, norm_num_groups=2)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    torch.manual_seed(seed + 3)
    return {"unet": unet.eval(), "controlnet": controlnet.eval(), "vae": vae.eval(), "scheduler": sched,
            "text_encoder": tiny_clip_text_encoder().eval(), "tokenizer": tiny_clip_tokenizer(Path(tmp_dir) / "tok"),
            "safety_checker": None, "feature_extractor": None}
