"""The base of every dataset family's LightningDataModule: DDP sharding, exact evaluation, exact resume.

Subclasses build datasets in ``setup`` and call :meth:`train_loader` / :meth:`eval_loader`.

* Sharding is done here, not by Lightning (the CLI sets ``use_distributed_sampler=False``): training uses
  :class:`ShardSampler` (seeded, equal length per rank), evaluation :class:`EvalShardSampler` (no padding,
  so metrics are exact under DDP).
* Mid-epoch resume: the datamodule's ``state_dict`` (saved by Lightning inside every checkpoint) records
  the epoch and the number of batches the training loop has consumed; after a restart the sampler skips
  exactly those, so an interrupted run ends with the same weights as an uninterrupted one.
* :meth:`report_split` prints one line per split at setup (where the data comes from, how much was kept and
  skipped, by reason; rank zero only) and stores the counts in every attached logger (W&B, CSV) as
  ``data/<split>/<count>`` hyperparameters.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from lit_papers.data.samplers import EvalShardSampler, ShardSampler


class ShardedDataModule(L.LightningDataModule):
    def __init__(self, *, batch_size: int, num_workers: int, seed: int | None = None) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self._resume: tuple[int, int] | None = None
        self._train_sampler: ShardSampler | None = None

    # -- distribution -------------------------------------------------------------------------------
    def world(self) -> tuple[int, int]:
        """(rank, world_size) of the attached trainer, (0, 1) without one."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def data_seed(self) -> int:
        """Seed of the data order and augmentation: ``seed`` if given, else the run's ``seed_everything``."""
        if self.seed is not None:
            return self.seed
        return int(os.environ.get("PL_GLOBAL_SEED", 0))

    # -- what was loaded -------------------------------------------------------------------------------
    def report_split(self, split: str, line: str, counts: dict[str, int | float | str]) -> None:
        """Print ``[lit-papers] data <split>: <line>`` once (rank zero) and log ``counts`` to the trainer's
        loggers as ``data/<split>/<key>`` (no-op without a trainer)."""
        rank, _ = self.world()
        if rank == 0:
            print(f"[lit-papers] data {split}: {line}", file=sys.stderr, flush=True)
        trainer = self.trainer
        loggers = list(getattr(trainer, "loggers", None) or []) if trainer is not None else []
        params = {f"data/{split}/{k}": v for k, v in counts.items()}
        for logger in loggers:
            logger.log_hyperparams(params)

    # -- loaders --------------------------------------------------------------------------------------
    def train_loader(self, dataset: Dataset, *, collate_fn=None, drop_last: bool = True, **kwargs) -> DataLoader:
        rank, world = self.world()
        sampler = ShardSampler(len(dataset), shuffle=True, seed=self.data_seed(), rank=rank, world_size=world)
        if self._resume is not None:
            epoch, batches = self._resume
            sampler.skip_first(epoch, batches * self.batch_size)
            self._resume = None
        self._train_sampler = sampler
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            drop_last=drop_last,
            collate_fn=collate_fn,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def eval_loader(self, dataset: Dataset, *, batch_size: int | None = None, collate_fn=None, **kwargs) -> DataLoader:
        rank, world = self.world()
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size,
            sampler=EvalShardSampler(len(dataset), rank=rank, world_size=world),
            num_workers=self.num_workers,
            collate_fn=collate_fn,
            **kwargs,
        )

    # -- resume -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        trainer = self.trainer
        if trainer is None or trainer.state.fn != "fit":
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        return {"epoch": trainer.current_epoch, "batches_done": progress.ready}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "epoch" in state_dict:
            self._resume = (int(state_dict["epoch"]), int(state_dict["batches_done"]))
