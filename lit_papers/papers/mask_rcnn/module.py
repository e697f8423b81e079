"""MaskRCNNLitModule: Mask R-CNN training (multi-task loss L = L_cls + L_box + L_mask, He et al. 2017, sec. 3,
plus the RPN's two losses) and COCO box + mask AP evaluation. All machinery is the shared
:class:`~lit_papers.detection.module.DetectionLitModule`; logged: ``train/loss``, ``train/loss_mask``, ...,
``val/segm_AP``, ``val/segm_AP50``, ``val/bbox_AP``, ``test/segm_AP``...
"""

from __future__ import annotations

from lit_papers.detection.module import DetectionLitModule


class MaskRCNNLitModule(DetectionLitModule):
    pass
