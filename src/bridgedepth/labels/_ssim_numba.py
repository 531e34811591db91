"""Fused SSIM kernels (Numba): one pass over the image per map, no full-size temporaries.

Used by :class:`bridgedepth.labels.ssim.SSIMWorkspace` when Numba is installed; the definition is
the one in that module's docstring (Gaussian window, reflected borders, population statistics, mean
over channels), and the tests compare both against skimage.

How it is fast: rows are read once; the products ``x``, ``x^2`` and ``x y`` of a row (values centred
on half the data range, as in the OpenCV path) are filtered horizontally into a ring of the last
``TAPS + 1`` filtered rows, and every second input row two output rows are made from the ring (the
vertical filter, one ring at a time, then the SSIM formula), so the working set (the rings, a few
rows) stays in the L2 cache and each ring row is read half as often. The tap loops have
a compile-time length (``TAPS``) so that LLVM unrolls them and vectorises along the row (symmetric
taps are summed in pairs, outermost first: half the products and less rounding); kernels of
fewer taps are zero-padded to ``TAPS`` (adding ``0 * v`` changes no float result), longer ones are
left to the OpenCV path. Indices that depend on a tap are unsigned, which spares Numba's
negative-index wraparound test (that test alone stops vectorisation).
"""

from __future__ import annotations

import numpy as np
import numba as nb

TAPS = 11  # the Gaussian window of sigma 1.5 at truncate 3.5 (the paper's SSIM)
RADIUS = TAPS // 2
RING = TAPS + 1  # filtered rows kept: output rows are made two at a time (see _vrow2)

_JIT = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False, fastmath={"contract", "arcp"})


def pad_kernel(kernel: np.ndarray, dtype=np.float32) -> np.ndarray | None:
    """``kernel`` (odd length <= TAPS) centred in TAPS taps of ``dtype``, zeros around; None if longer."""
    k = np.asarray(kernel, dtype).ravel()
    if len(k) > TAPS or len(k) % 2 == 0:
        return None
    out = np.zeros(TAPS, dtype)
    o = (TAPS - len(k)) // 2
    out[o : o + len(k)] = k
    return out


@nb.njit(inline="always", **_JIT)
def _reflect(i, n):
    """Index ``i`` reflected into [0, n) with the edge sample repeated (cv2.BORDER_REFLECT)."""
    if n == 1:
        return 0
    p = 2 * n
    i = i % p
    if i < 0:
        i += p
    return i if i < n else p - 1 - i


@nb.njit(**_JIT)
def _row_columns(w, c):
    """Source column of every padded column (w + 2 RADIUS of them), times the channel count."""
    cols = np.empty(w + 2 * RADIUS, np.int64)
    for j in range(w + 2 * RADIUS):
        cols[j] = _reflect(j - RADIUS, w) * c
    return cols


@nb.njit(inline="always", **_JIT)
def _hfilter(padded, k, c, dst):
    """dst[m] = sum_t k[t] padded[m + t c]: the horizontal filter of one padded row."""
    for m in range(dst.shape[0]):
        a = k[0] - k[0]
        for t in range(RADIUS):  # symmetric taps, outermost (smallest) first
            a += k[t] * (padded[np.uint64(m + t * c)] + padded[np.uint64(m + (TAPS - 1 - t) * c)])
        dst[m] = a + k[RADIUS] * padded[np.uint64(m + RADIUS * c)]


@nb.njit(inline="always", **_JIT)
def _fill_border(p, cols, c, w):
    """The reflected border of the padded row ``p`` (RADIUS columns each side) copied from its interior:
    the same values the interior loop computed for those source columns."""
    for e in range(2 * RADIUS):
        j = e if e < RADIUS else w + e
        b = np.uint64(RADIUS * c + cols[j])
        for ch in range(c):
            p[j * c + ch] = p[b + ch]


@nb.njit(inline="always", **_JIT)
def _load_one(row, cols, centre, c, w, p1, p2):
    """Padded rows of ``v = row - centre`` and ``v^2`` (reflected borders)."""
    wc = w * c
    q1 = p1[RADIUS * c : RADIUS * c + wc]
    q2 = p2[RADIUS * c : RADIUS * c + wc]
    for m in range(wc):
        v = row[m] - centre
        q1[m] = v
        q2[m] = v * v
    _fill_border(p1, cols, c, w)
    _fill_border(p2, cols, c, w)


