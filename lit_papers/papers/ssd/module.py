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
from lit_papers.metrics.voc_eval import voc_map


def bootstrap_map(results: dict, ground_truth: dict, *, metric: str, reps: int, seed: int = 0) -> float:
    """Half-width of the 95% percentile-bootstrap interval of VOC mAP over images.

    ``results`` {image: [(class, score, box)]} (a :class:`VOCMeanAP`'s), ``ground_truth`` {class: {image: (boxes,
    difficult)}}. Each resample draws the images with replacement; a drawn image becomes a new image id (its
    detections and ground truth copied), so duplicates count twice, as independent images would."""
    images = sorted(set(results) | {i for per in ground_truth.values() for i in per})
    if not images or reps <= 0:
        return float("nan")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(reps):
        drawn = rng.choice(images, size=len(images), replace=True)
        dets: dict = {}
        gts: dict = {c: {} for c in ground_truth}
        for new_id, old in enumerate(drawn):
            for cat, score, box in results.get(int(old), []):
                dets.setdefault(cat, []).append((new_id, score, box))
            for cat, per in ground_truth.items():
                if int(old) in per:
                    gts[cat][new_id] = per[int(old)]
        gts = {c: per for c, per in gts.items() if per}
        values.append(voc_map(dets, gts, metric=metric, inclusive=False)["mAP"])
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
