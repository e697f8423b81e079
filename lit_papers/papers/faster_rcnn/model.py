"""Faster R-CNN (Ren, He, Girshick, Sun, NIPS 2015), with the Fast R-CNN (Girshick, ICCV 2015) and FPN (Lin et al.,
CVPR 2017) settings as options. The machinery is shared with Mask R-CNN and lives in :mod:`lit_papers.detection`:

* sec. 3.1 Region Proposal Networks: ``detection.two_stage.build_rpn`` (torchvision's RPN: 3x3 conv, sibling 1x1
  objectness and box-delta convs; anchors ``anchor_sizes`` x ``aspect_ratios``; IoU > 0.7 positive, < 0.3
  negative; 256 anchors per image; NMS 0.7 on proposals).
* Fast R-CNN detector (Girshick 2015, sec. 2): RoI pooling (``box_pooler="pool"``: RoIPool, max over a 7x7 grid of
  quantised sub-windows) on the shared stride-16 map (``fpn=False``), two FC layers, softmax classifier over K + 1
  classes and per-class box regression, multi-task loss L = L_cls + [u >= 1] L_loc (smooth L1), 25% foreground
  RoIs (IoU >= 0.5) — ``detection.roi_heads.RoIHeads``.
* FPN (Lin et al. 2017, sec. 3-4): ``fpn=True`` -> :class:`lit_papers.layers.fpn.FPN` P2..P6, one anchor size per
  level (32..512), RoIs assigned to P2..P5 by k = floor(4 + log2(sqrt(wh) / 224)) (``ops.boxes.fpn_level``),
  heads shared across levels.
"""

from __future__ import annotations

from lit_papers.detection.rcnn import RCNN


class FasterRCNN(RCNN):
    """All options of :class:`lit_papers.detection.rcnn.RCNN` (backbone, ``fpn``, anchors, ``box_pooler``,
    sampling sizes, thresholds). Defaults: R50-FPN with RoIAlign, the modern Faster R-CNN of Detectron."""
