"""FasterRCNNLitModule: Faster R-CNN training (RPN losses + Fast R-CNN multi-task loss, trained jointly: the
"approximate joint training" of Ren et al. 2015, sec. 3.2) and evaluation: COCO box AP (pycocotools) on COCO,
plus VOC07 11-point / area mAP on PASCAL VOC (``<stage>/voc07_mAP``, ``<stage>/voc_mAP``). All machinery is the
shared :class:`~lit_papers.detection.module.DetectionLitModule`."""

from __future__ import annotations

from lit_papers.detection.module import DetectionLitModule


class FasterRCNNLitModule(DetectionLitModule):
    pass
