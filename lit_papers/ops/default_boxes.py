"""SSD default boxes (Liu et al. 2016, sec. 2.2 "Choosing scales and aspect ratios for default boxes").

Pure functions (torch only). Formats: default boxes are returned both as ``cxcywh`` *relative* to the image
(fractions of width / height, the paper's units) by :func:`default_boxes_cxcywh`, and as ``xyxy`` absolute
pixel-corner coordinates (the project's box convention, :mod:`lit_papers.ops.boxes`) by :func:`default_boxes`.

Order (the layout the prediction heads must follow): feature map by feature map (finest first); inside a map
row-major over locations (y, then x); at each location the shapes in the order

    [aspect 1 at s_k, aspect 1 at s'_k = sqrt(s_k s_{k+1}), then per extra aspect ratio a: (a, 1/a)]

which is also torchvision's ``DefaultBoxGenerator`` order (the test oracle), so a head output
``(B, A*C, H, W)`` reshaped to ``(B, H, W, A, C)`` lines up with the boxes.

Scales (eq. 4): ``s_k = s_min + (s_max - s_min) / (m - 1) * (k - 1)``, k = 1..m, s_min 0.2, s_max 0.9. The VOC
experiments (sec. 3.1, "We set default box with scale 0.1 on conv4_3") give conv4_3 its own 0.1 and spread
0.2..0.9 over the other maps; the released code (``ssd_pascal.py``, unchecked) rounds the step to whole percents:
``floor((90 - 20) / (m - 2))`` = 17 for m = 6, so 0.1, 0.2, 0.37, 0.54, 0.71, 0.88 and s_{m+1} = 1.05 for the last
map's s'_k. :func:`ssd_scales` computes both (``first_scale`` / ``whole_percent``).

Centres (sec. 2.2): ``((i + 0.5) / |f_k|, (j + 0.5) / |f_k|)``; with ``steps`` (the released code's option) the
centre of cell i is ``(i + 0.5) * step_k / image_size`` instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def ssd_scales(num_maps: int, *, s_min: float = 0.2, s_max: float = 0.9, first_scale: float | None = None,
               whole_percent: bool = False) -> list[float]:
    """``num_maps + 1`` scales: s_1..s_m of eq. 4 and one more step past s_max (used only by the last map's
    s'_m = sqrt(s_m s_{m+1})).

    ``first_scale``: the VOC setting (sec. 3.1): the first map (conv4_3) gets this scale and eq. 4 runs over the
    other ``num_maps - 1`` maps. ``whole_percent``: the step of eq. 4 floored to whole percents as the released
    code does (0.2, 0.37, 0.54, ... for 5 maps) instead of the exact (s_max - s_min) / (m - 1)."""
    m = num_maps - (first_scale is not None)
    if m < 2:
        raise ValueError(f"eq. 4 needs at least 2 maps after the special first one, got num_maps={num_maps}")
    if whole_percent:
        lo, hi = round(s_min * 100), round(s_max * 100)
        step = math.floor((hi - lo) / (m - 1))
        scales = [(lo + step * k) / 100 for k in range(m + 1)]
    else:
        step = (s_max - s_min) / (m - 1)
        scales = [s_min + step * k for k in range(m + 1)]
    return ([first_scale] if first_scale is not None else []) + scales


def box_shapes(scales: Sequence[float], aspect_ratios: Sequence[Sequence[float]]) -> list[torch.Tensor]:
    """Per map k: (A_k, 2) relative (w, h) of the default boxes at one location, A_k = 2 + 2 len(ratios_k):
    ``w = s_k sqrt(a), h = s_k / sqrt(a)`` (sec. 2.2) for a in {1, a_i, 1/a_i}, plus the extra aspect-1 box of
    scale s'_k. ``aspect_ratios[k]`` lists the ratios other than 1 once (2 means both 2 and 1/2)."""
    if len(scales) != len(aspect_ratios) + 1:
        raise ValueError(f"scales needs one entry per map plus one (s_(m+1)), got {len(scales)} scales for "
                         f"{len(aspect_ratios)} maps")
    out = []
    for k, ratios in enumerate(aspect_ratios):
        s, s_prime = scales[k], math.sqrt(scales[k] * scales[k + 1])
        wh = [(s, s), (s_prime, s_prime)]
        for a in ratios:
            r = math.sqrt(a)
            wh += [(s * r, s / r), (s / r, s * r)]
        out.append(torch.tensor(wh, dtype=torch.float64))
    return out


def default_boxes_cxcywh(feature_sizes: Sequence[tuple[int, int]], *, scales: Sequence[float],
                         aspect_ratios: Sequence[Sequence[float]], image_size: tuple[int, int] | None = None,
                         steps: Sequence[int] | None = None) -> torch.Tensor:
    """(P, 4) float64 default boxes (cx, cy, w, h) relative to the image, P = sum_k H_k W_k A_k, in the order of
    the module docstring. ``feature_sizes``: (H_k, W_k) per map; ``steps`` (with ``image_size`` (H, W)): the
    released code's centres ``(i + 0.5) * step / size`` instead of the paper's ``(i + 0.5) / |f_k|``."""
    if len(feature_sizes) != len(aspect_ratios):
        raise ValueError(f"{len(feature_sizes)} feature maps but aspect ratios for {len(aspect_ratios)}")
    if steps is not None and (image_size is None or len(steps) != len(feature_sizes)):
        raise ValueError("steps needs image_size and one step per feature map")
    boxes = []
    for k, ((h, w), wh) in enumerate(zip(feature_sizes, box_shapes(scales, aspect_ratios))):
        fy, fx = (image_size[0] / steps[k], image_size[1] / steps[k]) if steps is not None else (h, w)
        cy = (torch.arange(h, dtype=torch.float64) + 0.5) / fy
        cx = (torch.arange(w, dtype=torch.float64) + 0.5) / fx
        cyy, cxx = torch.meshgrid(cy, cx, indexing="ij")  # (H, W)
        centres = torch.stack([cxx, cyy], dim=-1).reshape(h * w, 1, 2).expand(h * w, len(wh), 2)  # (HW, A, 2)
        sizes = wh.reshape(1, len(wh), 2).expand(h * w, len(wh), 2)  # (HW, A, 2)
        boxes.append(torch.cat([centres, sizes], dim=-1).reshape(-1, 4))  # (HW A, 4)
    return torch.cat(boxes)


def cxcywh_rel_to_xyxy(boxes: torch.Tensor, image_size: tuple[int, int], *, clip: bool = False) -> torch.Tensor:
    """(P, 4) relative (cx, cy, w, h) -> (P, 4) absolute xyxy pixels of an (H, W) image; ``clip`` clamps the corners
    to the image (the released code's ``clip`` option; off in its VOC recipe, unchecked)."""
    h, w = image_size
    scale = boxes.new_tensor([w, h])
    xyxy = torch.cat([(boxes[:, :2] - boxes[:, 2:] / 2) * scale, (boxes[:, :2] + boxes[:, 2:] / 2) * scale], dim=1)
    if clip:
        xyxy = torch.stack([xyxy[:, 0].clamp(0, w), xyxy[:, 1].clamp(0, h), xyxy[:, 2].clamp(0, w),
                            xyxy[:, 3].clamp(0, h)], dim=1)
    return xyxy


def default_boxes(feature_sizes: Sequence[tuple[int, int]], image_size: tuple[int, int], *,
                  scales: Sequence[float], aspect_ratios: Sequence[Sequence[float]],
                  steps: Sequence[int] | None = None, clip: bool = False, dtype: torch.dtype = torch.float32
                  ) -> torch.Tensor:
    """(P, 4) default boxes as absolute xyxy pixels of an (H, W) input (see :func:`default_boxes_cxcywh`)."""
    rel = default_boxes_cxcywh(feature_sizes, scales=scales, aspect_ratios=aspect_ratios, image_size=image_size,
                               steps=steps)
    return cxcywh_rel_to_xyxy(rel, image_size, clip=clip).to(dtype)


def boxes_per_location(aspect_ratios: Sequence[Sequence[float]]) -> list[int]:
    """A_k = 2 + 2 len(ratios_k): 4 for {1, 2, 1/2} and 6 for {1, 2, 1/2, 3, 1/3} (sec. 3.1)."""
    return [2 + 2 * len(r) for r in aspect_ratios]
