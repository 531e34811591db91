"""The toy foundation models that ship with the package (the embedded default's stand-ins for the
paper's pretrained foundations; docs/zoo.md).

=============  ===========================================  ====================================
name           stands in for                                folder (package data)
=============  ===========================================  ====================================
``depth``      DINOv2 + the synthetic-data teacher          ``models/depth``  (HF depth model)
``d2i``        FLUX.1-Depth-dev (trained on photographs     ``models/d2i``    (tiny D2I backend)
               with *estimated* depth)
``aesthetic``  CLIP ViT-L/14 + the LAION aesthetic head     ``models/aesthetic`` (toy scorer)
=============  ===========================================  ====================================

Each folder holds the weights (safetensors), ``card.json`` and a ``README.md`` model card (data,
seeds, steps, wall time, hardware, configuration, sha256, measured quality). They are loaded through
the same loaders as any user checkpoint (:func:`bridgedepth.mde.load_model`,
:func:`bridgedepth.d2i.load_backend`, :func:`bridgedepth.d2i.scorer.load_scorer`). ``bridge zoo build``
trains them from procedural scenes (:mod:`bridgedepth.zoo.build`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

MODELS_DIR = Path(__file__).resolve().parent / "models"
CARD_JSON = "card.json"

# name -> (what it stands in for, the file whose presence marks a complete model)
MODELS: dict[str, tuple[str, str]] = {
    "depth": ("DINOv2 encoder + synthetic-data teacher (relative disparity)", "model.safetensors"),
    "d2i": ("FLUX.1-Depth-dev (depth-to-image, trained on real-look photos with estimated depth)",
            "unet/diffusion_pytorch_model.safetensors"),
    "aesthetic": ("CLIP ViT-L/14 + LAION aesthetic head (photograph-likeness score)", "model.safetensors"),
}


@dataclass
class ZooEntry:
    name: str
    role: str
    path: Path
    present: bool
    card: dict

    def to_json(self) -> dict:
        return {"name": self.name, "role": self.role, "path": str(self.path), "present": self.present,
                "megabytes": round(folder_bytes(self.path) / 2**20, 2) if self.present else 0.0,
                "card": self.card}


def models_dir() -> Path:
    """Where the shipped models live (``BRIDGE_ZOO_DIR`` overrides it, e.g. for a fresh build)."""
    env = os.environ.get("BRIDGE_ZOO_DIR")
    return Path(env) if env else MODELS_DIR


def entry(name: str) -> ZooEntry:
    if name not in MODELS:
        raise InputError(f"unknown zoo model '{name}'; available: {', '.join(MODELS)}")
    p = models_dir() / name
    present = (p / MODELS[name][1]).is_file()
    card = {}
    if (p / CARD_JSON).is_file():
        try:
            card = json.loads((p / CARD_JSON).read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{p / CARD_JSON}: not valid JSON ({e})") from e
    return ZooEntry(name, MODELS[name][0], p, present, card)


def list_models() -> list[ZooEntry]:
    return [entry(n) for n in MODELS]


def model_path(name: str) -> Path:
    """The folder of a shipped model; a clear error when it is not there."""
    e = entry(name)
    if not e.present:
        raise InputError(
            f"the toy '{name}' model is not installed at {e.path}: build it with "
            f"`bridge zoo build --install` (CPU hours; docs/zoo.md) or pass your own checkpoint")
    return e.path


def available(name: str) -> bool:
    return entry(name).present


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
