"""Aspect-ratio grouping (Detectron; torchvision's ``GroupedBatchSampler``): batches hold images of one group
(landscape or portrait) so that padding to the largest image in a batch wastes little.

Wraps a :class:`~lit_papers.data.samplers.ShardSampler` (seeded, DDP-sharded, yields ``(index, seed)``). Every
rank yields exactly ``len(shard) // batch_size`` batches (DDP needs equal step counts): group-pure batches are
emitted as soon as a group fills up; the leftovers at the end of the epoch are merged into mixed batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class GroupedBatchSampler(Sampler):
    def __init__(self, sampler, group_ids: Sequence[int], batch_size: int) -> None:
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size
        self._skip: tuple[int, int] | None = None

    def skip_first(self, epoch: int, batches: int) -> None:
        """Resume support: in ``epoch`` only, skip the first ``batches`` batches."""
        self._skip = (epoch, batches)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def batches(self) -> Iterator[list]:
        total = len(self)
        buffers: dict[int, list] = {}
        emitted = 0
        for item in self.sampler:
            index = item[0] if isinstance(item, tuple) else item
            buf = buffers.setdefault(self.group_ids[index], [])
            buf.append(item)
            if len(buf) == self.batch_size:
                yield list(buf)
                buf.clear()
                emitted += 1
                if emitted == total:
                    return
        leftovers = [item for buf in buffers.values() for item in buf]
        for start in range(0, len(leftovers) - self.batch_size + 1, self.batch_size):
            if emitted == total:
                return
            yield leftovers[start : start + self.batch_size]
            emitted += 1

    def __iter__(self) -> Iterator[list]:
        skip = 0
        if self._skip is not None and self._skip[0] == self.sampler.epoch:
            skip = self._skip[1]
            self._skip = None
        for i, batch in enumerate(self.batches()):
            if i >= skip:
                yield batch

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size
