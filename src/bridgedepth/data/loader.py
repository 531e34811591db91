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

With ``shuffle_group=g`` (the trainer's mode) a reader does not stream its shards one after the other
through a buffer: it takes them ``g`` at a time and reads the samples of each group in a seeded random
permutation (random access into the tars, see :class:`~bridgedepth.data.shards.IndexedShard`). Samples
that sit next to each other in a shard (the 4 generated images of one depth map) are then spread over
the whole group of ``g x samples_per_shard`` samples, and the reading order of an epoch is a function of
the manifest's sample counts alone, so it can be resumed at any position without reading what came
before. :class:`ShardStream` is that order as an endless, resumable stream (epoch after epoch) for one
rank and its DataLoader workers.
"""

from __future__ import annotations

import copy
import os
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import InputError
from .refs import REF_FIELD, SourceResolver, fields_to_decode
from .shards import IndexedShard, iter_shard, require_complete


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
        shuffle_group: when > 0 (and ``shuffle``), read each reader's shards this many at a time, the
            samples of a group in a seeded random permutation (random access; ``shuffle_buffer`` is
            then unused). See the module docstring.
        verify: check each shard's sha256 before reading it (cached per unchanged file); this also
            applies to the source shards that samples' ``source_ref`` fields point to.
        allow_incomplete: read only the complete shards of a set still being written instead of
            refusing it.
        resolve: add the fields of each sample's ``source_ref`` (:mod:`bridgedepth.data.refs`), through
            one LRU of open source shards per reader.

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
        shuffle_group: int = 0,
        verify: bool = True,
        allow_incomplete: bool = False,
        resolve: bool = True,
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
        self.shuffle_group = int(shuffle_group)
        if self.shuffle_group < 0:
            raise InputError(f"ShardDataset: shuffle_group must be >= 0, got {shuffle_group}")
        self.verify = bool(verify)
        self.resolve = bool(resolve)
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

    def _reader_shards(self, epoch: int, reader: int, readers: int) -> list[int]:
        """Indices into ``self.shards`` that reader ``reader`` of ``readers`` reads in ``epoch``."""
        order = list(range(len(self.shards)))
        if self.shuffle:
            random.Random(self.seed + epoch).shuffle(order)
        return order[reader::readers]

    def _assigned(self, rank: int, worker: int, num_workers: int) -> list[tuple[Path, str, int]]:
        readers = self.world_size * num_workers
        reader = rank * num_workers + worker
        return [self.shards[j] for j in self._reader_shards(self.epoch, reader, readers)]

    def reader_length(self, epoch: int, reader: int, readers: int) -> int:
        """Samples reader ``reader`` of ``readers`` reads in ``epoch`` (from the manifest counts)."""
        return sum(self.shards[j][2] for j in self._reader_shards(epoch, reader, readers))

    def epoch_plan(self, epoch: int, reader: int, readers: int) -> np.ndarray:
        """The reading order of one reader in one epoch as an (n, 2) array of (index into
        ``self.shards``, sample index in that shard), computed from the manifest counts only.

        Without ``shuffle_group`` (or ``shuffle``) this is shard order; with it, the reader's shards
        are split into ``ceil(len / shuffle_group)`` consecutive groups of near-equal size and each
        group's samples are permuted by a generator seeded by (seed, epoch, reader, readers).
        """
        shards = self._reader_shards(epoch, reader, readers)
        parts = [np.stack([np.full(self.shards[j][2], j), np.arange(self.shards[j][2])], 1) for j in shards]
        if not parts:
            return np.zeros((0, 2), np.int64)
        if not (self.shuffle and self.shuffle_group > 0):
            return np.concatenate(parts).astype(np.int64)
        rng = np.random.default_rng([self.seed, epoch, reader, readers])
        n_groups = -(-len(parts) // self.shuffle_group)
        out = []
        for group in np.array_split(np.arange(len(parts)), n_groups):
            items = np.concatenate([parts[i] for i in group])
            out.append(items[rng.permutation(len(items))])
        return np.concatenate(out).astype(np.int64)

    def read_plan(self, plan: np.ndarray) -> Iterator[dict]:
        """Decode the samples of ``plan`` (rows of :meth:`epoch_plan`) in order. Only shards with a
        sample in ``plan`` are opened (checked and their headers scanned); each is closed after its
        last sample in ``plan``."""
        if len(plan) == 0:
            return
        last = {int(j): i for i, j in enumerate(plan[:, 0])}
        open_: dict[int, IndexedShard] = {}
        resolver = self._resolver()
        decode = fields_to_decode(self.fields) if self.resolve else self.fields
        try:
            for i, (j, k) in enumerate(plan.tolist()):
                shard = open_.get(j)
                if shard is None:
                    path, sha, n = self.shards[j]
                    shard = open_[j] = IndexedShard(path, sha256=sha if self.verify else None, expected=n)
                s = shard.sample(k, decode)
                if self.resolve and REF_FIELD in s:
                    resolver.resolve(s, shard.path.parent, where=str(shard.path), fields=self.fields)
                yield s
                if last[j] == i:
                    open_.pop(j).close()
        finally:
            for shard in open_.values():
                shard.close()
            resolver.close()

    def _resolver(self) -> SourceResolver:
        # a group of g referencing shards made from g source shards: keep them all open
        return SourceResolver(max_open=max(16, 2 * self.shuffle_group), verify=self.verify)

    def shards_for(self, rank: int, worker: int = 0, num_workers: int = 1) -> list[Path]:
        """The shard files reader (rank, worker) reads in the current epoch, in reading order."""
        return [p for p, _, _ in self._assigned(rank, worker, num_workers)]

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        if self.shuffle and self.shuffle_group > 0:
            readers = self.world_size * num_workers
            samples = self.read_plan(self.epoch_plan(self.epoch, self.rank * num_workers + worker, readers))
        else:
            samples = self._samples(self._assigned(self.rank, worker, num_workers))
        if self.shuffle and self.shuffle_group <= 0 and self.shuffle_buffer > 1:
            rng = random.Random(f"{self.seed}/{self.epoch}/{self.rank}/{worker}/{num_workers}")
            samples = _buffer_shuffle(samples, self.shuffle_buffer, rng)
        for s in samples:
            if self.transform is not None:
                s = self.transform(s)
                if s is None:
                    continue
            yield s

    def _samples(self, shards: list[tuple[Path, str, int]]) -> Iterator[dict]:
        with self._resolver() as resolver:
            for path, sha, _n in shards:
                yield from iter_shard(path, sha256=sha if self.verify else None, fields=self.fields,
                                      cache_checksum=True, resolve=self.resolve, resolver=resolver)


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


class ShardStream(IterableDataset):
    """One rank's endless, resumable stream over a :class:`ShardDataset`: epoch 0, 1, 2, ... in the
    order of :meth:`ShardDataset.epoch_plan`, each item ``transform(sample, epoch)`` (default: the
    sample with ``"__epoch__"`` added).

    ``num_workers`` must be the DataLoader's (0 or 1: read in this process, or one worker); the rank's
    data is dealt to ``k = max(1, num_workers)`` readers. Each reader's items are cut into chunks of
    ``chunk`` consecutive items and a worker yields ``pack(list of items)`` per chunk (with ``chunk``
    1 and no ``pack``: the items themselves), so that a DataLoader moves several items per
    inter-process message. The DataLoader returns its workers' chunks round robin: chunk ``c`` of the
    stream is chunk ``c // k`` of reader ``c % k`` (no worker ever runs out: every reader holds at
    least one non-empty shard, see :meth:`max_workers`). ``start`` resumes at item ``start``: each
    worker skips its share, whole epochs and whole shards by the manifest counts, without opening
    them (a chunk consumed in part is continued, shorter, by its reader). The order depends on the
    number of workers (and on ``chunk`` when there are several): resuming with another gives a
    different (still complete per epoch) order. Empty shards are left out.
    """

    def __init__(self, dataset: ShardDataset, *, start: int = 0, num_workers: int = 0,
                 transform: Callable[[dict, int], object] | None = None, chunk: int = 1,
                 pack: Callable[[list], object] | None = None):
        super().__init__()
        ds = copy.copy(dataset)
        ds.shards = [s for s in dataset.shards if s[2] > 0]
        ds.transform = None
        self.dataset = ds
        self.workers = max(1, int(num_workers))
        self.start = int(start)
        if self.start < 0:
            raise InputError(f"ShardStream: start must be >= 0, got {start}")
        self.chunk = int(chunk)
        if self.chunk < 1:
            raise InputError(f"ShardStream: chunk must be >= 1, got {chunk}")
        self.transform, self.pack = transform, pack
        limit = self.max_workers(dataset)
        if limit == 0:
            where = ", ".join(str(d) for d in ds.dirs)
            raise InputError(f"{where}: {len(ds.shards)} non-empty shard(s) for {ds.world_size} ranks, so rank "
                             f"{ds.rank} has no training samples; write more, smaller shards "
                             "(data.samples_per_shard) or use fewer processes")
        if self.workers > limit:
            raise InputError(f"ShardStream: {self.workers} workers per rank need at least "
                             f"{self.workers * ds.world_size} non-empty shards, the set has {len(ds.shards)}")

    @staticmethod
    def max_workers(dataset: ShardDataset) -> int:
        """The most readers per rank that each get at least one non-empty shard every epoch."""
        return sum(1 for s in dataset.shards if s[2] > 0) // dataset.world_size

    def locate(self, worker: int, count: int) -> tuple[int, int]:
        """(epoch, position in that epoch's plan) of reader ``worker``'s ``count``-th item."""
        readers = self.dataset.world_size * self.workers
        reader = self.dataset.rank * self.workers + worker
        epoch = 0
        while True:
            n = self.dataset.reader_length(epoch, reader, readers)
            if count < n:
                return epoch, count
            count -= n
            epoch += 1

    def resume_point(self, worker: int) -> tuple[int, int, int]:
        """(reader, items it skips, length of its first chunk) for DataLoader worker ``worker``.

        Chunk ``c0 = start // chunk`` is the next one, ``o0 = start % chunk`` of its items are used.
        The DataLoader starts its round robin at worker 0, so worker ``w`` plays reader
        ``(c0 + w) % k``, whose next chunk is number ``(c0 + w) // k`` of its own; worker 0 continues
        chunk ``c0`` after its first ``o0`` items."""
        k, m = self.workers, self.chunk
        c0, o0 = divmod(self.start, m)
        first = o0 if worker == 0 else 0
        return (c0 + worker) % k, ((c0 + worker) // k) * m + first, m - first

    def _items(self, reader: int, count: int) -> Iterator[object]:
        ds, k = self.dataset, self.workers
        readers = ds.world_size * k
        epoch, offset = self.locate(reader, count)
        while True:
            plan = ds.epoch_plan(epoch, ds.rank * k + reader, readers)[offset:]
            for sample in ds.read_plan(plan):
                if self.transform is None:
                    sample["__epoch__"] = epoch
                    yield sample
                else:
                    yield self.transform(sample, epoch)
            epoch, offset = epoch + 1, 0

    def __iter__(self) -> Iterator[object]:
        info = get_worker_info()
        worker, k = (0, 1) if info is None else (info.id, info.num_workers)
        if k != self.workers:
            raise InputError(f"ShardStream made for {self.workers} worker(s) is read by {k}")
        reader, count, size = self.resume_point(worker)
        items = self._items(reader, count)
        if self.chunk == 1 and self.pack is None:
            yield from items
            return
        while True:
            group = [next(items) for _ in range(size)]
            yield self.pack(group) if self.pack is not None else group
            size = self.chunk
