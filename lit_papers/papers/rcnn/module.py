"""RCNNLitModule: R-CNN's training recipe (Girshick et al. 2014, sec. 2.3, appendix B-C) on the shared region
stages of :mod:`lit_papers.detection.region_classifiers`.

The defaults are the paper's: fine-tuning mini-batches of 128 warped regions, 32 positives (IoU >= 0.5 with a
ground-truth box) and 96 background (sec. 2.3); SVM negatives IoU < 0.3 (sec. 2.3, chosen by a grid search over
{0, 0.1, ..., 0.5}), positives the ground-truth boxes only (appendix B); SVMs on fc7, box regression on pool5
with ridge lambda = 1000 on pairs of IoU > 0.6 (appendix C); class-wise greedy NMS. The SVM C = 0.001,
positive weight 2, feature norm 20 and NMS IoU 0.3 are the released R-CNN code's values (the paper gives no
number). The optimizer (SGD, lr 0.001 in sec. 2.3) is injected by the config.
"""

from __future__ import annotations

from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_papers.detection.evaluators import DetectionEvaluator
from lit_papers.detection.region_classifiers import RegionDetectorLitModule, SelectiveSearch


class RCNNLitModule(RegionDetectorLitModule):
    """R-CNN: fine-tune the CNN on warped proposals, then per-class SVMs (fc7) and box regressors (pool5)."""

    def __init__(self, *, model: nn.Module, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None = None,
                 proposals: SelectiveSearch | None = None, num_classes: int = 20, fg_iou: float = 0.5,
                 regions_per_batch: int = 128, fg_fraction: float = 0.25, svm_negative_iou: float = 0.3,
                 svm_C: float = 0.001, svm_positive_weight: float = 2.0, svm_feature_norm: float = 20.0,
                 svm_retrain_every: int = 2000, svm_passes: int = 1, svm_max_images: int | None = None,
                 svm_features: str = "fc7", regression_features: str = "pool5", regression_iou: float = 0.6,
                 ridge_lambda: float = 1000.0, nms_iou: float = 0.3, score_threshold: float = -1.5,
                 max_detections: int = 100, feature_batch: int = 256,
                 evaluators: list[DetectionEvaluator] | None = None) -> None:
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler, proposals=proposals,
                         num_classes=num_classes, fg_iou=fg_iou, regions_per_batch=regions_per_batch,
                         fg_fraction=fg_fraction, svm_negative_iou=svm_negative_iou, svm_C=svm_C,
                         svm_positive_weight=svm_positive_weight, svm_feature_norm=svm_feature_norm,
                         svm_retrain_every=svm_retrain_every, svm_passes=svm_passes, svm_max_images=svm_max_images,
                         svm_features=svm_features, regression_features=regression_features,
                         regression_iou=regression_iou, ridge_lambda=ridge_lambda, nms_iou=nms_iou,
                         score_threshold=score_threshold, max_detections=max_detections,
                         feature_batch=feature_batch, evaluators=evaluators)
