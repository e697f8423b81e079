"""Spatial pyramid pooling (He et al. 2014, "Spatial Pyramid Pooling in Deep Convolutional Networks", sec. 2.3).

For an ``a x a`` feature map and an ``n x n`` pyramid level the paper (sec. 2.3 and its footnote) implements the
level as a sliding-window max pool with

    window = ceil(a / n),   stride = floor(a / n),

so bin ``i`` (``i = 0 .. n-1``) covers rows ``[i * stride, i * stride + window)``. The levels' outputs are
flattened and concatenated into one fixed-length vector whatever the input size: ``C * sum(n^2)`` values
(``(1, 2, 3, 6)`` -> 50 bins per channel, the paper's detection pyramid; ``(1, 2, 4)`` -> 1 + 4 + 16 = 21 bins,
the sec. 2.3 example). The paper's example: conv5 of 13x13 with levels 3/2/1 -> windows 5/7/13, strides 4/6/13.

Conventions stated here (the paper only treats square maps):

- Non-square maps: the formula is applied per axis (``H`` with ``n`` for rows, ``W`` with ``n`` for columns).
- Coverage: write ``a = q n + r`` (``0 <= r < n``). If ``r == 0`` the bins tile the map exactly. If ``r >= 1`` the
  last bin ends at ``(n-1) q + (q+1) = q n + 1``, so the last ``r - 1`` rows (columns) are never pooled: e.g.
  ``a = 10, n = 4`` (window 3, stride 2) covers rows 0..8 and ignores row 9; ``a = 11, n = 6`` (window 2,
  stride 1) covers 0..6 and ignores 7..10. We follow the formula faithfully and **do not** pool those rows; this is
  where the layer differs from ``torch.nn.functional.adaptive_max_pool2d`` (bins ``[floor(i a/n),
  ceil((i+1) a/n))``, which always cover the map; the two coincide exactly when ``n`` divides ``a``).
  ``uncovered(a, n)`` returns that count.
- A plain sliding max pool with that window and stride yields more than ``n`` outputs when ``r - 1 >= q``
  (``a = 11, n = 6`` gives 10); only the formula's ``n`` bins (the first ``n``) are kept.
- ``a < n`` makes the stride 0 (every bin would be the same pixel): :func:`spatial_pyramid_pool` raises.
  :func:`spp_over_boxes` instead grows small windows to ``max(levels)`` cells (see there).

Output layout: for each level in the given order, the ``(C, n, n)`` grid flattened channel-major (``c * n * n + i *
n + j``), then the levels concatenated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def level_geometry(a: int, n: int) -> tuple[int, int]:
    """The paper's (window, stride) = (ceil(a/n), floor(a/n)) for one axis of length ``a`` and ``n`` bins."""
    if n < 1:
        raise ValueError(f"pyramid level must be >= 1 bins per axis, got n={n}")
    if a < n:
        raise ValueError(f"SPP level n={n} needs a map of at least {n} cells per axis, got {a}: the paper's "
                         f"stride floor(a/n) would be 0. Use a larger input or smaller levels.")
    return math.ceil(a / n), a // n


def uncovered(a: int, n: int) -> int:
    """How many trailing cells of an axis of length ``a`` no bin of an ``n``-bin level pools (``r - 1`` or 0)."""
    window, stride = level_geometry(a, n)
    return a - ((n - 1) * stride + window)


def pyramid_length(levels: Sequence[int]) -> int:
    """Bins per channel: ``sum(n^2)``."""
    return sum(n * n for n in levels)


def _check_levels(levels: Sequence[int]) -> None:
    if len(levels) == 0 or any(int(n) != n or n < 1 for n in levels):
        raise ValueError(f"SPP levels must be a non-empty list of positive ints, got {list(levels)}")


def spatial_pyramid_pool(features: torch.Tensor, levels: Sequence[int]) -> torch.Tensor:
    """``features``: Tensor[B, C, H, W] -> Tensor[B, C * sum(n^2)], max pooling with the paper's window/stride.

    Raises ``ValueError`` when ``H`` or ``W`` is smaller than a level's ``n``.
    """
    _check_levels(levels)
    if features.dim() != 4:
        raise ValueError(f"spatial_pyramid_pool expects (B, C, H, W), got shape {tuple(features.shape)}")
    b, _, h, w = features.shape
    outs = []
    for n in levels:
        (kh, sh), (kw, sw) = level_geometry(h, n), level_geometry(w, n)
        pooled = F.max_pool2d(features, kernel_size=(kh, kw), stride=(sh, sw))  # (B, C, >=n, >=n)
        pooled = pooled[:, :, :n, :n]  # (B, C, n, n): the formula's bins i = 0..n-1 only
        outs.append(pooled.reshape(b, -1))  # (B, C * n * n)
    return torch.cat(outs, dim=1)  # (B, C * sum(n^2))


