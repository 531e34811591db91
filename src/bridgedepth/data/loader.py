"""Stream shard datasets into PyTorch DataLoaders (rank- and worker-aware).

Every epoch, the complete shards of all directories are put in one list, shuffled (when asked) with
a generator seeded by ``seed + epoch`` (identical on every rank), and dealt round-robin to the
``world_size * num_workers`` readers: reader ``rank * num_workers + worker_id`` takes shards
``j`` with ``j % (world_size * num_workers) == reader``. Each sample is therefore read exactly once
per epoch across all ranks and workers. Within a reader, samples pass through a shuffle buffer
seeded by (seed, epoch, reader).

Splitting is by whole shards, so ranks may see different numbers of samples in an epoch; give the
set at least ``world_size * num_workers`` shards of equal size, and let the training loop tolerate an
uneven last step (e.g. accelerate's ``even_batches`` / ``join_uneven_inputs``).
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import InputError
from .shards import iter_shard, require_complete


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class ShardDataset(IterableDataset):
    """A torch ``IterableDataset`` over one or more shard directories.

    Args:
        dirs: a dataset directory or a list of them (their shards are concatenated).
        shuffle: shuffle shard order (per epoch) and samples (through a buffer).
        seed: base seed; the order of epoch ``e`` depends only on ``seed + e``.
        transform: applied to each decoded sample dict; may return None to drop the sample.
        rank, world_size: this process's place among the data-parallel ranks; by default from
            ``torch.distributed`` if initialised, else the RANK / WORLD_SIZE environment variables.
        fields: decode only these fields (others are skipped without decoding).
        shuffle_buffer: samples held for shuffling within a reader (0 = shard order only).
        verify: check each shard's sha256 before reading it (cached per unchanged file).
        allow_incomplete: read only the complete shards of a set still being written instead of
            refusing it.

    Call ``set_epoch(e)`` before each epoch for a new order (the DataLoader copies the dataset into
    its workers when an epoch's iterator starts, so avoid ``persistent_workers=True`` with it).
    """

    def __init__(
        self,
        dirs: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        shuffle: bool = False,
        seed: int = 0,
        transform: Callable[[dict], dict | None] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        fields: Iterable[str] | None = None,
        shuffle_buffer: int = 64,
        verify: bool = True,
        allow_incomplete: bool = False,
    ):
        super().__init__()
        if isinstance(dirs, (str, os.PathLike)):
            dirs = [dirs]
        self.dirs = [Path(d) for d in dirs]
        if not self.dirs:
            raise InputError("ShardDataset: no dataset directories given")
        r, w = _dist_rank_world()
        self.rank = r if rank is None else int(rank)
        self.world_size = w if world_size is None else int(world_size)
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise InputError(f"ShardDataset: rank {self.rank} / world_size {self.world_size} is invalid")
        self.shuffle, self.seed, self.transform = bool(shuffle), int(seed), transform
        self.fields = None if fields is None else list(fields)
        self.shuffle_buffer = int(shuffle_buffer)
        self.verify = bool(verify)
        self.epoch = 0
        self.shards: list[tuple[Path, str, int]] = []  # (path, sha256, samples)
        for d in self.dirs:
            m = require_complete(d, "finish the writer or pass allow_incomplete=True", allow_incomplete)
            self.shards += [(d / s.name, s.sha256 or "", s.samples) for s in m.shards if s.complete]

    @property
    def num_samples(self) -> int:
        """Samples in the whole set (all ranks together), before ``transform`` drops any."""
        return sum(n for _, _, n in self.shards)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _assigned(self, rank: int, worker: int, num_workers: int) -> list[tuple[Path, str, int]]:
        order = list(range(len(self.shards)))
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(order)
        readers = self.world_size * num_workers
        reader = rank * num_workers + worker
        return [self.shards[j] for j in order[reader::readers]]

    def shards_for(self, rank: int, worker: int = 0, num_workers: int = 1) -> list[Path]:
        """The shard files reader (rank, worker) reads in the current epoch, in reading order."""
        return [p for p, _, _ in self._assigned(rank, worker, num_workers)]

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        samples = self._samples(self._assigned(self.rank, worker, num_workers))
        if self.shuffle and self.shuffle_buffer > 1:
            rng = random.Random(f"{self.seed}/{self.epoch}/{self.rank}/{worker}/{num_workers}")
            samples = _buffer_shuffle(samples, self.shuffle_buffer, rng)
        for s in samples:
            if self.transform is not None:
                s = self.transform(s)
                if s is None:
                    continue
            yield s

    def _samples(self, shards: list[tuple[Path, str, int]]) -> Iterator[dict]:
        for path, sha, _n in shards:
            yield from iter_shard(path, sha256=sha if self.verify else None, fields=self.fields,
                                  cache_checksum=True)


def _buffer_shuffle(it: Iterator[dict], size: int, rng: random.Random) -> Iterator[dict]:
    buf: list[dict] = []
    for x in it:
        if len(buf) < size:
            buf.append(x)
            continue
        j = rng.randrange(size)
        buf[j], x = x, buf[j]
        yield x
    rng.shuffle(buf)
    yield from buf
