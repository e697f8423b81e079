"""Any timm model as a backbone (``features_only``), under the shared contract:
``forward(x) -> OrderedDict[name, (B, C_i, H / s_i, W / s_i)]``, ``.out_channels``, ``.strides``.

Random initialisation by default (nothing is downloaded); ``pretrained=True`` uses timm's weights from the
local cache / hub, ``checkpoint_path`` a local file. ``freeze_bn`` turns BatchNorm layers into
``torchvision.ops.FrozenBatchNorm2d`` (the detection papers freeze BN statistics of ImageNet-initialised
backbones, since detection batches are small); ``freeze_at`` freezes the stem and the first stages
(Detectron: 2 = stem + res2), which only makes sense with pretrained weights.
"""

from __future__ import annotations

from collections import OrderedDict

import timm
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d (recursively) by a FrozenBatchNorm2d holding the same statistics."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


class TimmBackbone(nn.Module):
    """``name``: any timm model; ``out_indices``: feature levels (ResNets: 1..4 = C2..C5, strides 4..32)."""

    def __init__(self, *, name: str = "resnet50", out_indices: tuple[int, ...] = (1, 2, 3, 4),
                 pretrained: bool = False, checkpoint_path: str | None = None, freeze_bn: bool = False,
                 freeze_at: int = 0) -> None:
        super().__init__()
        kwargs = {"checkpoint_path": checkpoint_path} if checkpoint_path else {}
        try:
            self.body = timm.create_model(name, pretrained=pretrained, features_only=True,
                                          out_indices=tuple(out_indices), **kwargs)
        except (OSError, RuntimeError) as err:
            if not pretrained:
                raise
            raise RuntimeError(
                f"could not load the ImageNet weights of timm model {name!r} ({type(err).__name__}: {err}). "
                "timm fetches them from the Hugging Face hub into ~/.cache/huggingface (HF_HOME). Without network: "
                "copy that cache from a machine that has it, or set `checkpoint_path:` to a local weights file, "
                "or `pretrained: false` to start from random init.") from err
        info = self.body.feature_info
        self.out_channels = list(info.channels())
        self.strides = list(info.reduction())
        self.names = [f"c{int(r).bit_length() - 1}" for r in self.strides]  # stride 4 -> c2 ... 32 -> c5
        if freeze_bn:
            freeze_batchnorm(self.body)
        if freeze_at > 0:
            modules = list(self.body.named_children())
            for _, module in modules[: self._stage_end(freeze_at)]:
                for p in module.parameters():
                    p.requires_grad_(False)

    def _stage_end(self, freeze_at: int) -> int:
        """Index after the last child module of stage ``freeze_at`` (1 = stem, 2 = stem + first stage...)."""
        children = [n for n, _ in self.body.named_children()]
        stage_names = [n for n in children if n.startswith(("layer", "stages", "blocks"))]
        if freeze_at <= 1 or not stage_names:
            return children.index(stage_names[0]) if stage_names else 0
        return children.index(stage_names[min(freeze_at - 2, len(stage_names) - 1)]) + 1

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict(zip(self.names, self.body(x)))
