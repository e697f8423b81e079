"""He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016 -- section 4.2 (CIFAR-10).

"The network ends with a global average pooling, a 10-way fully-connected layer, and softmax. There are
totally 6n+2 stacked weighted layers." The residual stages live in
:class:`lit_papers.backbones.cifar_resnet.CifarResNet` (shared with later CIFAR papers).
"""

from __future__ import annotations

import torch
from torch import nn

from lit_papers.backbones.cifar_resnet import CifarResNet


class ResNetCifar(nn.Module):
    """ResNet-(6n+2) classifier: backbone -> global average pool -> linear. Input (B, 3, 32, 32) -> logits (B, K)."""

    def __init__(self, *, depth: int = 20, num_classes: int = 10, shortcut: str = "A") -> None:
        super().__init__()
        self.backbone = CifarResNet(depth=depth, shortcut=shortcut)
        self.fc = nn.Linear(self.backbone.out_channels[-1], num_classes)
        nn.init.kaiming_normal_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = self.backbone(x)["stage3"]  # (B, 64, 8, 8)
        return self.fc(last.mean(dim=(2, 3)))  # (B, 64) -> (B, K)
