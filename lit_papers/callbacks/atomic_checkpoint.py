"""Checkpoints written atomically: serialise to a temporary file in the target folder, fsync, rename.

A crash (or SIGKILL) during a save leaves the previous ``last.ckpt`` intact and at worst a stray
``.<name>.tmp-<pid>`` file, never a truncated checkpoint under the real name.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO


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


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be used: truncated, not a checkpoint, or holding more than tensors and
    plain data (a pickle that would run code). The message names the file."""


def read_checkpoint(path: str | os.PathLike, *, mmap: bool = True) -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``: tensors, containers and plain values only, so a
    crafted file cannot run code while it is read. ``mmap=True`` maps the tensors instead of reading them (cheap
    enough to check a multi-GB file before resuming from it). Raises :class:`CheckpointError` naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive whose directory is at the end
        raise CheckpointError(f"{path}: truncated or not a checkpoint ({path.stat().st_size} bytes, not the zip "
                              "archive torch.save writes; a write that was killed, a partial copy, or another file)")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: the file would run code when unpickled
        lines = [line for line in str(exc).splitlines() if "GLOBAL" in line or "global" in line]
        raise CheckpointError(f"{path}: refused, it holds Python objects beyond tensors and plain data that would "
                              f"run code when unpickled ({(lines or ['weights_only load failed'])[0].strip()}); "
                              "load only checkpoints written by lit-papers") from exc
    except Exception as exc:  # a damaged member, ...
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (a {type(checkpoint).__name__}, expected a dict)")
    return checkpoint
