"""Tiny victims for the attack tests: trained in seconds on the exact CIFAR-10 pickle records.

:func:`tiny_victim` trains a ResNet-8 (He et al.'s 6n+2 with n = 1) with plain torch on the first records of
``data_batch_1`` and returns a :class:`Victim` (images in [0, 1]) together with held-out records of
``test_batch``; :func:`save_lightning_style` writes the same weights as a LightningModule-style checkpoint
(``state_dict`` with the ``model.`` prefix + a datamodule ``normalization`` entry), so the loader can be tested.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lit_papers.attacks.victim import Victim
from lit_papers.data.cifar import read_cifar_pickle
from lit_papers.papers.resnet_cifar.model import ResNetCifar

PICKLES = Path(os.environ.get("LIT_PAPERS_DATA", "")) / "cifar" / "cifar-10-batches-py"


def records(name: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` records of a pickle batch as images (n, 3, 32, 32) in [0, 1] and labels (n,)."""
    images, labels = read_cifar_pickle(PICKLES / name, "labels")
    x = torch.from_numpy(images[:n].transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    return x, torch.from_numpy(labels[:n])


@lru_cache(maxsize=4)
def _trained(depth: int, seed: int, steps: int, network: str) -> tuple[dict, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    x, y = records("data_batch_1", 500)
    mean = x.mean(dim=0).permute(1, 2, 0).double()  # per-pixel mean, HWC as the datamodule stores it
    std = torch.ones(3, dtype=torch.float64)
    if network == "dropout":
        from lit_papers.papers.feinman_detection.model import DropoutResNetCifar

        net = DropoutResNetCifar(depth=depth, block_dropout=0.1, head_dropout=0.3)
    else:
        net = ResNetCifar(depth=depth)
    victim = Victim(network=net)
    victim.set_normalization(mean, std, "per_pixel_mean")
    opt = torch.optim.SGD(victim.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    victim.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=gen)
        loss = F.cross_entropy(victim(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    victim.eval()
    return {k: v.clone() for k, v in victim.state_dict().items()}, mean, std


def tiny_victim(depth: int = 8, seed: int = 0, steps: int = 40, network: str = "plain") -> Victim:
    """A ResNet-``depth`` victim trained for ``steps`` SGD steps on 500 exact records (cached per process)."""
    state, mean, std = _trained(depth, seed, steps, network)
    if network == "dropout":
        from lit_papers.papers.feinman_detection.model import DropoutResNetCifar

        net = DropoutResNetCifar(depth=depth, block_dropout=0.1, head_dropout=0.3)
    else:
        net = ResNetCifar(depth=depth)
    victim = Victim(network=net)
    victim.set_normalization(mean, std, "per_pixel_mean")
    victim.load_state_dict(state)
    return victim.eval()


def save_lightning_style(victim: Victim, path: Path) -> Path:
    """``victim`` as a checkpoint laid out like a ClassifierLitModule + CIFARDataModule one."""
    mean = victim.mean[0].permute(1, 2, 0).double()  # (1, 3, H, W) -> (H, W, 3)
    torch.save({"state_dict": {f"model.{k}": v for k, v in victim.network.state_dict().items()},
                "CIFARDataModule": {"normalization": {"kind": "per_pixel_mean", "mean": mean,
                                                      "std": victim.std.flatten().double()}}}, path)
    return path
