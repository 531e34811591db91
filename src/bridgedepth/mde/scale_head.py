"""The metric scale head: turns a frozen relative model's disparity into metric depth.

Design. The relative model predicts disparity up to an unknown per-image scale and shift. The head
reads the encoder's global token (CLS of the last layer, which carries scene-level cues such as
indoor vs street) and predicts two numbers per image, ``a`` and ``b``. With ``d`` the predicted
disparity normalised by its median over the image,

    metric_disparity = exp(a) * max(d + 0.5 * tanh(b), 1e-3)      (1/m)
    depth            = clamp(1 / metric_disparity, 1e-3, max_depth) (m)

so ``exp(a)`` is the metric disparity of the median pixel and ``b`` a bounded shift. It is trained
with SiLog against metric ground truth while the depth model stays frozen, and it is evaluated with
no alignment. Saved as ``scale_head.safetensors`` (+ ``scale_head.json``) next to the model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn


class ScaleHead(nn.Module):
    def __init__(self, in_dim: int, hidden: int = 128, max_depth: float = 80.0, init_log_scale: float = -1.0):
        super().__init__()
        self.in_dim, self.hidden, self.max_depth = in_dim, hidden, max_depth
        self.mlp = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, 2))
        nn.init.zeros_(self.mlp[-1].weight)
        with torch.no_grad():
            self.mlp[-1].bias.copy_(torch.tensor([init_log_scale, 0.0]))

    def params(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ab = self.mlp(feats.float())
        return ab[:, 0], ab[:, 1]

    def forward(self, feats: torch.Tensor, disparity: torch.Tensor) -> torch.Tensor:
        """(B, C) features and (B, H, W) relative disparity -> (B, H, W) metric depth."""
        a, b = self.params(feats)
        med = disparity.flatten(1).median(dim=1).values.clamp_min(1e-6)
        d = disparity / med[:, None, None]
        metric_disp = torch.exp(a)[:, None, None] * (d + 0.5 * torch.tanh(b)[:, None, None]).clamp_min(1e-3)
        return (1.0 / metric_disp).clamp(1e-3, self.max_depth)


def save_scale_head(head: ScaleHead, out_dir: str | os.PathLike) -> Path:
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, out / "scale_head.safetensors")
    (out / "scale_head.json").write_text(
        json.dumps({"in_dim": head.in_dim, "hidden": head.hidden, "max_depth": head.max_depth})
    )
    return out / "scale_head.safetensors"


def load_scale_head(ckpt_dir: str | os.PathLike) -> ScaleHead:
    from safetensors.torch import load_file

    d = Path(ckpt_dir)
    meta = json.loads((d / "scale_head.json").read_text())
    head = ScaleHead(meta["in_dim"], meta["hidden"], meta["max_depth"])
    head.load_state_dict(load_file(d / "scale_head.safetensors"))
    return head
