"""Episodes for few-shot learning: an N-way, K-shot, Q-query sampler that is seeded and DDP-aware, and a dataset
that turns an episode description into tensors by indexing an in-memory uint8 cache (no disk, no PIL).

* :class:`Episode`: which classes and which images, plus a seed for the episode's augmentation.
* :func:`draw_episode`: one episode from a numpy Generator.
* :class:`EpisodeSampler` (training): episode ``e`` of rank ``r`` in epoch ``t`` is drawn from the seed
  ``(seed, t, e * world_size + r)``, so ranks draw different episodes, every rank draws the same number per epoch,
  and the stream is independent of worker count and identical after a resume (``skip_first``).
* :class:`FixedEpisodes` (evaluation): episode ``i`` is a pure function of ``(seed, i)``; shard it with
  :class:`lit_papers.data.samplers.EvalShardSampler` for exact DDP metrics.
* :class:`EpisodeImages`: episode -> batch dict (see :meth:`EpisodeImages.build`).

A *class* is a pair (character, rotation k): rotating every drawing of a character by k * 90 degrees makes a new
class (Vinyals et al. 2016; Snell et al. 2017, sec. 3.1; Santoro et al. 2016, sec. 4.1).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from lit_papers.ops.affine import random_affine


@dataclass(frozen=True)
class Episode:
    """``classes`` int64 (B, N): class ids (rows of the class table); ``images`` int64 (B, N, K + Q): cache rows,
    the first K of each class are the support; ``seed``: the episode's augmentation / shuffling seed."""

    classes: np.ndarray
    images: np.ndarray
    seed: int
    shot: int


