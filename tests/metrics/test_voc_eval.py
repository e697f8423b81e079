"""VOC AP (07 11-point and area under the curve) on cases computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from lit_papers.metrics.voc_eval import voc_ap, voc_class_ap, voc_map

# 3 ground-truth objects in one image, 4 detections: scores .9 TP, .8 FP, .7 TP, .6 FP (third object missed)
GT = {"img": (np.array([[0, 0, 9, 9], [20, 20, 29, 29], [40, 40, 49, 49]]), np.array([False, False, False]))}
DETS = [("img", 0.9, [0, 0, 9, 9]), ("img", 0.8, [60, 60, 69, 69]), ("img", 0.7, [20, 20, 29, 29]),
        ("img", 0.6, [0, 0, 9, 9])]  # the last is a duplicate of an already-matched object -> FP


def test_area_ap_by_hand():
    # recall 1/3, 1/3, 2/3, 2/3; precision 1, 1/2, 2/3, 1/2. Envelope: 1 up to r = 1/3, 2/3 up to r = 2/3.
    # AP = 1/3 * 1 + 1/3 * 2/3 = 5/9
    assert voc_class_ap(DETS, GT, metric="area") == pytest.approx(5 / 9)


def test_11point_ap_by_hand():
    # thresholds 0, .1, .2, .3 -> max precision at recall >= t is 1 (4 points); .4, .5, .6 -> 2/3 (3 points);
    # .7 ... 1.0 -> 0 (4 points). AP = (4 + 3 * 2/3) / 11 = 6/11
    assert voc_class_ap(DETS, GT, metric="11point") == pytest.approx(6 / 11)


def test_difficult_objects_are_ignored():
    gt = {"img": (GT["img"][0], np.array([False, False, True]))}  # third object difficult: 2 positives
    dets = DETS + [("img", 0.95, [40, 40, 49, 49])]  # a detection of the difficult object: ignored, not TP/FP
    # order .95 (ignored), .9 TP, .8 FP, .7 TP, .6 FP: recall .5, .5, 1, 1; precision 1, .5, 2/3, .5
    # area: .5 * 1 + .5 * 2/3 = 5/6
    assert voc_class_ap(dets, gt, metric="area") == pytest.approx(5 / 6)


def test_inclusive_iou_convention():
    # boxes (0,0,9,9) and (5,0,14,9): inclusive widths 10, overlap 5 -> IoU 50 / 150 = 1/3 (< 0.5: FP)
    # continuous: widths 9, overlap 4 -> 36 / 126 = 0.29. Both FP; a box (1,0,10,9): inclusive 90/110 = .82 TP
    gt = {"a": (np.array([[0, 0, 9, 9]]), np.array([False]))}
    assert voc_class_ap([("a", 1.0, [5, 0, 14, 9])], gt) == 0.0
    assert voc_class_ap([("a", 1.0, [1, 0, 10, 9])], gt) == pytest.approx(1.0)


def test_curve_helpers_and_map():
    assert voc_ap(np.array([0.5, 1.0]), np.array([1.0, 1.0]), "area") == pytest.approx(1.0)
    assert voc_ap(np.array([0.5]), np.array([1.0]), "11point") == pytest.approx(6 / 11)
    out = voc_map({"dog": DETS}, {"dog": GT, "cat": {"img": (np.array([[0, 0, 5, 5]]), np.array([False]))}})
    assert out["cat"] == 0.0 and out["mAP"] == pytest.approx((5 / 9) / 2)
    with pytest.raises(ValueError):
        voc_ap(np.array([1.0]), np.array([1.0]), "bogus")


def test_iou_exactly_one_half_is_a_hit_as_in_the_devkit():
    # VOCevaldet.m: `if ovmax>=VOCopts.minoverlap` -> true positive. Inclusive pixels: ground truth (1,1,10,10) is
    # 10 x 10 = 100 px; detection (1,1,10,5) is 10 x 5 = 50 px, all inside it: IoU = 50 / (100 + 50 - 50) = 0.5.
    gt = {"a": (np.array([[1, 1, 10, 10]]), np.array([False]))}
    assert voc_class_ap([("a", 1.0, [1, 1, 10, 5])], gt) == pytest.approx(1.0)
    # continuous boxes: (0,0,10,10) vs (0,0,10,5): 50 / 100 = 0.5 exactly in floating point
    gt_c = {"a": (np.array([[0.0, 0.0, 10.0, 10.0]]), np.array([False]))}
    assert voc_class_ap([("a", 1.0, [0.0, 0.0, 10.0, 5.0])], gt_c, inclusive=False) == pytest.approx(1.0)
    # just below the boundary: (1,1,10,4) is 40 px -> IoU 0.4, a miss
    assert voc_class_ap([("a", 1.0, [1, 1, 10, 4])], gt) == 0.0
