"""load_weights / weights_under (lit_papers/ops/checkpoint.py): the one way a paper loads another run's network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lit_papers.ops.checkpoint import CheckpointError, load_weights, read_checkpoint, weights_under


class Evil:
    def __reduce__(self):  # unpickling this would call print: weights_only must refuse it
        return (print, ("ran code",))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2))


def test_loads_the_prefixed_weights_of_a_lightning_checkpoint(tmp_path):
    src = _net()
    with torch.no_grad():
        src[0].weight.fill_(0.25)
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()} | {"other.x": torch.ones(1)},
                "CIFARDataModule": {"normalization": {"mean": [0.5]}}}, path)
    dst = _net()
    checkpoint = load_weights(dst, path)
    assert torch.equal(dst[0].weight, torch.full((2, 3), 0.25))
    assert checkpoint["CIFARDataModule"]["normalization"]["mean"] == [0.5]  # the rest of the file comes back


def test_plain_state_dict_only_when_allowed(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(_net().state_dict(), path)
    load_weights(_net(), path, plain_ok=True)
    with pytest.raises(CheckpointError, match="plain.pt: no 'state_dict'"):
        load_weights(_net(), path)


def test_errors_name_the_file_and_the_fix(tmp_path):
    path = tmp_path / "run.ckpt"
    torch.save({"state_dict": {"net.0.weight": torch.zeros(2, 3)}}, path)
    with pytest.raises(CheckpointError, match=r"run.ckpt: no state_dict entries start with 'model.'.*net.0.weight"):
        load_weights(_net(), path)
    torch.save({"state_dict": {"model.0.weight": torch.zeros(2, 3)}}, path)  # bias missing
    with pytest.raises(CheckpointError, match=r"(?s)run.ckpt does not hold the configured Sequential .*0.bias.*; retrain"):
        load_weights(_net(), path, fix="retrain")
    path.write_bytes(path.read_bytes()[:100])  # a killed copy
    with pytest.raises(CheckpointError, match="run.ckpt: truncated or not a checkpoint"):
        load_weights(_net(), path)
    with pytest.raises(CheckpointError, match="missing.ckpt: no such checkpoint file"):
        read_checkpoint(tmp_path / "missing.ckpt")


def test_a_pickle_that_runs_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"model.0.weight": torch.zeros(2, 3)}, "hyper_parameters": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.ckpt: refused"):
        load_weights(_net(), path)
    assert "ran code" not in capsys.readouterr().out


def test_weights_under_strips_only_the_prefix():
    state = {"state_dict": {"model.model.a": 1, "model.b": 2, "head.c": 3}}
    assert weights_under(state, "model.", path="x") == {"model.a": 1, "b": 2}


def test_find_checkpoint_as_given_then_under_the_runs_root(tmp_path, monkeypatch):
    from lit_papers.ops.checkpoint import CheckpointError, CheckpointNotFound, find_checkpoint

    runs = tmp_path / "runs"
    ckpt = runs / "resnet_cifar" / "resnet20_subset" / "v0" / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    monkeypatch.setenv("LIT_PAPERS_RUNS", str(runs))
    monkeypatch.chdir(tmp_path)
    relative = "resnet_cifar/resnet20_subset/v0/checkpoints/last.ckpt"
    assert find_checkpoint(relative, what="classifier", fix="train it") == ckpt  # under $LIT_PAPERS_RUNS
    assert find_checkpoint(ckpt, what="classifier", fix="train it") == ckpt  # as given
    (tmp_path / relative).parent.mkdir(parents=True)
    (tmp_path / relative).write_bytes(b"y")
    assert find_checkpoint(relative, what="classifier", fix="train it") == Path(relative)  # as given wins
    with pytest.raises(CheckpointNotFound, match=r"classifier checkpoint 'nope.ckpt' not found \(tried nope.ckpt, "
                                                 r".*runs/nope.ckpt\); train it") as exc:
        find_checkpoint("nope.ckpt", what="classifier", fix="train it")
    assert isinstance(exc.value, FileNotFoundError) and isinstance(exc.value, CheckpointError)
    with pytest.raises(CheckpointNotFound, match=r"tried /abs/nope.ckpt\);"):  # absolute: not looked up in runs
        find_checkpoint("/abs/nope.ckpt", what="classifier", fix="x")
