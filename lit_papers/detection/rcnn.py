"""Faster R-CNN (Ren et al. 2015) as a configurable two-stage detector: backbone (+ FPN), RPN, RoI box head.
Flat, typed options (the CLI schema); what the papers vary is an option:

* ``fpn=True``: FPN neck, anchors one size per level P2..P6, RoIs pooled from P2..P5 by scale (Lin et al. 2017);
  ``fpn=False``: the single map at ``feature_stride`` (16: conv5_3 / C4, Ren et al. 2015; 32: C5, Mask R-CNN
  Table 2d) with all anchor sizes on it.
* ``box_pooler="align"`` (RoIAlign, Mask R-CNN) or ``"pool"`` (RoIPool: the Fast R-CNN setting, sec. 2.1).
* ``box_head="fc"``: 2 FC layers of ``box_head_dim`` (1024 for FPN; Fast R-CNN's VGG fc6/fc7: 4096 with dropout
  ``box_head_dropout`` 0.5, initialised from the ImageNet classifier with ``box_head_from_backbone``);
  ``box_head="res5"``: the ResNet "C4" head (RoIs pooled 14x14 from C4 -> res5 -> average pool; Mask R-CNN
  Fig. 4 left). Then the sibling classifier (K + 1 way softmax) and per-class box regressor.

``mask_branch`` lets Mask R-CNN add its branch (papers/mask_rcnn/model.py); Faster R-CNN passes none.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchvision.models.detection.faster_rcnn import FastRCNNPredictor

from lit_papers.backbones.timm_backbone import timm_classifier_mlp, timm_stage
from lit_papers.detection.box_heads import FCHead, Res5Head, fc_head_from_classifier
from lit_papers.detection.poolers import RoIPooler
from lit_papers.detection.roi_heads import RoIHeads
from lit_papers.detection.two_stage import TwoStageDetector, build_features, build_rpn


class RCNN(TwoStageDetector):
    """Faster R-CNN with flat options. ``num_classes`` counts foreground classes. Defaults: the R50-FPN of
    Lin et al. 2017 / Detectron (anchors 32..512 on P2..P6, 2000/1000 RPN proposals train/test, 512 RoIs per
    image at 25% foreground, 7x7 RoIAlign -> 2 x 1024 FC, 100 detections per image)."""

    def __init__(
        self,
        *,
        num_classes: int = 80,
        backbone: str = "resnet50",
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        freeze_bn: bool = False,
        freeze_at: int = 0,
        fpn: bool = True,
        fpn_channels: int = 256,
        feature_stride: int = 16,
        anchor_sizes: Sequence[Sequence[int]] = ((32,), (64,), (128,), (256,), (512,)),
        aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        rpn_pre_nms_top_n_train: int = 2000,
        rpn_post_nms_top_n_train: int = 2000,
        rpn_pre_nms_top_n_test: int = 1000,
        rpn_post_nms_top_n_test: int = 1000,
        rpn_batch_size_per_image: int = 256,
        box_pooler: str = "align",
        box_pool_size: int = 7,
        sampling_ratio: int = 2,
        aligned: bool = True,
        box_head: str = "fc",
        box_head_dim: int = 1024,
        box_head_dropout: float = 0.0,
        box_head_from_backbone: bool = False,
        roi_batch_size_per_image: int = 512,
        roi_positive_fraction: float = 0.25,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        channels_last: bool = True,
    ) -> None:
        features, names, strides = build_features(backbone=backbone, fpn=fpn, fpn_channels=fpn_channels,
                                                  feature_stride=feature_stride,
                                                  pretrained=pretrained, checkpoint_path=checkpoint_path,
                                                  freeze_bn=freeze_bn, freeze_at=freeze_at)
        channels = features.out_channels[0] if fpn else features.out_channels[-1]
        rpn = build_rpn(in_channels=channels, anchor_sizes=anchor_sizes, aspect_ratios=aspect_ratios,
                        batch_size_per_image=rpn_batch_size_per_image,
                        pre_nms_top_n_train=rpn_pre_nms_top_n_train, post_nms_top_n_train=rpn_post_nms_top_n_train,
                        pre_nms_top_n_test=rpn_pre_nms_top_n_test, post_nms_top_n_test=rpn_post_nms_top_n_test)
        box_pool = RoIPooler(featmap_names=names, strides=strides, output_size=box_pool_size, kind=box_pooler,
                             sampling_ratio=sampling_ratio, aligned=aligned)
        if box_head == "fc":
            head = FCHead(in_features=channels * box_pool_size**2, dim=box_head_dim, dropout=box_head_dropout)
            if box_head_from_backbone:
                fc_head_from_classifier(head, timm_classifier_mlp(backbone, pretrained=pretrained,
                                                                  checkpoint_path=checkpoint_path))
        elif box_head == "res5":
            if fpn or feature_stride != 16:
                raise ValueError("box_head: res5 is the C4 head (RoIs from the single stride-16 map through res5); "
                                 "set fpn: false and feature_stride: 16, or box_head: fc")
            trunk, c5 = timm_stage(backbone, from_stride=16, to_stride=32, pretrained=pretrained,
                                   checkpoint_path=checkpoint_path, freeze_bn=freeze_bn)
            head = Res5Head(trunk=trunk, out_features=c5)
        else:
            raise ValueError(f"box_head must be 'fc' or 'res5', got {box_head!r}")
        roi_heads = RoIHeads(
            box_pooler=box_pool,
            box_head=head,  # (R, C, S, S) -> (R, D)
            box_predictor=FastRCNNPredictor(head.out_features, num_classes + 1),  # cls (K+1) and per-class boxes
            batch_size_per_image=roi_batch_size_per_image, positive_fraction=roi_positive_fraction,
            score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img)
        super().__init__(features=features, rpn=rpn, roi_heads=roi_heads, channels_last=channels_last)
        self.num_classes = num_classes
        # what a mask branch needs to pool from the same maps
        self.roi_featmap_names, self.roi_strides, self.roi_channels = names, strides, channels
        self.sampling_ratio, self.aligned = sampling_ratio, aligned