@nb.njit(inline="always", **_JIT)
def _load_two(rx, ry, cols, centre, c, w, p1, p2, p3):
    """Padded rows of ``u = rx - centre``, ``u^2`` and ``u (ry - centre)`` (reflected borders)."""
    wc = w * c
    q1 = p1[RADIUS * c : RADIUS * c + wc]
    q2 = p2[RADIUS * c : RADIUS * c + wc]
    q3 = p3[RADIUS * c : RADIUS * c + wc]
    for m in range(wc):
        u = rx[m] - centre
        v = ry[m] - centre
        q1[m] = u
        q2[m] = u * u
        q3[m] = u * v
    _fill_border(p1, cols, c, w)
    _fill_border(p2, cols, c, w)
    _fill_border(p3, cols, c, w)


@nb.njit(inline="always", **_JIT)
def _vtap(f, o, m, k, wc):
    """The vertical filter at column ``m`` of output row ``o`` over the ring ``f`` (RING rows of
    ``wc``, flattened): symmetric taps summed in pairs, outermost first, as in :func:`_hfilter`."""
    a = k[0] - k[0]
    for t in range(RADIUS):
        a += k[t] * (f[np.uint64(((o + t) % RING) * wc + m)] + f[np.uint64(((o + TAPS - 1 - t) % RING) * wc + m)])
    return a + k[RADIUS] * f[np.uint64(((o + RADIUS) % RING) * wc + m)]


@nb.njit(inline="always", **_JIT)
def _vrow(r, o, k, wc, dst):
    """Output row ``o`` of the vertical filter of the ring ``r`` into ``dst``."""
    f = r.ravel()
    for m in range(wc):
        dst[m] = _vtap(f, o, m, k, wc)


@nb.njit(inline="always", **_JIT)
def _vrow2(r, o, k, wc, d0, d1):
    """Output rows ``o`` and ``o + 1`` of the vertical filter of the ring ``r`` into ``d0``, ``d1``,
    each summed exactly as :func:`_vtap` sums it. The TAPS + 1 rows they need are read once for
    both: the rings do not fit the L1 cache, and reading 11 rows per output row made the vertical
    filter 1.6x slower than the horizontal one (two rows at a time: a 518x518 RGB comparison 14-19 %
    faster; four spill the registers)."""
    f = r.ravel()
    for m in range(wc):
        a = k[0] - k[0]
        b = a
        for t in range(RADIUS):
            a += k[t] * (f[np.uint64(((o + t) % RING) * wc + m)] + f[np.uint64(((o + TAPS - 1 - t) % RING) * wc + m)])
            b += k[t] * (f[np.uint64(((o + 1 + t) % RING) * wc + m)] + f[np.uint64(((o + TAPS - t) % RING) * wc + m)])
        d0[m] = a + k[RADIUS] * f[np.uint64(((o + RADIUS) % RING) * wc + m)]
        d1[m] = b + k[RADIUS] * f[np.uint64(((o + 1 + RADIUS) % RING) * wc + m)]


@nb.njit(inline="always", **_JIT)
def _variance(mean, square, wc, var):
    """``var = square - mean^2`` (population variance from the filtered moments)."""
    for m in range(wc):
        a1 = mean[m]
        var[m] = square[m] - a1 * a1


@nb.njit(inline="always", **_JIT)
def _formula(t1, t2, t3, wc, mo, vo, centre, c1, c2, s):
    """Per-channel SSIM of one output row from the filtered ``u``, ``u^2``, ``u v`` rows ``t1..t3`` and
    the reference's mean ``mo`` and variance ``vo`` of that row. (The vertical filters run one ring
    at a time before this: one loop over all three rings holds 33 row pointers, more than the
    registers.)"""
    two = centre / centre + centre / centre  # 2 in the working dtype
    for m in range(wc):
        a1 = t1[m]
        my = mo[m]
        vx = t2[m] - a1 * a1  # E[xc^2] - E[xc]^2
        vxy = t3[m] - a1 * my  # E[xc yc] - E[xc] E[yc]
        ex = a1 + centre
        ey = my + centre
        num = (two * ex * ey + c1) * (two * vxy + c2)
        den = (ex * ex + ey * ey + c1) * (vx + vo[m] + c2)
        s[m] = num / den


@nb.njit(inline="always", **_JIT)
def _channel_mean(s, k, c, w, orow):
    if c == 1:
        for j in range(w):
            orow[j] = s[j]
    elif c == 3:  # the stride spelled out: LLVM vectorises it (the general loop stays scalar)
        inv3 = 1.0 / c
        for j in range(w):
            orow[j] = (s[3 * j] + s[3 * j + 1] + s[3 * j + 2]) * inv3
    else:
        inv_c = 1.0 / c
        for j in range(w):
            a = k[0] - k[0]
            for ch in range(c):
                a += s[j * c + ch]
            orow[j] = a * inv_c


