"""A toy aesthetic scorer: the stand-in for CLIP ViT-L/14 + the LAION aesthetic head.

The paper's aesthetic reward needs CLIP weights that cannot ship here. The toy world (docs/zoo.md)
replaces it with a small CNN trained by ``bridge zoo build`` to tell *photograph-like* images (the
real look of the procedural world) from what a D2I model should not produce: synthetic-look renders
(flat palette colours), degraded photographs (heavy blur, noise, posterisation, strong colour
casts, over-saturation, washed-out contrast, blotchy multi-scale colour speckle) and samples of the
untuned D2I foundation itself (``bridge zoo build`` passes them: without them the CNN, which never
saw one, rated the D2I's noise-like samples *above* photographs, logit 4.96 vs 3.47).

Its classifier output is a logit (higher = more photograph-like); ``forward`` returns the
*calibrated score* ``offset + scale * logit``, an affine map fitted when the scorer is trained so that
held-out photographs average 6.0 and synthetic renders 5.0 (``SCORE_PHOTO``, ``SCORE_SYNTHETIC``): a
LAION-like scale, on which a flat render scores about a point below a photograph. The paper's reward
weights (depth 0.9, aesthetic 0.1) were set for the LAION head's scale; on the raw logit (about 9
between photographs and renders) the first toy scorer's term took over the fine-tune. The spread of
1.0 was chosen on tuning scenes (seeds 101/102, neither the demo's validation nor its test scenes):
of the two spreads tried with this scorer, 2 and 1, only 1 let 40 fine-tuning steps still raise
the depth reward (docs/results.md). It is differentiable w.r.t. the input image and is called through the same
reward registry as the LAION scorer (``finetune.reward.aesthetic_model``).

``train_scorer(..., target="quality")`` (``zoo.scorer_target``) trains the alternative stand-in that
rates image quality and not the look (clean renders count as positives). Measured on the demo, it does
not keep the similarity masks open: it rewards added texture (docs/results.md), so the shipped scorer
stays the photograph-likeness one.

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

    def __init__(self, size: int = 64, widths: tuple[int, ...] = (16, 32, 64, 96), *, scale: float = 1.0,
                 offset: float = 0.0):
        super().__init__()
        self.size, self.widths = int(size), tuple(int(w) for w in widths)
        self.scale, self.offset = float(scale), float(offset)  # score = offset + scale * logit
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
        """The calibrated score (B,): ``offset + scale * logit``."""
        return self.offset + self.scale * self.logits(images01)

    def logits(self, images01: torch.Tensor) -> torch.Tensor:
        """The classifier's logit (B,): > 0 means photograph-like."""
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
        from ..io import usual_permissions

        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(out / WEIGHTS))
        usual_permissions(out / WEIGHTS)  # safetensors writes 0600
        info = {"kind": "toy-aesthetic", "size": self.size, "widths": list(self.widths),
                "calibration": {"scale": self.scale, "offset": self.offset}}
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
    cal = info.get("calibration") or {}  # scorers saved before calibration existed: the raw logit
    try:
        m = ToyAestheticScorer(int(info.get("size", 64)), tuple(info.get("widths", (16, 32, 64, 96))),
                               scale=float(cal.get("scale", 1.0)), offset=float(cal.get("offset", 0.0)))
    except (TypeError, ValueError) as e:
        raise InputError(f"{d / SCORER_JSON}: malformed scorer description ({e})") from e
    sd = {k: v.float() for k, v in load_file(str(d / WEIGHTS)).items()}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise InputError(f"{d / WEIGHTS}: tensors do not match the scorer (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return m.eval().requires_grad_(False)


# ------------------------------------------------------------------------------------------------
# Negatives: what a D2I model should not make
# ------------------------------------------------------------------------------------------------

DEGRADATIONS = ("blur", "noise", "posterize", "cast", "saturate", "washout", "blocky", "speckle")

# what the scorer rates high: "photo" (the real look; synthetic renders are negatives) or "quality"
# (clean images of either look; only degraded images and D2I samples are negatives)
TARGETS = ("photo", "quality")

# the calibrated score's anchors (see the module docstring)
SCORE_PHOTO, SCORE_SYNTHETIC = 6.0, 5.0


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
    elif kind == "speckle":
        # what an under-trained D2I sampler makes (docs/zoo.md): only the scene's low-frequency layout
        # survives, under colour noise at several scales (blobs, mid-size mottling, per-pixel speckle)
        _, _, h, w = x.shape
        k = max(3, (w // 8) | 1)
        low = F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)
        noise = torch.zeros_like(x)
        for div, lo, hi in ((12, 0.05, 0.2), (4, 0.03, 0.12), (1, 0.05, 0.2)):
            n = torch.randn((b, 3, max(2, h // div), max(2, w // div)), generator=gen)
            if div > 1:
                n = F.interpolate(n, size=(h, w), mode="bilinear", align_corners=False)
            noise = noise + u(lo, hi) * n
        grey = u(0.0, 0.6)  # partly desaturated noise, like the samples' pastel colours
        noise = noise * (1 - grey) + noise.mean(1, keepdim=True) * grey
        x = low * u(0.7, 1.0) + u(0.0, 0.3) + noise
    elif kind == "blocky":
        s = x.shape[-1]
        x = F.interpolate(F.avg_pool2d(x, 8), size=(s, s), mode="nearest")
    else:
        raise ValueError(f"unknown degradation {kind!r}")
    return x.clamp(0, 1)


def train_scorer(real: torch.Tensor, synthetic: torch.Tensor, out_dir: str | os.PathLike, *, steps: int = 1500,
                 batch_size: int = 32, lr: float = 2e-3, seed: int = 0, size: int = 64,
                 progress: bool = True, heldout_fraction: float = 0.1,
                 generated: torch.Tensor | None = None, target: str = "photo") -> dict:
    """Train a scorer: ``real`` (N, 3, S, S) photograph-like images -> 1; ``synthetic`` renders,
    degraded ``real`` images and (optional) ``generated`` images of an untuned D2I model -> 0 (binary
    cross-entropy). Returns (and stores in scorer.json) the held-out accuracy per negative kind, the
    mean logit of each kind and the calibration (module docstring).

    ``target="quality"`` rates image quality without penalising the synthetic look: clean ``real``
    *and* ``synthetic`` images -> 1; degraded copies of either and ``generated`` images -> 0. Its
    calibration maps held-out photographs to 6.0 and the mean of the held-out negatives (every
    degradation of the photographs, and the D2I samples) to 5.0."""
    from tqdm.auto import tqdm

    if target not in TARGETS:
        raise ValueError(f"scorer target {target!r}: expected one of {TARGETS}")

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    nr, ns = int(real.shape[0]), int(synthetic.shape[0])
    hr, hs = max(1, int(nr * heldout_fraction)), max(1, int(ns * heldout_fraction))
    real_tr, real_te = real[hr:], real[:hr]
    syn_tr, syn_te = synthetic[hs:], synthetic[:hs]
    gen_tr = gen_te = None
    if generated is not None and len(generated):
        hg = max(1, int(generated.shape[0] * heldout_fraction))
        gen_tr, gen_te = generated[hg:], generated[:hg]
    model = ToyAestheticScorer(size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    half = batch_size // 2
    quality = target == "quality"
    clean_tr = torch.cat([real_tr, syn_tr]) if quality else real_tr  # what scores high; degraded as negatives
    bar = tqdm(range(steps), desc="aesthetic scorer", disable=not progress)
    for _ in bar:
        pos = clean_tr[torch.randint(0, clean_tr.shape[0], (half,), generator=gen)]
        flip = torch.rand(half, generator=gen) < 0.5
        pos = torch.where(flip[:, None, None, None], pos.flip(-1), pos)
        # negatives: half synthetic renders and half degraded photographs, or thirds with D2I samples;
        # "quality": degraded clean images, and a third D2I samples
        n_gen = half // 3 if gen_tr is not None else 0
        n_syn = 0 if quality else (half - n_gen) // 2
        neg_syn = syn_tr[torch.randint(0, syn_tr.shape[0], (n_syn,), generator=gen)]
        base = clean_tr[torch.randint(0, clean_tr.shape[0], (half - n_syn - n_gen,), generator=gen)]
        kinds = torch.randint(0, len(DEGRADATIONS), (len(base),), generator=gen)
        neg_deg = torch.cat([degrade(base[i:i + 1], DEGRADATIONS[int(k)], gen) for i, k in enumerate(kinds)])
        parts = [pos, neg_syn, neg_deg]
        if n_gen:
            parts.append(gen_tr[torch.randint(0, gen_tr.shape[0], (n_gen,), generator=gen)])
        x = torch.cat(parts)
        y = torch.cat([torch.ones(half), torch.zeros(half)])
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    report = evaluate_scorer(model, real_te, syn_te, seed=seed + 1, generated=gen_te, target=target)
    lr_ = report["real"]["mean_logit"]
    if quality:
        low_name = "negatives"
        ls_ = float(np.mean([v["mean_logit"] for k, v in report.items()
                             if isinstance(v, dict) and k not in ("real", "synthetic")]))
    else:
        low_name, ls_ = "synthetic", report["synthetic"]["mean_logit"]
    calibrated = lr_ - ls_ > 1e-3
    if calibrated:  # map the held-out means onto the anchors
        model.scale = (SCORE_PHOTO - SCORE_SYNTHETIC) / (lr_ - ls_)
        model.offset = SCORE_PHOTO - model.scale * lr_
    else:
        import warnings

        warnings.warn(f"{out_dir}: the scorer does not rate held-out photographs above the {low_name} "
                      f"(mean logits {lr_:.4f} vs {ls_:.4f}); it is saved uncalibrated (score = logit), so its "
                      "scale does not match the 0.9 / 0.1 reward weights: train longer or on more images",
                      RuntimeWarning, stacklevel=2)
    report["calibration"] = {"scale": model.scale, "offset": model.offset, "calibrated": calibrated,
                             "anchors": {"photos": SCORE_PHOTO, low_name: SCORE_SYNTHETIC}}
    model.save(out_dir, extra={"target": target,
                               "training": {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed,
                                            "real": nr, "synthetic": ns,
                                            "generated": 0 if generated is None else int(generated.shape[0])},
                                "heldout": {k: v for k, v in report.items() if k != "calibration"}})
    return report


@torch.no_grad()
def evaluate_scorer(model: ToyAestheticScorer, real: torch.Tensor, synthetic: torch.Tensor, seed: int = 1,
                    generated: torch.Tensor | None = None, target: str = "photo") -> dict:
    """Held-out accuracy (logit > 0 for real, < 0 for every negative kind; for the ``quality``
    target synthetic renders count as positives, > 0) and mean logits."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    sr = model.logits(real)
    out["real"] = {"accuracy": float((sr > 0).float().mean()), "mean_logit": float(sr.mean())}
    ss = model.logits(synthetic)
    syn_ok = (ss > 0) if target == "quality" else (ss < 0)
    out["synthetic"] = {"accuracy": float(syn_ok.float().mean()), "mean_logit": float(ss.mean())}
    for k in DEGRADATIONS:
        s = model.logits(degrade(real, k, gen))
        out[k] = {"accuracy": float((s < 0).float().mean()), "mean_logit": float(s.mean())}
    if generated is not None and len(generated):
        s = model.logits(generated)
        out["d2i_samples"] = {"accuracy": float((s < 0).float().mean()), "mean_logit": float(s.mean())}
    out["balanced_accuracy"] = float(np.mean([out["real"]["accuracy"],
                                              np.mean([v["accuracy"] for k, v in out.items() if k != "real"])]))
    return out
