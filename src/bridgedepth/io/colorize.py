"""One fixed way to turn depth or disparity into a picture: near is warm (red), far is cool (blue),
invalid is black, for both kinds."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .common import InputError


@lru_cache(maxsize=8)
def _lut(cmap: str) -> np.ndarray:
    import matplotlib

    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError:
        raise InputError(f"unknown matplotlib colormap {cmap!r}") from None
    rgba = cm(np.linspace(0.0, 1.0, 256))
    return np.rint(rgba[:, :3] * 255.0).astype(np.uint8)


def colorize(values, valid=None, *, kind: str = "disparity", cmap: str = "Spectral_r",
             vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Map (H, W) ``values`` to RGB uint8 (H, W, 3).

    ``kind="disparity"`` (large = near) or ``"depth"`` (small = near); either way near pixels get the
    warm (high) end of ``cmap`` (``Spectral_r``: blue -> yellow -> red). The range is ``vmin``..``vmax``
    (in the units of ``values``), by default the min and max over valid pixels. ``valid`` defaults to
    finite values (and > 0 for depth); invalid pixels are black.
    """
    if kind not in ("disparity", "depth"):
        raise InputError(f"colorize kind must be 'disparity' or 'depth', got {kind!r}")
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2:
        raise InputError(f"colorize expects an (H, W) array, got shape {v.shape}")
    finite = np.isfinite(v)
    if valid is None:
        ok = finite & (v > 0) if kind == "depth" else finite
    else:
        ok = np.asarray(valid, dtype=bool)
        if ok.shape != v.shape:
            raise InputError(f"colorize: valid has shape {ok.shape}, values {v.shape}")
        ok = ok & finite
    out = np.zeros(v.shape + (3,), dtype=np.uint8)
    if not ok.any():
        return out
    sel = v[ok]
    lo = float(sel.min()) if vmin is None else float(vmin)
    hi = float(sel.max()) if vmax is None else float(vmax)
    t = np.clip((sel - lo) / (hi - lo), 0.0, 1.0) if hi > lo else np.full(sel.shape, 0.5)
    if kind == "depth":
        t = 1.0 - t  # small depth = near = warm
    out[ok] = _lut(cmap)[np.rint(t * 255.0).astype(np.int64)]
    return out
