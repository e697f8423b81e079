"""The shared victim interface (lit_papers/attacks): checkpoint loading, [0, 1] inputs, errors that name the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_papers.attacks.module import AttackLitModule
from lit_papers.attacks.victim import Victim, VictimError
from lit_papers.data.cifar import CIFARImages, read_cifar_pickle
from lit_papers.papers.resnet_cifar.model import ResNetCifar
from tests.attacks.victims import PICKLES, records, save_lightning_style, tiny_victim


def test_victim_from_a_real_lightning_checkpoint_matches_the_datamodule_pipeline(cli):
    """Train resnet_cifar's tiny config with the CLI, load last.ckpt as a Victim: logits on [0, 1] images equal the
    network's logits on the datamodule's own normalised tensors (CIFARImages with the checkpoint's statistics)."""
    cli("fit", "--config", "configs/resnet_cifar/tiny.yaml", "--wandb", "false", "--trainer.max_steps", "2")
    ckpt = next(cli.runs.rglob("last.ckpt"))
    victim = Victim(network=ResNetCifar(depth=8), checkpoint=str(ckpt))
    victim.load()
    assert victim.normalization_kind == "per_pixel_mean" and victim.mean.shape == (1, 3, 32, 32)
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    stats = saved["CIFARDataModule"]["normalization"]
    images, labels = read_cifar_pickle(PICKLES / "test_batch", "labels")
    dataset = CIFARImages(images[:16], labels[:16], mean=stats["mean"].numpy(), std=stats["std"].numpy(), augment=False)
    normalised = torch.stack([dataset[i][0] for i in range(16)])
    net = ResNetCifar(depth=8).eval()
    net.load_state_dict({k[len("model."):]: v for k, v in saved["state_dict"].items() if k.startswith("model.")})
    x01 = torch.from_numpy(images[:16].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    with torch.no_grad():
        assert torch.allclose(victim.eval()(x01), net(normalised), atol=1e-5)


def test_checkpoint_round_trip_and_relative_path_under_runs(tmp_path, monkeypatch):
    victim = tiny_victim()
    (tmp_path / "v").mkdir()
    save_lightning_style(victim, tmp_path / "v" / "last.ckpt")
    monkeypatch.setenv("LIT_PAPERS_RUNS", str(tmp_path))
    monkeypatch.chdir(tmp_path / "v")  # "v/last.ckpt" does not exist from here: found under $LIT_PAPERS_RUNS
    loaded = Victim(network=ResNetCifar(depth=8), checkpoint="v/last.ckpt")
    loaded.load()
    x, _ = records("test_batch", 8)
    with torch.no_grad():
        assert torch.allclose(loaded.eval()(x), victim(x), atol=1e-6)
        hidden, logits = loaded.features(x)
    assert hidden.shape == (8, 64) and torch.allclose(logits, victim(x), atol=1e-6)
    # the last hidden layer is the fc input: fc(hidden) gives the logits
    assert torch.allclose(loaded.network.fc(hidden), logits, atol=1e-5)


def test_bad_checkpoints_raise_errors_naming_the_file(tmp_path):
    with pytest.raises(VictimError, match="not found.*victim_resnet20_jpeg_small"):
        Victim(network=ResNetCifar(depth=8), checkpoint=str(tmp_path / "nope.ckpt")).load()
    path = save_lightning_style(tiny_victim(), tmp_path / "a.ckpt")
    with pytest.raises(VictimError, match="does not fit ResNetCifar.*architecture"):
        Victim(network=ResNetCifar(depth=14), checkpoint=str(path)).load()
    torch.save({"state_dict": {"model.fc.weight": torch.zeros(10, 64)}}, tmp_path / "b.ckpt")
    with pytest.raises(VictimError, match="prefix"):
        Victim(network=ResNetCifar(depth=8), checkpoint=str(tmp_path / "b.ckpt"), prefix="net.").load()
    state = torch.load(path, weights_only=True)
    del state["CIFARDataModule"]
    torch.save(state, tmp_path / "c.ckpt")
    with pytest.raises(VictimError, match="no input normalisation"):
        Victim(network=ResNetCifar(depth=8), checkpoint=str(tmp_path / "c.ckpt")).load()
    (tmp_path / "d.ckpt").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(VictimError, match="d.ckpt: cannot be read"):
        Victim(network=ResNetCifar(depth=8), checkpoint=str(tmp_path / "d.ckpt")).load()


def test_to_unit_inverts_the_datamodule_normalisation_exactly():
    """CIFARImages' (x/255 - mean)/std back to x/255, bit for bit on the 1/255 grid, for both kinds of stats."""
    images, labels = read_cifar_pickle(PICKLES / "test_batch", "labels")
    module = AttackLitModule(victim=tiny_victim())
    for mean, std in [(images.astype(np.float64).mean(axis=0) / 255.0, np.ones(3)),
                      (np.array([0.49, 0.48, 0.45]), np.array([0.25, 0.24, 0.26]))]:
        dataset = CIFARImages(images[:32], labels[:32], mean=mean, std=std, augment=False)
        module.data_mean = torch.as_tensor(mean).float().permute(2, 0, 1)[None] if mean.ndim == 3 else \
            torch.as_tensor(mean).float().view(1, 3, 1, 1)
        module.data_std = torch.as_tensor(std).float().view(1, 3, 1, 1)
        x = torch.stack([dataset[i][0] for i in range(32)])
        expected = torch.from_numpy(images[:32].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
        assert torch.equal(module.to_unit(x), expected)
