"""Experiment trackers through accelerate (``--log-with tensorboard``, ``wandb``, ...), beside the
JSONL logs and PNG curves every training loop writes anyway. TensorBoard event files go to
``OUT/<run name>/`` (``tensorboard --logdir OUT``)."""

from __future__ import annotations

import importlib.util

from ..errors import InputError

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "comet_ml": "comet_ml", "mlflow": "mlflow",
            "aim": "aim", "clearml": "clearml", "dvclive": "dvclive"}


def parse_log_with(value) -> list[str]:
    """``"tensorboard,wandb"`` -> ``["tensorboard", "wandb"]``; an unknown or uninstalled tracker is an
    :class:`InputError` naming the package to install."""
    if not value:
        return []
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    for n in names:
        if n not in PACKAGES:
            raise InputError(f"--log-with {n}: unknown tracker; choose from {', '.join(PACKAGES)}")
        if importlib.util.find_spec(PACKAGES[n]) is None:
            raise InputError(f"--log-with {n}: the '{PACKAGES[n]}' package is not installed "
                             f"(pip install {PACKAGES[n]})")
    return names


def scalars(rec: dict) -> dict:
    """The numeric entries of a log record (what trackers accept)."""
    return {k: float(v) for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
            and k not in ("step", "time")}


def hparams(d: dict) -> dict:
    """A flat dict of str/int/float/bool values (TensorBoard's hparams refuse anything else)."""
    return {k: v for k, v in d.items() if isinstance(v, (str, int, float, bool))}
