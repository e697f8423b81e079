"""Checkpoints written atomically: serialise to a temporary file in the target folder, fsync, rename.

A crash (or SIGKILL) during a save leaves the previous ``last.ckpt`` intact and at worst a stray
``.<name>.tmp-<pid>`` file, never a truncated checkpoint under the real name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_papers.ops.checkpoint import CheckpointError, read_checkpoint  # noqa: F401  (re-exported)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        if "://" in str(path):  # remote filesystems: fall back to Lightning's writer
            return super().save_checkpoint(checkpoint, path, storage_options)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


class FinalLastCheckpoint(Callback):
    """Writes ``last.ckpt`` when training ends if the newest checkpoint is older than the final step.

    ``ModelCheckpoint(save_last=True)`` saves at validation or epoch ends only, so a run that stops at
    ``max_steps`` between two validations would otherwise end with a ``last.ckpt`` from before its last steps
    (and ``test`` on it would evaluate the wrong weights).
    """

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.interrupted or trainer.sanity_checking or trainer.fast_dev_run:
            return
        checkpoints = [c for c in trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint) and c.save_last]
        for ckpt in checkpoints:
            if ckpt.dirpath is None or getattr(ckpt, "_last_global_step_saved", -1) == trainer.global_step:
                continue
            # every rank calls save_checkpoint (a collective under DDP); rank 0 writes
            trainer.save_checkpoint(Path(ckpt.dirpath) / f"{ckpt.CHECKPOINT_NAME_LAST}{ckpt.FILE_EXTENSION}")
            ckpt._last_global_step_saved = trainer.global_step
