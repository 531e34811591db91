"""File access for the adapters.

Depth files in a registered encoding (png-cm, npy, pfm, ...) and RGB images are read through
``bridgedepth.io`` (``read_depth`` / ``read_image``). Dataset containers that do not hold metric depth
(Hypersim's HDR colour and Euclidean distance in HDF5, Spring's ``.dsp5`` disparity, IRS's EXR
disparity) are read here as raw float arrays and converted by the adapter that knows their meaning.
Every failure becomes a :class:`SampleError` naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import SampleError


def read_rgb(path: Path) -> np.ndarray:
    from ...io import read_image

    try:
        rgb = read_image(path)
    except SampleError:
        raise
    except Exception as e:  # io raises FormatError; decoders may raise anything on a corrupt file
        raise SampleError(path, f"unreadable image: {e}") from e
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise SampleError(path, f"expected an RGB uint8 image, got {rgb.dtype} {rgb.shape}")
    return rgb


def read_depth_file(path: Path, encoding: str, **params) -> tuple[np.ndarray, np.ndarray]:
    """(depth metres float32, valid bool) through ``bridgedepth.io.read_depth``."""
    from ...io import read_depth

    try:
        dm = read_depth(path, encoding, **params)
    except SampleError:
        raise
    except Exception as e:
        raise SampleError(path, f"unreadable depth ({encoding}): {e}") from e
    return np.asarray(dm.depth, dtype=np.float32), np.asarray(dm.valid, dtype=bool)


def read_hdf5_array(path: Path, dataset: str) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if dataset not in f:
                raise SampleError(path, f"HDF5 file has no dataset '{dataset}' (has: {', '.join(f.keys())})")
            return np.asarray(f[dataset][()])
    except SampleError:
        raise
    except Exception as e:
        raise SampleError(path, f"unreadable HDF5 file: {e}") from e


def read_exr_channel(path: Path, channels: tuple[str, ...] = ("R", "G", "B", "Y", "Z")) -> np.ndarray:
    """One float channel of an OpenEXR file: the only channel, else the first of ``channels``."""
    import OpenEXR

    try:
        with OpenEXR.File(str(path), separate_channels=True) as f:
            ch = f.channels()
            if not ch:
                raise SampleError(path, "EXR file has no channels")
            name = next(iter(ch)) if len(ch) == 1 else next((c for c in channels if c in ch), None)
            if name is None:
                raise SampleError(path, f"EXR channels {sorted(ch)} include none of {list(channels)}")
            return np.asarray(ch[name].pixels, dtype=np.float32)
    except SampleError:
        raise
    except Exception as e:
        raise SampleError(path, f"unreadable EXR file: {e}") from e
