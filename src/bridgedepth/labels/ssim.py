"""Fast SSIM maps (Wang et al. 2004) with OpenCV separable Gaussian filtering and reused buffers.

Definition (identical to ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, full=True, data_range=L)``):

- local statistics are Gaussian-weighted: 1-D kernel ``exp(-t^2 / (2 sigma^2))`` for integer
  ``t in [-r, r]`` with ``r = int(truncate * sigma + 0.5)`` (``truncate=3.5``: sigma 1.5 gives 11
  taps), normalised to sum 1, applied separably; borders are mirrored with the edge pixel repeated
  (``cv2.BORDER_REFLECT`` == SciPy's ``mode='reflect'``), so even the border strip matches skimage;
- population (not sample) variances and covariance: ``v_x = E[x^2] - E[x]^2``;
- ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2`` with ``K1 = 0.01``, ``K2 = 0.03`` and data range ``L``
  (255 for uint8 images);
- colour convention: the SSIM map of an (H, W, C) pair is the **mean over channels of the
  per-channel maps** (what skimage's ``channel_axis=2`` returns, averaged over its last axis).

Precision: ``dtype=np.float64`` (the default) reproduces skimage to about 1e-12. ``np.float32``
is about 1.7x faster but ``E[x^2] - E[x]^2`` cancels catastrophically in flat regions, where the
denominator is only ``C2``: the worst errors we measured are about 1.2e-4 (values are centred on
L/2 before squaring to keep it that small). See docs/labels.md.

Backends: maps of uint8 images whose window has at most 11 taps (the default sigma 1.5 has exactly 11)
run in the fused kernels of :mod:`._ssim_numba` (one pass per map; a 518x518 RGB comparison took
2.5 ms in float32 and 4.1 ms in float64 against 5.6 and 12.1 ms on the OpenCV path, idle 2-core
Sapphire Rapids; 2.7-2.9 ms in float32 on an AVX2-only EPYC; float64 reproduces skimage to 3e-8); everything else (float input, wider windows,
Numba missing) runs on OpenCV as below. ``backend="opencv"`` forces the latter. Both agree with skimage to the tolerances above
(tests).

Speed on the OpenCV path comes from avoiding temporaries: every intermediate lives in a preallocated buffer of an
:class:`SSIMWorkspace` (fresh multi-megabyte arrays cost thousands of page faults), the statistics
of a reference image are computed once and reused for several comparisons (the mask pipeline
compares the original against both the registered and the size-matched generated image), and
channels are processed one at a time so the working set stays in cache.
"""

from __future__ import annotations

import numpy as np

try:  # OpenCV is a core dependency; imported lazily-safe for a clear error message.
    import cv2
except ImportError as e:  # pragma: no cover
    raise ImportError("bridgedepth.labels.ssim needs opencv-python-headless") from e

__all__ = ["gaussian_kernel", "ssim_map", "SSIMWorkspace", "numba_available"]

BACKENDS = ("auto", "numba", "opencv")


def numba_module(name: str):
    """The Numba kernel module ``bridgedepth.labels.<name>`` (``_ssim_numba``, ``_match_numba``), or None
    when Numba cannot be imported (the callers then take their NumPy/OpenCV paths)."""
    import importlib

    try:
        return importlib.import_module(f".{name}", __package__)
    except ImportError:
        return None


def numba_available() -> bool:
    """True when the fused Numba SSIM kernels can be used on this machine."""
    return numba_module("_ssim_numba") is not None


