"""Ragged per-image reductions over the valid pixels of a batch.

The valid pixels of B images are gathered into one flat float64 vector, image after image; every
per-image quantity is then a reduction over one contiguous segment. On CPU a segment is a slice (the
reductions are BLAS dots and sums over data that stays in cache; no per-pixel index arrays); on
accelerators the segments are reduced with ``index_add_`` in one launch per quantity.
"""

from __future__ import annotations

import numpy as np
import torch

F64 = torch.float64


class Segments:
    def __init__(self, counts: torch.Tensor):
        self.counts = counts.to(torch.int64)
        self.b = int(counts.numel())
        self.device = counts.device
        self.on_cpu = self.device.type == "cpu"
        c = self.counts.cpu().tolist()
        off = np.concatenate([[0], np.cumsum(c)]).astype(int).tolist()
        self.slices = [(off[i], off[i + 1]) for i in range(self.b)]
        self.total = off[-1]
        self._seg = None

    @property
    def seg(self) -> torch.Tensor:
        if self._seg is None:
            self._seg = torch.repeat_interleave(torch.arange(self.b, device=self.device), self.counts)
        return self._seg

    def sum(self, v: torch.Tensor) -> torch.Tensor:
        if self.on_cpu:
            return torch.stack([v[a:b].sum() for a, b in self.slices]) if self.b else v.new_zeros(0)
        return v.new_zeros(self.b).index_add_(0, self.seg, v)

    def dot(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.on_cpu:
            return torch.stack([torch.dot(u[a:b], v[a:b]) for a, b in self.slices]) if self.b else u.new_zeros(0)
        return self.sum(u * v)

    def count_lt(self, v: torch.Tensor, threshold: float, scratch: torch.Tensor | None = None) -> torch.Tensor:
        lt = torch.lt(v, threshold, out=scratch) if scratch is not None else v < threshold
        if self.on_cpu:
            return torch.stack([torch.count_nonzero(lt[a:b]) for a, b in self.slices]).to(F64) \
                if self.b else v.new_zeros(0)
        return self.sum(lt.to(F64))

    def expand(self, s: torch.Tensor) -> torch.Tensor:
        """Per-image values broadcast to their pixels."""
        return torch.repeat_interleave(s, self.counts)

    def affine_(self, v: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """In place: ``v = s_i * v + t_i`` on the pixels of image i."""
        if self.on_cpu:
            ss, tt = s.tolist(), t.tolist()
            for i, (a, b) in enumerate(self.slices):
                v[a:b].mul_(ss[i]).add_(tt[i])
            return v
        return v.mul_(self.expand(s)).add_(self.expand(t))

    def select(self, keep: torch.Tensor) -> tuple["Segments", torch.Tensor]:
        """Sub-segments keeping the pixels where ``keep`` (flat bool) holds; returns (segments, flat
        index of the kept pixels)."""
        idx = flat_nonzero(keep)
        if self.on_cpu:
            counts = torch.tensor([int(torch.count_nonzero(keep[a:b])) for a, b in self.slices], dtype=torch.int64)
        else:
            counts = torch.zeros(self.b, dtype=torch.int64, device=self.device).index_add_(0, self.seg, keep.to(torch.int64))
        return Segments(counts), idx


def flat_nonzero(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the true entries of a flattened boolean tensor (NumPy on CPU: faster)."""
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.reshape(-1).numpy()))
    return torch.nonzero(mask.reshape(-1)).squeeze(1)


class Workspace:
    """Reusable flat buffers: multi-megabyte temporaries allocated afresh for every image cost more
    in page faults than the arithmetic; the runner keeps one workspace for a whole benchmark."""

    def __init__(self):
        self._bufs: dict[str, torch.Tensor] = {}

    def get(self, name: str, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        buf = self._bufs.get(name)
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
            buf = torch.empty(max(n, 1), dtype=dtype, device=device)
            self._bufs[name] = buf
        return buf[:n]


def gather(mask: torch.Tensor, *arrays: torch.Tensor, work: Workspace | None = None) -> tuple[Segments, list[torch.Tensor]]:
    """Flat float64 vectors of the valid pixels of each (B, ...) array, image after image (fresh
    tensors, or buffers of ``work`` that the caller may overwrite)."""
    b = mask.shape[0]
    m = mask.reshape(b, -1)
    idx = flat_nonzero(m)
    counts = m.sum(1)
    n = int(idx.numel())
    out = []
    for i, a in enumerate(arrays):
        flat = a.reshape(-1)
        if work is None:
            out.append(flat.index_select(0, idx).to(F64))
            continue
        if flat.dtype == F64:
            out.append(torch.index_select(flat, 0, idx, out=work.get(f"g{i}", n, F64, flat.device)))
        else:
            tmp = torch.index_select(flat, 0, idx, out=work.get(f"s{i}_{flat.dtype}", n, flat.dtype, flat.device))
            out.append(work.get(f"g{i}", n, F64, flat.device).copy_(tmp))
    return Segments(counts), out
