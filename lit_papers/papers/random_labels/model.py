"""The CIFAR-10 networks of Zhang et al. 2017, "Understanding deep learning requires rethinking generalization".

Appendix A / Figure 3 (the small Inception for CIFAR-10) and Table 1 (the MLPs), read top to bottom:

* The input is the 28x28 centre crop of a 32x32 image (:class:`CenterCrop`), standardised per image
  (:func:`per_image_standardization`: subtract the image's mean, divide by max(std, 1/sqrt(#values)), the
  "adjusted standard deviation"). With these inputs the MLP 1x512 has 28*28*3*512 + 512 + 512*10 + 10 = 1,209,866
  parameters, the count of Table 1, and the small Inception 1,649,402 (Table 1): both are asserted in the tests.
* Conv module (:class:`ConvModule`): k x k convolution with ``ch`` filters and stride s -> batch normalisation ->
  ReLU ("Inception w/o BatchNorm" of Table 1: ``batch_norm=False``, the convolution then has a bias). Table 1
  gives both Inceptions the same 1,649,402 parameters, which holds when the batch normalisation learns a shift
  (beta) and no scale (gamma), TensorFlow's ``batch_norm`` default: :class:`ChannelShift` after a non-affine
  ``BatchNorm2d`` (our reading of the count; ``bn_scale=True`` adds the gamma, 1,712 more parameters).
* Inception module (:class:`InceptionModule`, ch1, ch3): a 1x1 conv module with ch1 filters and a 3x3 conv module
  with ch3 filters side by side, concatenated along the channels (ch1 + ch3 out).
* Downsample module (:class:`DownsampleModule`, ch3): a 3x3 conv module with ch3 filters and stride 2, and a 3x3
  max-pool with stride 2, side by side, concatenated (ch3 + in channels out); the spatial size halves.
* The network (:class:`SmallInception`): conv 3x3/96 -> Inception(32, 32) -> Inception(32, 48) -> Downsample(80) ->
  Inception(112, 48) -> Inception(96, 64) -> Inception(80, 80) -> Inception(48, 96) -> Downsample(96) ->
  Inception(176, 160) -> Inception(176, 160) -> 7x7 mean pooling -> fully connected -> 10 logits.
  Spatial sizes 28 -> 14 -> 7 ("same" padding everywhere).
* :class:`MLP`: flatten the crop, ``hidden`` ReLU layers (1x512 or 3x512), a linear layer to the logits.

Padding: "same" convolutions pad (k-1)/2 on every side; a stride-2 3x3 window on an even size then starts at the
border pixel -1 (TensorFlow's "SAME" starts at 0: the windows sit one pixel apart, the sizes are equal). Max-pool
pads with -inf, so padding never wins the max. Pure ``torch.nn``: no Lightning, no data code.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def per_image_standardization(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> each image minus its mean, divided by max(std, 1/sqrt(C*H*W)) (population std)."""
    flat = x.flatten(1)  # (B, C*H*W)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, unbiased=False, keepdim=True).clamp_min(1.0 / math.sqrt(flat.shape[1]))
    return ((flat - mean) / std).view_as(x)


class CenterCrop(nn.Module):
    """(B, C, H, W) -> the central (B, C, size, size) (offset floor((H - size) / 2)); ``size=None``: unchanged."""

    def __init__(self, size: int | None) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.size is None:
            return x
        h, w = x.shape[-2:]
        if h < self.size or w < self.size:
            raise ValueError(f"CenterCrop({self.size}) of a {h}x{w} image: the input must be at least {self.size}")
        top, left = (h - self.size) // 2, (w - self.size) // 2
        return x[..., top : top + self.size, left : left + self.size]


class Preprocess(nn.Module):
    """The paper's input: centre crop, then (optionally) per-image standardisation."""

    def __init__(self, *, crop: int | None, standardize: bool) -> None:
        super().__init__()
        self.crop = CenterCrop(crop)
        self.standardize = standardize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.crop(x)
        return per_image_standardization(x) if self.standardize else x


