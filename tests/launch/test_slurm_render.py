"""`lit-papers slurm`: the rendered sbatch script, run against fake `srun`/`sbatch` (no Slurm needed here; the real
cluster test is tests/slurm/run_slurm_tests.sh)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lit_papers.launch import slurm

TINY = ["fit", "--config", "configs/resnet_cifar/tiny.yaml"]


def render(capsys, *args: str) -> str:
    assert slurm.main([*args, "--dry-run", "--", *TINY]) == 0
    return capsys.readouterr().out


def test_multi_node_gpu_script(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LIT_PAPERS_RUNS", str(tmp_path / "runs"))
    text = render(capsys, "--nodes", "2", "--gpus-per-node", "4", "--cpus-per-task", "8", "--mem", "64G",
                  "--time", "24:00:00", "--partition", "gpu", "--account", "acc", "--qos", "high")
    lines = text.splitlines()
    for expected in ["#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                     "#SBATCH --cpus-per-task=8", "#SBATCH --mem=64G", "#SBATCH --time=24:00:00",
                     "#SBATCH --partition=gpu", "#SBATCH --account=acc", "#SBATCH --qos=high",
                     "#SBATCH --signal=SIGUSR1@90", "#SBATCH --requeue", "#SBATCH --open-mode=append",
                     f"#SBATCH --output={tmp_path / 'runs'}/slurm/logs/%x-%j.out", "exit ${rc}"]:
        assert expected in lines, expected
    srun = next(line for line in lines if line.startswith("srun "))
    assert srun.endswith("fit --config configs/resnet_cifar/tiny.yaml --trainer.num_nodes=2 --trainer.devices=4")
    assert "#SBATCH --array" not in text


def test_layout_mismatch_is_an_error():
    with pytest.raises(SystemExit, match="trainer.devices=2 disagrees"):
        slurm.command_for([*TINY, "--trainer.devices=2"], nodes=1, devices=4, python="python")
    # an explicit matching value is kept, not duplicated
    cmd = slurm.command_for([*TINY, "--trainer.devices", "4"], nodes=1, devices=4, python="python")
    assert cmd.count("--trainer.devices") == 1 and "--trainer.devices=4" not in cmd


def test_sweep_array_and_wandb_agent(capsys):
    assert slurm.main(["--array", "0-15%4", "--dry-run", "--", "sweep", "sweeps/resnet_cifar.yaml"]) == 0
    text = capsys.readouterr().out
    assert "#SBATCH --array=0-15%4" in text and "%x-%A_%a.out" in text
    srun = next(line for line in text.splitlines() if line.startswith("srun "))
    assert srun.endswith("sweep sweeps/resnet_cifar.yaml -- --trainer.num_nodes=1 --trainer.devices=1")
    cmd = slurm.command_for(["wandb", "agent", "--count", "1", "e/p/abc"], nodes=1, devices=1, python="python")
    assert cmd == ["wandb", "agent", "--count", "1", "e/p/abc"]


def _fake_bin(tmp_path: Path, name: str, body: str) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)
    return bin_dir


def test_job_exit_code_is_sruns(capsys, tmp_path, monkeypatch):
    """Run the rendered script with bash and a fake srun that exits 7: the script must exit 7."""
    monkeypatch.setenv("LIT_PAPERS_RUNS", str(tmp_path / "runs"))
    text = render(capsys, "--nodes", "2")
    script = tmp_path / "job.sh"
    script.write_text(text)
    bin_dir = _fake_bin(tmp_path, "srun", f'echo "$@" > {tmp_path}/srun_args\nexit 7\n')
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert proc.returncode == 7, proc.stderr
    args = (tmp_path / "srun_args").read_text().split()
    assert args[0] == "--kill-on-bad-exit=1" and args[1] == sys.executable
    assert "srun exited with 7" in proc.stderr


def test_submit_with_sbatch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIT_PAPERS_RUNS", str(tmp_path / "runs"))
    bin_dir = _fake_bin(tmp_path, "sbatch", f'cp "$2" {tmp_path}/submitted.sh\necho "4242;cluster"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert slurm.main(["--nodes", "1", "--", *TINY]) == 0
    assert capsys.readouterr().out.strip() == "4242"
    saved = list((tmp_path / "runs" / "slurm").glob("*.sbatch"))
    assert len(saved) == 1 and saved[0].read_text() == (tmp_path / "submitted.sh").read_text()
    assert (tmp_path / "runs" / "slurm" / "logs").is_dir()
