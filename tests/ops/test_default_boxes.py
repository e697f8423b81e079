"""SSD default boxes (Liu et al. 2016, sec. 2.2) against torchvision's DefaultBoxGenerator (the oracle) on the
same configuration, the scales of eq. 4 / the VOC conv4_3 case by hand, and SSD300's box count."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList

from lit_papers.ops.default_boxes import (
    box_shapes,
    boxes_per_location,
    cxcywh_rel_to_xyxy,
    default_boxes,
    default_boxes_cxcywh,
    ssd_scales,
)

SSD300_SIZES = [(38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1)]
SSD300_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]


def _torchvision(sizes, image_hw, scales, ratios, steps):
    gen = DefaultBoxGenerator(ratios, scales=scales, steps=steps, clip=False)
    images = ImageList(torch.zeros(1, 3, *image_hw), [image_hw])
    maps = [torch.zeros(1, 1, h, w, dtype=torch.float64) for h, w in sizes]
    return gen(images, maps)[0]


@pytest.mark.parametrize("steps", [None, [8, 16, 32, 64, 100, 300]])
def test_ssd300_voc_priors_equal_torchvisions_generator(steps):
    scales = ssd_scales(6, first_scale=0.1, whole_percent=True)
    ours = default_boxes(SSD300_SIZES, (300, 300), scales=scales, aspect_ratios=SSD300_RATIOS, steps=steps,
                         dtype=torch.float64)
    theirs = _torchvision(SSD300_SIZES, (300, 300), scales, SSD300_RATIOS, steps)
    assert ours.shape == theirs.shape == (8732, 4)  # SSD300's 8732 boxes (sec. 3.1 / Fig. 2)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)  # pixels; torchvision keeps its shapes in float32


def test_non_square_image_and_other_config_equal_torchvision():
    sizes, hw, ratios = [(6, 9), (3, 5), (1, 2)], (48, 72), [[2, 3], [2], [1.5]]
    scales = [0.15, 0.3, 0.6, 0.9]
    ours = default_boxes(sizes, hw, scales=scales, aspect_ratios=ratios, dtype=torch.float64)
    torch.testing.assert_close(ours, _torchvision(sizes, hw, scales, ratios, None), rtol=0, atol=1e-4)


def test_scales_of_eq4_and_the_voc_conv4_3_case():
    # eq. 4 with m = 6, s_min 0.2, s_max 0.9: step 0.14, then one more step for s'_6
    torch.testing.assert_close(torch.tensor(ssd_scales(6)), torch.tensor([0.2, 0.34, 0.48, 0.62, 0.76, 0.9, 1.04]))
    # sec. 3.1: conv4_3 at 0.1, 0.2..0.9 over the other 5 maps in whole percents (floor(70 / 4) = 17): the
    # min sizes 30, 60, 111, 162, 213, 264 and s_7 = 1.05 of the released SSD300 VOC model
    assert ssd_scales(6, first_scale=0.1, whole_percent=True) == [0.1, 0.2, 0.37, 0.54, 0.71, 0.88, 1.05]
    assert [round(300 * s) for s in ssd_scales(6, first_scale=0.1, whole_percent=True)] == [30, 60, 111, 162, 213,
                                                                                            264, 315]
    with pytest.raises(ValueError, match="at least 2 maps"):
        ssd_scales(2, first_scale=0.1)


def test_box_shapes_by_hand():
    wh = box_shapes([0.2, 0.8], [[2.0]])[0]
    r = math.sqrt(2)
    expected = torch.tensor([[0.2, 0.2], [0.4, 0.4], [0.2 * r, 0.2 / r], [0.2 / r, 0.2 * r]], dtype=torch.float64)
    torch.testing.assert_close(wh, expected)  # s_k, s'_k = sqrt(0.2 * 0.8), then a = 2 and 1/2
    assert boxes_per_location(SSD300_RATIOS) == [4, 6, 6, 6, 4, 4]


def test_centres_and_clip_by_hand():
    rel = default_boxes_cxcywh([(2, 2)], scales=[0.5, 0.5], aspect_ratios=[[]])
    # centres (i + 0.5) / 2 = 0.25, 0.75, row-major (y then x), two aspect-1 boxes per location
    assert rel[:, :2].tolist() == [[0.25, 0.25]] * 2 + [[0.75, 0.25]] * 2 + [[0.25, 0.75]] * 2 + [[0.75, 0.75]] * 2
    xyxy = cxcywh_rel_to_xyxy(rel[:1], (10, 20))
    assert xyxy.tolist() == [[0.0, 0.0, 10.0, 5.0]]  # (0.25 +- 0.25) * 20, (0.25 +- 0.25) * 10
    big = default_boxes([(1, 1)], (10, 10), scales=[1.5, 1.5], aspect_ratios=[[]], clip=True)
    assert big.tolist() == [[0.0, 0.0, 10.0, 10.0]] * 2
