"""Spatial Pyramid Pooling in Deep Convolutional Networks for Visual Recognition (He, Zhang, Ren, Sun, ECCV 2014):
SPP-net for object detection (sec. 4).

R-CNN runs the whole CNN once per warped proposal; SPP-net (sec. 4.1, Fig. 5):

1. computes the **convolutional feature map once per image** (the image resized so that its shorter side is
   ``s``, 688 in the single-scale setting), conv5 at the network's total stride (16 for ZF-5);
2. projects each proposal onto that map and applies **spatial pyramid pooling** on its window (the
   ``{6x6, 3x3, 2x2, 1x1}`` pyramid, 50 bins per channel, the paper's window / stride formula per level:
   :func:`lit_papers.layers.spp.spp_over_boxes`), so every proposal gets a fixed-length vector whatever its size;
3. feeds that vector to fc6, fc7 (fine-tuned; sec. 4.1 fine-tunes only the fully connected layers of the
   pre-trained net) and, as R-CNN, scores it with one linear SVM per class and refines the box with class-specific
   regressors (the shared :mod:`lit_papers.detection.region_classifiers`; SPP-net sec. 4.1 "we also use the
   bounding box regression of R-CNN" on the pooled conv5 features).

The conv body is injected under the backbone contract (the last map is conv5; ``.strides[-1]`` its stride).

``forward(image (3, H, W) float [0, 1], boxes (N, 4) xyxy pixels of that image) -> {"pool5": (N, C sum n^2)
(the pyramid), "fc7": (N, F), "logits": (N, K + 1)}``. ``image_scale`` resizes the image (and the boxes) by a
fixed factor before the conv body; ``None`` resizes the shorter side to ``scale`` pixels instead (688, sec. 4.1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lit_papers.layers.spp import pyramid_length, spp_over_boxes

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SPPNet(nn.Module):
    """SPP-net's detection network: conv5 once per image -> SPP per proposal window -> fc6 -> fc7 -> logits.

    - ``levels``: pyramid levels, bins per side (the paper's detection pyramid 1, 2, 3, 6).
    - ``scale`` / ``image_scale``: the single-scale input size (shorter side 688) or a fixed resize factor.
    - ``fc_dim``, ``dropout``: fc6 / fc7 (4096, 0.5); ``num_classes``: K (K + 1 logits, 0 = background).
    """

    def __init__(self, *, backbone: nn.Module, num_classes: int = 20, levels: Sequence[int] = (1, 2, 3, 6),
                 scale: int = 688, image_scale: float | None = None, fc_dim: int = 4096, dropout: float = 0.5,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        self.backbone = backbone
        self.levels = tuple(int(n) for n in levels)
        self.scale, self.image_scale = scale, image_scale
        self.stride = int(backbone.strides[-1])
        self.register_buffer("mean", torch.tensor(mean).view(3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(3, 1, 1))
        pooled_dim = int(backbone.out_channels[-1]) * pyramid_length(self.levels)
        self.fc6 = nn.Sequential(nn.Linear(pooled_dim, fc_dim), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.fc7 = nn.Sequential(nn.Linear(fc_dim, fc_dim), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.classifier = nn.Linear(fc_dim, num_classes + 1)
        self._cache: tuple[torch.Tensor, torch.Tensor, float] | None = None

    def resize_factor(self, height: int, width: int) -> float:
        return float(self.image_scale) if self.image_scale is not None else self.scale / min(height, width)

    def conv5(self, image: torch.Tensor) -> tuple[torch.Tensor, float]:
        """One image -> (conv5 map (1, C, h, w), the resize factor applied). Computed once per image: while the
        same image tensor is passed again (chunks of proposals) and no gradient is needed, the map is reused."""
        if (self._cache is not None and self._cache[0] is image and not torch.is_grad_enabled()):
            return self._cache[1], self._cache[2]
        factor = self.resize_factor(*image.shape[-2:])
        x = ((image - self.mean) / self.std)[None]  # (1, 3, H, W)
        if factor != 1.0:
            x = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False,
                              recompute_scale_factor=False)
        features = self.backbone(x)
        conv5 = next(reversed(features.values())) if isinstance(features, dict) else features  # (1, C, h, w)
        self._cache = (image, conv5, factor) if not torch.is_grad_enabled() else None
        return conv5, factor

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> dict[str, torch.Tensor]:
        conv5, factor = self.conv5(image)
        pooled = spp_over_boxes(conv5, [boxes.to(conv5.dtype) * factor], self.levels,
                                spatial_scale=1.0 / self.stride)  # (N, C * sum n^2)
        fc7 = self.fc7(self.fc6(pooled))  # (N, F)
        return {"pool5": pooled, "fc7": fc7, "logits": self.classifier(fc7)}
