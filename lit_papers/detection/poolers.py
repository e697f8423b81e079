"""RoI feature extraction: RoIAlign (Mask R-CNN, sec. 3) or RoIPool (Fast R-CNN, sec. 2.1) over one map or an
FPN pyramid (Lin et al. 2017, eq. 1 level assignment). Kernels are ``torchvision.ops.roi_align/roi_pool``.

Everything the papers vary is explicit:

* ``kind="align"``: bilinear sampling at ``sampling_ratio`` x ``sampling_ratio`` regular points per bin
  (2 in Mask R-CNN; 0 = adaptive ceil(roi_size / output_size)), averaged; ``aligned=True`` shifts box
  coordinates by -0.5 so that a pixel's centre sits at (i + 0.5) (Detectron2's fix of the half-pixel offset;
  the paper's original implementation used ``aligned=False``).
* ``kind="pool"``: coordinates rounded to the feature grid (``round(x * spatial_scale)``), bins quantised,
  max over each bin (``aligned``/``sampling_ratio`` do not apply).
* ``spatial_scale = 1 / stride`` of the map a RoI is pooled from, given by the backbone's ``strides`` (not
  guessed from feature shapes).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import RoIAlign, RoIPool, roi_align, roi_pool

from lit_papers.ops.boxes import fpn_level, levels_from_strides


def pool_rois(feature: torch.Tensor, rois: torch.Tensor, *, output_size: int, spatial_scale: float, kind: str,
              sampling_ratio: int = 2, aligned: bool = True) -> torch.Tensor:
    """feature (B, C, H, W), rois (R, 5) as (batch index, x0, y0, x1, y1) in image pixels -> (R, C, S, S)."""
    if kind == "align":
        return roi_align(feature, rois, output_size, spatial_scale=spatial_scale, sampling_ratio=sampling_ratio,
                         aligned=aligned)
    if kind == "pool":
        return roi_pool(feature, rois, output_size, spatial_scale=spatial_scale)
    raise ValueError(f"kind must be 'align' or 'pool', got {kind!r}")


def level_op(kind: str, *, output_size: int, spatial_scale: float, sampling_ratio: int = 2,
             aligned: bool = True) -> nn.Module:
    """The pooling op for one map, built once: torchvision's ``RoIAlign`` or ``RoIPool`` module."""
    if kind == "align":
        return RoIAlign(output_size, spatial_scale=spatial_scale, sampling_ratio=sampling_ratio, aligned=aligned)
    if kind == "pool":
        return RoIPool(output_size, spatial_scale=spatial_scale)
    raise ValueError(f"kind must be 'align' or 'pool', got {kind!r}")


class RoIPooler(nn.Module):
    """Pools RoIs from the maps named ``featmap_names`` whose strides are ``strides`` (same order).

    The per-map ops (``kind`` "align" | "pool", ``spatial_scale = 1 / stride``) are built once in ``__init__``
    (``self.ops``); ``forward`` never looks at ``kind``. One map: every RoI uses it. Several maps (FPN P2..P5):
    each RoI goes to level ``fpn_level`` (k0 = 4, canonical 224), clamped to the available levels. Call
    signature as torchvision's RoIHeads expects:
    ``(features: dict[str, (B, C, H, W)], boxes: list[(N_i, 4) xyxy], image_sizes) -> (sum N_i, C, S, S)``.
    """

    def __init__(self, *, featmap_names: list[str], strides: list[int], output_size: int = 7, kind: str = "align",
                 sampling_ratio: int = 2, aligned: bool = True, canonical_scale: float = 224.0,
                 canonical_level: int = 4) -> None:
        super().__init__()
        if len(featmap_names) != len(strides):
            raise ValueError("featmap_names and strides must have the same length")
        self.featmap_names = list(featmap_names)
        self.strides = list(strides)
        self.levels = levels_from_strides(self.strides)
        self.output_size = output_size
        self.kind, self.sampling_ratio, self.aligned = kind, sampling_ratio, aligned
        self.canonical_scale, self.canonical_level = canonical_scale, canonical_level
        self.ops = nn.ModuleList(level_op(kind, output_size=output_size, spatial_scale=1.0 / s,
                                          sampling_ratio=sampling_ratio, aligned=aligned) for s in self.strides)

    def forward(self, features: dict[str, torch.Tensor], boxes: list[torch.Tensor], image_sizes=None) -> torch.Tensor:
        maps = [features[n] for n in self.featmap_names]
        rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(boxes)])  # (R, 5)
        if len(maps) == 1:
            return self.ops[0](maps[0], rois)
        levels = fpn_level(rois[:, 1:], k_min=self.levels[0], k_max=self.levels[-1],
                           canonical_scale=self.canonical_scale, canonical_level=self.canonical_level)
        out = maps[0].new_zeros((rois.shape[0], maps[0].shape[1], self.output_size, self.output_size))
        for level, op, feature in zip(self.levels, self.ops, maps):
            idx = torch.where(levels == level)[0]
            if idx.numel():
                out[idx] = op(feature, rois[idx]).to(out.dtype)
        return out
