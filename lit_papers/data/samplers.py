"""Samplers that shard a dataset across DDP ranks themselves (the Trainer runs with
``use_distributed_sampler=False``), reproducibly and resumably.

* :class:`ShardSampler` (training): one seeded permutation per epoch, identical on every rank; rank ``r``
  takes positions ``r, r + W, r + 2W, ...``. The permutation is padded by wrapping so that every rank gets
  the same number of samples (DDP needs equal step counts). It yields ``(index, sample_seed)`` so that
  random augmentation is a pure function of (seed, epoch, index): independent of worker count, and
  identical after a resume.
* :class:`EvalShardSampler` (validation/test): contiguous, *unpadded* shards, so that every example is
  evaluated exactly once and a metric summed over ranks equals the single-process one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for one sample's augmentation, a pure function of (seed, epoch, index)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, epoch, index]).generate_state(1)[0])


class ShardSampler(Sampler):
    def __init__(
        self,
        num_samples: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        with_seeds: bool = True,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("ShardSampler needs a non-empty dataset")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.with_seeds = with_seeds
        self.epoch = 0
        self.per_rank = math.ceil(num_samples / world_size)
        self._skip_epoch: int | None = None
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_first(self, epoch: int, count: int) -> None:
        """Resume support: in ``epoch`` only, skip the first ``count`` samples of this rank's shard."""
        self._skip_epoch, self._skip = epoch, count

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / len(order)))[:total]  # pad by wrapping
        return order[self.rank :: self.world_size]

    def __iter__(self) -> Iterator:
        shard = self.indices()
        if self._skip_epoch == self.epoch:
            shard = shard[self._skip :]
        for index in shard:
            yield (index, sample_seed(self.seed, self.epoch, index)) if self.with_seeds else index

    def __len__(self) -> int:
        return self.per_rank


class EvalShardSampler(Sampler):
    """Contiguous unpadded shard ``[start, stop)`` of ``range(num_samples)`` for this rank."""

    def __init__(self, num_samples: int, *, rank: int = 0, world_size: int = 1) -> None:
        base, extra = divmod(num_samples, world_size)
        self.start = rank * base + min(rank, extra)
        self.stop = self.start + base + (1 if rank < extra else 0)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
