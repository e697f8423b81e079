"""Feature Pyramid Network neck (Lin et al. 2017, sec. 3), used by Faster R-CNN and Mask R-CNN.

C2..C5 -> 1x1 lateral convs to ``out_channels`` (256 in the paper) -> top-down pathway: nearest 2x upsampling
+ element-wise addition -> 3x3 output convs -> P2..P5; P6 is a stride-2 subsampling of P5 (sec. 4.1, used by
the RPN only). Built on ``torchvision.ops.FeaturePyramidNetwork`` (which implements exactly this, with a
``LastLevelMaxPool`` of kernel 1 / stride 2 = subsampling). Follows the backbone contract: ``forward`` returns
an OrderedDict ``p2..p6`` with ``.out_channels`` and ``.strides``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool


class FPN(nn.Module):
    """``body``: a backbone under the contract (its maps in increasing stride). Output names ``p<level>``."""

    def __init__(self, *, body: nn.Module, out_channels: int = 256, p6: bool = True) -> None:
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.out_channels), out_channels,
                                         extra_blocks=LastLevelMaxPool() if p6 else None)
        strides = list(body.strides)
        if p6:
            strides.append(strides[-1] * 2)
        self.strides = strides
        self.out_channels = [out_channels] * len(strides)
        self.names = [f"p{int(s).bit_length() - 1}" for s in strides]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.fpn(self.body(x))
        return OrderedDict(zip(self.names, maps.values()))
