"""SSDLitModule: the shared detection module (:class:`~lit_papers.detection.module.DetectionLitModule`: injected
network, optimizer, scheduler and evaluators; COCO / VOC mAP at validation and test) plus what SSD adds:

* ``train/num_positive`` and ``train/num_negative``: matched default boxes and mined negatives per batch (the
  3:1 of hard negative mining is visible in the log; the network keeps them in ``model.last_counts``).

The 95% interval of each VOC mAP (``<stage>/<name>_ci95``, ``_n`` images) comes from the evaluator
(:class:`~lit_papers.detection.evaluators.VOCMeanAP`, ``bootstrap`` resamples at test), as for every detector.
"""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_papers.detection.evaluators import DetectionEvaluator
from lit_papers.detection.module import DetectionLitModule


class SSDLitModule(DetectionLitModule):
    def __init__(self, *, model: nn.Module, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None = None,
                 evaluators: list[DetectionEvaluator] | None = None) -> None:
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler, evaluators=evaluators)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        for name, value in getattr(self.model, "last_counts", {}).items():
            self.log(f"train/{name}", value, batch_size=len(batch[0]))
        return loss
