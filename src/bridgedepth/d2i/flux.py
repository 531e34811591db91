"""``flux-depth`` backend: FLUX.1-Depth-dev style control (diffusers FluxControlPipeline components).

The control image (normalised disparity, near = 1, repeated to 3 channels) is VAE-encoded, shifted and
scaled, packed into 2x2 tokens and concatenated to the packed noisy latents along the channel axis (the
transformer's ``in_channels`` is twice the packed latent channels). Flow matching with the
FlowMatchEulerDiscreteScheduler (dynamic shift ``mu`` from the image sequence length), embedded
guidance. The empty-prompt T5 / CLIP embeddings are computed once (with the pipeline's own
``encode_prompt``) and cached in ``empty_prompt_embeds.safetensors``; after that neither text encoder is
loaded. Difference from the pipeline: the control latent is the VAE posterior mean (the pipeline draws a
sample from the posterior with the user's generator); a condition should not be noisy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .backend import Backend, Schedule, flow_schedule, load_kwargs, read_bridge_json
from .sd import EMPTY_EMBEDS, cached_empty_prompt

LORA_PREFIX = "transformer."


def pack(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    b, n, d = x.shape
    c = d // 4
    x = x.view(b, h // 2, w // 2, c, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c, h, w)


def image_ids(h2: int, w2: int, device, dtype) -> torch.Tensor:
    ids = torch.zeros(h2, w2, 3)
    ids[..., 1] = torch.arange(h2)[:, None]
    ids[..., 2] = torch.arange(w2)[None, :]
    return ids.reshape(h2 * w2, 3).to(device=device, dtype=dtype)


def compute_shift(seq_len: int, cfg) -> float:
    base_len, max_len = cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096)
    base_shift, max_shift = cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15)
    m = (max_shift - base_shift) / (max_len - base_len)
    return seq_len * m + (base_shift - m * base_len)


class FluxDepthBackend(Backend):
    name = "flux-depth"
    lora_prefix = LORA_PREFIX

    def __init__(self, transformer, vae, scheduler, embeds: dict, default_steps: int = 28, resolution: int = 1024,
                 guidance_scale: float = 10.0):
        self.denoiser, self.vae, self.scheduler = transformer, vae, scheduler
        self.embeds = embeds
        self.default_steps, self.resolution, self.guidance_scale = default_steps, resolution, guidance_scale
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.info = {}
        vae.requires_grad_(False).eval()

    @property
    def factor(self) -> int:
        return self.vae_scale * 2  # VAE downsampling, then 2x2 packing of the latent

    def _latent_size(self, size) -> tuple[int, int]:
        h, w = self.check_size(size or (self.resolution, self.resolution))
        return h // self.vae_scale, w // self.vae_scale

    def to(self, device, dtype=None):
        super().to(device, dtype)
        self.embeds = {k: v.to(device) for k, v in self.embeds.items()}
        return self

    def _vae_shift(self):
        return self.vae.config.shift_factor or 0.0

    def encode_condition(self, disp01):
        # the condition arrives at the image size (the sampler checks it against the latents)
        x = disp01.expand(-1, 3, -1, -1) * 2 - 1
        z = self.vae.encode(x.to(self.vae.dtype)).latent_dist.mode()
        z = (z - self._vae_shift()) * self.vae.config.scaling_factor
        return pack(z).to(self.dtype)

    def initial_latents(self, generators, device, size=None):
        lh, lw = self._latent_size(size)
        c = self.denoiser.config.in_channels // 8
        x = torch.cat([torch.randn((1, c, lh, lw), generator=g, dtype=torch.float32) for g in generators])
        return pack(x).to(device=device, dtype=self.dtype)

    def schedule(self, num_steps, device, size=None) -> Schedule:
        lh, lw = self._latent_size(size)
        sigmas = np.linspace(1.0, 1 / num_steps, num_steps)
        mu = compute_shift((lh // 2) * (lw // 2), self.scheduler.config)  # packed sequence length
        return flow_schedule(self.scheduler, num_steps, device, sigmas=sigmas, mu=mu)

    def predict(self, latents, t, cond, size=None):
        lh, lw = self._latent_size(size)
        b = latents.shape[0]
        dev, dt = latents.device, latents.dtype
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full([b], self.guidance_scale, device=dev, dtype=torch.float32)
        return self.denoiser(hidden_states=torch.cat([latents, cond.to(dt)], dim=2),
                             timestep=t.expand(b).to(dt) / 1000, guidance=guidance,
                             pooled_projections=self.embeds["pooled_prompt_embeds"].to(dt).expand(b, -1),
                             encoder_hidden_states=self.embeds["prompt_embeds"].to(dt).expand(b, -1, -1),
                             txt_ids=self.embeds["text_ids"].to(dt), img_ids=image_ids(lh // 2, lw // 2, dev, dt),
                             return_dict=False)[0]

    def decode(self, latents, size=None):
        lh, lw = self._latent_size(size)
        z = unpack(latents, lh, lw)
        z = z / self.vae.config.scaling_factor + self._vae_shift()
        img = self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0]
        return (img.float() / 2 + 0.5).clamp(0, 1)

    @classmethod
    def load(cls, d, dtype: torch.dtype | None = None, cache_dir=None, device=None) -> "FluxDepthBackend":
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel

        d = Path(d)
        kw = load_kwargs(dtype, device)
        info = read_bridge_json(d)
        for sub in ("transformer", "vae", "scheduler"):
            if not (d / sub).is_dir():
                raise InputError(f"{d}: flux-depth directory has no {sub}/ folder")
        max_seq = int(info.get("max_sequence_length", 512))

        def compute():
            from diffusers import FluxControlPipeline
            from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

            for sub in ("text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"):
                if not (d / sub).is_dir():
                    raise InputError(f"{d}: no {EMPTY_EMBEDS} and no {sub}/ to compute it")
            pipe = FluxControlPipeline(scheduler=None, vae=None, transformer=None,
                                       text_encoder=CLIPTextModel.from_pretrained(d / "text_encoder"),
                                       tokenizer=AutoTokenizer.from_pretrained(d / "tokenizer"),
                                       text_encoder_2=T5EncoderModel.from_pretrained(d / "text_encoder_2"),
                                       tokenizer_2=AutoTokenizer.from_pretrained(d / "tokenizer_2"))
            with torch.no_grad():
                pe, pooled, ids = pipe.encode_prompt(prompt="", prompt_2=None, device=torch.device("cpu"),
                                                     max_sequence_length=max_seq)
            return {"prompt_embeds": pe.float(), "pooled_prompt_embeds": pooled.float(), "text_ids": ids.float()}

        embeds = cached_empty_prompt(d, compute, cache_dir)
        return cls(FluxTransformer2DModel.from_pretrained(d / "transformer", **kw),
                   AutoencoderKL.from_pretrained(d / "vae", **kw),
                   FlowMatchEulerDiscreteScheduler.from_pretrained(d / "scheduler"), embeds,
                   int(info.get("num_steps", 28)), int(info.get("resolution", 1024)),
                   float(info.get("guidance_scale", 10.0)))


# ---- tiny random components (tests) ----

def tiny_t5_tokenizer(tmp_dir):
    """A word-level fast tokenizer with T5's special tokens, written locally (no sentencepiece download)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{c: 3 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=512)


def tiny_flux_components(tmp_dir, seed: int = 0) -> dict:
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    from .sd import tiny_clip_text_encoder, tiny_clip_tokenizer

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=8, out_channels=4, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=True)
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                        latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False,
                        shift_factor=0.0609, scaling_factor=1.5035)
    torch.manual_seed(seed + 2)
    t5 = T5EncoderModel(T5Config(vocab_size=32, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                 decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    return {"transformer": transformer.eval(), "vae": vae.eval(), "scheduler": FlowMatchEulerDiscreteScheduler(),
            "text_encoder": tiny_clip_text_encoder().eval(), "tokenizer": tiny_clip_tokenizer(Path(tmp_dir) / "tok"),
            "text_encoder_2": t5.eval(), "tokenizer_2": tiny_t5_tokenizer(tmp_dir)}