def episode_seed(*words: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([int(w) & 0xFFFFFFFF for w in words])


def draw_episode(rng: np.random.Generator, class_chars: np.ndarray, starts: np.ndarray, counts: np.ndarray, *,
                 way: int, shot: int, query: int, batch: int = 1) -> Episode:
    """``batch`` episodes of ``way`` distinct classes, each with ``shot + query`` distinct drawings.

    ``class_chars`` int64 (C,): the character of each class; the character's drawings are cache rows
    ``starts[c] : starts[c] + counts[c]``.
    """
    per_class = shot + query
    classes = np.stack([rng.choice(len(class_chars), size=way, replace=False) for _ in range(batch)])  # (B, N)
    chars = class_chars[classes]  # (B, N)
    available = counts[chars]  # (B, N)
    # a random permutation of each class's drawings: argsort of uniform keys, invalid slots pushed to the end
    width = int(available.max())
    keys = rng.random((*chars.shape, width))  # (B, N, width)
    keys[np.arange(width) >= available[..., None]] = 2.0
    picks = np.argsort(keys, axis=-1)[..., :per_class]  # (B, N, K + Q)
    images = starts[chars][..., None] + picks
    seed = int(rng.integers(0, 2**31 - 1))
    return Episode(classes=classes.astype(np.int64), images=images.astype(np.int64), seed=seed, shot=shot)


def check_episode_feasible(class_chars: np.ndarray, counts: np.ndarray, *, way: int, shot: int, query: int,
                           what: str) -> None:
    if way > len(class_chars):
        raise ValueError(f"{what}: {way}-way episodes need {way} classes but the split has {len(class_chars)}")
    if len(class_chars) and counts[class_chars].min() < shot + query:
        raise ValueError(f"{what}: a class has only {int(counts[class_chars].min())} drawings but an episode needs "
                         f"{shot} shot + {query} query = {shot + query}")


class EpisodeSampler(Sampler):
    """Training episodes: ``episodes`` per epoch in total, split evenly over ranks (ceil, so all ranks step equally);
    each item is an :class:`Episode` of ``batch`` episodes."""

    def __init__(self, class_chars: np.ndarray, starts: np.ndarray, counts: np.ndarray, *, way: int, shot: int,
                 query: int, episodes: int, batch: int = 1, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        if episodes <= 0:
            raise ValueError("episodes per epoch must be positive")
        check_episode_feasible(class_chars, counts, way=way, shot=shot, query=query, what="training split")
        self.class_chars, self.starts, self.counts = class_chars, starts, counts
        self.way, self.shot, self.query, self.batch = way, shot, query, batch
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.per_rank = math.ceil(episodes / world_size)
        self.epoch = 0
        self._skip_epoch: int | None = None
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def skip_first(self, epoch: int, count: int) -> None:
        """Resume support: in ``epoch`` only, skip this rank's first ``count`` items."""
        self._skip_epoch, self._skip = epoch, count

    def episode(self, epoch: int, local_index: int) -> Episode:
        global_index = local_index * self.world_size + self.rank
        rng = np.random.default_rng(episode_seed(self.seed, epoch, global_index))
        return draw_episode(rng, self.class_chars, self.starts, self.counts, way=self.way, shot=self.shot,
                            query=self.query, batch=self.batch)

    def __iter__(self) -> Iterator[Episode]:
        first = self._skip if self._skip_epoch == self.epoch else 0
        for i in range(first, self.per_rank):
            yield self.episode(self.epoch, i)

    def __len__(self) -> int:
        return self.per_rank


@dataclass(frozen=True)
class EpisodeTask:
    """An evaluation protocol: ``episodes`` fixed episodes of ``way``-way ``shot``-shot with ``query`` queries per
    class (Snell et al. 2017: 1000 episodes, 5 or 20 way, 1 or 5 shot; Vinyals et al.: 15 queries for 5-way)."""

    way: int = 5
    shot: int = 1
    query: int = 15
    episodes: int = 1000

    @property
    def name(self) -> str:
        return f"{self.way}way_{self.shot}shot"


class EpisodeImages:
    """Builds batch tensors from cache rows.

    ``images`` uint8 (M, S, S), ink = 255; ``class_table`` int64 (C, 2) = (character, rotation k).
    ``augment``: (max rotation in degrees, max shift in pixels) of a random affine per drawing, or None.
    ``shuffle``: randomly order each episode's support set (sequence tasks such as MANN) and query set.
    """

    def __init__(self, images: np.ndarray | torch.Tensor, class_table: np.ndarray, *,
                 augment: tuple[float, float] | None = None, shuffle: bool = False) -> None:
        self.images = torch.as_tensor(images)
        self.class_table = torch.as_tensor(class_table, dtype=torch.int64)
        self.augment = augment
        self.shuffle = shuffle

    def build(self, episode: Episode, task: str = "train") -> dict:
        """-> dict with ``support`` float (B, N*K, 1, S, S) in [0, 1] (ink = 1), ``support_labels`` int64 (B, N*K)
        in 0..N-1, ``query`` (B, N*Q, 1, S, S), ``query_labels`` (B, N*Q), ``classes`` int64 (B, N) (class ids),
        ``task`` (str), ``support_keys`` / ``query_keys`` int64 = cache row * 4 + rotation (the same key means the
        same input image unless ``augmented``). Without shuffling the sets are class-major: label n for rows n*K .. n*K+K-1."""
        ids = torch.from_numpy(episode.images)  # (B, N, K+Q)
        b, n, m = ids.shape
        k = episode.shot
        x = self.images[ids]  # (B, N, K+Q, S, S) uint8
        rot = self.class_table[torch.from_numpy(episode.classes), 1]  # (B, N)
        for turns in (1, 2, 3):
            mask = rot == turns
            if mask.any():
                x[mask] = torch.rot90(x[mask], turns, dims=(-2, -1))
        x = x.to(torch.float32).div_(255.0).unsqueeze(3)  # (B, N, K+Q, 1, S, S)
        gen = torch.Generator().manual_seed(episode.seed)
        if self.augment is not None and (self.augment[0] > 0 or self.augment[1] > 0):
            x = random_affine(x.reshape(b * n * m, *x.shape[3:]), *self.augment, generator=gen).reshape(x.shape)
        labels = torch.arange(n).view(1, n, 1).expand(b, n, m)  # (B, N, K+Q)
        keys = ids * 4 + rot.unsqueeze(-1)  # (B, N, K+Q): identifies (drawing, rotation) for embedding caches
        size = x.shape[-1]
        support = x[:, :, :k].reshape(b, n * k, 1, size, size)
        query = x[:, :, k:].reshape(b, n * (m - k), 1, size, size)
        support_labels = labels[:, :, :k].reshape(b, n * k)
        query_labels = labels[:, :, k:].reshape(b, n * (m - k))
        support_keys = keys[:, :, :k].reshape(b, n * k)
        query_keys = keys[:, :, k:].reshape(b, n * (m - k))
        if self.shuffle:
            order = torch.argsort(torch.rand(b, n * k, generator=gen), dim=1)  # (B, N*K)
            support = support[torch.arange(b)[:, None], order]
            support_labels = torch.gather(support_labels, 1, order)
            support_keys = torch.gather(support_keys, 1, order)
            if m > k:
                qorder = torch.argsort(torch.rand(b, n * (m - k), generator=gen), dim=1)
                query = query[torch.arange(b)[:, None], qorder]
                query_labels = torch.gather(query_labels, 1, qorder)
                query_keys = torch.gather(query_keys, 1, qorder)
        return {"support": support, "support_labels": support_labels.contiguous(), "query": query,
                "query_labels": query_labels.contiguous(), "classes": torch.from_numpy(episode.classes), "task": task,
                "support_keys": support_keys.contiguous(), "query_keys": query_keys.contiguous(),
                "augmented": self.augment is not None}


class TrainEpisodes(Dataset):
    """Map-style dataset whose "index" is an :class:`Episode` from :class:`EpisodeSampler` (DataLoader with
    ``batch_size=None``)."""

    def __init__(self, builder: EpisodeImages) -> None:
        self.builder = builder

    def __getitem__(self, episode: Episode) -> dict:
        return self.builder.build(episode, "train")

    def __len__(self) -> int:  # pragma: no cover - the sampler defines the length
        raise TypeError("TrainEpisodes is indexed by episodes; its length is the sampler's")


class FixedEpisodes(Dataset):
    """``task.episodes`` evaluation episodes, episode ``i`` a pure function of ``(seed, way, shot, i)``."""

    def __init__(self, builder: EpisodeImages, class_chars: np.ndarray, starts: np.ndarray, counts: np.ndarray, *,
                 task: EpisodeTask, seed: int, prefix: str = "") -> None:
        check_episode_feasible(class_chars, counts, way=task.way, shot=task.shot, query=task.query,
                               what=f"{prefix}{task.name} evaluation split")
        self.builder, self.task, self.seed = builder, task, seed
        self.class_chars, self.starts, self.counts = class_chars, starts, counts
        self.name = prefix + task.name

    def episode(self, index: int) -> Episode:
        rng = np.random.default_rng(episode_seed(self.seed, self.task.way, self.task.shot, index))
        return draw_episode(rng, self.class_chars, self.starts, self.counts, way=self.task.way, shot=self.task.shot,
                            query=self.task.query)

    def __getitem__(self, index: int) -> dict:
        return self.builder.build(self.episode(index), self.name)

    def __len__(self) -> int:
        return self.task.episodes
