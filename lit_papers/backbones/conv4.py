"""The four-block convolutional embedding of few-shot learning (Vinyals et al. 2016; Snell et al. 2017, sec. 3.1).

Each block: 3x3 convolution with ``width`` filters (padding 1), batch normalisation, ReLU, 2x2 max-pooling.
A 28x28 Omniglot image gives 14, 7, 3, 1 pixel maps, so the last map flattens to a 64-d embedding.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """Input (B, C, H, W) -> OrderedDict block1..block4 of (B, width, H/2^i, W/2^i) (floor at each pooling)."""

    def __init__(self, *, in_channels: int = 1, width: int = 64, depth: int = 4) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(conv_block(in_channels if i == 0 else width, width) for i in range(depth))
        self.out_channels = [width] * depth
        self.strides = [2 ** (i + 1) for i in range(depth)]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out = OrderedDict()
        for i, block in enumerate(self.blocks):
            x = block(x)
            out[f"block{i + 1}"] = x
        return out
