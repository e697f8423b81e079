"""The region stages shared by R-CNN and SPP-net: hard-negative SVM mining on a hand-solved toy, box-regression
targets vs torchvision's BoxCoder, ridge regressors, class-wise NMS vs per-class torchvision / a slow greedy loop,
the fine-tuning sampler by hand, and selective search (OpenCV ximgproc) on a shapes image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from sklearn.svm import LinearSVC
from torchvision.models.detection._utils import BoxCoder

from lit_papers.detection.region_classifiers import (
    RidgeBoxRegressors,
    SelectiveSearch,
    apply_box_regression,
    box_regression_targets,
    classwise_nms,
    mean_norm_scale,
    sample_regions,
    train_svm_hard_negatives,
)

# a near hard-margin linear SVM (large C, weakly regularised bias) so that the solution can be worked out by hand
HARD = {"C": 1e4, "positive_weight": 1.0, "intercept_scaling": 100.0, "tol": 1e-8, "max_iter": 200000}


def test_hard_negative_mining_on_a_hand_solved_toy():
    """1-D features, positives {2, 3}; negatives per image: {-10, -9}, {0.5, -8}, {-0.5}; retrain every 2 new.

    image 0: w = 0 scores all 0 > -1: both added; retrain on {2, 3} vs {-10, -9}: margin between -9 and 2, so
    w = 2/11, b = 7/11; score(-10) = -13/11 < -1.05: evicted, score(-9) = -1: kept.
    image 1: score(0.5) = 8/11, score(-8) = -9/11, both > -1: added; retrain on {-9, 0.5, -8}: margin between 0.5
    and 2, w = 4/3, b = -5/3; -9 and -8 now score far below -1.05: evicted; 0.5 scores -1: kept.
    image 2: score(-0.5) = -7/3 < -1: not hard, nothing added, no retrain. One pass: the cache is {0.5}, 4 mined.
    """
    negatives = [np.array([[-10.0], [-9.0]]), np.array([[0.5], [-8.0]]), np.array([[-0.5]])]
    w, b, stats = train_svm_hard_negatives(np.array([[2.0], [3.0]]), negatives, retrain_every=2, **HARD)
    assert w[0] == pytest.approx(4 / 3, abs=2e-3) and b == pytest.approx(-5 / 3, abs=2e-3)
    assert stats == {"positives": 2, "negatives_seen": 5, "mined": 4, "cache": 1, "retrains": 2, "passes": 1}


def test_hard_negative_mining_reaches_the_svm_trained_on_every_negative():
    """The point of the mining: negatives outside the margin do not change the SVM's optimum, so the mined model
    equals the one trained on all negatives at once (oracle: scikit-learn on the whole set), while caching few."""
    rng = np.random.default_rng(0)
    positives = rng.normal([2.0, 2.0], 0.5, size=(30, 2))
    batches = [rng.normal([-2.0, -1.0], 1.0, size=(200, 2)) for _ in range(10)]
    opts = {"C": 1.0, "positive_weight": 2.0, "intercept_scaling": 10.0, "tol": 1e-8, "max_iter": 200000}
    w, b, stats = train_svm_hard_negatives(positives, batches, retrain_every=100, passes=3, **opts)
    full = LinearSVC(loss="hinge", dual=True, class_weight={1: 2.0, -1: 1.0}, C=1.0, intercept_scaling=10.0,
                     tol=1e-8, max_iter=200000)
    x = np.concatenate([positives, *batches])
    full.fit(x, np.r_[np.ones(30), -np.ones(2000)])
    np.testing.assert_allclose(w, full.coef_[0], atol=2e-3)
    assert b == pytest.approx(full.intercept_[0], abs=2e-3)
    assert stats["cache"] < 200 and stats["negatives_seen"] == 2000  # a small cache out of 2000 negatives


def test_hard_negative_mining_without_negatives_or_positives_is_an_error():
    with pytest.raises(ValueError, match="no negatives"):
        train_svm_hard_negatives(np.ones((2, 3)), [np.zeros((0, 3))], C=1.0)
    with pytest.raises(ValueError, match="positives"):
        train_svm_hard_negatives(np.zeros((0, 3)), [np.ones((2, 3))], C=1.0)


def test_box_regression_targets_and_inverse_match_torchvision_box_coder():
    torch.manual_seed(0)
    xy = torch.rand(50, 2) * 100
    proposals = torch.cat([xy, xy + 5 + torch.rand(50, 2) * 60], dim=1)
    gt = proposals + torch.randn(50, 4) * 3
    gt[:, 2:] = torch.maximum(gt[:, 2:], gt[:, :2] + 1)
    coder = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))  # eq. 6-9 without Faster R-CNN's target weights
    t = box_regression_targets(proposals, gt)
    torch.testing.assert_close(t, coder.encode_single(gt, proposals), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(apply_box_regression(proposals, t), gt, rtol=1e-4, atol=1e-3)  # eq. 1-4 invert 6-9
    deltas = torch.randn(50, 4) * 0.3
    torch.testing.assert_close(apply_box_regression(proposals, deltas), coder.decode_single(deltas, proposals),
                               rtol=1e-5, atol=1e-4)
    # by hand: P = (0, 0, 10, 20) (centre 5, 10), G = (5, 0, 25, 20) (centre 15, 10, width 20)
    torch.testing.assert_close(box_regression_targets(torch.tensor([[0.0, 0, 10, 20]]), torch.tensor([[5.0, 0, 25, 20]])),
                               torch.tensor([[1.0, 0.0, float(np.log(2.0)), 0.0]]))


def test_ridge_regressors_recover_a_linear_map_per_class():
    torch.manual_seed(0)
    x = torch.randn(400, 6)
    maps = torch.randn(2, 6, 4)
    reg = RidgeBoxRegressors(num_classes=2, dim=6)
    for k in range(2):
        reg.fit_class(k, x, x @ maps[k] + k, ridge_lambda=1e-6)
    out = reg(x)  # (N, K, 4)
    for k in range(2):
        torch.testing.assert_close(out[:, k], x @ maps[k] + k, rtol=1e-4, atol=1e-4)
    assert mean_norm_scale(torch.full((3, 4), 5.0), 20.0) == pytest.approx(2.0)  # norm 10 -> scale 2


def _greedy_nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> list[int]:
    """Slow reference: repeatedly keep the best remaining box, drop those overlapping it by more than ``iou``."""
    order, keep = scores.argsort(descending=True).tolist(), []
    while order:
        i = order.pop(0)
        keep.append(i)
        order = [j for j in order if torchvision.ops.box_iou(boxes[i:i + 1], boxes[j:j + 1]).item() <= iou]
    return keep


def test_classwise_nms_matches_per_class_torchvision_and_a_slow_greedy_loop():
    torch.manual_seed(0)
    n, k = 60, 3
    xy = torch.rand(n, 2) * 50
    proposals = torch.cat([xy, xy + 10 + torch.rand(n, 2) * 30], dim=1)
    boxes = proposals[:, None, :] + torch.randn(n, k, 4)  # class-specific boxes (after regression)
    scores = torch.randn(n, k)
    out = classwise_nms(boxes, scores, iou_threshold=0.3, score_threshold=-0.5, max_detections=1000)
    for c in range(k):
        sel = scores[:, c] > -0.5
        b, s = boxes[sel, c], scores[sel, c]
        expected = torchvision.ops.nms(b, s, 0.3)
        assert set(expected.tolist()) == set(_greedy_nms(b, s, 0.3))
        mine = out["labels"] == c + 1
        torch.testing.assert_close(out["boxes"][mine], b[expected])
        torch.testing.assert_close(out["scores"][mine], s[expected])
    assert (out["scores"][:-1] >= out["scores"][1:]).all()
    top = classwise_nms(boxes, scores, iou_threshold=0.3, score_threshold=-0.5, max_detections=5)
    torch.testing.assert_close(top["scores"], out["scores"][:5])
    shared = classwise_nms(proposals, scores, iou_threshold=0.3, score_threshold=-10, max_detections=1000)
    assert set(shared["labels"].tolist()) == {1, 2, 3}  # (N, 4) boxes: one box set scored by every class


def test_sample_regions_by_hand():
    gt = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    labels = torch.tensor([2, 1])
    proposals = torch.tensor([[0.0, 0, 10, 9], [0, 0, 10, 4], [21, 21, 30, 30], [40, 40, 50, 50]])
    boxes, lab = sample_regions(proposals, gt, labels, fg_iou=0.5, num_fg=10, num_bg=10)
    got = {tuple(bx.tolist()): int(y) for bx, y in zip(boxes, lab)}
    # IoU 0.9 -> class 2; 0.4 -> background; 0.81 -> class 1; 0 -> background; the ground truth itself positive
    assert got == {(0.0, 0, 10, 10): 2, (20.0, 20, 30, 30): 1, (0.0, 0, 10, 9): 2, (0.0, 0, 10, 4): 0,
                   (21.0, 21, 30, 30): 1, (40.0, 40, 50, 50): 0}
    boxes, lab = sample_regions(proposals, gt, labels, fg_iou=0.5, num_fg=1, num_bg=1)
    assert lab.tolist().count(0) == 1 and len(lab) == 2


def test_selective_search_covers_the_objects_of_a_shapes_image():
    from lit_papers.data.voc_shapes import render_voc_image

    rng = np.random.default_rng(3)
    image, objects, _, _ = render_voc_image(rng, size=64, max_objects=3, border=2, difficult_visible=0.6, margin=8)
    tensor = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    boxes = SelectiveSearch(base_k=20, inc_k=20)(tensor)
    assert boxes.dtype == torch.float32 and boxes.shape[1] == 4 and len(boxes) > 10
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 64).all() and (boxes[:, 3] <= 64).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all() and len(torch.unique(boxes, dim=0)) == len(boxes)
    gt = torch.tensor([o["bndbox"] for o in objects], dtype=torch.float32)
    gt[:, :2] -= 1  # VOC 1-based inclusive -> corners
    assert (torchvision.ops.box_iou(gt, boxes).max(1).values >= 0.5).all()
    assert len(SelectiveSearch(base_k=20, inc_k=20, max_proposals=5)(tensor)) == 5


def test_selective_search_without_ximgproc_says_how_to_fix_it(monkeypatch):
    import cv2

    monkeypatch.delattr(cv2, "ximgproc")
    with pytest.raises(RuntimeError, match="no ximgproc.*opencv-contrib-python-headless"):
        SelectiveSearch()(torch.rand(3, 16, 16))


def test_no_bbox_suffix_goes_before_the_interval_and_count_tails():
    """The card reads M_ci95 / M_n for a metric M: for M = voc07_mAP_no_bbox they must be voc07_mAP_no_bbox_ci95 and
    _n, not voc07_mAP_ci95_no_bbox (the interval of the no-regression arm was lost that way)."""
    from lit_papers.detection.region_classifiers import with_suffix

    assert with_suffix("voc07_mAP", "_no_bbox") == "voc07_mAP_no_bbox"
    assert with_suffix("voc07_mAP_ci95", "_no_bbox") == "voc07_mAP_no_bbox_ci95"
    assert with_suffix("voc07_mAP_n", "_no_bbox") == "voc07_mAP_no_bbox_n"
    assert with_suffix("bbox_AP50_ci95", "") == "bbox_AP50_ci95"