class ChannelShift(nn.Module):
    """x + beta per channel: the learned shift of a batch normalisation without a scale. (B, C, H, W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.beta.view(1, -1, 1, 1)


class ConvModule(nn.Sequential):
    """Conv(k x k, ``out_channels``, stride) -> BatchNorm -> ReLU (Figure 3 "Conv module")."""

    def __init__(self, in_channels: int, out_channels: int, *, kernel: int, stride: int = 1,
                 batch_norm: bool = True, bn_scale: bool = False) -> None:
        layers: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2,
                                             bias=not batch_norm)]
        if batch_norm and bn_scale:
            layers.append(nn.BatchNorm2d(out_channels))
        elif batch_norm:
            layers += [nn.BatchNorm2d(out_channels, affine=False), ChannelShift(out_channels)]
        layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self.out_channels = out_channels


class InceptionModule(nn.Module):
    """1x1 conv module (ch1) || 3x3 conv module (ch3), concatenated: ch1 + ch3 channels (Figure 3)."""

    def __init__(self, in_channels: int, ch1: int, ch3: int, *, batch_norm: bool = True, bn_scale: bool = False) -> None:
        super().__init__()
        self.branch1 = ConvModule(in_channels, ch1, kernel=1, batch_norm=batch_norm, bn_scale=bn_scale)
        self.branch3 = ConvModule(in_channels, ch3, kernel=3, batch_norm=batch_norm, bn_scale=bn_scale)
        self.out_channels = ch1 + ch3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch3(x)], dim=1)  # (B, ch1 + ch3, H, W)


class DownsampleModule(nn.Module):
    """3x3 conv module with stride 2 (ch3) || 3x3 max-pool with stride 2, concatenated (Figure 3)."""

    def __init__(self, in_channels: int, ch3: int, *, batch_norm: bool = True, bn_scale: bool = False) -> None:
        super().__init__()
        self.conv = ConvModule(in_channels, ch3, kernel=3, stride=2, batch_norm=batch_norm, bn_scale=bn_scale)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.out_channels = ch3 + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.conv(x), self.pool(x)], dim=1)  # (B, ch3 + C, ceil(H/2), ceil(W/2))


# Figure 3, in order: ("conv", ch), ("inception", ch1, ch3), ("downsample", ch3)
SMALL_INCEPTION = (
    ("conv", 96),
    ("inception", 32, 32), ("inception", 32, 48), ("downsample", 80),
    ("inception", 112, 48), ("inception", 96, 64), ("inception", 80, 80), ("inception", 48, 96), ("downsample", 96),
    ("inception", 176, 160), ("inception", 176, 160),
)


class SmallInception(nn.Module):
    """The small Inception of Figure 3. ``width`` scales every channel count (1.0 = the paper; smaller for tests).

    Input (B, 3, 32, 32) in any normalisation; output (B, num_classes) logits.
    """

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3, width: float = 1.0, batch_norm: bool = True,
                 bn_scale: bool = False, crop: int | None = 28, standardize: bool = True) -> None:
        super().__init__()
        self.preprocess = Preprocess(crop=crop, standardize=standardize)

        def ch(n: int) -> int:
            return max(1, round(n * width))

        layers: list[nn.Module] = []
        channels = in_channels
        bn = dict(batch_norm=batch_norm, bn_scale=bn_scale)
        for kind, *sizes in SMALL_INCEPTION:
            if kind == "conv":
                block = ConvModule(channels, ch(sizes[0]), kernel=3, **bn)
            elif kind == "inception":
                block = InceptionModule(channels, ch(sizes[0]), ch(sizes[1]), **bn)
            else:
                block = DownsampleModule(channels, ch(sizes[0]), **bn)
            layers.append(block)
            channels = block.out_channels
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)  # the 7x7 mean pooling over the 7x7 map of a 28x28 input
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.preprocess(x))  # (B, C, 7, 7) for a 28x28 crop
        return self.fc(self.pool(x).flatten(1))  # (B, num_classes)


class MLP(nn.Module):
    """Multilayer perceptron of Table 1: flatten -> [Linear -> ReLU] x len(hidden) -> Linear.

    ``hidden=[512]`` is "MLP 1x512", ``[512, 512, 512]`` "MLP 3x512". Input (B, 3, 32, 32); output (B, K) logits.
    """

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3, hidden: list[int] = (512,),
                 crop: int | None = 28, input_size: int = 32, standardize: bool = True) -> None:
        super().__init__()
        self.preprocess = Preprocess(crop=crop, standardize=standardize)
        side = crop if crop is not None else input_size
        layers: list[nn.Module] = []
        width = in_channels * side * side
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(self.preprocess(x).flatten(1))  # (B, C*side*side) -> (B, K)
