"""Small helpers shared by the d2i modules: source samples -> tensors, disparity normalisation, seeds."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError


def disparity_from_depth(depth: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inverse depth (1/m) with 0 where invalid; returns (disparity, valid)."""
    depth = np.asarray(depth, dtype=np.float32)
    ok = np.isfinite(depth) & (depth > 0)
    if valid is not None:
        ok &= np.asarray(valid, dtype=bool)
    disp = np.zeros_like(depth)
    disp[ok] = 1.0 / depth[ok]
    return disp, ok


def normalise_disparity(disp: torch.Tensor, valid: torch.Tensor, lo_q: float = 0.02, hi_q: float = 0.98) -> torch.Tensor:
    """Per-image robust min-max normalisation of disparity over valid pixels to [0, 1]; invalid -> 0.

    ``disp``/``valid``: (B, 1, H, W). Near = 1, far = 0. Robust quantiles keep a few outliers from
    flattening the map."""
    out = torch.zeros_like(disp)
    for b in range(disp.shape[0]):
        v = valid[b].bool()
        if v.sum() < 2:
            continue
        vals = disp[b][v]
        lo = torch.quantile(vals, lo_q)
        hi = torch.quantile(vals, hi_q)
        scale = (hi - lo).clamp_min(1e-8)
        out[b] = ((disp[b] - lo) / scale).clamp(0, 1) * v
    return out


def resize_map(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B,C,h,w) -> (B,C,H,W): area averaging where a side shrinks (antialiased), bilinear where it grows
    (area upsampling would be nearest-neighbour: blocky conditions)."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if size[0] <= h and size[1] <= w:
        return F.interpolate(x, size=size, mode="area")
    if size[0] >= h and size[1] >= w:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def prepare_source(samples: list[dict], resolution: int | None = None, condition: str = "depth", *,
                   size: tuple[int, int] | None = None, rgb: bool = True) -> dict[str, torch.Tensor]:
    """Resize a list of source sample dicts to ``size`` (H, W) (or ``resolution`` x ``resolution``) and
    stack them.

    Returns rgb (B,3,H,W) in [0,1] (left out with ``rgb=False``: fine-tuning never reads it), disp
    (B,1,H,W) raw inverse depth (0 invalid), valid (B,1,H,W) bool, disp01 (B,1,H,W) normalised
    disparity condition. Shrinking averages over the footprint (area), growing is bilinear
    (:func:`resize_map`); disparity is averaged over valid pixels only (so holes do not bleed in) and a
    pixel stays valid when at least half of its footprint was valid.

    ``condition="pseudo"`` takes the disparity from the sample's ``pseudo`` field (a teacher's
    *estimated* relative disparity, as `bridge label` writes it; every finite pixel valid) instead of
    1 / depth: how a D2I foundation is trained on photographs whose depth is only estimated."""
    if condition not in ("depth", "pseudo"):
        raise InputError(f"condition {condition!r}: expected 'depth' or 'pseudo'")
    if size is None:
        if resolution is None:
            raise ValueError("prepare_source: give size=(H, W) or resolution")
        size = (int(resolution), int(resolution))
    size = (int(size[0]), int(size[1]))
    rgbs, disps, valids = [], [], []
    for s in samples:
        if condition == "pseudo":
            if "pseudo" not in s:
                raise InputError(f"sample {s.get('__key__', '?')}: has no 'pseudo' field (label it with a teacher)")
            disp = np.asarray(s["pseudo"], np.float32)
            ok = np.isfinite(disp)
            disp = np.where(ok, disp, 0.0).astype(np.float32)
            if ok.any():  # relative disparity may be shifted below 0: move its minimum to 0 (min-max is shift-free)
                disp = np.where(ok, disp - disp[ok].min(), 0.0).astype(np.float32)
        elif "depth" not in s:
            raise InputError(f"sample {s.get('__key__', '?')}: has no 'depth' field")
        else:
            disp, ok = disparity_from_depth(s["depth"], s.get("valid"))
        d = torch.from_numpy(disp)[None, None]
        v = torch.from_numpy(ok.astype(np.float32))[None, None]
        vs = resize_map(v, size)
        ds = resize_map(d * v, size) / vs.clamp_min(1e-6)
        disps.append(ds)
        valids.append(vs >= 0.5)
        if rgb and "rgb" in s and s["rgb"] is not None:
            r = torch.from_numpy(np.ascontiguousarray(s["rgb"][..., :3])).permute(2, 0, 1)[None].float() / 255.0
            rgbs.append(resize_map(r, size))
        elif rgb:
            rgbs.append(torch.zeros(1, 3, *size))
    disp = torch.cat(disps)
    valid = torch.cat(valids)
    disp = disp * valid
    out = {"disp": disp, "valid": valid, "disp01": normalise_disparity(disp, valid)}
    if rgb:
        out["rgb"] = torch.cat(rgbs).clamp(0, 1)
    return out


