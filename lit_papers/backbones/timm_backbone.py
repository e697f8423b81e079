"""Any timm model as a backbone (``features_only``), under the shared contract:
``forward(x) -> OrderedDict[name, (B, C_i, H / s_i, W / s_i)]``, ``.out_channels``, ``.strides``.

Maps are chosen **by stride** (``feature_info.reduction()``), never by timm index: the index of "the stride-16
map" differs between families (ResNet: 3 = layer3; VGG-16: 4 = conv5_3, because timm puts a feature before
every pool, reductions 1, 2, 4, 8, 16, 32). For a stride with several maps the deepest is taken; a stride the
model does not have is an error naming the model and the strides it has.

Random initialisation by default (nothing is downloaded); ``pretrained=True`` uses timm's weights from the
local cache / hub, ``checkpoint_path`` a local file. ``freeze_bn`` turns BatchNorm layers into
``torchvision.ops.FrozenBatchNorm2d`` (the detection papers freeze BN statistics of ImageNet-initialised
backbones, since detection batches are small). ``freeze_at = k`` freezes every layer up to and including the one
that produces timm's k-th feature map (of all of the model's maps): ResNet 2 = stem + res2 (Detectron), VGG-16
2 = conv1_x + conv2_x (Fast R-CNN sec. 4.5 fine-tunes conv3_1 and up). It only makes sense with pretrained
weights.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

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


def feature_maps(name: str) -> list[dict]:
    """All feature maps timm's ``features_only`` offers for ``name``: ``index``, ``stride``, ``channels``,
    ``module`` (built on the meta device: no weights, no download, milliseconds)."""
    with torch.device("meta"):
        info = timm.create_model(name, pretrained=False, features_only=True).feature_info
    return [{"index": i, "stride": int(s), "channels": int(c), "module": m}
            for i, (s, c, m) in enumerate(zip(info.reduction(), info.channels(), info.module_name()))]


def indices_for_strides(name: str, strides: Sequence[int]) -> tuple[int, ...]:
    """timm ``out_indices`` of the deepest map at each stride in ``strides``; ValueError if one is missing."""
    maps = feature_maps(name)
    indices = []
    for s in strides:
        found = [m["index"] for m in maps if m["stride"] == int(s)]
        if not found:
            have = ", ".join(f"{m['module']}: stride {m['stride']}" for m in maps)
            raise ValueError(f"backbone {name!r} has no feature map at stride {s} (it has {have}). A single-map "
                             "detector (fpn: false) needs a stride-16 map, an FPN needs strides 4, 8, 16, 32: "
                             "choose another backbone or other strides.")
        indices.append(found[-1])
    return tuple(indices)


def _create(name: str, *, pretrained: bool, checkpoint_path: str | None, **kwargs) -> nn.Module:
    extra = {"checkpoint_path": checkpoint_path} if checkpoint_path else {}
    try:
        return timm.create_model(name, pretrained=pretrained, **extra, **kwargs)
    except (OSError, RuntimeError) as err:
        if not pretrained:
            raise
        raise RuntimeError(
            f"could not load the ImageNet weights of timm model {name!r} ({type(err).__name__}: {err}). "
            "timm fetches them from the Hugging Face hub into ~/.cache/huggingface (HF_HOME). Without network: "
            "copy that cache from a machine that has it, or set `checkpoint_path:` to a local weights file, "
            "or `pretrained: false` to start from random init.") from err


def _child_index(body: nn.Module, module_name: str) -> int:
    """Position among ``body``'s children of timm's feature module ``module_name`` (FeatureListNet flattens
    ``a.b`` to ``a_b``)."""
    children = [n for n, _ in body.named_children()]
    key = module_name.replace(".", "_")
    if key not in children:
        raise ValueError(f"cannot locate timm feature module {module_name!r} among {children[:8]}...")
    return children.index(key)


class TimmBackbone(nn.Module):
    """``name``: any timm model; ``strides``: the maps to return, by stride (ResNets: 4, 8, 16, 32 = C2..C5);
    ``out_indices`` (raw timm indices) overrides ``strides`` when given."""

    def __init__(self, *, name: str = "resnet50", strides: Sequence[int] = (4, 8, 16, 32),
                 out_indices: Sequence[int] | None = None, pretrained: bool = False,
                 checkpoint_path: str | None = None, freeze_bn: bool = False, freeze_at: int = 0) -> None:
        super().__init__()
        indices = tuple(out_indices) if out_indices is not None else indices_for_strides(name, strides)
        self.body = _create(name, pretrained=pretrained, checkpoint_path=checkpoint_path, features_only=True,
                            out_indices=indices)
        info = self.body.feature_info
        self.out_channels = list(info.channels())
        self.strides = list(info.reduction())
        self.module_names = list(info.module_name())  # timm's names of the layers whose outputs are returned
        self.names = [f"c{int(r).bit_length() - 1}" for r in self.strides]  # stride 4 -> c2 ... 32 -> c5
        if freeze_bn:
            freeze_batchnorm(self.body)
        if freeze_at > 0:
            maps = feature_maps(name)
            if freeze_at > len(maps) or maps[freeze_at - 1]["index"] > max(indices):
                raise ValueError(f"freeze_at={freeze_at} freezes past the last map this backbone computes "
                                 f"({self.module_names[-1]}); use at most the number of maps before it")
            end = _child_index(self.body, maps[freeze_at - 1]["module"])
            for _, module in list(self.body.named_children())[: end + 1]:
                for p in module.parameters():
                    p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict(zip(self.names, self.body(x)))


def timm_stage(name: str, *, from_stride: int, to_stride: int, pretrained: bool = False,
               checkpoint_path: str | None = None, freeze_bn: bool = False) -> tuple[nn.Sequential, int]:
    """The layers of timm model ``name`` that turn its stride-``from_stride`` map into its stride-``to_stride``
    map (ResNet 16 -> 32: ``layer4`` = res5, stride 2 in its first block), with the same weights as the
    backbone (ImageNet when ``pretrained``). Returns (module (B, C_in, H, W) -> (B, C_out, H / r, W / r), C_out)."""
    first, last = indices_for_strides(name, (from_stride, to_stride))
    body = _create(name, pretrained=pretrained, checkpoint_path=checkpoint_path, features_only=True,
                   out_indices=(first, last))
    if freeze_bn:
        freeze_batchnorm(body)
    modules = body.feature_info.module_name()
    children = list(body.named_children())
    start, end = _child_index(body, modules[0]), _child_index(body, modules[1])
    return nn.Sequential(OrderedDict(children[start + 1: end + 1])), int(body.feature_info.channels()[1])


def timm_classifier_mlp(name: str, *, pretrained: bool = False, checkpoint_path: str | None = None) -> nn.Module:
    """The fully connected layers before the classifier of timm model ``name`` (VGG-16: ``pre_logits`` =
    fc6 as a 7x7 conv 512 -> 4096 and fc7 as a 1x1 conv 4096 -> 4096), ImageNet weights when ``pretrained``."""
    model = _create(name, pretrained=pretrained, checkpoint_path=checkpoint_path)
    mlp = getattr(model, "pre_logits", None)
    if mlp is None or not hasattr(mlp, "fc1") or not hasattr(mlp, "fc2"):
        raise ValueError(f"timm model {name!r} has no pre_logits fc1/fc2 (fc6/fc7) to initialise a box head from; "
                         "set box_head_from_backbone: false")
    return mlp
