"""Fully Convolutional Networks for Semantic Segmentation (Long, Shelhamer, Darrell, CVPR 2015).

Reads top to bottom like sec. 3-4 of the paper:

1. a classification net's convolutional body (VGG-16, injected as a backbone under the shared contract) whose
   pool3 / pool4 / pool5 maps (strides 8 / 16 / 32) are tapped;
2. its fully connected layers "convolutionalised" (sec. 3.1): fc6 -> a 7x7 convolution with 4096 outputs,
   fc7 -> a 1x1 convolution with 4096 outputs, each followed by ReLU and dropout (where the classifier had it);
3. a 1x1 class-scoring convolution on fc7 (and on pool4 / pool3 for the skips), zero-initialised (sec. 4.2);
4. the skip architecture (sec. 4.2, Fig. 3): the stride-32 scores are upsampled 2x by a learned deconvolution
   initialised to bilinear interpolation and summed with the pool4 scores (FCN-16s), again 2x and summed with the
   pool3 scores (FCN-8s); the final upsampling back to the image (32x, 16x or 8x) is a deconvolution fixed to
   bilinear interpolation (sec. 4.2: "the final layer deconvolutional filters are fixed to bilinear").

Variants are configs: ``skips`` 0 / 1 / 2 is FCN-32s / 16s / 8s. ``skip_scales`` scales pool4 and pool3 before
their score layers: ``[1, 1]`` for the CVPR staged training (each net initialised from the coarser one), or
``[0.01, 0.0001]`` for "at-once" training of FCN-8s (Shelhamer et al., PAMI 2017, sec. 4.2), which the configs
here use (one run per variant, no stage hand-over).

Alignment (stated choice instead of the paper's pad-100 + crop offsets): the normalised input is zero-padded at
the bottom / right to a multiple of 32 and fc6 uses "same" padding (3), so every map is exactly 1/s of the padded
input, each 2x-upsampled map lands exactly on the finer one (deconvolution kernel 2f, stride f, padding f/2 --
the same placement as bilinear interpolation with ``align_corners=False``), and the output is cropped back to
the input. The paper pads conv1_1 by 100 and crops with fixed offsets because its fc6 is a "valid" 7x7
convolution; here the border of fc6 sees zero padding instead.

Input: images (B, 3, H, W) float in [0, 1], normalised inside the model with ImageNet mean / std (the backbone's
pre-training). Output: class scores (B, K, H, W).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """(C, C, 2f - f % 2, 2f - f % 2) deconvolution weight doing per-channel bilinear upsampling by ``factor``
    (the "bilinear filler": ``(1 - |x - c| / f)`` outer product, ``c`` the kernel centre; diagonal in channels)."""
    size = 2 * factor - factor % 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    x = torch.arange(size, dtype=torch.float64)
    w1 = 1 - (x - centre).abs() / factor  # (k,)
    weight = torch.zeros(channels, channels, size, size, dtype=torch.float64)
    weight[range(channels), range(channels)] = torch.outer(w1, w1)
    return weight.float()


class Upsample(nn.Module):
    """Deconvolution by ``factor`` (kernel 2f, stride f, padding f/2: output exactly f times the input),
    initialised to bilinear; ``learned=False`` keeps the kernel fixed (a buffer, no parameter)."""

    def __init__(self, *, channels: int, factor: int, learned: bool) -> None:
        super().__init__()
        if factor % 2:
            raise ValueError(f"upsampling factor must be even, got {factor}")
        self.factor = factor
        weight = bilinear_kernel(channels, factor)
        if learned:
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(x, self.weight, stride=self.factor, padding=self.factor // 2)  # (B, C, fH, fW)


class VGGFeatures(nn.Module):
    """VGG's convolutional body (sec. 3.1 uses VGG-16: ``stage_convs`` [2, 2, 3, 3, 3], widths 64..512), under
    the backbone contract: ``forward -> OrderedDict(pool3, pool4, pool5)``, strides 8 / 16 / 32. ``width``
    scales the channels and ``batch_norm`` adds BN (both for training from scratch on CPU; the paper fine-tunes
    the ImageNet VGG-16, taken through timm in the faithful configs)."""

    def __init__(self, *, stage_convs: tuple[int, ...] = (2, 2, 3, 3, 3),
                 widths: tuple[int, ...] = (64, 128, 256, 512, 512), batch_norm: bool = False) -> None:
        super().__init__()
        if len(stage_convs) != 5 or len(widths) != 5:
            raise ValueError("VGGFeatures needs five stages (stage_convs and widths of length 5)")
        stages, cin = [], 3
        for n, cout in zip(stage_convs, widths):
            layers: list[nn.Module] = []
            for _ in range(n):
                layers += [nn.Conv2d(cin, cout, 3, padding=1)]
                layers += [nn.BatchNorm2d(cout)] if batch_norm else []
                layers += [nn.ReLU(inplace=True)]
                cin = cout
            layers.append(nn.MaxPool2d(2, 2))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.out_channels = list(widths[2:])
        self.strides = [8, 16, 32]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out = OrderedDict()
        for i, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if i >= 3:
                out[f"pool{i}"] = x  # (B, C_i, H / 2^i, W / 2^i)
        return out


def timm_classifier(name: str, *, pretrained: bool = True) -> nn.Module:
    """The fully connected layers of a timm VGG, already as convolutions (``pre_logits``: fc1 7x7, fc2 1x1):
    timm converts the ImageNet fc6 / fc7 weights exactly as sec. 3.1 casts them."""
    import timm

    return timm.create_model(name, pretrained=pretrained).pre_logits


def copy_classifier(fcn: FCN, classifier: nn.Module) -> None:
    """fc6 / fc7 of ``fcn`` <- ``classifier.fc1`` / ``.fc2`` (the shapes must agree: ``fc_channels`` 4096, 7x7)."""
    with torch.no_grad():
        for mine, theirs in ((fcn.fc6[0], classifier.fc1), (fcn.fc7[0], classifier.fc2)):
            if mine.weight.shape != theirs.weight.shape:
                raise ValueError(f"classifier weights {tuple(theirs.weight.shape)} do not fit fc layer "
                                 f"{tuple(mine.weight.shape)}; set fc_channels / fc6_kernel to the classifier's")
            mine.weight.copy_(theirs.weight)
            mine.bias.copy_(theirs.bias)


class FCN(nn.Module):
    """FCN-32s / 16s / 8s on any backbone. ``taps``: indices into the backbone's outputs of the maps used as
    pool3, pool4, pool5 (timm's ``vgg16`` ``features_only`` taps the ReLU *before* each pool: a tapped map at half
    the needed stride is max-pooled 2x2, exactly VGG's own parameter-free pool layer)."""

    def __init__(self, *, backbone: nn.Module, num_classes: int = 21, skips: int = 2,
                 taps: tuple[int, int, int] = (0, 1, 2), fc_channels: int = 4096, fc6_kernel: int = 7,
                 dropout: float = 0.5, skip_scales: tuple[float, float] = (0.01, 0.0001),
                 mean: tuple[float, float, float] = (0.485, 0.456, 0.406),
                 std: tuple[float, float, float] = (0.229, 0.224, 0.225), classifier_from: str | None = None,
                 classifier_pretrained: bool = True) -> None:
        super().__init__()
        if skips not in (0, 1, 2):
            raise ValueError(f"skips must be 0 (FCN-32s), 1 (FCN-16s) or 2 (FCN-8s), got {skips}")
        self.backbone = backbone
        self.taps = list(taps)
        strides = [backbone.strides[i] for i in taps]
        channels = [backbone.out_channels[i] for i in taps]
        self.pools = nn.ModuleList()
        for s, want in zip(strides, (8, 16, 32)):
            if s not in (want, want // 2):
                raise ValueError(f"backbone tap at stride {s} cannot serve as the stride-{want} map; pick taps "
                                 f"with strides {want} or {want // 2} (backbone strides {backbone.strides})")
            self.pools.append(nn.MaxPool2d(2, 2) if s == want // 2 else nn.Identity())
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        # sec. 3.1: the classifier's fully connected layers as convolutions
        self.fc6 = nn.Sequential(nn.Conv2d(channels[2], fc_channels, fc6_kernel, padding=fc6_kernel // 2),
                                 nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.fc7 = nn.Sequential(nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        # sec. 4.2: skips from pool4 then pool3, each after a learned 2x upsampling initialised to bilinear
        self.skip_scales = list(skip_scales[:skips])
        self.score_skips = nn.ModuleList(nn.Conv2d(channels[1 - i], num_classes, 1) for i in range(skips))
        self.up2 = nn.ModuleList(Upsample(channels=num_classes, factor=2, learned=True) for _ in range(skips))
        self.final_up = Upsample(channels=num_classes, factor=32 // 2**skips, learned=False)
        for conv in (self.score_fr, *self.score_skips):  # sec. 4.2: zero-initialise the class scoring layers
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        if classifier_from is not None:
            copy_classifier(self, timm_classifier(classifier_from, pretrained=classifier_pretrained))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        h, w = images.shape[-2:]
        x = (images - self.mean) / self.std
        x = F.pad(x, (0, -w % 32, 0, -h % 32))  # (B, 3, 32 ceil(H/32), 32 ceil(W/32)), zeros after normalising
        maps = list(self.backbone(x).values())
        pool3, pool4, pool5 = (pool(maps[i]) for pool, i in zip(self.pools, self.taps))
        score = self.score_fr(self.fc7(self.fc6(pool5)))  # (B, K, H'/32, W'/32)
        for up, score_skip, feature, scale in zip(self.up2, self.score_skips, (pool4, pool3), self.skip_scales):
            score = up(score) + score_skip(feature * scale)  # (B, K, H'/16, W'/16), then H'/8
        return self.final_up(score)[..., :h, :w]  # (B, K, H, W)
