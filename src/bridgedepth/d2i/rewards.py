"""Rewards for reward-gradient fine-tuning, and a registry to add your own.

A reward term is ``(name, fn, weight, loss)``: ``fn(images01, batch) -> (B,)`` reward values (higher is
better, differentiable w.r.t. the images); ``loss(r) -> (B,)`` turns it into the term minimised with
``weight``. Built-ins:

* ``depth``: cosine similarity between the teacher's disparity of the generated image and the source
  disparity over the source's valid pixels at the generation size; loss ``1 - cos``. The target is the
  condition itself (the 2-98 % clipped, min-max normalised disparity ``disp01``), so that an image whose
  depth is exactly the condition scores 1 (the raw disparity would let a few very near pixels dominate). With
  ``mean_centre`` both maps are centred over the valid pixels first (cosine = Pearson correlation,
  invariant to the teacher's unknown disparity shift and scale).
* ``aesthetic``: the LAION improved-aesthetic MLP on the unit-normalised CLIP image embedding; loss
  ``-score``. Or, with ``aesthetic_model`` set, the toy scorer that ``bridge zoo build`` trains
  (:mod:`bridgedepth.d2i.scorer`: photograph-like vs synthetic or degraded images; its logit is the
  score). Off (and reported as off) when neither is configured.
* ``anchor`` (off unless ``anchor_weight`` > 0): minus the mean squared difference between the image
  and ``batch['reference_images']``, the base model's image for the same noise and condition, which
  the fine-tuning loop adds; a proximal term that keeps the LoRA from trading the look of the images
  for reward (reward hacking). Not in the paper, whose objective is the line below.

Paper objective: ``0.9 * (1 - cos) - 0.1 * aesthetic``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError
from .teacher import teacher_disparity

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def masked_cosine(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, mean_centre: bool = True,
                  eps: float = 1e-8) -> torch.Tensor:
    """Per-image cosine similarity of two maps over ``valid`` (all (B,H,W) or (B,1,H,W)) -> (B,)."""
    b = pred.shape[0]
    p = pred.reshape(b, -1).float()
    t = target.reshape(b, -1).float().to(p.device)
    m = valid.reshape(b, -1).to(p.device).float()
    n = m.sum(1).clamp_min(1)
    if mean_centre:
        p = p - (p * m).sum(1, keepdim=True) / n[:, None]
        t = t - (t * m).sum(1, keepdim=True) / n[:, None]
    p, t = p * m, t * m
    return (p * t).sum(1) / (p.norm(dim=1) * t.norm(dim=1)).clamp_min(eps)


def aligned_absrel(pred_disp: torch.Tensor, gt_disp: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """AbsRel of the teacher on the source depth: disparity aligned by least-squares scale and shift
    over valid pixels, converted to depth, compared with 1/gt_disp. (B,)."""
    b = pred_disp.shape[0]
    out = []
    for i in range(b):
        m = valid[i].reshape(-1).bool().to(pred_disp.device)
        p = pred_disp[i].reshape(-1)[m].double()
        g = gt_disp[i].reshape(-1).to(pred_disp.device)[m].double()
        if m.sum() < 10:
            out.append(torch.tensor(float("nan")))
            continue
        a = torch.stack([p, torch.ones_like(p)], 1)
        sol = torch.linalg.lstsq(a, g[:, None]).solution[:, 0]
        al = (a @ sol).clamp_min(float(g.min()) * 0.5)
        out.append(((1 / al - 1 / g).abs() * g).mean().float())
    return torch.stack(out)


class AestheticHead(nn.Module):
    """The LAION improved-aesthetic MLP: 768-1024-128-64-16-1 with dropout, keys layers.{0,2,4,6,7}."""

    def __init__(self, dim: int = 768):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, 1024), nn.Dropout(0.2), nn.Linear(1024, 128), nn.Dropout(0.2),
                                    nn.Linear(128, 64), nn.Dropout(0.1), nn.Linear(64, 16), nn.Linear(16, 1))

    def forward(self, x):
        return self.layers(x)


def load_aesthetic_head(path: str | os.PathLike) -> AestheticHead:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: aesthetic head file does not exist")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(p))
    else:
        try:
            sd = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:
            raise InputError(f"{p}: cannot read the aesthetic head ({e})") from e
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if "layers.0.weight" not in sd:
        raise InputError(f"{p}: not a LAION aesthetic head (keys layers.{{0,2,4,6,7}}.weight/bias expected)")
    head = AestheticHead(int(sd["layers.0.weight"].shape[1]))
    head.load_state_dict({k: v.float() for k, v in sd.items()})
    return head.eval().requires_grad_(False)


class AestheticScorer(nn.Module):
    """CLIP vision tower with projection + LAION head; differentiable w.r.t. the input images."""

    def __init__(self, clip, head: AestheticHead):
        super().__init__()
        self.clip, self.head = clip.eval().requires_grad_(False), head.eval().requires_grad_(False)
        self.size = int(clip.config.image_size)
        self.register_buffer("mean", torch.tensor(CLIP_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(CLIP_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images01.float(), size=(self.size, self.size), mode="bicubic", align_corners=False,
                          antialias=images01.shape[-1] > self.size)
        x = (x - self.mean) / self.std
        emb = self.clip(pixel_values=x.to(next(self.clip.parameters()).dtype)).image_embeds.float()
        emb = emb / emb.norm(dim=-1, keepdim=True).clamp_min(1e-8)
        return self.head(emb)[:, 0]


def load_aesthetic(clip_path: str | os.PathLike, head_path: str | os.PathLike, dtype=None) -> AestheticScorer:
    """CLIP ViT-L/14 vision tower (in ``dtype``, e.g. bf16 on GPU) + the LAION head (fp32, tiny)."""
    from transformers import CLIPVisionModelWithProjection

    cp = Path(clip_path)
    if not cp.is_dir():
        raise InputError(f"{cp}: CLIP model directory does not exist")
    clip = CLIPVisionModelWithProjection.from_pretrained(cp, dtype=dtype or torch.float32)
    return AestheticScorer(clip, load_aesthetic_head(head_path))


@dataclass
class RewardTerm:
    name: str
    fn: Callable[[torch.Tensor, dict], torch.Tensor]
    weight: float
    loss: Callable[[torch.Tensor], torch.Tensor] = field(default=lambda r: -r)


class RewardRegistry:
    """Ordered set of reward terms; ``evaluate`` returns the total loss and per-reward means."""

    def __init__(self):
        self.terms: dict[str, RewardTerm] = {}
        self.off: dict[str, str] = {}  # name -> why it is off

    def register(self, name: str, fn, weight: float, loss=None) -> None:
        self.terms[name] = RewardTerm(name, fn, float(weight), loss or (lambda r: -r))

    def disable(self, name: str, reason: str) -> None:
        self.terms.pop(name, None)
        self.off[name] = reason

    def evaluate(self, images01: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict[str, float], dict]:
        total = images01.new_zeros(())
        logs: dict[str, float] = {}
        values = {}
        for t in self.terms.values():
            r = t.fn(images01, batch)
            values[t.name] = r
            logs[f"reward/{t.name}"] = float(r.detach().mean())
            if t.weight:
                total = total + t.weight * t.loss(r).mean()
        for name in self.off:
            logs[f"reward/{name}"] = None
        return total, logs, values

    def describe(self) -> dict:
        d = {n: {"weight": t.weight, "on": True} for n, t in self.terms.items()}
        d.update({n: {"on": False, "why": why} for n, why in self.off.items()})
        return d


def depth_target(batch: dict) -> torch.Tensor:
    """The depth reward's target: the condition's normalised disparity (falls back to the raw one)."""
    return (batch["disp01"] if "disp01" in batch else batch["disp"])[:, 0]


def depth_reward(teacher, mean_centre: bool = True):
    """Reward fn: cosine between the teacher disparity of the images and the condition
    (:func:`depth_target`) over ``batch['valid']``."""

    def fn(images01: torch.Tensor, batch: dict) -> torch.Tensor:
        pred = teacher_disparity(teacher, images01)
        return masked_cosine(pred, depth_target(batch), batch["valid"][:, 0], mean_centre)

    return fn


def aesthetic_model(rc, device=None, dtype=None) -> tuple[Callable | None, str]:
    """The configured aesthetic model as ``fn(images01) -> (B,)`` (the toy scorer of
    ``aesthetic_model``, or CLIP + ``aesthetic_head``), or (None, why there is none)."""
    if rc.aesthetic_model:
        from .scorer import load_scorer

        toy = load_scorer(rc.aesthetic_model)
        if device is not None:
            toy.to(device)
        return toy, ""
    if not rc.clip_path:
        return None, "no CLIP model configured (finetune.reward.clip_path)"
    if not rc.aesthetic_head:
        return None, "no aesthetic head configured (finetune.reward.aesthetic_head)"
    scorer = load_aesthetic(rc.clip_path, rc.aesthetic_head, dtype)
    if device is not None:
        scorer.to(device)
    return scorer, ""


def build_rewards(rc, teacher, device=None, dtype=None) -> RewardRegistry:
    """Registry from a RewardConfig: depth (needs a teacher) and aesthetic (needs clip_path + head).
    ``dtype``: the frozen aesthetic model's dtype (the CLIP tower; the toy scorer stays fp32)."""
    reg = RewardRegistry()
    reg.register("depth", depth_reward(teacher, rc.depth_mean_centre), rc.depth_weight, loss=lambda r: 1 - r)
    if rc.aesthetic_weight == 0:
        reg.disable("aesthetic", "weight is 0")
    else:
        scorer, why = aesthetic_model(rc, device, dtype)
        if scorer is None:
            reg.disable("aesthetic", why)
        else:
            reg.register("aesthetic", lambda img, batch: scorer(img), rc.aesthetic_weight)
    if rc.anchor_weight:
        reg.register("anchor", anchor_reward, rc.anchor_weight)
    return reg


def anchor_reward(images01: torch.Tensor, batch: dict) -> torch.Tensor:
    """Minus the per-image mean squared difference to ``batch['reference_images']`` (B,)."""
    ref = batch.get("reference_images")
    if ref is None:
        raise KeyError("the anchor reward needs batch['reference_images'] (the base model's images)")
    return -(images01.float() - ref.float()).pow(2).flatten(1).mean(1)
