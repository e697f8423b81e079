"""Run folders under failure (issue 17.5, 17.6, 17.10): one live process per folder, a broken checkpoint moved
aside instead of blocking the run, stale temporary files removed, no duplicated metric rows after a resume."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys

import torch

from lit_papers.callbacks.csv_resume import drop_rows_from_step
from lit_papers.launch import run_dir as runs

TINY = "configs/resnet_cifar/tiny.yaml"
COMMON = ["--config", TINY, "--wandb", "false", "--trainer.enable_progress_bar=false"]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_run_in_a_held_folder_refuses_naming_folder_and_pid(cli):
    run = cli.runs / "resnet_cifar" / "tiny" / "shared"
    run.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (run / runs.LOCK).write_text(f"{socket.gethostname()}:{holder.pid}\n")
        proc = cli("fit", *COMMON, "--run.version", "shared", check=False)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode != 0
    assert f"{run} is in use by PID {holder.pid}" in proc.stderr
    assert not (run / "config.yaml").exists() and not (run / "checkpoints").exists()  # nothing clobbered
    assert (run / runs.LOCK).read_text().startswith(f"{socket.gethostname()}:{holder.pid}")


def test_stale_lock_of_a_dead_process_is_taken_over(cli):
    run = cli.runs / "resnet_cifar" / "tiny" / "shared"
    run.mkdir(parents=True)
    pid = _dead_pid()
    (run / runs.LOCK).write_text(f"{socket.gethostname()}:{pid}\n")
    proc = cli("fit", *COMMON, "--run.version", "shared", "--trainer.max_steps", "2")
    assert f"its lock was held by PID {pid}" in proc.stderr
    assert (run / runs.FINISHED).exists() and not (run / runs.LOCK).exists()


def test_a_run_that_fails_before_it_starts_leaves_no_empty_version_folder(cli):
    # a wrong checkpoint path fails when the classes are built, after the run folder was chosen and locked
    proc = cli("fit", "--config", "configs/sharpmask/tiny.yaml", "--wandb", "false",
               "--model.init_args.model.init_args.deepmask_checkpoint", "no/such/last.ckpt", check=False)
    assert proc.returncode != 0 and "no/such/last.ckpt" in proc.stderr
    experiment = cli.runs / "sharpmask" / "tiny"
    assert not experiment.exists() or not any(experiment.iterdir()), list(experiment.rglob("*"))


def test_take_lock_in_process(tmp_path, monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    runs.take_lock(tmp_path)
    runs.take_lock(tmp_path)  # our own lock again: fine
    assert (tmp_path / runs.LOCK).read_text() == f"{socket.gethostname()}:{os.getpid()}\n"
    runs.release_lock(tmp_path, finished=False)
    assert not (tmp_path / runs.LOCK).exists()
    # a requeued Slurm job finds the lock of its earlier instance (another host, dead): taken over
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    (tmp_path / runs.LOCK).write_text("node17:999\nslurm_job=4242\n")
    messages = []
    runs.take_lock(tmp_path, log=messages.append)
    assert "PID 999 on node17" in messages[0]
    (tmp_path / runs.LOCK).write_text("node17:999\nslurm_job=1\n")  # another job on another host: refused
    try:
        runs.take_lock(tmp_path)
        raise AssertionError("expected RunLocked")
    except runs.RunLocked as exc:
        assert "PID 999 on node17" in str(exc)


def _steps(run):
    with open(run / "csv" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    return [(int(r["step"]), k) for r in rows for k, v in r.items() if v not in ("", None) and k not in ("step", "epoch")]


def test_truncated_last_ckpt_is_moved_aside_and_run_resumes_from_the_periodic_one(cli):
    # killed at step 9: last.ckpt and epoch=0-step=6.ckpt hold step 6; metrics rows of step 7 were written
    killed = cli("fit", *COMMON, "--trainer.callbacks+=tests.helpers.probes.KillAtStep", "--run.name", "crash",
                 env={"KILL_AT_STEP": "9"}, check=False)
    assert killed.returncode != 0
    run = cli.runs / "crash" / "v0"
    last, periodic = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "epoch=0-step=6.ckpt"
    assert periodic.is_file() and any(step == 7 for step, _ in _steps(run))
    last.write_bytes(last.read_bytes()[:4096])  # a truncated copy / full disk
    os.utime(periodic, ns=(1, 1))  # older than last.ckpt: the truncated one is tried first
    stale = run / "checkpoints" / ".last.ckpt.tmp-123456"
    stale.write_bytes(b"partial")
    resumed = cli("fit", *COMMON, "--run.name", "crash")
    assert f"{last}: truncated or not a checkpoint" in resumed.stderr and "moved it aside" in resumed.stderr
    assert f"resuming from {periodic}" in resumed.stderr
    assert list(run.glob("checkpoints/last.ckpt.corrupt-*")) and not stale.exists()
    assert torch.load(last, weights_only=True)["global_step"] == 12 and (run / runs.FINISHED).exists()
    # 17.10: the replayed steps 6.. are in metrics.csv once
    steps = _steps(run)
    assert len(steps) == len(set(steps)), sorted(s for s in steps if steps.count(s) > 1)
    assert {s for s, k in steps if k == "train/loss"} == {1, 3, 5, 7, 9, 11}
    # the weights equal an uninterrupted run's
    cli("fit", *COMMON, "--run.name", "straight")
    a = torch.load(cli.runs / "straight" / "v0" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(last, weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_no_loadable_checkpoint_says_so(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 cut")
    (tmp_path / "hpc_ckpt_2.ckpt").write_text("not a checkpoint")
    messages = []
    assert runs.loadable_resume_checkpoint(tmp_path, log=messages.append) is None
    assert "no loadable checkpoint" in messages[-1] and len(list(tmp_path.rglob("*.corrupt-*"))) == 2
    assert runs.resume_checkpoint(tmp_path) is None  # moved aside: the next run does not trip on them again


def test_drop_rows_from_step(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("epoch,step,train/loss,val/acc\n0,1,2.0,\n0,5,1.0,\n0,5,,0.3\n0,6,0.9,\n0,7,0.8,\n")
    assert drop_rows_from_step(str(path), 6) == 2
    assert path.read_text().splitlines() == ["epoch,step,train/loss,val/acc", "0,1,2.0,", "0,5,1.0,", "0,5,,0.3"]
