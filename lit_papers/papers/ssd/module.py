"""SSDLitModule: the shared detection module (:class:`~lit_papers.detection.module.DetectionLitModule`: injected
network, optimizer, scheduler and evaluators; COCO / VOC mAP at validation and test) plus what SSD adds:

* ``train/num_positive`` and ``train/num_negative``: matched default boxes and mined negatives per batch (the
  3:1 of hard negative mining is visible in the log; the network keeps them in ``model.last_counts``);
* a 95% interval for each VOC mAP: ``<stage>/<name>_ci95`` (half-width of the percentile bootstrap over test
  images, ``bootstrap`` resamples, fixed seed) and ``<stage>/<name>_n`` (images), so card rows and ablation verdicts
  carry an interval (the card callback reads them).
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_papers.detection.evaluators import DetectionEvaluator, VOCMeanAP
from lit_papers.detection.module import DetectionLitModule
from lit_papers.metrics.voc_eval import voc_ap


def _image_flags(dets: list[tuple[float, list[float]]], gt, iou_thresh: float = 0.5
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image and class: (scores, tp, fp) of its detections in the VOC devkit's greedy order (score
    descending, stable), exactly as :func:`lit_papers.metrics.voc_eval.voc_class_ap` flags them (continuous
    boxes); a detection matching a difficult object is neither. Flags depend on this image only."""
    order = sorted(range(len(dets)), key=lambda i: -dets[i][0])
    scores = np.array([dets[i][0] for i in order], np.float64)
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    boxes, difficult = (np.zeros((0, 4)), np.zeros(0, bool)) if gt is None else gt
    boxes, difficult = np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(difficult, bool)
    used = np.zeros(len(boxes), bool)
    for rank, i in enumerate(order):
        if len(boxes) == 0:
            fp[rank] = 1
            continue
        b = np.asarray(dets[i][1], np.float64)
        iw = np.clip(np.minimum(b[2], boxes[:, 2]) - np.maximum(b[0], boxes[:, 0]), 0, None)
        ih = np.clip(np.minimum(b[3], boxes[:, 3]) - np.maximum(b[1], boxes[:, 1]), 0, None)
        inter = iw * ih
        iou = inter / ((b[2] - b[0]) * (b[3] - b[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                       - inter)
        j = int(np.argmax(iou))
        if iou[j] >= iou_thresh:
            if difficult[j]:
                continue
            if not used[j]:
                tp[rank], used[j] = 1, True
            else:
                fp[rank] = 1
        else:
            fp[rank] = 1
    return scores, tp, fp


def bootstrap_map(results: dict, ground_truth: dict, *, metric: str, reps: int, seed: int = 0) -> float:
    """Half-width of the 95% percentile-bootstrap interval of VOC mAP over images.

    ``results`` {image: [(class, score, box)]} (a :class:`VOCMeanAP`'s), ``ground_truth`` {class: {image: (boxes,
    difficult)}}. Each resample draws the images with replacement; a drawn image counts as a new image (twice
    drawn, twice counted). A detection's true/false-positive flag depends on its own image only, so the flags are
    computed once per (image, class) and each resample only re-sorts and integrates them: the same value as
    :func:`voc_map` on the resampled images (tested), at numpy speed."""
    images = sorted(set(results) | {i for per in ground_truth.values() for i in per})
    if not images or reps <= 0:
        return float("nan")
    flags: dict = {}  # (class, image) -> (scores, tp, fp, npos)
    for cat, per in ground_truth.items():
        for image in images:
            dets = [(score, box) for c, score, box in results.get(image, []) if c == cat]
            gt = per.get(image)
            npos = 0 if gt is None else int((~np.asarray(gt[1], bool)).sum())
            flags[cat, image] = (*_image_flags(dets, gt), npos, gt is not None)
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        drawn = rng.choice(images, size=len(images), replace=True)
        aps = []
        for cat in ground_truth:
            parts = [flags[cat, int(i)] for i in drawn]
            if not any(p[4] for p in parts):
                continue  # the class has no ground truth among the drawn images
            npos = sum(p[3] for p in parts)
            scores = np.concatenate([p[0] for p in parts])
            order = np.argsort(-scores, kind="stable")
            tp = np.cumsum(np.concatenate([p[1] for p in parts])[order])
            fp = np.cumsum(np.concatenate([p[2] for p in parts])[order])
            aps.append(0.0 if npos == 0 else voc_ap(tp / npos, tp / np.maximum(tp + fp, np.finfo(np.float64).eps),
                                                    metric))
        values.append(float(np.mean(aps)) if aps else 0.0)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(high - low) / 2


class SSDLitModule(DetectionLitModule):
    def __init__(self, *, model: nn.Module, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None = None,
                 evaluators: list[DetectionEvaluator] | None = None, bootstrap: int = 200) -> None:
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler, evaluators=evaluators)
        self.bootstrap = bootstrap

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        for name, value in getattr(self.model, "last_counts", {}).items():
            self.log(f"train/{name}", value, batch_size=len(batch[0]))
        return loss

    def _end_eval(self, stage: str) -> None:
        super()._end_eval(stage)
        for evaluator in self.evaluators:
            if not isinstance(evaluator, VOCMeanAP):
                continue
            n = len({i for per in evaluator.ground_truth.values() for i in per} | set(evaluator.results))
            self.log(f"{stage}/{evaluator.name}_n", float(n), rank_zero_only=True)
            if stage == "test" and self.bootstrap > 0 and not self.trainer.sanity_checking:
                half = bootstrap_map(evaluator.results, evaluator.ground_truth, metric=evaluator.metric,
                                     reps=self.bootstrap)
                self.log(f"{stage}/{evaluator.name}_ci95", half, rank_zero_only=True)