def _box_window(lo: float, hi: float, size: int, need: int) -> tuple[int, int]:
    """Scaled box edges -> the smallest integer cell range [start, end) covering them, clamped to the map and
    grown (centred, shifted back inside the map) to at least ``need`` cells."""
    start = max(0, min(size - 1, math.floor(lo)))
    end = min(size, max(start + 1, math.ceil(hi)))
    if end - start < need:
        centre = (start + end) / 2
        start = max(0, min(size - need, math.floor(centre - need / 2)))
        end = start + need
    return start, end


def spp_over_boxes(features: torch.Tensor, boxes: torch.Tensor | list[torch.Tensor], levels: Sequence[int],
                   spatial_scale: float) -> torch.Tensor:
    """SPP on each proposal's window of the feature map (the paper's detection, sec. 3.1: conv features once per
    image, the pyramid over each window).

    - ``features``: Tensor[B, C, H, W].
    - ``boxes``: Tensor[K, 5] rows ``(batch_index, x1, y1, x2, y2)``, or a list of B Tensor[L_b, 4] ``xyxy``
      (as ``torchvision.ops.roi_pool``), in image pixels; ``spatial_scale`` maps them onto the feature map
      (``1 / total stride``; pass 1.0 for boxes already in feature-map cells).
    - returns Tensor[K, C * sum(n^2)], rows in box order.

    Window of a box: the scaled edges ``x1 * s, x2 * s`` become the cells ``[floor(x1 s), ceil(x2 s))`` (the
    smallest range covering the scaled box; at least one cell), clamped to the map. This is our convention: the
    paper's appendix projects corners with ``floor(x/S) + 1`` / ``ceil(x/S) - 1``, tied to its networks' padding;
    a caller wanting that passes boxes already mapped with ``spatial_scale=1``. A window smaller than
    ``max(levels)`` cells on an axis (where the paper's stride would be 0) is grown around its centre to
    ``max(levels)`` cells, kept inside the map; a map itself smaller than ``max(levels)`` raises.

    A slow but clear Python loop over boxes (one :func:`spatial_pyramid_pool` call per box); fine for the
    ~2000 proposals of one image in tests and small runs, not a fused kernel.
    """
    _check_levels(levels)
    if features.dim() != 4:
        raise ValueError(f"spp_over_boxes expects features (B, C, H, W), got shape {tuple(features.shape)}")
    if isinstance(boxes, (list, tuple)):
        if len(boxes) != features.shape[0]:
            raise ValueError(f"spp_over_boxes got {len(boxes)} box tensors for a batch of {features.shape[0]}")
        rows = [torch.cat([torch.full((len(bx), 1), i, dtype=bx.dtype, device=bx.device), bx], dim=1)
                for i, bx in enumerate(boxes)]
        boxes = torch.cat(rows, dim=0) if rows else features.new_zeros(0, 5)  # (K, 5)
    if boxes.dim() != 2 or boxes.shape[1] != 5:
        raise ValueError(f"spp_over_boxes boxes must be (K, 5) (batch_index, x1, y1, x2, y2), "
                         f"got {tuple(boxes.shape)}")
    _, c, h, w = features.shape
    need = max(levels)
    if h < need or w < need:
        raise ValueError(f"feature map {h}x{w} is smaller than the largest SPP level {need}")
    out = features.new_empty(len(boxes), c * pyramid_length(levels))
    for k, (bi, x1, y1, x2, y2) in enumerate(boxes.tolist()):
        if not (x2 >= x1 and y2 >= y1):
            raise ValueError(f"spp_over_boxes box {k} is not xyxy with x2 >= x1, y2 >= y1: {[x1, y1, x2, y2]}")
        r0, r1 = _box_window(y1 * spatial_scale, y2 * spatial_scale, h, need)
        c0, c1 = _box_window(x1 * spatial_scale, x2 * spatial_scale, w, need)
        out[k] = spatial_pyramid_pool(features[int(bi): int(bi) + 1, :, r0:r1, c0:c1], levels)[0]
    return out


class SpatialPyramidPooling(nn.Module):
    """Thin module over :func:`spatial_pyramid_pool`: (B, C, H, W) -> (B, C * sum(n^2)) for any H, W >= max(n).

    ``levels``: bins per axis of each pyramid level; (1, 2, 3, 6) is the paper's 50-bin pyramid.
    """

    def __init__(self, *, levels: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        _check_levels(levels)
        self.levels = tuple(int(n) for n in levels)

    def output_dim(self, channels: int) -> int:
        """Length of the output vector for ``channels`` input channels."""
        return channels * pyramid_length(self.levels)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return spatial_pyramid_pool(features, self.levels)

    def extra_repr(self) -> str:
        return f"levels={self.levels}"
