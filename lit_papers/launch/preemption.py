"""Preemption-safe training: SIGUSR1 -> checkpoint at a safe point -> requeue -> stop.

Slurm sends ``SIGUSR1`` ``N`` seconds before the time limit (``#SBATCH --signal=SIGUSR1@90``, rendered by
``lit-papers slurm``) or when an operator runs ``scancel --signal=USR1 <job>``. Saving inside the signal handler
(what Lightning's own SLURM handler does) can happen in the middle of an optimizer step or a collective, so this
callback only raises a flag in the handler and acts at the next optimizer-step boundary (``on_train_batch_end``
of a batch that stepped the optimizer, the point where ``ModelCheckpoint`` saves, so the data position and the
weights agree, also under gradient accumulation):

1. all ranks agree on "preempted" (any rank got the signal -> all save; one all-reduce of a bool per step),
2. ``<run_dir>/hpc_ckpt_<n>.ckpt`` is written (atomically, by the run's checkpoint IO) and older HPC checkpoints
   are removed,
3. rank 0 runs ``scontrol requeue <job>`` when under Slurm (the job keeps its id, so the requeued job finds the
   same run folder, see :mod:`lit_papers.launch.run_dir`),
4. every rank raises :class:`Preempted`, so the run folder is not marked finished.

The restarted ``fit`` resumes from the newest of the HPC checkpoint and ``last.ckpt``
(:func:`lit_papers.launch.run_dir.resume_checkpoint`), and the W&B run id stored in the run folder makes it
continue the same W&B run. A restart loses at most the steps since the signal's safe point (none) or, after a
hard kill, since the last ``last.ckpt``.

Installed by the CLI for every ``fit``. Outside Slurm the signal still checkpoints and stops (no requeue); running
the same command again resumes. Registering the handler in ``setup`` (before Lightning registers its own) stops
Lightning's in-handler SLURM save.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer

from lit_papers.launch.run_dir import hpc_checkpoints, next_hpc_checkpoint


class Preempted(RuntimeError):
    """Raised on every rank after the preemption checkpoint is written (and the job requeued)."""


def _slurm_job_id() -> str | None:
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


class PreemptionCheckpoint(Callback):
    """See the module docstring. ``run_dir``: where HPC checkpoints go; ``requeue``: call ``scontrol requeue``
    under Slurm; ``signum``: the signal to handle."""

    def __init__(self, run_dir: str | os.PathLike, *, requeue: bool = True, signum: int = signal.SIGUSR1) -> None:
        self.run_dir = Path(run_dir)
        self.requeue = requeue
        self.signum = signum
        self._received = False
        self._previous = None
        self._installed = False
        self._last_step = -1
        self._hpc_pending = False  # HPC checkpoints exist that a newer last.ckpt may supersede
        self._resumed_step = 0

    # -- signal ---------------------------------------------------------------------------------------------
    def _handle(self, signum, frame) -> None:
        self._received = True

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or threading.current_thread() is not threading.main_thread():
            return
        self._received = False
        self._previous = signal.signal(self.signum, self._handle)
        self._installed = True
        if trainer.world_size > 1 or _slurm_job_id():
            # one line per rank: where it runs (the Slurm tests read these)
            print(f"[lit-papers] rank {trainer.global_rank}/{trainer.world_size} node_rank {trainer.node_rank} "
                  f"local_rank {trainer.local_rank} host {os.environ.get('SLURMD_NODENAME', socket.gethostname())} "
                  f"job {_slurm_job_id()} restarts {os.environ.get('SLURM_RESTART_COUNT', '0')}",
                  file=sys.stderr, flush=True)

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            self._drop_superseded(trainer)
        if self._installed:
            signal.signal(self.signum, self._previous if self._previous is not None else signal.SIG_DFL)
            self._installed = False

    # -- the safe point -------------------------------------------------------------------------------------
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._last_step = self._resumed_step = trainer.global_step
        self._hpc_pending = trainer.is_global_zero and bool(hpc_checkpoints(self.run_dir))

    def _drop_superseded(self, trainer: Trainer) -> None:
        """Delete the HPC checkpoints older than a ``last.ckpt`` this run has written since it resumed from them
        (so a finished run keeps no stale preemption checkpoint, and a crash later resumes from the newer one)."""
        if not self._hpc_pending or not trainer.is_global_zero:
            return
        lasts = [Path(cb.dirpath) / f"{cb.CHECKPOINT_NAME_LAST}{cb.FILE_EXTENSION}" for cb in trainer.checkpoint_callbacks
                 if getattr(cb, "save_last", False) and getattr(cb, "dirpath", None)]
        newest = max((p.stat().st_mtime_ns for p in lasts if p.is_file()), default=None)
        if newest is None or not any(getattr(cb, "_last_global_step_saved", -1) >= self._resumed_step
                                     for cb in trainer.checkpoint_callbacks):
            return
        remaining = []
        for old in hpc_checkpoints(self.run_dir):
            if old.stat().st_mtime_ns < newest:
                old.unlink(missing_ok=True)
                print(f"[lit-papers] removed {old}: superseded by a newer last.ckpt", file=sys.stderr, flush=True)
            else:
                remaining.append(old)
        self._hpc_pending = bool(remaining)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._drop_superseded(trainer)

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx: int) -> None:
        if self._hpc_pending:
            self._drop_superseded(trainer)
        if trainer.global_step == self._last_step:
            return  # inside a gradient-accumulation window: not a safe point (same decision on every rank)
        self._last_step = trainer.global_step
        preempted = trainer.strategy.reduce_boolean_decision(self._received, all=False)
        if not preempted:
            return
        path = trainer.strategy.broadcast(str(next_hpc_checkpoint(self.run_dir)), src=0)
        trainer.save_checkpoint(path)  # collective: every rank calls it at the same step, rank 0 writes
        if trainer.is_global_zero:
            for old in hpc_checkpoints(self.run_dir):
                if old != Path(path):
                    old.unlink(missing_ok=True)
            job = _slurm_job_id()
            message = f"[lit-papers] preempted at step {trainer.global_step}: saved {path}"
            if job and self.requeue:
                result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
                message += f"; scontrol requeue {job} -> {result.returncode} {result.stderr.strip()}"
            print(message, file=sys.stderr, flush=True)
        trainer.strategy.barrier("preempted")
        raise Preempted(f"preempted at step {trainer.global_step}; resume from {path}")
