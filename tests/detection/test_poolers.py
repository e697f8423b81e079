"""RoIAlign / RoIPool with explicit aligned / spatial_scale / sampling_ratio on a 5x5 arange map, against values
computed by hand; FPN level assignment (Lin et al. 2017, eq. 1); the multi-level pooler against torchvision."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from lit_papers.detection.poolers import RoIPooler, pool_rois
from lit_papers.ops.boxes import fpn_level

# f(y, x) = 5 y + x on a 5x5 grid; bilinear interpolation of a linear function is exact, so an averaged
# RoIAlign bin equals f at the mean of its sampling points (clamped at the border as the kernel does).
FMAP = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)


def rois(*boxes):
    return torch.tensor([[0.0, *b] for b in boxes])


def align(box, out, *, scale=1.0, ratio=1, aligned=False):
    return pool_rois(FMAP, rois(box), output_size=out, spatial_scale=scale, kind="align", sampling_ratio=ratio,
                     aligned=aligned)[0, 0]


def test_roi_align_hand_cases():
    # box (0,0,4,4), 2x2 bins of 2x2 pixels, one sample at each bin centre: (1,1) (1,3) (3,1) (3,3)
    assert align((0, 0, 4, 4), 2).tolist() == [[6.0, 8.0], [16.0, 18.0]]
    # spatial_scale 0.5: the same box given in stride-2 image pixels
    assert align((0, 0, 8, 8), 2, scale=0.5).tolist() == [[6.0, 8.0], [16.0, 18.0]]
    # aligned=True shifts by -0.5 pixel: bin centres (0.5,0.5) (0.5,2.5) (2.5,0.5) (2.5,2.5) -> 3, 5, 13, 15
    assert align((0, 0, 4, 4), 2, aligned=True).tolist() == [[3.0, 5.0], [13.0, 15.0]]
    # sampling_ratio matters at the border: box (-1,-1,1,1), 1x1 output.
    # ratio 1: one sample at (0,0) -> 0. ratio 2: samples at -0.5 / 0.5 per axis, -0.5 clamps to 0:
    # mean of f(0,0)=0, f(0,0.5)=0.5, f(0.5,0)=2.5, f(0.5,0.5)=3 -> 1.5
    assert align((-1, -1, 1, 1), 1, ratio=1).item() == 0.0
    assert align((-1, -1, 1, 1), 1, ratio=2).item() == pytest.approx(1.5)
    # a sub-pixel box: no quantisation. Box (1.5,1.5,2.5,2.5), centre (2,2) -> 12; shifted by 0.25 -> 12 + 1.5
    assert align((1.5, 1.5, 2.5, 2.5), 1).item() == pytest.approx(12.0)
    assert align((1.75, 1.75, 2.75, 2.75), 1).item() == pytest.approx(13.5)


def test_roi_pool_hand_cases():
    pool = lambda box, out, scale=1.0: pool_rois(FMAP, rois(box), output_size=out, spatial_scale=scale,  # noqa: E731
                                                 kind="pool")[0, 0].tolist()
    # box (0,0,3,3) -> integer cells 0..3 (4 cells), 2x2 bins of 2 cells: max of {0,1}x{0,1} = f(1,1) = 6 ...
    assert pool((0, 0, 3, 3), 2) == [[6.0, 8.0], [16.0, 18.0]]
    # box (0,0,4,4) -> 5 cells, bins [0,2.5) and [2.5,5) rounded outwards: rows 0..2 and 2..4 (overlapping)
    assert pool((0, 0, 4, 4), 2) == [[12.0, 14.0], [22.0, 24.0]]
    # quantisation: coordinates are rounded on the feature grid, so a sub-cell shift changes nothing
    assert pool((0.2, 0.2, 3.2, 3.2), 2) == pool((0, 0, 3, 3), 2)
    # spatial_scale 0.5: image box (0,0,6,6) -> feature cells 0..3
    assert pool((0, 0, 6, 6), 2, scale=0.5) == [[6.0, 8.0], [16.0, 18.0]]


def test_fpn_level_assignment():
    boxes = torch.tensor([[0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 448, 448], [0, 0, 56, 56], [0, 0, 1000, 1000],
                          [0, 0, 4, 4], [0, 0, 223, 223]], dtype=torch.float32)
    assert fpn_level(boxes, k_min=2, k_max=5).tolist() == [4, 3, 5, 2, 5, 2, 3]


def test_multilevel_pooler_matches_torchvision():
    torch.manual_seed(0)
    feats = OrderedDict((f"p{k}", torch.randn(2, 8, 256 // 2**k, 256 // 2**k)) for k in range(2, 6))
    boxes = [torch.tensor([[10.0, 10, 40, 60], [0, 0, 250, 250], [30, 40, 150, 140]]), torch.tensor([[5.0, 5, 20, 20]])]
    ours = RoIPooler(featmap_names=list(feats), strides=[4, 8, 16, 32], output_size=7, kind="align", sampling_ratio=2,
                     aligned=False)(feats, boxes, [(256, 256)] * 2)
    ref = MultiScaleRoIAlign(list(feats), 7, 2)(feats, boxes, [(256, 256)] * 2)
    torch.testing.assert_close(ours, ref)


def test_pooler_rejects_unknown_kind():
    with pytest.raises(ValueError, match="align"):
        RoIPooler(featmap_names=["c4"], strides=[16], kind="warp")
