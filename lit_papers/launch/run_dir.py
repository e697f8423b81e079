"""Run folders: ``<runs root>/<experiment>/<version>/`` holding config.yaml, checkpoints/, logs, cards.

Rules (one place, so DDP ranks, Slurm requeues and re-runs agree):

* ``LIT_PAPERS_RUN_DIR`` (set by rank 0 for the processes it launches, or by a user) wins.
* Under Slurm the version is the job id (``<job>`` or ``<array job>_<task>``), so a requeued job finds its own
  checkpoints. Under a W&B sweep agent (``WANDB_SWEEP_ID`` and ``WANDB_RUN_ID`` set) it is ``wandb-<run id>``
  (plus the Slurm id when there is one), so two trials never share a folder, whatever auto-resume would pick.
* ``fit`` resumes from the newest of the HPC checkpoints (``hpc_ckpt_<n>.ckpt``, written on SIGUSR1 by
  :class:`lit_papers.callbacks.preemption.PreemptionCheckpoint`) and ``checkpoints/last.ckpt``; see
  :func:`resume_checkpoint`.
* Otherwise ``fit`` resumes the newest version of the experiment that has ``checkpoints/last.ckpt``, is not
  ``FINISHED`` and is not held by a live process (``run.lock``); else it starts ``v<N+1>``. Re-running the
  same command after a crash therefore continues it; re-running after it finished starts a fresh run;
  two concurrent runs never share a folder.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

RUN_DIR_ENV = "LIT_PAPERS_RUN_DIR"
FINISHED = "FINISHED"
LOCK = "run.lock"


def runs_root() -> Path:
    return Path(os.environ.get("LIT_PAPERS_RUNS", "runs"))


def experiment_name(config_paths: list[str], model_class: str | None) -> str:
    """``configs/resnet_cifar/tiny.yaml`` -> ``resnet_cifar/tiny``; without a config the model class name."""
    for path in config_paths:
        p = Path(str(path))
        parts = p.with_suffix("").parts
        if "configs" in parts:
            tail = parts[parts.index("configs") + 1 :]
            if tail and tail[0] != "trainer":
                return "/".join(tail)
        elif p.parent.name != "trainer":
            return "/".join(p.with_suffix("").parts[-2:])
    return (model_class or "run").rsplit(".", 1)[-1].lower()


def slurm_version() -> str | None:
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def agent_version() -> str | None:
    """The folder name of a run launched by ``wandb agent`` (its run id), else None."""
    run_id = os.environ.get("WANDB_RUN_ID")
    if os.environ.get("WANDB_SWEEP_ID") and run_id:
        slurm = slurm_version()
        return f"{slurm}-wandb-{run_id}" if slurm else f"wandb-{run_id}"
    return None


def _lock_alive(run_dir: Path) -> bool:
    lock = run_dir / LOCK
    try:
        host, pid = lock.read_text().strip().rsplit(":", 1)
    except (OSError, ValueError):
        return False
    if host != socket.gethostname():
        return True  # cannot check another host: assume alive
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def _versions(exp_dir: Path) -> list[Path]:
    found = [p for p in exp_dir.glob("v*") if p.is_dir() and re.fullmatch(r"v\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name[1:]))


HPC_PATTERN = re.compile(r"hpc_ckpt_(\d+)\.ckpt")


def hpc_checkpoints(run_dir: Path) -> list[Path]:
    """``<run_dir>/hpc_ckpt_<n>.ckpt`` files (Lightning's naming), oldest number first."""
    found = [(int(m.group(1)), p) for p in Path(run_dir).glob("hpc_ckpt_*.ckpt") if (m := HPC_PATTERN.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def next_hpc_checkpoint(run_dir: Path) -> Path:
    existing = hpc_checkpoints(run_dir)
    number = int(HPC_PATTERN.fullmatch(existing[-1].name).group(1)) + 1 if existing else 1
    return Path(run_dir) / f"hpc_ckpt_{number}.ckpt"


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint a restarted ``fit`` continues from: the newest (by modification time) of the last HPC
    checkpoint and ``checkpoints/last.ckpt``; None for a fresh start. A preempted job's HPC checkpoint is newer
    than its ``last.ckpt``; after the resumed run saves ``last.ckpt`` again, that one is newer."""
    candidates = [p for p in [*hpc_checkpoints(run_dir)[-1:], Path(run_dir) / "checkpoints" / "last.ckpt"] if p.is_file()]
    if not candidates:
        return None
    return max(candidates, key=lambda p: p.stat().st_mtime_ns)


def resumable(run_dir: Path) -> bool:
    return resume_checkpoint(run_dir) is not None and not (run_dir / FINISHED).exists()


def choose_run_dir(experiment: str, *, subcommand: str, version: str | None = None, root: Path | None = None) -> Path:
    """Pick (and create) this run's folder following the rules above."""
    if env := os.environ.get(RUN_DIR_ENV):
        path = Path(env)
    else:
        exp_dir = (root or runs_root()) / experiment
        version = version or agent_version() or slurm_version()
        if version:
            path = exp_dir / version
        else:
            existing = _versions(exp_dir)
            candidates = [p for p in existing if resumable(p) and not _lock_alive(p)] if subcommand == "fit" else []
            if candidates:
                path = candidates[-1]
            else:
                path = exp_dir / f"v{int(existing[-1].name[1:]) + 1 if existing else 0}"
                while True:  # claim the folder atomically against a concurrent start
                    try:
                        path.mkdir(parents=True)
                        break
                    except FileExistsError:
                        path = exp_dir / f"v{int(path.name[1:]) + 1}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def take_lock(run_dir: Path) -> None:
    (run_dir / LOCK).write_text(f"{socket.gethostname()}:{os.getpid()}\n")


def release_lock(run_dir: Path, *, finished: bool) -> None:
    if finished:
        (run_dir / FINISHED).write_text("")
    try:
        host_pid = (run_dir / LOCK).read_text().strip()
        if host_pid == f"{socket.gethostname()}:{os.getpid()}":
            (run_dir / LOCK).unlink()
    except OSError:
        pass