def load_source(source, limit: int | None = None) -> list[dict]:
    """``source``: a shard directory (read with bridgedepth.data.shards.iter_samples) or an iterable
    of sample dicts. Returns up to ``limit`` samples as a list."""
    if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
        from pathlib import Path

        path = Path(source)
        if not path.exists():
            raise InputError(f"{path}: source shard directory does not exist")
        try:
            from ..data.shards import iter_samples
        except ImportError as e:  # pragma: no cover - until the shard store lands
            raise InputError(f"{path}: reading shards needs bridgedepth.data.shards ({e})") from e
        it: Iterable[dict] = iter_samples(path)
    else:
        it = source
    out = []
    for s in it:
        out.append(s)
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise InputError(f"{source}: no source samples")
    return out


def derive_seed(seed: int, key: str, index: int) -> int:
    """A 63-bit seed from (run seed, sample key, image index): independent of sharding/batching."""
    h = hashlib.sha256(f"{int(seed)}/{key}/{int(index)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def batches(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: this process's GPU (``cuda:$LOCAL_RANK`` under torchrun/accelerate) if any, else CPU."""
    if name in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}")
        if name == "auto":
            return torch.device("cpu")
    return torch.device(name)


# ------------------------------------------------------------------------------------------------
# Resumable checkpoints (pretraining and reward fine-tuning)
# ------------------------------------------------------------------------------------------------

SETTINGS_JSON = "settings.json"


def has_checkpoint(ckpt: Path) -> bool:
    """Whether a run would resume from ``ckpt`` (or from ``NAME.old``, put back by :func:`recover_checkpoint`)."""
    return (ckpt / "state.pt").exists() or (ckpt.with_name(ckpt.name + ".old") / "state.pt").exists()


def recover_checkpoint(ckpt: Path) -> None:
    """A run killed between the two renames of :func:`swap_in_checkpoint` left the previous checkpoint
    in ``NAME.old`` and none under ``NAME``: put it back. A half-written ``NAME.tmp`` is never loaded."""
    old = ckpt.with_name(ckpt.name + ".old")
    if not (ckpt / "state.pt").exists() and (old / "state.pt").exists():
        if ckpt.exists():
            shutil.rmtree(ckpt)
        os.replace(old, ckpt)
    elif old.exists():
        shutil.rmtree(old)


def swap_in_checkpoint(tmp: Path, ckpt: Path, settings: dict | None = None) -> None:
    """Make the filled folder ``tmp`` the checkpoint ``ckpt`` (with ``settings.json``, what it was
    trained with): move ``ckpt`` to ``NAME.old``, rename, remove the old one. At every point a complete
    checkpoint exists (:func:`recover_checkpoint`)."""
    from .. import faults

    if settings is not None:
        (tmp / SETTINGS_JSON).write_text(json.dumps(settings, indent=1))
    old = ckpt.with_name(ckpt.name + ".old")
    faults.point("ckpt-write", tmp)
    if old.exists():
        shutil.rmtree(old)
    if ckpt.exists():
        os.replace(ckpt, old)
    faults.point("ckpt-swap", ckpt)
    os.replace(tmp, ckpt)
    if old.exists():
        shutil.rmtree(old)


def check_resume_settings(ckpt: Path, settings: dict, out: Path, what: str, may_change: str) -> None:
    """Refuse to resume checkpoint ``ckpt`` when the settings it was written with (its
    ``settings.json``; older checkpoints have none and are resumed as before) differ from ``settings``
    (flat ``{key: value}``, JSON-able): the run would mix the two. ``what`` names the job,
    ``may_change`` what a resumed run may change."""
    try:
        old = json.loads((ckpt / SETTINGS_JSON).read_text())
    except (OSError, ValueError):
        return
    from ..config import changed_settings, describe_changes

    changes = changed_settings(old, json.loads(json.dumps(settings)))  # tuples as lists, as read back
    if changes:
        raise InputError(f"{ckpt}: this run would resume a {what} checkpoint written with other settings "
                         f"({describe_changes(changes, named={'teacher': 'the teacher weights'})}); "
                         f"it would mix them. Use another output folder, or delete {out} to start over "
                         f"({may_change} may change)")
