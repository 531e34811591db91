"""A toy aesthetic scorer: the stand-in for CLIP ViT-L/14 + the LAION aesthetic head.

The paper's aesthetic reward needs CLIP weights that cannot ship here. The toy world (docs/zoo.md)
replaces it with a small CNN trained by ``bridge zoo build`` to tell *photograph-like* images (the
real look of the procedural world) from what a D2I model should not produce: synthetic-look renders
(flat palette colours), and degraded photographs (heavy blur, noise, posterisation, strong colour
casts, over-saturation, washed-out contrast). Its output is a logit: higher = more photograph-like.
It is differentiable w.r.t. the input image and is called through the same reward registry as the
LAION scorer (``finetune.reward.aesthetic_model``).

Files: ``scorer.json`` (architecture) + ``model.safetensors``; loaded without unpickling.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError

SCORER_JSON = "scorer.json"
WEIGHTS = "model.safetensors"


class ToyAestheticScorer(nn.Module):
    """images01 (B, 3, H, W) in [0, 1] -> (B,) logit. Resizes to ``size`` (antialiased) first."""

    def __init__(self, size: int = 64, widths: tuple[int, ...] = (16, 32, 64, 96)):
        super().__init__()
        self.size, self.widths = int(size), tuple(int(w) for w in widths)
        layers: list[nn.Module] = []
        c = 3
        for w in self.widths:
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.GroupNorm(4, w), nn.SiLU(),
                       nn.Conv2d(w, w, 3, stride=2, padding=1), nn.SiLU()]
            c = w
        self.features = nn.Sequential(*layers)
        # mean and standard deviation of the last features: texture statistics, not only colour
        self.head = nn.Linear(2 * c, 1)

    def forward(self, images01: torch.Tensor) -> torch.Tensor:
        x = images01.float()
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > self.size)
        f = self.features(x * 2 - 1)
        stats = torch.cat([f.mean((2, 3)), f.flatten(2).std(2)], 1)
        return self.head(stats)[:, 0]

    def save(self, out_dir: str | os.PathLike, extra: dict | None = None) -> Path:
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(out / WEIGHTS))
        info = {"kind": "toy-aesthetic", "size": self.size, "widths": list(self.widths)}
        info.update(extra or {})
        tmp = out / (SCORER_JSON + ".tmp")
        tmp.write_text(json.dumps(info, indent=1))
        os.replace(tmp, out / SCORER_JSON)
        return out


def load_scorer(path: str | os.PathLike) -> ToyAestheticScorer:
    """Load a toy aesthetic scorer folder (``scorer.json`` + ``model.safetensors``); eval mode, frozen."""
    from safetensors.torch import load_file

    d = Path(path)
    if not (d / SCORER_JSON).is_file() or not (d / WEIGHTS).is_file():
        raise InputError(f"{d}: not a toy aesthetic scorer folder (needs {SCORER_JSON} and {WEIGHTS})")
    try:
        info = json.loads((d / SCORER_JSON).read_text())
    except json.JSONDecodeError as e:
        raise InputError(f"{d / SCORER_JSON}: not valid JSON ({e})") from e
    m = ToyAestheticScorer(int(info.get("size", 64)), tuple(info.get("widths", (16, 32, 64, 96))))
    sd = {k: v.float() for k, v in load_file(str(d / WEIGHTS)).items()}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise InputError(f"{d / WEIGHTS}: tensors do not match the scorer (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return m.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------
# Negatives: what a D2I model should not make
# ------------------------------------------------------------------------------------------------

DEGRADATIONS = ("blur", "noise", "posterize", "cast", "saturate", "washout", "blocky")


def degrade(rgb01: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    """One strong degradation of a batch of images in [0, 1] (B, 3, H, W)."""
    b = rgb01.shape[0]

    def u(lo, hi):
        return lo + (hi - lo) * torch.rand((b, 1, 1, 1), generator=gen)

    x = rgb01
    if kind == "blur":
        k = max(3, (x.shape[-1] // 16) | 1)
        x = F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)
    elif kind == "noise":
        x = x + u(0.12, 0.35) * torch.randn(x.shape, generator=gen)
    elif kind == "posterize":
        levels = 3
        x = torch.round(x * levels) / levels
    elif kind == "cast":
        tint = torch.rand((b, 3, 1, 1), generator=gen)
        x = x * (1 - u(0.5, 0.85)) + tint * u(0.5, 0.85)
    elif kind == "saturate":
        g = x.mean(1, keepdim=True)
        x = g + (x - g) * u(2.5, 4.0)
    elif kind == "washout":
        m = x.mean((1, 2, 3), keepdim=True)
        x = m + (x - m) * u(0.1, 0.35)
    elif kind == "blocky":
        s = x.shape[-1]
        x = F.interpolate(F.avg_pool2d(x, 8), size=(s, s), mode="nearest")
    else:
        raise ValueError(f"unknown degradation {kind!r}")
    return x.clamp(0, 1)


def train_scorer(real: torch.Tensor, synthetic: torch.Tensor, out_dir: str | os.PathLike, *, steps: int = 1500,
                 batch_size: int = 32, lr: float = 2e-3, seed: int = 0, size: int = 64,
                 progress: bool = True, heldout_fraction: float = 0.1) -> dict:
    """Train a scorer: ``real`` (N, 3, S, S) photograph-like images -> 1; ``synthetic`` renders and
    degraded ``real`` images -> 0 (binary cross-entropy). Returns (and stores in scorer.json) the held-out
    accuracy per negative kind and the mean logit of each kind."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    nr, ns = int(real.shape[0]), int(synthetic.shape[0])
    hr, hs = max(1, int(nr * heldout_fraction)), max(1, int(ns * heldout_fraction))
    real_tr, real_te = real[hr:], real[:hr]
    syn_tr, syn_te = synthetic[hs:], synthetic[:hs]
    model = ToyAestheticScorer(size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    half = batch_size // 2
    bar = tqdm(range(steps), desc="aesthetic scorer", disable=not progress)
    for _ in bar:
        pos = real_tr[torch.randint(0, real_tr.shape[0], (half,), generator=gen)]
        flip = torch.rand(half, generator=gen) < 0.5
        pos = torch.where(flip[:, None, None, None], pos.flip(-1), pos)
        n_syn = half // 2
        neg_syn = syn_tr[torch.randint(0, syn_tr.shape[0], (n_syn,), generator=gen)]
        base = real_tr[torch.randint(0, real_tr.shape[0], (half - n_syn,), generator=gen)]
        kinds = torch.randint(0, len(DEGRADATIONS), (len(base),), generator=gen)
        neg_deg = torch.cat([degrade(base[i:i + 1], DEGRADATIONS[int(k)], gen) for i, k in enumerate(kinds)])
        x = torch.cat([pos, neg_syn, neg_deg])
        y = torch.cat([torch.ones(half), torch.zeros(half)])
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    report = evaluate_scorer(model, real_te, syn_te, seed=seed + 1)
    model.save(out_dir, extra={"training": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                                            "real": nr, "synthetic": ns}, "heldout": report})
    return report


@torch.no_grad()
def evaluate_scorer(model: ToyAestheticScorer, real: torch.Tensor, synthetic: torch.Tensor, seed: int = 1) -> dict:
    """Held-out accuracy (logit > 0 for real, < 0 for every negative kind) and mean logits."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    sr = model(real)
    out["real"] = {"accuracy": float((sr > 0).float().mean()), "mean_logit": float(sr.mean())}
    ss = model(synthetic)
    out["synthetic"] = {"accuracy": float((ss < 0).float().mean()), "mean_logit": float(ss.mean())}
    for k in DEGRADATIONS:
        s = model(degrade(real, k, gen))
        out[k] = {"accuracy": float((s < 0).float().mean()), "mean_logit": float(s.mean())}
    out["balanced_accuracy"] = float(np.mean([out["real"]["accuracy"],
                                              np.mean([v["accuracy"] for k, v in out.items() if k != "real"])]))
    return out
