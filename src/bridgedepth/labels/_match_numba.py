"""Mutual nearest neighbours of binary descriptors (Numba): the ORB matcher of the masks.

:func:`cross_check` gives exactly the matches of ``cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)``
and of the NumPy reference :func:`bridgedepth.labels.masks.hamming_distances` + argmins (ties go to
the lower index; the tests compare all three). One pass over the distance matrix, a row at a time:
the row's distances to every descriptor of ``b`` are summed word by word (the 64-bit population
count below is the idiom LLVM turns into ``popcnt``, or ``vpopcntq`` where AVX-512 has it, and the
loop over ``b`` is vectorised), then the row's argmin and the running column minima are updated from
that row. Nothing of size ``len(a) x len(b)`` is ever stored: 500 x 500 ORB descriptors take about
0.2 ms against 1.4 ms for the NumPy outer-XOR version.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_JIT = dict(cache=True, nogil=True, error_model="numpy", boundscheck=False)

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@nb.njit(inline="always", **_JIT)
def _popcount(x):
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


@nb.njit(**_JIT)
def cross_check(wa, wb):
    """(indices into ``wa``, indices into ``wb``) of the mutual nearest neighbours, in ``wa``'s order.
    ``wa`` (Na, K) and ``wb`` (Nb, K): uint64 words of the descriptors (zero-padded alike)."""
    na, nbr = wa.shape[0], wb.shape[0]
    words = wa.shape[1]
    cols = np.ascontiguousarray(wb.T)  # (K, Nb): one word of every b descriptor per row
    d = np.empty(nbr, np.int32)
    col_d = np.full(nbr, np.int32(1 << 30), np.int32)
    col_i = np.zeros(nbr, np.int32)
    best_b = np.empty(na, np.int32)
    for i in range(na):
        d[:] = 0
        for k in range(words):
            x = wa[i, k]
            row = cols[k]
            for j in range(nbr):
                d[j] += np.int32(_popcount(x ^ row[j]))
        bd = np.int32(1 << 30)
        bi = 0
        for j in range(nbr):  # first minimum: ties to the lower index
            if d[j] < bd:
                bd = d[j]
                bi = j
        best_b[i] = bi
        for j in range(nbr):  # strict: an earlier row keeps a tie
            better = d[j] < col_d[j]
            col_d[j] = d[j] if better else col_d[j]
            col_i[j] = i if better else col_i[j]
    n = 0
    for i in range(na):
        if col_i[best_b[i]] == i:
            n += 1
    qi = np.empty(n, np.int32)
    ti = np.empty(n, np.int32)
    n = 0
    for i in range(na):
        if col_i[best_b[i]] == i:
            qi[n] = i
            ti[n] = best_b[i]
            n += 1
    return qi, ti
