"""Box heads of the R-CNN family: what turns pooled RoI features (R, C, S, S) into one vector per RoI.

* :class:`FCHead`: two fully connected layers + ReLU (+ dropout). Fast R-CNN's VGG-16 head is fc6/fc7 of 4096
  with dropout 0.5, initialised from the ImageNet classifier (Fast R-CNN sec. 2.2, "Initializing from
  pre-trained networks"; :func:`fc_head_from_classifier`); the FPN head is 2 x 1024 without dropout (Lin et al.
  2017, sec. 4.2).
* :class:`Res5Head`: the "C4" head of ResNet detectors (He et al. 2016, Faster R-CNN on ResNet; Mask R-CNN
  Fig. 4 left): RoI features pooled from C4 (14 x 14, stride 16) go through the backbone's res5 stage (stride 2
  in its first block -> 7 x 7), then average pooling. The mask branch of Mask R-CNN C4 branches from the same
  res5 output (``trunk``).
"""

from __future__ import annotations

import torch
from torch import nn


class FCHead(nn.Module):
    """(R, C, S, S) -> (R, dim): flatten, fc6 + ReLU (+ dropout), fc7 + ReLU (+ dropout)."""

    def __init__(self, *, in_features: int, dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_features, dim)
        self.fc7 = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in place: a Linear's backward needs its input, not its output, so the ReLU may overwrite it
        x = self.drop(torch.relu_(self.fc6(x.flatten(1))))  # (R, dim)
        return self.drop(torch.relu_(self.fc7(x)))


@torch.no_grad()
def fc_head_from_classifier(head: FCHead, mlp: nn.Module) -> FCHead:
    """Copy a classifier's fc1/fc2 (timm VGG ``pre_logits``: fc6 as a 7x7 conv, fc7 as a 1x1 conv) into ``head``.
    A k x k conv on a k x k input is a linear layer on the (C, k, k)-flattened input, the order ``flatten(1)``
    uses, so the weights reshape to (out, C k k)."""
    for fc, conv in ((head.fc6, mlp.fc1), (head.fc7, mlp.fc2)):
        weight = conv.weight.reshape(conv.weight.shape[0], -1)  # (out, C k k)
        if weight.shape != fc.weight.shape:
            raise ValueError(f"classifier layer {tuple(weight.shape)} does not fit box head layer "
                             f"{tuple(fc.weight.shape)}: the pooled size x channels must equal the classifier's input "
                             "(VGG-16: 7 x 7 x 512) and box_head_dim its width (4096)")
        fc.weight.copy_(weight)
        fc.bias.copy_(conv.bias)
    return head


class Res5Head(nn.Module):
    """(R, C4, S, S) -> (R, C5): ``trunk`` (the res5 stage, (R, C4, S, S) -> (R, C5, S/2, S/2)) + mean over space."""

    def __init__(self, *, trunk: nn.Module, out_features: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.out_features = out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).mean(dim=(2, 3))  # (R, C5)
