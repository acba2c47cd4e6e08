"""Batch samplers: which samples go into which batch, epoch by epoch.

Every sampler here yields lists of indices (a `batch_sampler` for the DataLoader) and
shares one contract:

- the order of epoch `e` is a pure function of (seed, e), so resuming needs only the
  epoch and the number of batches already done (`set_epoch(e, start=k)`);
- under distributed training each *global* batch (batch_size x world_size samples) is
  cut into one contiguous slice per rank, so every sample is seen once per epoch across
  ranks, every rank gets the same number of batches, and N processes at batch size b
  see exactly the batches one process sees at batch size N*b.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from torchguide.registry import SAMPLERS


class SeededBatch(list):
    """A batch of indices with its own seed: (seed, epoch, batch number) fixes its random transforms.

    Loader workers reseed from it before loading the batch, so augmentations do not depend
    on which worker loads which batch, and a run resumed mid-epoch sees the same images.
    """

    def __init__(self, indices: list[int], seed: int) -> None:
        super().__init__(indices)
        self.seed = seed


class EpochBatchSampler(Sampler[list[int]]):
    """Base: subclasses say how the global batches of an epoch are formed."""

    def __init__(self, size: int, batch_size: int, drop_last: bool = False, seed: int = 0,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.size, self.batch_size, self.drop_last = size, batch_size, drop_last
        self.seed, self.shuffle, self.rank, self.world_size = seed, shuffle, rank, world_size
        self.epoch, self.start = 0, 0
        self._batches: list[list[int]] | None = None
        self._sizes: list[int] = []

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the order of `epoch`, skipping its first `start` batches (for resume)."""
        self.epoch, self.start, self._batches = epoch, start, None

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)

    def global_batches(self) -> list[list[int]]:
        raise NotImplementedError

    def batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch (all of them, from batch 0)."""
        if self._batches is None:
            batches = self.global_batches()
            self._sizes = [len(b) for b in batches]
            self._batches = shard(batches, self.rank, self.world_size)
        return self._batches

    def global_sizes(self) -> list[int]:
        """The size of each global batch of the epoch (all ranks' slices together)."""
        self.batches()
        return self._sizes

    def __iter__(self) -> Iterator[list[int]]:
        base = ((self.seed * 100_003 + self.epoch) * 1_000_003) * 1_009 + self.rank
        for k, batch in enumerate(self.batches()[self.start:], self.start):
            yield SeededBatch(batch, (base + k * 1_009) % (1 << 63))

    def __len__(self) -> int:
        return len(self.batches()) - self.start

    def chunk(self, order: list[int]) -> list[list[int]]:
        """Cut an order into global batches, merging or dropping a short tail."""
        step = self.batch_size * self.world_size
        batches = [order[i:i + step] for i in range(0, len(order), step)]
        if batches and len(batches[-1]) < step:
            if self.drop_last:
                batches.pop()
            elif len(batches[-1]) < 2 * self.world_size and len(batches) > 1:
                batches[-2] += batches.pop()  # one sample per rank breaks BatchNorm in training
        return batches


def shard(batches: list[list[int]], rank: int, world_size: int) -> list[list[int]]:
    """Rank `rank`'s contiguous slice of every global batch."""
    if world_size == 1:
        return batches
    out = []
    for batch in batches:
        base, extra = divmod(len(batch), world_size)
        start = rank * base + min(rank, extra)
        out.append(batch[start:start + base + (rank < extra)])
    return out


class RandomBatches(EpochBatchSampler):
    """A fresh permutation every epoch (or the file order when `shuffle` is off)."""

    def global_batches(self) -> list[list[int]]:
        if self.shuffle:
            order = torch.randperm(self.size, generator=self.generator()).tolist()
        else:
            order = list(range(self.size))
        return self.chunk(order)


class SortedBatches(EpochBatchSampler):
    """The guide's way: sort by length once, same batches in the same order every epoch."""

    def __init__(self, lengths: Sequence[int], batch_size: int, **kwargs: object) -> None:
        super().__init__(len(lengths), batch_size, **kwargs)
        self.lengths = torch.as_tensor(lengths)

    def global_batches(self) -> list[list[int]]:
        order = torch.argsort(self.lengths, stable=True).tolist()
        return self.chunk(order)


class LengthBuckets(EpochBatchSampler):
    """Tight batches that still change every epoch.

    Each epoch: shuffle all indices, cut them into buckets of `bucket_size` samples,
    sort each bucket by length, cut it into batches, and shuffle the batch order.
    Batches hold sequences of similar length (little padding) while their content and
    order change from epoch to epoch, unlike a sort done once.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, bucket_size: int | None = None,
                 **kwargs: object) -> None:
        super().__init__(len(lengths), batch_size, **kwargs)
        self.lengths = torch.as_tensor(lengths)
        self.bucket_size = bucket_size or batch_size * self.world_size * 50

    def global_batches(self) -> list[list[int]]:
        gen = self.generator()
        order = torch.randperm(self.size, generator=gen) if self.shuffle else torch.arange(self.size)
        step = self.batch_size * self.world_size
        bucket = max(step, self.bucket_size // step * step)  # whole batches per bucket
        sorted_order = []
        for chunk in order.split(bucket):
            by_length = torch.argsort(self.lengths[chunk], stable=True)
            sorted_order += chunk[by_length].tolist()
        batches = self.chunk(sorted_order)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]
        return batches


@SAMPLERS.register("random")
def random(lengths: Sequence[int], batch_size: int, drop_last: bool = False, seed: int = 0,
           shuffle: bool = True, rank: int = 0, world_size: int = 1) -> RandomBatches:
    """Batches of a fresh random permutation every epoch."""
    return RandomBatches(len(lengths), batch_size, drop_last=drop_last, seed=seed, shuffle=shuffle,
                         rank=rank, world_size=world_size)


@SAMPLERS.register("sequential")
def sequential(lengths: Sequence[int], batch_size: int, drop_last: bool = False, seed: int = 0,
               shuffle: bool = True, rank: int = 0, world_size: int = 1) -> RandomBatches:
    """Batches in dataset order, every epoch the same."""
    return RandomBatches(len(lengths), batch_size, drop_last=drop_last, seed=seed, shuffle=False,
                         rank=rank, world_size=world_size)


@SAMPLERS.register("sorted")
def sorted_batches(lengths: Sequence[int], batch_size: int, drop_last: bool = False, seed: int = 0,
                   shuffle: bool = True, rank: int = 0, world_size: int = 1) -> SortedBatches:
    """The guide's sort-once batches: tight, but identical every epoch (for comparison)."""
    return SortedBatches(lengths, batch_size, drop_last=drop_last, seed=seed, shuffle=False,
                         rank=rank, world_size=world_size)


@SAMPLERS.register("length_buckets", aliases=["buckets"])
def length_buckets(lengths: Sequence[int], batch_size: int, bucket_size: int | None = None,
                   drop_last: bool = False, seed: int = 0, shuffle: bool = True, rank: int = 0,
                   world_size: int = 1) -> LengthBuckets:
    """Batches of similar length, reshuffled every epoch; `bucket_size` samples per sort."""
    return LengthBuckets(lengths, batch_size, bucket_size=bucket_size, drop_last=drop_last, seed=seed,
                         shuffle=shuffle, rank=rank, world_size=world_size)
