"""SSD training targets and the multibox loss (Liu et al. 2016, sec. 2.2 "Matching strategy", "Training
objective", "Hard negative mining"). Pure tensor functions.

Formats: boxes are xyxy absolute pixels (:mod:`lit_papers.ops.boxes`); IoU is ``torchvision.ops.box_iou``;
the box coding is torchvision's ``BoxCoder`` (eq. 2: ``(g_cx - d_cx) / d_w``, ``log(g_w / d_w)`` ...), whose
``weights`` (10, 10, 5, 5) are the released code's "variances" (0.1, 0.1, 0.2, 0.2) inverted (the paper's eq. 2
has none: weights (1, 1, 1, 1)). Labels: 0 = background, 1..K the classes.

* :func:`match_default_boxes`: each ground truth first takes the default box it overlaps best (greedy bipartite,
  as MultiBox and the released code's "bipartite" step: the globally best remaining (box, truth) pair is fixed,
  both are removed, repeat), then every other default box takes the ground truth it overlaps best when that IoU
  is >= ``threshold`` (0.5; "higher than a threshold (0.5)" in the text, ``>=`` in the code).
* :func:`hard_negative_mask`: per image, the unmatched boxes with the highest background confidence loss, at most
  ``neg_pos_ratio`` (3) times the positives ("at most 3:1"); ``None`` keeps every negative (the ablation).
* :func:`multibox_loss`: eq. 1, ``(L_conf + alpha L_loc) / N``: softmax cross-entropy over positives and the mined
  negatives, smooth-L1 over the positives' encoded offsets, both divided by N, the number of matched boxes in the
  batch (0 when N = 0: the paper sets the loss to 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import box_iou

SSD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # 1 / (0.1, 0.1, 0.2, 0.2): the released code's variances


def match_default_boxes(gt_boxes: torch.Tensor, priors: torch.Tensor, *, threshold: float = 0.5,
                        bipartite: bool = True) -> torch.Tensor:
    """gt_boxes (G, 4) and priors (P, 4) xyxy -> (P,) int64: the matched ground-truth index, -1 = background.
    ``bipartite=False`` skips the first step (each ground truth's best box), leaving the threshold rule only."""
    num_priors = priors.shape[0]
    if gt_boxes.numel() == 0:
        return torch.full((num_priors,), -1, dtype=torch.int64, device=priors.device)
    iou = box_iou(gt_boxes, priors)  # (G, P)
    best_iou, best_gt = iou.max(dim=0)  # (P,)
    matches = torch.where(best_iou >= threshold, best_gt, torch.full_like(best_gt, -1))
    if bipartite:
        work = iou.clone()
        for _ in range(gt_boxes.shape[0]):
            flat = int(work.argmax())
            g, p = divmod(flat, num_priors)
            if work[g, p] <= 0:  # the remaining truths overlap no free box (the released code skips them too)
                break
            matches[p] = g
            work[g, :] = -1  # this truth is done
            work[:, p] = -1  # this box is taken
    return matches


def encode_targets(gt_boxes: torch.Tensor, gt_labels: torch.Tensor, priors: torch.Tensor, matches: torch.Tensor,
                   box_coder: BoxCoder) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (P, 4) regression targets (eq. 2, zeros for background) and (P,) int64 class targets (0 = background)."""
    positive = matches >= 0
    labels = torch.zeros(priors.shape[0], dtype=torch.int64, device=priors.device)
    offsets = torch.zeros_like(priors)
    if positive.any():
        labels[positive] = gt_labels[matches[positive]]
        offsets[positive] = box_coder.encode_single(gt_boxes[matches[positive]], priors[positive])
    return offsets, labels


def hard_negative_mask(background_loss: torch.Tensor, positive: torch.Tensor, *, neg_pos_ratio: float | None = 3.0
                       ) -> torch.Tensor:
    """background_loss (B, P) ``-log p(background)`` per box, positive (B, P) bool -> (B, P) bool of the
    negatives to train on: per image the ``floor(neg_pos_ratio * #positives)`` non-positive boxes with the
    largest loss (all non-positive boxes when ``neg_pos_ratio`` is None). Ties broken by box index (stable)."""
    negative = ~positive
    if neg_pos_ratio is None:
        return negative
    loss = background_loss.detach().masked_fill(positive, float("-inf"))  # positives are never negatives
    order = loss.argsort(dim=1, descending=True, stable=True)  # (B, P)
    rank = order.argsort(dim=1)  # (B, P): 0 = hardest
    num_neg = (positive.sum(dim=1, keepdim=True) * neg_pos_ratio).floor().long()  # (B, 1)
    num_neg = torch.minimum(num_neg, negative.sum(dim=1, keepdim=True))
    return negative & (rank < num_neg)


def multibox_loss(cls_logits: torch.Tensor, box_regression: torch.Tensor, cls_targets: torch.Tensor,
                  box_targets: torch.Tensor, *, neg_pos_ratio: float | None = 3.0, alpha: float = 1.0,
                  smooth_l1_beta: float = 1.0) -> dict[str, torch.Tensor]:
    """cls_logits (B, P, K+1), box_regression (B, P, 4), cls_targets (B, P) int64, box_targets (B, P, 4) ->
    {"loss_classifier", "loss_box_reg"} (float32 scalars; their sum is eq. 1 with ``alpha``), plus the counts
    ``num_positive`` / ``num_negative`` (not losses: detached, for logging)."""
    positive = cls_targets > 0  # (B, P)
    ce = F.cross_entropy(cls_logits.float().flatten(0, 1), cls_targets.flatten(), reduction="none"
                         ).view_as(cls_targets)  # (B, P)
    background = -F.log_softmax(cls_logits.float(), dim=-1)[..., 0]  # (B, P): the mining score
    negative = hard_negative_mask(background, positive, neg_pos_ratio=neg_pos_ratio)
    n = positive.sum()
    denom = n.clamp(min=1).float()
    loc = F.smooth_l1_loss(box_regression.float()[positive], box_targets.float()[positive], beta=smooth_l1_beta,
                           reduction="sum")
    conf = ce[positive | negative].sum()
    scale = (n > 0).float() / denom  # N = 0: loss 0 (sec. 2.2)
    return {"loss_classifier": conf * scale, "loss_box_reg": alpha * loc * scale,
            "num_positive": n.detach().float(), "num_negative": negative.sum().detach().float()}


def box_coder(weights: Sequence[float] = SSD_BOX_WEIGHTS) -> BoxCoder:
    """torchvision's BoxCoder with SSD's weights (decoding clamps log-sizes at log(1000 / 16), torchvision's)."""
    return BoxCoder(weights=tuple(float(w) for w in weights))
