"""OmniglotDataModule: episodic few-shot data from the official Omniglot archives (Lake et al. 2015).

Everything is decoded once into a uint8 cache (ink = 255, side ``image_size``): 136 characters x 20 drawings at
28x28 is 2 MB, the full 1,623 characters 25 MB. Training batches are :class:`~lit_papers.data.episodes.Episode`\\ s
drawn by a seeded, DDP-aware :class:`~lit_papers.data.episodes.EpisodeSampler` and assembled by indexing the cache.

Class-level splits (a class is a character, or a (character, 90-degree rotation) pair when ``rotations``):

* ``characters`` / ``alphabets``: a seeded split of the characters / alphabets of ``sources`` into
  train / val / test (``val_size``, ``test_size``: a count of characters/alphabets, or a fraction);
* ``vinyals``: the split of Vinyals et al. 2016 as distributed with Prototypical Networks (1028 / 172 / 423
  characters, each rotation listed as its own class) from ``<root>/omniglot/splits/vinyals/{train,val,test}.txt``;
  needs ``images_background`` + ``images_evaluation``. ``vinyals_train: trainval`` trains on ``trainval.txt``
  (train + val, 1200 characters: the reference code's final run once the stopping point is chosen on val, and
  Santoro et al.'s 1200 training characters); val then still reads ``val.txt`` (it is inside training: a
  monitor only, never a selection criterion).

Archives: an existing archive is used as it is and its md5 is logged (a rebuilt archive whose pixels equal the
official ones but whose md5 differs is accepted); a downloaded archive must match the official md5.

Test sets: the 20 official 20-way one-shot runs (``all_runs.zip``, evaluation alphabets, disjoint from
``images_background*``) when ``official_runs``, plus ``test_tasks`` fixed episodes on the test split.
Batches are dicts (see :meth:`EpisodeImages.build`): ``support`` (B, N*K, 1, S, S) float in [0, 1] with ink = 1,
``support_labels`` (B, N*K) in 0..N-1, ``query``, ``query_labels``, ``classes``, ``task``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lit_papers.data.base import ShardedDataModule
from lit_papers.data.download import DatasetError, DatasetMissingError, Remote, fetch, md5sum
from lit_papers.data.episodes import (
    EpisodeImages,
    EpisodeSampler,
    EpisodeTask,
    FixedEpisodes,
    TrainEpisodes,
)
from lit_papers.data.omniglot_files import (
    REMOTES,
    CharacterImages,
    concat_characters,
    read_characters,
    read_official_runs,
    read_split_file,
)
from lit_papers.data.root import family_dir
from lit_papers.data.samplers import EvalShardSampler

log = logging.getLogger(__name__)

VINYALS_BASE = "https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/data/omniglot/splits/vinyals"
VINYALS_SPLITS = {s: Remote(f"{VINYALS_BASE}/{s}.txt", f"{s}.txt") for s in ("train", "val", "test", "trainval")}
OFFICIAL_TASK = "official_20way_1shot"


def split_sizes(total: int, val_size: int | float, test_size: int | float, what: str) -> tuple[int, int]:
    def count(size: int | float) -> int:
        return int(round(size * total)) if isinstance(size, float) else int(size)

    n_val, n_test = count(val_size), count(test_size)
    if n_val < 0 or n_test < 0 or n_val + n_test >= total:
        raise ValueError(f"val_size={val_size}, test_size={test_size} leave no training {what} out of {total}")
    return n_val, n_test


def split_units(units: list[str], val_size: int | float, test_size: int | float, seed: int,
                what: str) -> dict[str, set[str]]:
    """Seeded split of unit names (characters or alphabets) into {'train', 'val', 'test'} sets."""
    n_val, n_test = split_sizes(len(units), val_size, test_size, what)
    order = [units[i] for i in np.random.default_rng(seed).permutation(len(units))]
    return {"test": set(order[:n_test]), "val": set(order[n_test:n_test + n_val]), "train": set(order[n_test + n_val:])}


def class_table(chars: list[int], rotations: bool) -> np.ndarray:
    """int64 (C, 2): (character, rotation k) rows; with ``rotations`` each character gives 4 classes."""
    turns = (0, 1, 2, 3) if rotations else (0,)
    return np.array([(c, k) for c in chars for k in turns], dtype=np.int64).reshape(-1, 2)


class OfficialRunsDataset(Dataset):
    """The official runs as episodes: item ``r`` = run r+1 with support = its 20 training drawings (labels 0..19)."""

    name = OFFICIAL_TASK

    def __init__(self, support: np.ndarray, query: np.ndarray, query_labels: np.ndarray) -> None:
        self.support = torch.from_numpy(support)  # (R, N, S, S) uint8
        self.query = torch.from_numpy(query)  # (R, N, S, S) uint8
        self.query_labels = torch.from_numpy(query_labels)  # (R, N)

    def __len__(self) -> int:
        return len(self.support)

    def __getitem__(self, index: int) -> dict:
        n = self.support.shape[1]
        as_float = lambda x: x.to(torch.float32).div(255.0)[None, :, None]  # noqa: E731  (N, S, S) -> (1, N, 1, S, S)
        return {"support": as_float(self.support[index]), "support_labels": torch.arange(n)[None],
                "query": as_float(self.query[index]), "query_labels": self.query_labels[index][None],
                "classes": torch.arange(n)[None], "task": OFFICIAL_TASK}


class OmniglotDataModule(ShardedDataModule):
    """Episodic Omniglot.

    Args:
        root: data root holding ``omniglot/`` (default ``$LIT_PAPERS_DATA``).
        sources: archives to read (``.zip`` or extracted folder under ``omniglot/``).
        split: ``characters``, ``alphabets`` or ``vinyals`` (see the module docstring).
        vinyals_train: with ``split: vinyals``, the training split file: ``train`` (1028 characters) or
            ``trainval`` (1200 = train + val).
        val_size, test_size: held-out characters/alphabets (count) or fraction; ignored by ``vinyals``.
        split_seed: seed of the character/alphabet split.
        rotations: 90/180/270-degree rotations of every character are new classes (all splits).
        image_size: side of the cached images (28: Vinyals/Snell; 20: Santoro).
        way, shot, query: training episodes (Snell et al.: 60-way, 1 or 5 shot, 5 queries).
        episodes_per_epoch: training items per epoch (all ranks together); ``episodes_per_batch``: episodes per item.
        augment: (max rotation degrees, max shift pixels) random affine per training drawing, or null.
        shuffle: randomly order support/query within an episode (sequence models).
        val_tasks, test_tasks: fixed evaluation episodes on the val / test split.
        official_runs: add the 20 official 20-way one-shot runs (``all_runs.zip``) to the test sets.
        eval_seed: seed of the fixed evaluation episodes (kept apart from the training seed).
        seed: training episode seed (default: the run's ``seed_everything``).
        download: fetch missing official archives in ``prepare_data``.
    """

    def __init__(
        self,
        *,
        root: str | None = None,
        sources: list[str] = ["images_background_small1"],  # noqa: B006 - jsonargparse needs a literal default
        split: Literal["characters", "alphabets", "vinyals"] = "characters",
        vinyals_train: Literal["train", "trainval"] = "train",
        val_size: int | float = 0,
        test_size: int | float = 0,
        split_seed: int = 0,
        rotations: bool = True,
        image_size: int = 28,
        way: int = 60,
        shot: int = 1,
        query: int = 5,
        episodes_per_epoch: int = 100,
        episodes_per_batch: int = 1,
        augment: tuple[float, float] | None = None,
        shuffle: bool = False,
        val_tasks: list[EpisodeTask] | None = None,
        test_tasks: list[EpisodeTask] | None = None,
        official_runs: bool = True,
        eval_seed: int = 0,
        num_workers: int = 0,
        seed: int | None = None,
        download: bool = True,
    ) -> None:
        super().__init__(batch_size=1, num_workers=num_workers, seed=seed)
        self.save_hyperparameters()
        self.folder = family_dir("omniglot", root)
        self.val_tasks = list(val_tasks or [])
        self.test_tasks = list(test_tasks or [])
        self.characters: CharacterImages | None = None
        self.tables: dict[str, np.ndarray] = {}
        self.archive_md5: dict[str, str] = {}

    # -- files ------------------------------------------------------------------------------------------------
    def _source_path(self, name: str) -> Path | None:
        for candidate in (self.folder / f"{name}.zip", self.folder / name):
            if candidate.exists():
                return candidate
        return None

    def _needed(self) -> list[str]:
        return list(self.hparams.sources) + (["all_runs"] if self.hparams.official_runs else [])

    def prepare_data(self) -> None:
        for name in self._needed():
            existing = self._source_path(name)
            if existing is not None:
                self._log_md5(name, existing)
                continue
            remote = REMOTES.get(name)
            if remote is None or not self.hparams.download:
                raise DatasetMissingError(
                    f"{self.folder}: neither {name}.zip nor the folder {name}/ exists. Put the official file there "
                    f"({remote.url if remote else 'github.com/brendenlake/omniglot'}), or set download=true."
                )
            fetch(remote, self.folder, family="omniglot", expected=[f"{name}.zip", f"{name}/"])
        if self.hparams.split == "vinyals":
            for remote in (VINYALS_SPLITS[s] for s in (self.hparams.vinyals_train, "val", "test")):
                if not (self.folder / "splits" / "vinyals" / remote.filename).is_file():
                    if not self.hparams.download:
                        raise DatasetMissingError(f"{self.folder / 'splits' / 'vinyals' / remote.filename}: missing "
                                                  f"Vinyals split file; download {remote.url}")
                    fetch(remote, self.folder / "splits" / "vinyals", family="omniglot")

    def _log_md5(self, name: str, path: Path) -> None:
        """Log an existing archive's md5 next to the official one (a mismatch is accepted, not fatal)."""
        if not path.is_file():
            log.info("omniglot: using the extracted folder %s", path)
            return
        digest, official = md5sum(path), REMOTES[name].md5 if name in REMOTES else None
        self.archive_md5[name] = digest
        if official is None or digest == official:
            log.info("omniglot: %s md5 %s%s", path, digest, " (official)" if official else "")
        else:
            log.warning("omniglot: %s md5 %s differs from the official %s; using it as it is (e.g. the pixel-exact "
                        "rebuild whose PNG timestamp chunks differ); delete it to download the official file",
                        path, digest, official)

    # -- setup ------------------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.characters is not None:
            return
        hp = self.hparams
        parts = []
        for name in hp.sources:
            path = self._source_path(name)
            if path is None:
                raise DatasetMissingError(f"{self.folder}: {name}.zip (or folder {name}/) missing; run prepare_data "
                                          f"or download {REMOTES[name].url if name in REMOTES else name}")
            parts.append(read_characters(path, hp.image_size))
        chars = concat_characters(parts)
        self.characters = chars
        self.tables = self._split(chars)
        self.cache = torch.from_numpy(chars.images)  # (M, S, S) uint8, shared by all splits
        for stage_name, table in self.tables.items():
            log.info("omniglot %s split: %d classes", stage_name, len(table))
        if hp.official_runs:
            runs = read_official_runs(self._source_path("all_runs"), hp.image_size)
            self.official = OfficialRunsDataset(runs.support, runs.query, runs.query_labels)

    def _split(self, chars: CharacterImages) -> dict[str, np.ndarray]:
        hp = self.hparams
        index = {name: i for i, name in enumerate(chars.names)}
        if hp.split == "vinyals":
            tables = {}
            for stage_name in ("train", "val", "test"):
                file = hp.vinyals_train if stage_name == "train" else stage_name
                path = self.folder / "splits" / "vinyals" / f"{file}.txt"
                if not path.is_file():
                    raise DatasetMissingError(f"{path}: missing; download {VINYALS_BASE}/{file}.txt")
                rows = []
                for name, turns in read_split_file(path):
                    if name not in index:
                        raise DatasetError(f"{path} names {name} (alphabet {name.split('/')[0]}) but it is not in "
                                           f"{hp.sources}; the Vinyals split needs images_background + images_evaluation")
                    if hp.rotations or turns == 0:
                        rows.append((index[name], turns))
                tables[stage_name] = np.array(rows, dtype=np.int64).reshape(-1, 2)
            return tables
        units = sorted(set(chars.alphabets)) if hp.split == "alphabets" else list(chars.names)
        groups = split_units(units, hp.val_size, hp.test_size, hp.split_seed, hp.split)
        key = (lambda i: chars.alphabets[i]) if hp.split == "alphabets" else (lambda i: chars.names[i])
        return {s: class_table([i for i in range(len(chars.names)) if key(i) in groups[s]], hp.rotations)
                for s in ("train", "val", "test")}

    def _episodes_for(self, stage_name: str):
        """(EpisodeImages over this split's class table, class -> character array)."""
        table = self.tables[stage_name]
        builder = EpisodeImages(self.cache, table, augment=self.hparams.augment if stage_name == "train" else None,
                                shuffle=self.hparams.shuffle)
        return builder, table[:, 0].copy()

    # -- loaders ----------------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        builder, class_chars = self._episodes_for("train")
        rank, world = self.world()
        sampler = EpisodeSampler(class_chars, self.characters.starts, self.characters.counts, way=hp.way,
                                 shot=hp.shot, query=hp.query, episodes=hp.episodes_per_epoch,
                                 batch=hp.episodes_per_batch, seed=self.data_seed(), rank=rank, world_size=world)
        if self._resume is not None:
            sampler.skip_first(*self._resume)
            self._resume = None
        self._train_sampler = sampler
        return DataLoader(TrainEpisodes(builder), sampler=sampler, batch_size=None, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)

    def _fixed(self, stage_name: str, tasks: list[EpisodeTask]) -> list[Dataset]:
        if not tasks or len(self.tables[stage_name]) == 0:
            return []
        builder, class_chars = self._episodes_for(stage_name)
        return [FixedEpisodes(builder, class_chars, self.characters.starts, self.characters.counts, task=t,
                              seed=self.hparams.eval_seed) for t in tasks]

    def _eval_loader(self, dataset: Dataset) -> DataLoader:
        rank, world = self.world()
        return DataLoader(dataset, sampler=EvalShardSampler(len(dataset), rank=rank, world_size=world),
                          batch_size=None, num_workers=self.num_workers)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(d) for d in self._fixed("val", self.val_tasks)]

    def test_dataloader(self) -> list[DataLoader]:
        sets = ([self.official] if self.hparams.official_runs else []) + self._fixed("test", self.test_tasks)
        if not sets:
            raise ValueError("no test sets: enable official_runs or give test_tasks with a non-empty test split")
        return [self._eval_loader(d) for d in sets]
