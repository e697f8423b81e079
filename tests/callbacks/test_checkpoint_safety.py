"""Checkpoints a user points at are read with ``weights_only=True`` (issue 17.4): a crafted pickle is refused and
its code never runs; truncated or foreign files get an error naming the file (17.5)."""

from __future__ import annotations

import os

import pytest
import torch

from lit_papers.callbacks.atomic_checkpoint import CheckpointError, read_checkpoint

TINY = "configs/resnet_cifar/tiny.yaml"


class _Payload:
    """Unpickling this object calls ``os.system("touch <marker>")``."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted(tmp_path):
    marker = tmp_path / "code_ran"
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {"model.w": torch.ones(1)}, "payload": _Payload(marker)}, path)
    return path, marker


def test_crafted_checkpoint_is_refused_without_running_code(tmp_path):
    path, marker = _crafted(tmp_path)
    with pytest.raises(CheckpointError, match="crafted.ckpt.*refused"):
        read_checkpoint(path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the oracle: unpickling it really runs the payload
    assert marker.exists()


def test_retarget_refuses_a_crafted_checkpoint(tmp_path):
    from lit_papers.papers.motion_retarget.retarget import main as retarget

    path, marker = _crafted(tmp_path)
    with pytest.raises(SystemExit, match="refused"):
        retarget(["--config", "configs/motion_retarget/tiny.yaml", "--ckpt", str(path), "--source", "x",
                  "--target", "y", "--out", str(tmp_path / "out")])
    assert not marker.exists()


def test_cli_ckpt_path_refuses_crafted_truncated_and_foreign_files(cli, tmp_path):
    path, marker = _crafted(tmp_path)
    proc = cli("test", "--config", TINY, "--wandb", "false", "--ckpt_path", str(path), check=False)
    assert proc.returncode != 0 and f"{path}: refused" in proc.stderr and not marker.exists()
    text = tmp_path / "notes.ckpt"
    text.write_text("epoch 3 was good\n")
    proc = cli("test", "--config", TINY, "--wandb", "false", "--ckpt_path", str(text), check=False)
    assert proc.returncode != 0 and f"{text}: truncated or not a checkpoint" in proc.stderr
    assert "KeyError" not in proc.stderr


def test_truncated_checkpoint_is_named(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {"w": torch.randn(1000)}, "global_step": 4}, good)
    assert read_checkpoint(good)["global_step"] == 4
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.ckpt: truncated"):
        read_checkpoint(cut)
