"""Box formats and FPN level assignment (pure tensor functions).

Conventions: ``xyxy`` = (x0, y0, x1, y1) absolute pixels, pixel-corner coordinates (a box covering pixels
0..9 is (0, 0, 10, 10)); ``xywh`` = COCO's (x0, y0, width, height). NMS, IoU, RoIAlign/RoIPool come from
``torchvision.ops``; only what torchvision lacks lives here.
"""

from __future__ import annotations

import math

import torch


def xyxy_to_xywh(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) xyxy -> (N, 4) xywh (COCO results format)."""
    return torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """(N, 4) xywh -> (N, 4) xyxy."""
    return torch.cat([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], dim=1)


def fpn_level(boxes: torch.Tensor, *, k_min: int, k_max: int, canonical_scale: float = 224.0,
              canonical_level: int = 4, eps: float = 1e-6) -> torch.Tensor:
    """FPN level of each RoI (Lin et al. 2017, eq. 1): ``k = floor(k0 + log2(sqrt(w h) / 224))`` clamped to
    [k_min, k_max]; k0 = 4 (an ImageNet-size 224^2 RoI goes to P4).

    boxes: (N, 4) xyxy in input-image pixels -> (N,) int64 levels in [k_min, k_max]. ``eps`` guards exact
    powers of two against float rounding (torchvision's LevelMapper uses the same 1e-6).
    """
    scale = torch.sqrt(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0))
    k = torch.floor(canonical_level + torch.log2(scale / canonical_scale + eps))
    return k.clamp(min=k_min, max=k_max).to(torch.int64)


def levels_from_strides(strides: list[int]) -> list[int]:
    """Stride 2**k -> level k (P2 has stride 4); raises for non-power-of-two strides."""
    levels = []
    for s in strides:
        k = math.log2(s)
        if k != int(k):
            raise ValueError(f"stride {s} is not a power of two")
        levels.append(int(k))
    return levels
