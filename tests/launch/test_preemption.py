"""Preemption without Slurm: SIGUSR1 -> HPC checkpoint at a step boundary -> stop; the same command resumes from it
and ends with the weights of an uninterrupted run. Plus the resume order and the W&B id rules."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from lit_papers.callbacks.wandb_setup import wandb_run_id
from lit_papers.launch import run_dir as runs

REPO = Path(__file__).resolve().parents[2]
SHORT = ["fit", "--config", "configs/resnet_cifar/tiny.yaml", "--wandb", "false", "--trainer.max_steps=8",
         "--trainer.val_check_interval=4", "--trainer.enable_progress_bar=false"]


def test_resume_prefers_the_newest_checkpoint(tmp_path):
    assert runs.resume_checkpoint(tmp_path) is None and not runs.resumable(tmp_path)
    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    last.write_bytes(b"x")
    os.utime(last, ns=(1_000_000_000, 1_000_000_000))
    assert runs.resume_checkpoint(tmp_path) == last
    assert runs.next_hpc_checkpoint(tmp_path).name == "hpc_ckpt_1.ckpt"
    for n, t in [(1, 2), (2, 3)]:  # preempted twice: the newest HPC checkpoint is newer than last.ckpt
        hpc = tmp_path / f"hpc_ckpt_{n}.ckpt"
        hpc.write_bytes(b"x")
        os.utime(hpc, ns=(t * 10**9, t * 10**9))
    assert runs.resume_checkpoint(tmp_path).name == "hpc_ckpt_2.ckpt"
    assert runs.next_hpc_checkpoint(tmp_path).name == "hpc_ckpt_3.ckpt"
    os.utime(last, ns=(4 * 10**9, 4 * 10**9))  # the resumed run saved last.ckpt later
    assert runs.resume_checkpoint(tmp_path) == last
    (tmp_path / runs.FINISHED).write_text("")
    assert not runs.resumable(tmp_path)


def test_run_folder_keys(monkeypatch, tmp_path):
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "WANDB_SWEEP_ID", "WANDB_RUN_ID",
                runs.RUN_DIR_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_JOB_ID", "80")
    assert runs.choose_run_dir("p/tiny", subcommand="fit", root=tmp_path) == tmp_path / "p/tiny/77_3"
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw")
    monkeypatch.setenv("WANDB_RUN_ID", "abc123")
    assert runs.choose_run_dir("p/tiny", subcommand="fit", root=tmp_path) == tmp_path / "p/tiny/77_3-wandb-abc123"


def test_wandb_id_is_stored_once(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    ids = []
    threads = [threading.Thread(target=lambda: ids.append(wandb_run_id(tmp_path))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and (tmp_path / "wandb_id.txt").read_text().strip() == ids[0]
    monkeypatch.setenv("WANDB_SWEEP_ID", "sw")
    monkeypatch.setenv("WANDB_RUN_ID", "agent1")
    assert wandb_run_id(tmp_path / "sub" if (tmp_path / "sub").mkdir() is None else None) == "agent1"


def _env(runs_root: Path) -> dict:
    env = {**os.environ, "LIT_PAPERS_RUNS": str(runs_root), "PYTHONPATH": str(REPO)}
    env.pop(runs.RUN_DIR_ENV, None)
    return env


def test_sigusr1_checkpoints_and_resume_matches_uninterrupted(tmp_path):
    run_dir = tmp_path / "runs/resnet_cifar/tiny/v0"
    log = tmp_path / "first.log"
    started = tmp_path / "started"
    # the probe slows each step to 0.5 s and marks the first one, so the signal lands mid-training
    slow = {"PROBE_STARTED": str(started), "PROBE_STEP_S": "0.5"}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "lit_papers", *SHORT,
                                 "--trainer.callbacks+=tests.helpers.probes.SlowSteps"],
                                cwd=REPO, env={**_env(tmp_path / "runs"), **slow}, stdout=fh, stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not started.exists():
            time.sleep(0.05)
        proc.send_signal(signal.SIGUSR1)
        proc.wait(timeout=300)
    out = log.read_text()
    assert proc.returncode != 0, out[-2000:]
    match = re.search(r"preempted at step (\d+): saved (\S+)", out)
    assert match, out[-3000:]
    step, hpc = int(match.group(1)), Path(match.group(2))
    assert 0 < step < 8 and hpc == run_dir / "hpc_ckpt_1.ckpt"
    assert torch.load(hpc, map_location="cpu", weights_only=False)["global_step"] == step
    assert not (run_dir / runs.FINISHED).exists()

    second = subprocess.run([sys.executable, "-m", "lit_papers", *SHORT], cwd=REPO, env=_env(tmp_path / "runs"),
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"resuming from {hpc}" in second.stderr
    assert (run_dir / runs.FINISHED).is_file()
    # the finished run keeps no preemption checkpoint once it has written a newer last.ckpt (issue 17.11)
    assert not runs.hpc_checkpoints(run_dir) and f"removed {hpc}" in second.stderr

    reference = subprocess.run([sys.executable, "-m", "lit_papers", *SHORT], cwd=REPO, env=_env(tmp_path / "ref"),
                               capture_output=True, text=True, timeout=300)
    assert reference.returncode == 0, reference.stderr[-3000:]
    a = torch.load(run_dir / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(tmp_path / "ref/resnet_cifar/tiny/v0/checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == 8
    for key in b["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
