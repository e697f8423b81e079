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
* ``run.lock`` (``host:pid``, plus ``slurm_job=<id>`` under Slurm) is taken atomically by the CLI before anything
  is written (:func:`take_lock`): a run given the folder of a live run (same ``--run.version``) refuses to start,
  naming the folder and the PID; the lock of a dead process, or of an earlier instance of the same Slurm job
  (requeued), is taken over with a message.
* On resume, checkpoints that do not load are moved aside (:func:`loadable_resume_checkpoint`) and temporary files
  of killed writes are deleted (:func:`remove_stale_temps`).
"""

from __future__ import annotations

import os
import re
import socket
import time
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


def _read_lock(run_dir: Path) -> dict[str, str] | None:
    """``run.lock`` -> ``{"host", "pid"[, "slurm_job"]}``; None when absent or unreadable."""
    try:
        lines = (Path(run_dir) / LOCK).read_text().splitlines()
        host, pid = lines[0].strip().rsplit(":", 1)
    except (OSError, ValueError, IndexError):
        return None
    info = {"host": host, "pid": pid}
    for line in lines[1:]:
        key, _, value = line.partition("=")
        if key.strip() == "slurm_job" and value.strip():
            info["slurm_job"] = value.strip()
    return info


def _holder_alive(info: dict[str, str]) -> bool:
    job = slurm_version()
    if job and info.get("slurm_job") == job and info["pid"] != str(os.getpid()):
        return False  # the same Slurm job again (requeued): Slurm runs one instance of a job at a time
    if info["host"] != socket.gethostname():
        return True  # cannot check another host: assume alive
    try:
        os.kill(int(info["pid"]), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def _lock_alive(run_dir: Path) -> bool:
    info = _read_lock(run_dir)
    return info is not None and _holder_alive(info)


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


def checkpoint_candidates(run_dir: Path) -> list[Path]:
    """Every checkpoint a restarted ``fit`` could continue from, newest (modification time) first: the HPC
    checkpoints and ``checkpoints/*.ckpt`` (``last.ckpt`` and the periodic/top-k ones). A preempted job's HPC
    checkpoint is newer than its ``last.ckpt``; after the resumed run saves ``last.ckpt`` again, that one is."""
    found = [*hpc_checkpoints(run_dir), *sorted((Path(run_dir) / "checkpoints").glob("*.ckpt"))]
    return sorted((p for p in found if p.is_file()), key=lambda p: p.stat().st_mtime_ns, reverse=True)


def resume_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint of :func:`checkpoint_candidates` (not checked for loading); None for a fresh start."""
    candidates = checkpoint_candidates(run_dir)
    return candidates[0] if candidates else None


def loadable_resume_checkpoint(run_dir: Path, *, log=print, move_aside: bool = True) -> tuple[Path, dict] | None:
    """The newest checkpoint of the run folder that loads (with ``weights_only=True``), and its contents (tensors
    memory-mapped). Each newer one that does not load (truncated by a kill during a copy, a full disk, ...) is
    moved aside as ``<name>.corrupt-<time>`` with a message, so it neither blocks this run nor the next one.
    None (with a message) when no checkpoint loads. ``move_aside=False`` (other DDP ranks): only skip them."""
    from lit_papers.callbacks.atomic_checkpoint import CheckpointError, read_checkpoint

    tried = []
    for path in checkpoint_candidates(run_dir):
        try:
            checkpoint = read_checkpoint(path)
        except CheckpointError as exc:
            if not move_aside:
                continue
            aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(path, aside)
            log(f"[lit-papers] {exc}; moved it aside to {aside}")
            tried.append(path.name)
            continue
        if tried:
            log(f"[lit-papers] resuming from the newest checkpoint that loads: {path}")
        return path, checkpoint
    if tried:
        log(f"[lit-papers] no loadable checkpoint in {run_dir} (moved aside: {', '.join(tried)}); starting from "
            "step 0 in this folder")
    return None


TEMP_PATTERN = re.compile(r"\..+\.(tmp(-\d+)?(\.\w+)?|\d+\.[0-9a-f]{8})")


def remove_stale_temps(run_dir: Path, *, log=print) -> list[Path]:
    """Delete the temporary files of writes that were killed (``.last.ckpt.tmp-<pid>``, ``.config.yaml.tmp``,
    ...) in the run folder and ``checkpoints/``. Call it holding the run's lock: no other process writes there."""
    removed = []
    for folder in (Path(run_dir), Path(run_dir) / "checkpoints"):
        for path in folder.glob(".*") if folder.is_dir() else []:
            if path.is_file() and TEMP_PATTERN.fullmatch(path.name):
                path.unlink(missing_ok=True)
                removed.append(path)
    if removed:
        log(f"[lit-papers] removed {len(removed)} temporary file(s) of interrupted writes: "
            f"{', '.join(str(p) for p in removed)}")
    return removed


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


class RunLocked(RuntimeError):
    """Another live process holds the run folder."""


_held: set[Path] = set()


def _lock_text() -> str:
    job = slurm_version()
    return f"{socket.gethostname()}:{os.getpid()}\n" + (f"slurm_job={job}\n" if job else "")


def take_lock(run_dir: Path, *, log=print) -> None:
    """Hold ``run_dir`` for this process (``run.lock`` = ``host:pid``, plus the Slurm job). Raises
    :class:`RunLocked` naming the folder and the holder when a live process holds it; a lock left by a dead
    process (or by an earlier instance of this Slurm job) is taken over with a message."""
    run_dir = Path(run_dir)
    lock = run_dir / LOCK
    me = f"{socket.gethostname()}:{os.getpid()}"
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            info = _read_lock(run_dir)
            if info is None:  # being written right now, or garbage: look again, then take it over
                time.sleep(0.05)
                if (info := _read_lock(run_dir)) is None:
                    lock.unlink(missing_ok=True)
                    continue
            if f"{info['host']}:{info['pid']}" == me:
                _held.add(run_dir)
                return
            if _holder_alive(info):
                raise RunLocked(
                    f"{run_dir} is in use by PID {info['pid']} on {info['host']} (lock file {lock}). Two runs in one "
                    "folder would overwrite each other's config, metrics and checkpoints: wait for it to end, give "
                    "this run another --run.version, or delete the lock file if that process is gone.") from None
            log(f"[lit-papers] taking over {run_dir}: its lock was held by PID {info['pid']} on {info['host']}, "
                "which is no longer running")
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(_lock_text())
        _held.add(run_dir)
        return
    raise RunLocked(f"{run_dir}: could not take the lock file {lock} (another process keeps replacing it)")


def release_lock(run_dir: Path, *, finished: bool) -> None:
    if finished:
        (run_dir / FINISHED).write_text("")
    info = _read_lock(run_dir)
    if info is not None and f"{info['host']}:{info['pid']}" == f"{socket.gethostname()}:{os.getpid()}":
        (Path(run_dir) / LOCK).unlink(missing_ok=True)
    _held.discard(Path(run_dir))


def release_held_locks() -> None:
    """Release every lock this process still holds (a run that failed before it started training). A folder the
    failed run left empty is removed, so that the next start takes the same version (``v0`` instead of an empty
    ``v0`` and the run in ``v1``); a folder holding anything (a config, a log, a checkpoint) is kept."""
    for run_dir in list(_held):
        release_lock(run_dir, finished=False)
        try:
            Path(run_dir).rmdir()  # only succeeds on an empty folder
        except OSError:
            pass