@nb.njit(**_JIT)
def reference_stats(y, k, centre, mu, var):
    """Local mean (minus ``centre``) and variance of ``y`` (uint8 (H, W, C), C-contiguous) into
    ``mu`` and ``var`` ((H, W * C), channels interleaved as in ``y``; their dtype, float32 or float64,
    is the working precision, that of ``k`` and ``centre`` too)."""
    h, w, c = y.shape
    wc = w * c
    cols = _row_columns(w, c)
    pad = (w + 2 * RADIUS) * c
    p1 = np.empty(pad, mu.dtype)
    p2 = np.empty(pad, mu.dtype)
    r1 = np.zeros((RING, wc), mu.dtype)
    r2 = np.zeros((RING, wc), mu.dtype)
    t = np.empty((2, wc), mu.dtype)  # the kernel's own rows: LLVM cannot rule out that the caller's overlap the rings
    for i in range(h + 2 * RADIUS):
        _load_one(y[_reflect(i - RADIUS, h)].ravel(), cols, centre, c, w, p1, p2)
        _hfilter(p1, k, c, r1[i % RING])  # one array written per loop: LLVM's alias checks stay few
        _hfilter(p2, k, c, r2[i % RING])
        if i > 2 * RADIUS and (i - 2 * RADIUS) % 2 == 1:  # output rows o, o + 1 have all their rows
            o = i - 2 * RADIUS - 1
            _vrow2(r1, o, k, wc, t[0], t[1])
            mu[o] = t[0]
            mu[o + 1] = t[1]
            _vrow2(r2, o, k, wc, t[0], t[1])
            _variance(mu[o], t[0], wc, var[o])
            _variance(mu[o + 1], t[1], wc, var[o + 1])
    if h % 2 == 1:  # the last row alone
        o = h - 1
        _vrow(r1, o, k, wc, t[0])
        mu[o] = t[0]
        _vrow(r2, o, k, wc, t[1])
        _variance(t[0], t[1], wc, t[1])
        var[o] = t[1]


@nb.njit(**_JIT)
def compare(x, y, mu, var, k, centre, c1, c2, out):
    """SSIM map of ``x`` against ``y`` (both uint8 (H, W, C), C-contiguous), given ``y``'s
    :func:`reference_stats`; the mean over channels goes to ``out`` (float32 (H, W))."""
    h, w, c = x.shape
    wc = w * c
    cols = _row_columns(w, c)
    pad = (w + 2 * RADIUS) * c
    p1 = np.empty(pad, mu.dtype)
    p2 = np.empty(pad, mu.dtype)
    p3 = np.empty(pad, mu.dtype)
    r1 = np.zeros((RING, wc), mu.dtype)
    r2 = np.zeros((RING, wc), mu.dtype)
    r3 = np.zeros((RING, wc), mu.dtype)
    s = np.empty(wc, mu.dtype)
    t = np.empty((6, wc), mu.dtype)
    for i in range(h + 2 * RADIUS):
        src = _reflect(i - RADIUS, h)
        _load_two(x[src].ravel(), y[src].ravel(), cols, centre, c, w, p1, p2, p3)
        _hfilter(p1, k, c, r1[i % RING])
        _hfilter(p2, k, c, r2[i % RING])
        _hfilter(p3, k, c, r3[i % RING])
        if i > 2 * RADIUS and (i - 2 * RADIUS) % 2 == 1:  # output rows o, o + 1 have all their rows
            o = i - 2 * RADIUS - 1
            _vrow2(r1, o, k, wc, t[0], t[3])
            _vrow2(r2, o, k, wc, t[1], t[4])
            _vrow2(r3, o, k, wc, t[2], t[5])
            _formula(t[0], t[1], t[2], wc, mu[o], var[o], centre, c1, c2, s)
            _channel_mean(s, k, c, w, out[o])
            _formula(t[3], t[4], t[5], wc, mu[o + 1], var[o + 1], centre, c1, c2, s)
            _channel_mean(s, k, c, w, out[o + 1])
    if h % 2 == 1:  # the last row alone
        o = h - 1
        _vrow(r1, o, k, wc, t[0])
        _vrow(r2, o, k, wc, t[1])
        _vrow(r3, o, k, wc, t[2])
        _formula(t[0], t[1], t[2], wc, mu[o], var[o], centre, c1, c2, s)
        _channel_mean(s, k, c, w, out[o])
