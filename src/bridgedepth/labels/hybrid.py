"""The hybrid dataset reader: per labelled sample, the RGB, the target disparity, the valid mask and
a per-pixel source map (0 none, 1 teacher pseudo-label, 2 ground truth).

``student-pseudo`` uses the pseudo-label everywhere; ``student-hybrid`` replaces it by the exact
ground truth inside the similarity mask of accepted samples (the pseudo-label first aligned to the GT
disparity there; see :func:`bridgedepth.data.targets.hybrid_target`). Original synthetic samples
(RGB + GT) can be mixed in by weight: in training, pass them as another
:class:`bridgedepth.mde.trainer.TrainData` with target ``gt``.
"""

from __future__ import annotations

import os
from typing import Iterator

from ..data.targets import SOURCE_GT, SOURCE_NONE, SOURCE_PSEUDO, hybrid_target, sample_target

__all__ = ["iter_hybrid", "hybrid_target", "sample_target", "SOURCE_NONE", "SOURCE_PSEUDO", "SOURCE_GT"]


def iter_hybrid(labelled_dir: str | os.PathLike, mode: str = "hybrid") -> Iterator[dict]:
    """Yield ``{"__key__", "rgb", "target", "valid", "source"}`` for every labelled sample.

    ``mode`` is ``"hybrid"`` (masked GT + pseudo-labels) or ``"pseudo"`` (pseudo-labels only)."""
    from ..data.shards import iter_samples

    for sample in iter_samples(labelled_dir):
        target, valid, source = sample_target(sample, mode)
        yield {"__key__": sample["__key__"], "rgb": sample["rgb"], "target": target, "valid": valid,
               "source": source}
