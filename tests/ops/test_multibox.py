"""SSD matching, hard negative mining and the multibox loss (Liu et al. 2016, sec. 2.2) on hand-computed cases."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lit_papers.ops.multibox import (
    box_coder,
    encode_targets,
    hard_negative_mask,
    match_default_boxes,
    multibox_loss,
)


def test_matching_by_hand_best_prior_first_then_threshold():
    priors = torch.tensor([[0., 0, 10, 10],    # p0
                           [0, 0, 10, 8],      # p1
                           [20, 20, 30, 30],   # p2
                           [21, 20, 30, 30],   # p3
                           [50, 50, 60, 60]])  # p4
    gt = torch.tensor([[0., 0, 10, 9],         # g0: IoU p0 0.9, p1 0.8/0.9 = 0.889
                       [0, 0, 10, 10],         # g1: IoU p0 1.0, p1 0.8  -> takes p0 first (global best)
                       [40, 40, 58, 58]])      # g2: overlaps only p4, IoU 64 / (324 + 100 - 64) = 0.178 < 0.5
    m = match_default_boxes(gt, priors, threshold=0.5)
    # bipartite: (g1, p0) = 1.0 first, then g0's best free box is p1 (0.889), g2 gets p4 despite IoU 0.178;
    # then thresholding: p2, p3 overlap nothing -> background
    assert m.tolist() == [1, 0, -1, -1, 2]
    # without the forced step g2 is lost and p0/p1 go to their best truth above 0.5
    assert match_default_boxes(gt, priors, threshold=0.5, bipartite=False).tolist() == [1, 0, -1, -1, -1]
    # the threshold step: p3 vs a truth equal to p2 has IoU 0.9 -> matched although p2 is that truth's best
    gt2 = torch.tensor([[20., 20, 30, 30]])
    assert match_default_boxes(gt2, priors, threshold=0.5).tolist() == [-1, -1, 0, 0, -1]
    assert match_default_boxes(torch.zeros(0, 4), priors).tolist() == [-1] * 5


def test_encoding_is_eq2_with_the_variances():
    priors = torch.tensor([[0., 0, 10, 20]])   # cx 5, cy 10, w 10, h 20
    gt = torch.tensor([[2., 4, 14, 24]])      # cx 8, cy 14, w 12, h 20
    offsets, labels = encode_targets(gt, torch.tensor([7]), priors, torch.tensor([0]), box_coder())
    expected = [(8 - 5) / 10 / 0.1, (14 - 10) / 20 / 0.1, math.log(12 / 10) / 0.2, math.log(20 / 20) / 0.2]
    torch.testing.assert_close(offsets[0], torch.tensor(expected))
    assert labels.tolist() == [7]
    decoded = box_coder().decode_single(offsets, priors)
    torch.testing.assert_close(decoded, gt)


def test_hard_negatives_are_the_highest_background_losses_at_3_to_1():
    loss = torch.tensor([[0.1, 5.0, 0.3, 4.0, 0.2, 3.0, 2.0, 0.05, 9.0, 1.0],
                         [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.]])
    pos = torch.zeros(2, 10, dtype=torch.bool)
    pos[0, 8] = True           # image 0: one positive (the 9.0 is a positive: never a negative) -> 3 negatives
    pos[1, [0, 1, 2]] = True   # image 1: three positives -> 9 wanted, only 7 negatives exist -> all 7
    neg = hard_negative_mask(loss, pos, neg_pos_ratio=3.0)
    assert torch.nonzero(neg[0]).squeeze(1).tolist() == [1, 3, 5]  # losses 5, 4, 3
    assert torch.nonzero(neg[1]).squeeze(1).tolist() == [3, 4, 5, 6, 7, 8, 9]
    none = hard_negative_mask(loss, torch.zeros(2, 10, dtype=torch.bool))
    assert not none.any()  # no positive, no negative (the loss is 0 then)
    assert hard_negative_mask(loss, pos, neg_pos_ratio=None).equal(~pos)  # the ablation: every negative


def test_multibox_loss_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(1, 6, 3)
    regression = torch.randn(1, 6, 4)
    cls_t = torch.tensor([[2, 0, 0, 0, 0, 1]])
    box_t = torch.randn(1, 6, 4)
    out = multibox_loss(logits, regression, cls_t, box_t, neg_pos_ratio=1.0, alpha=1.0)
    bg = -logits[0].log_softmax(-1)[:, 0]
    hard = sorted(range(1, 5), key=lambda i: -bg[i])[:2]  # 2 positives -> the 2 hardest of boxes 1..4
    ce = lambda i: -logits[0, i].log_softmax(-1)[cls_t[0, i]]  # noqa: E731
    conf = (ce(0) + ce(5) + sum(ce(i) for i in hard)) / 2
    loc = F.smooth_l1_loss(regression[0, [0, 5]], box_t[0, [0, 5]], reduction="sum") / 2
    torch.testing.assert_close(out["loss_classifier"], conf)
    torch.testing.assert_close(out["loss_box_reg"], loc)
    assert out["num_positive"] == 2 and out["num_negative"] == 2
    empty = multibox_loss(logits, regression, torch.zeros(1, 6, dtype=torch.long), box_t)
    assert empty["loss_classifier"] == 0 and empty["loss_box_reg"] == 0  # N = 0: loss 0 (sec. 2.2)
