"""The CIFAR ResNet of He et al. 2016 (sec. 4.2, "CIFAR-10 and Analysis").

Input 32x32. A 3x3 conv with 16 filters, then three stages of ``n`` basic blocks each on maps of size
{32, 16, 8} with {16, 32, 64} filters; the first block of stages 2 and 3 subsamples with stride 2.
Depth = 6n + 2 (n = 3, 5, 7, 9, 18 -> ResNet-20/32/44/56/110). Shortcuts are identities; where the
dimensions grow, option A: the identity is subsampled by 2 and zero-padded with the extra channels
(parameter-free, so ResNet-20 has 0.27M parameters as in Table 6).

``dropout`` (default 0: off, the paper's network) inserts dropout between the two convolutions of every block,
as wide ResNets do (Zagoruyko & Komodakis 2016, sec. 2.3); adversarial-detection papers (Feinman et al. 2017)
need a network with dropout for Monte-Carlo uncertainty. Dropout has no parameters, so checkpoints are the same.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def zero_pad_shortcut(x: torch.Tensor, out_channels: int, stride: int) -> torch.Tensor:
    """Option-A shortcut: subsample ``x`` (B, C, H, W) by ``stride`` and append zero channels up to
    ``out_channels``."""
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    extra = out_channels - x.shape[1]
    if extra > 0:
        x = F.pad(x, (0, 0, 0, 0, 0, extra))  # pads the channel dim at the end: (B, out_channels, H', W')
    return x


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers; ReLU after the addition (He et al. 2016, Fig. 2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, shortcut: str = "A",
                 dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride, self.out_channels = stride, out_channels
        self.projection = None
        if shortcut == "B" and (stride != 1 or in_channels != out_channels):
            self.projection = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        elif shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' (zero padding) or 'B' (projection), got {shortcut!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.dropout is not None:
            out = self.dropout(out)
        out = self.bn2(self.conv2(out))
        identity = self.projection(x) if self.projection is not None else zero_pad_shortcut(x, self.out_channels, self.stride)
        return F.relu(out + identity)


class CifarResNet(nn.Module):
    """Feature extractor: returns ``{"stage1": (B,16,32,32), "stage2": (B,32,16,16), "stage3": (B,64,8,8)}``
    for a 32x32 input."""

    def __init__(self, *, depth: int = 20, widths: tuple[int, int, int] = (16, 32, 64), shortcut: str = "A",
                 dropout: float = 0.0) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110, ...), got {depth}")
        n = (depth - 2) // 6
        self.depth = depth
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        stages, in_ch = [], widths[0]
        for i, width in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_ch, width, stride, shortcut, dropout))
                in_ch = width
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.out_channels = list(widths)
        self.strides = [1, 2, 4]
        for m in self.modules():  # He et al. 2015 ("Delving deep") initialisation, as the paper states
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = OrderedDict()
        x = self.stem(x)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            features[f"stage{i + 1}"] = x
        return features
