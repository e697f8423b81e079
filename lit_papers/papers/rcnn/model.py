"""Rich feature hierarchies for accurate object detection (Girshick, Donahue, Darrell, Malik, CVPR 2014): R-CNN.

Reads like sec. 2 of the paper. For each of ~2000 category-independent region proposals of an image:

1. the proposal is **warped** to the CNN's fixed input size (227 x 227 for AlexNet / "T-Net", 224 for VGG-16 /
   "O-Net"), after dilating it so that the warped crop holds ``p = 16`` pixels of image context around the
   original box (sec. 2.1 "Feature extraction", appendix A, Fig. 7 bottom row); where the dilated box leaves the
   image the missing pixels are the image mean, i.e. 0 after mean subtraction (:func:`warp_crops`);
2. the crop goes through the **whole CNN**, five convolutional layers (conv5 -> max pool = "pool5") and two
   fully connected layers fc6, fc7 (4096 each, ReLU, dropout) (:class:`RCNN`);
3. a (K + 1)-way softmax classifier on fc7 is used for fine-tuning only (sec. 2.3); detection scores come from
   one linear SVM per class on fc7 and boxes from ridge regressors on pool5 (appendix B-C), fitted and applied
   by the shared :mod:`lit_papers.detection.region_classifiers`.

The convolutional body is injected under the backbone contract (``forward -> OrderedDict`` of maps, the last one
is conv5; ``.out_channels``, ``.strides``): the faithful config takes timm's VGG-16 (R-CNN's O-Net, Table 3;
timm has no AlexNet), the shapes configs the small :class:`ConvNet` (the same stages, narrow, BN, from scratch).

``forward(image (3, H, W) float [0, 1], boxes (N, 4) xyxy pixels) -> {"pool5": (N, C s^2), "fc7": (N, F),
"logits": (N, K + 1)}``. The image is normalised inside (ImageNet mean / std, the backbone's pre-training).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def warp_crops(image: torch.Tensor, boxes: torch.Tensor, *, size: int, padding: float) -> torch.Tensor:
    """Appendix A's "warp with context padding": (C, H, W) image, (N, 4) xyxy boxes -> (N, C, size, size).

    Each box (width ``w``) is dilated by ``w * padding / (size - 2 padding)`` on the left and right (the same
    with its height on top and bottom), so that after the anisotropic scaling to ``size`` the original box spans
    ``size - 2 padding`` pixels with ``padding`` pixels of context on every side. Output pixel ``j`` samples the
    image bilinearly at the continuous coordinate ``x1' + (j + 1/2) w' / size`` (pixel ``i`` covers ``[i, i + 1)``,
    its centre ``i + 1/2``); samples outside the image are 0 (``grid_sample`` zero padding: the image mean once
    the image is mean-subtracted, as the paper fills them)."""
    if boxes.numel() == 0:
        return image.new_zeros(0, image.shape[0], size, size)
    if 2 * padding >= size:
        raise ValueError(f"context padding {padding} leaves no room in a {size}-pixel crop")
    c, h, w = image.shape
    boxes = boxes.to(image.dtype)
    grow = padding / (size - 2 * padding)
    bw, bh = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-3), (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-3)
    x1, y1 = boxes[:, 0] - grow * bw, boxes[:, 1] - grow * bh
    ww, hh = bw * (1 + 2 * grow), bh * (1 + 2 * grow)  # dilated sizes
    steps = (torch.arange(size, dtype=image.dtype, device=image.device) + 0.5) / size  # (S,)
    xs = x1[:, None] + steps[None] * ww[:, None]  # (N, S) sample columns, pixels
    ys = y1[:, None] + steps[None] * hh[:, None]  # (N, S) sample rows
    gx = (2 * xs / w - 1)[:, None, :].expand(-1, size, -1)  # (N, S, S) normalised, align_corners=False
    gy = (2 * ys / h - 1)[:, :, None].expand(-1, -1, size)
    grid = torch.stack([gx, gy], dim=-1)  # (N, S, S, 2)
    return F.grid_sample(image[None].expand(len(boxes), -1, -1, -1), grid, mode="bilinear",
                         padding_mode="zeros", align_corners=False)  # (N, C, S, S)


class ConvNet(nn.Module):
    """A small stand-in for AlexNet's convolutional body, under the backbone contract: ``widths`` stages of
    [3x3 conv, BN, ReLU], a 2x2 max pool after every stage but the last; ``forward -> OrderedDict(conv5=...)``
    at stride ``2^(len(widths) - 1)`` (the last pooling, pool5, belongs to the detector: R-CNN max-pools, SPP-net
    replaces it by the pyramid)."""

    def __init__(self, *, widths: Sequence[int] = (16, 32, 64), in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            in_channels = width
        self.body = nn.Sequential(*layers)
        self.out_channels = [int(widths[-1])]
        self.strides = [2 ** (len(widths) - 1)]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict(conv5=self.body(x))


def last_map(features) -> torch.Tensor:
    """The deepest map of a backbone's output (an OrderedDict under the contract, or a plain tensor)."""
    return next(reversed(features.values())) if isinstance(features, dict) else features


class RCNN(nn.Module):
    """R-CNN's feature network: warped crop -> conv body -> pool5 -> fc6 -> fc7 -> (K + 1) logits.

    - ``crop_size`` / ``context_padding``: the warp (227 / 16 in the paper; the shapes configs keep the paper's
      padding fraction 16 / 227 at their smaller size).
    - ``pool5_kernel`` / ``pool5_stride``: the max pool on conv5 (AlexNet 3 / 2, VGG-16 2 / 2).
    - ``fc_dim``: fc6 / fc7 width (4096); ``dropout`` after each (0.5, as the pre-trained classifier).
    - ``num_classes``: object classes K (the classifier has K + 1 outputs, 0 = background).
    """

    def __init__(self, *, backbone: nn.Module, num_classes: int = 20, crop_size: int = 227,
                 context_padding: float = 16.0, pool5_kernel: int = 3, pool5_stride: int = 2, fc_dim: int = 4096,
                 dropout: float = 0.5, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
                 ) -> None:
        super().__init__()
        self.backbone = backbone
        self.crop_size, self.context_padding = crop_size, context_padding
        self.pool5 = nn.MaxPool2d(pool5_kernel, pool5_stride)
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1))
        with torch.no_grad():  # pool5's length for this crop size
            was = backbone.training
            backbone.eval()
            pool5_dim = self.pool5(last_map(backbone(torch.zeros(1, 3, crop_size, crop_size)))).numel()
            backbone.train(was)
        self.fc6 = nn.Sequential(nn.Linear(pool5_dim, fc_dim), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.fc7 = nn.Sequential(nn.Linear(fc_dim, fc_dim), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.classifier = nn.Linear(fc_dim, num_classes + 1)

    def crops(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(3, H, W) [0, 1] image, (N, 4) boxes -> (N, 3, S, S) mean-subtracted, normalised warped crops."""
        return warp_crops((image - self.mean) / self.std, boxes, size=self.crop_size, padding=self.context_padding)

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        crops = self.crops(image, boxes)  # (N, 3, S, S): one CNN pass per proposal, the cost SPP-net removes
        pool5 = self.pool5(last_map(self.backbone(crops))).flatten(1)  # (N, C * s * s)
        fc7 = self.fc7(self.fc6(pool5))  # (N, F)
        return {"pool5": pool5, "fc7": fc7, "logits": self.classifier(fc7)}
