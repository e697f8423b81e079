"""Second stage of the R-CNN family: RoI sampling, box head, per-class box regression, detection
post-processing, and an optional mask branch (Mask R-CNN).

Reuses torchvision's ``RoIHeads`` machinery where it matches the papers: proposal/ground-truth matching
(IoU >= 0.5 foreground, [0, 0.5) background; Fast R-CNN sec. 2.3), balanced sampling (``batch_size_per_image``
RoIs per image, ``positive_fraction`` = 25% foreground), box coding with weights (10, 10, 5, 5), the multi-task
loss ``fastrcnn_loss`` (softmax cross-entropy + smooth-L1 on the ground-truth class's box), and
``postprocess_detections`` (softmax scores, per-class NMS, top-k). What differs from torchvision: the RoI
feature extractor is our :class:`~lit_papers.detection.poolers.RoIPooler` (RoIAlign or RoIPool, explicit
strides), and the mask branch is an injected module (see ``papers/mask_rcnn/model.py``) so that its paper
ablations (pooler, class-agnostic, softmax) are its own business. Losses are computed in float32.

``box_loss`` (optional) replaces ``fastrcnn_loss`` for detectors whose box predictor is not one softmax (e.g.
MultiPathNet's integral loss: one classifier per IoU threshold); it is called as
``box_loss(class_logits, box_regression, labels, regression_targets, proposals, matched_idxs, targets)`` with the
sampled RoIs of every image and returns a dict of losses.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection.roi_heads import RoIHeads as TorchvisionRoIHeads
from torchvision.models.detection.roi_heads import fastrcnn_loss


class RoIHeads(TorchvisionRoIHeads):
    """``box_pooler``: RoIPooler; ``box_head``: (R, C, S, S) -> (R, D); ``box_predictor``: (R, D) ->
    (class logits (R, K + 1), box deltas (R, 4 (K + 1))); ``mask_branch``: None or a module with
    ``loss(features, proposals, labels, matched_idxs, targets, image_shapes)`` and
    ``predict(features, detections, image_shapes)`` (adds ``mask_probs`` (N, 1, M, M) to each detection dict);
    ``box_loss``: None (Fast R-CNN's ``fastrcnn_loss``) or a callable as described in the module docstring."""

    def __init__(self, *, box_pooler: nn.Module, box_head: nn.Module, box_predictor: nn.Module,
                 mask_branch: nn.Module | None = None, box_loss=None, fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.5,
                 batch_size_per_image: int = 512, positive_fraction: float = 0.25,
                 bbox_reg_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0),
                 score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100) -> None:
        super().__init__(box_pooler, box_head, box_predictor, fg_iou_thresh, bg_iou_thresh, batch_size_per_image,
                         positive_fraction, bbox_reg_weights, score_thresh, nms_thresh, detections_per_img)
        self.mask_branch = mask_branch
        self.box_loss = box_loss

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]], targets: list[dict] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("training needs targets")
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(proposals, targets)
        roi_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))  # (R, C, S, S) -> (R, D)
        class_logits, box_regression = self.box_predictor(roi_features)  # (R, K+1), (R, 4(K+1))
        del roi_features  # not kept while the mask branch runs (2000 pooled RoIs of 256 x 7 x 7: 100 MB at 384 px)
        if self.training:
            if self.box_loss is None:
                loss_cls, loss_box = fastrcnn_loss(class_logits.float(), box_regression.float(), labels,
                                                   regression_targets)
                losses = {"loss_classifier": loss_cls, "loss_box_reg": loss_box}
            else:
                losses = dict(self.box_loss(class_logits.float(), box_regression.float(), labels, regression_targets,
                                            proposals, matched_idxs, targets))
            if self.mask_branch is not None:
                losses["loss_mask"] = self.mask_branch.loss(features, proposals, labels, matched_idxs, targets,
                                                            image_shapes)
            return [], losses
        boxes, scores, labels = self.postprocess_detections(class_logits.float(), box_regression.float(), proposals,
                                                            image_shapes)
        detections = [{"boxes": b, "labels": lab, "scores": s} for b, s, lab in zip(boxes, scores, labels)]
        if self.mask_branch is not None:
            detections = self.mask_branch.predict(features, detections, image_shapes)
        return detections, {}