def gaussian_kernel(sigma: float = 1.5, truncate: float = 3.5) -> np.ndarray:
    """The normalised 1-D Gaussian SciPy's ``gaussian_filter`` uses (float64, odd length)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = int(truncate * float(sigma) + 0.5)
    t = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / float(sigma)) ** 2)
    return k / k.sum()


def _as_channels(img: np.ndarray) -> np.ndarray:
    a = np.asarray(img)
    if a.ndim == 2:
        return a[:, :, None]
    if a.ndim == 3:
        return a
    raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {a.shape}")


class SSIMWorkspace:
    """Buffers and a reference image's statistics for repeated SSIM maps of one size.

    >>> ws = SSIMWorkspace()
    >>> ws.set_reference(original)            # uint8 (H, W) or (H, W, C)
    >>> s1 = ws.compare(registered)           # float32 (H, W) SSIM map, mean over channels
    >>> s2 = ws.compare(generated, out=buf)   # reuse an output buffer

    Work proceeds in horizontal strips of ``strip_rows`` rows (each filtered with a halo of the
    kernel radius, so results are exactly those of whole-image filtering) to keep the working set
    in the L2 cache. Buffers are (re)allocated only when the image shape changes, so one workspace
    per worker process serves a whole labelling job. Not thread-safe: one workspace per thread.
    """

    def __init__(
        self,
        *,
        sigma: float = 1.5,
        truncate: float = 3.5,
        k1: float = 0.01,
        k2: float = 0.03,
        data_range: float = 255.0,
        dtype: type | np.dtype = np.float64,
        strip_rows: int = 96,
        backend: str = "auto",
    ):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype}")
        if data_range <= 0:
            raise ValueError(f"data_range must be > 0, got {data_range}")
        self.sigma, self.truncate = float(sigma), float(truncate)
        self.kernel = gaussian_kernel(sigma, truncate).astype(self.dtype)
        self.radius = (len(self.kernel) - 1) // 2
        self.data_range = float(data_range)
        self.c1 = (k1 * self.data_range) ** 2
        self.c2 = (k2 * self.data_range) ** 2
        # Values are centred on half the data range before squaring: variances are
        # shift-invariant, and the smaller magnitudes reduce float32 cancellation.
        self.centre = self.data_range / 2.0
        self.strip_rows = max(int(strip_rows), 2 * self.radius + 1)
        self._ddepth = cv2.CV_64F if self.dtype == np.float64 else cv2.CV_32F
        self._shape: tuple[int, int, int] | None = None
        self._has_ref = False
        # the fused kernels: any window of at most their tap count
        self._nb = None
        self._nb_kernel = None
        if backend != "opencv":
            nbk = numba_module("_ssim_numba")
            padded = None if nbk is None else nbk.pad_kernel(self.kernel, self.dtype)
            usable = nbk is not None and padded is not None
            if backend == "numba" and not usable:
                why = ("Numba is not installed (pip install numba)" if nbk is None else
                       f"the window has {len(self.kernel)} taps > {nbk.TAPS}")
                raise ValueError(f"SSIM backend 'numba' cannot be used: {why}")
            if usable:
                self._nb, self._nb_kernel = nbk, padded
        self.backend = "numba" if self._nb is not None else "opencv"
        self._nb_ref: np.ndarray | None = None  # uint8 reference copy when the fused kernels hold it
        self._nb_mu: np.ndarray | None = None
        self._nb_var: np.ndarray | None = None

    # ------------------------------------------------------------------ buffers
    def _ensure(self, shape: tuple[int, int, int]) -> None:
        if self._shape == shape:
            return
        h, w, c = shape
        dt = self.dtype
        self._shape = shape
        self._has_ref = False
        # reference statistics, whole image, per channel
        self._ref_centred = np.empty((c, h, w), dt)  # y - centre
        self._ref_mu = np.empty((c, h, w), dt)  # E[y] - centre
        self._ref_a1 = np.empty((c, h, w), dt)  # 2 E[y]
        self._ref_b1 = np.empty((c, h, w), dt)  # E[y]^2 + C1
        self._ref_b2 = np.empty((c, h, w), dt)  # v_y + C2
        # strip scratch (rows + halo)
        sh = min(h, self.strip_rows + 2 * self.radius)
        self._xc = np.empty((sh, w), dt)
        self._prod = np.empty((sh, w), dt)
        self._mux = np.empty((sh, w), dt)
        self._mxx = np.empty((sh, w), dt)
        self._mxy = np.empty((sh, w), dt)
        self._t = np.empty((self.strip_rows, w), dt)
        self._t2 = np.empty((self.strip_rows, w), dt)
        self._acc = np.empty((self.strip_rows, w), dt)

    def _strips(self):
        """Yield (r0, r1, a, b): output rows [r0, r1) computed from input rows [a, b)."""
        h = self._shape[0]
        r, s = self.radius, self.strip_rows
        for r0 in range(0, h, s):
            r1 = min(h, r0 + s)
            yield r0, r1, max(0, r0 - r), min(h, r1 + r)

    def _blur(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        k = self.kernel
        return cv2.sepFilter2D(src, self._ddepth, k, k, dst=dst, borderType=cv2.BORDER_REFLECT)

    # ------------------------------------------------------------------ API
    def set_reference(self, y: np.ndarray) -> None:
        """Compute and keep the local statistics of the reference image ``y``."""
        y3 = _as_channels(y)
        h, w, c = y3.shape
        if h < 1 or w < 1:
            raise ValueError(f"empty image, shape {y3.shape}")
        self._nb_ref = None
        if self._nb is not None and y3.dtype == np.uint8:
            self._has_ref = False
            if self._nb_mu is None or self._nb_mu.shape != (h, w * c):
                self._nb_mu = np.empty((h, w * c), self.dtype)
                self._nb_var = np.empty((h, w * c), self.dtype)
            ref = np.array(y3, order="C", copy=True)  # the caller may change its array afterwards
            self._nb.reference_stats(ref, self._nb_kernel, self.dtype.type(self.centre), self._nb_mu, self._nb_var)
            self._nb_ref = ref
            self._has_ref = True
            return
        self._opencv_reference(y3)

    def _opencv_reference(self, y3: np.ndarray) -> None:
        h, w, c = y3.shape
        self._ensure((h, w, c))
        centre, c1, c2 = self.centre, self.c1, self.c2
        for ch in range(c):
            # centred copy of the whole channel (needed for the cross products later)
            np.subtract(y3[:, :, ch], centre, out=self._ref_centred[ch], casting="unsafe")
        for r0, r1, a, b in self._strips():
            n, o = r1 - r0, r0 - a
            t = self._t[:n]
            for ch in range(c):
                yc = self._ref_centred[ch, a:b]
                mu = self._blur(yc, self._mux[: b - a])[o : o + n]
                prod = np.multiply(yc, yc, out=self._prod[: b - a])
                myy = self._blur(prod, self._mxx[: b - a])[o : o + n]
                self._ref_mu[ch, r0:r1] = mu
                np.multiply(mu, mu, out=t)
                b2 = self._ref_b2[ch, r0:r1]
                np.subtract(myy, t, out=b2)  # v_y
                b2 += c2
                a1 = self._ref_a1[ch, r0:r1]
                np.add(mu, centre, out=a1)  # E[y]
                np.multiply(a1, a1, out=self._ref_b1[ch, r0:r1])
                self._ref_b1[ch, r0:r1] += c1
                a1 *= 2.0
        self._has_ref = True

    def compare(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """SSIM map of ``x`` against the reference (mean over channels), float32 (H, W)."""
        if not self._has_ref:
            raise RuntimeError("set_reference() first")
        x3 = _as_channels(x)
        ref_shape = self._nb_ref.shape if self._nb_ref is not None else self._shape
        if x3.shape != ref_shape:
            raise ValueError(f"shape {x3.shape} differs from the reference's {ref_shape}")
        h, w, c = x3.shape
        if out is None:
            out = np.empty((h, w), np.float32)
        elif out.shape != (h, w) or out.dtype != np.float32:
            raise ValueError(f"out must be float32 {(h, w)}, got {out.dtype} {out.shape}")
        if self._nb_ref is not None:
            if x3.dtype == np.uint8:
                self._nb.compare(np.ascontiguousarray(x3), self._nb_ref, self._nb_mu, self._nb_var,
                                 self._nb_kernel, *(self.dtype.type(v) for v in (self.centre, self.c1, self.c2)),
                                 out)
                return out
            # a float image against a uint8 reference: the OpenCV path, with its own statistics
            ref, self._nb_ref = self._nb_ref, None
            self._opencv_reference(ref)
        centre, c1, c2 = self.centre, self.c1, self.c2
        inv_c = 1.0 / c
        for r0, r1, a, b in self._strips():
            n, o, m = r1 - r0, r0 - a, b - a
            t, t2, acc = self._t[:n], self._t2[:n], self._acc[:n]
            for ch in range(c):
                xc = np.subtract(x3[a:b, :, ch], centre, out=self._xc[:m], casting="unsafe")
                mux = self._blur(xc, self._mux[:m])[o : o + n]  # E[x] - centre
                prod = np.multiply(xc, xc, out=self._prod[:m])
                mxx = self._blur(prod, self._mxx[:m])[o : o + n]  # E[xc^2]
                np.multiply(xc, self._ref_centred[ch, a:b], out=prod)
                mxy = self._blur(prod, self._mxy[:m])[o : o + n]  # E[xc yc]
                # v_x, v_xy from the centred moments (shift-invariant)
                np.multiply(mux, mux, out=t)
                np.subtract(mxx, t, out=mxx)  # v_x
                mxx += self._ref_b2[ch, r0:r1]  # B2 = v_x + v_y + C2
                np.multiply(mux, self._ref_mu[ch, r0:r1], out=t)
                np.subtract(mxy, t, out=mxy)  # v_xy
                mxy *= 2.0
                mxy += c2  # A2 = 2 v_xy + C2
                mux += centre  # E[x]
                np.multiply(mux, self._ref_a1[ch, r0:r1], out=t)
                t += c1  # A1 = 2 E[x] E[y] + C1
                np.multiply(mux, mux, out=t2)
                t2 += self._ref_b1[ch, r0:r1]  # B1 = E[x]^2 + E[y]^2 + C1
                t *= mxy
                t2 *= mxx
                if ch == 0:
                    np.divide(t, t2, out=acc)
                else:
                    np.divide(t, t2, out=t)
                    acc += t
            if c > 1:
                acc *= inv_c
            out[r0:r1] = acc
        return out


def ssim_map(
    x: np.ndarray,
    y: np.ndarray,
    *,
    data_range: float = 255.0,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
    dtype: type | np.dtype = np.float64,
    workspace: SSIMWorkspace | None = None,
    out: np.ndarray | None = None,
    backend: str = "auto",
) -> np.ndarray:
    """SSIM map between two images of the same shape (uint8 or float, (H, W) or (H, W, C)).

    Returns float32 (H, W); colour maps are the mean of the per-channel maps. Pass a
    :class:`SSIMWorkspace` to reuse buffers across calls (its settings then take precedence).
    ``backend``: ``auto`` (the fused Numba kernels where they apply), ``numba`` or ``opencv``.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"images differ in shape: {x.shape} vs {y.shape}")
    ws = workspace or SSIMWorkspace(sigma=sigma, k1=k1, k2=k2, data_range=data_range, dtype=dtype, backend=backend)
    ws.set_reference(y)
    return ws.compare(x, out=out)
