"""DetectionLitModule: training and evaluation of the R-CNN family (Faster R-CNN and Mask R-CNN configs use it
directly). The detector, optimizer, scheduler and evaluators are injected.

* ``training_step``: the detector's loss dict (float32) summed; logged as ``train/loss`` and ``train/<name>``.
  A NaN/inf loss or gradient stops the run before the optimizer step (the CLI's
  :class:`~lit_papers.callbacks.nonfinite.NonFiniteGuard`); ``batch_identifiers`` gives it the batch's COCO image
  ids for ``<run folder>/nonfinite_batch.json``.
* ``validation_step``/``test_step``: the model returns detections already in each image's original pixels
  (``model(images, original_sizes=...)``: the model's own postprocess rescales boxes and pastes binary masks,
  as torchvision's and detectron2's detectors do); each injected evaluator (``evaluators``, default
  :class:`~lit_papers.detection.evaluators.COCOMetrics`; VOC configs add ``VOCMeanAP`` 11-point and area)
  gets them, with the datamodule's eval dataset (``trainer.datamodule.eval_dataset(stage)``) and the IoU types
  the model says it produces (``model.iou_types``). At epoch end each evaluator's numbers are logged as
  ``<stage>/<name>`` (``bbox_AP``, ``segm_AP50``, ``voc07_mAP``...), summaries printed, and at ``test`` the
  official results files written into the run folder. The first batch's predictions (drawn at the network's
  input size) are kept in ``self.example_predictions`` for the picture callback
  (:mod:`lit_papers.callbacks.detections`).
* The linear scaling rule of the learning rate is a callback
  (:class:`lit_papers.callbacks.lr_scaling.LinearScalingRule`), not module code.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from lit_papers.detection.evaluators import COCOMetrics, DetectionEvaluator
from lit_papers.metrics.hooks import EvaluationHooks
from lit_papers.schedules import optimizer_config


class DetectionLitModule(EvaluationHooks, L.LightningModule):
    def __init__(self, *, model: nn.Module, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None = None,
                 evaluators: list[DetectionEvaluator] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler", "evaluators"])
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.evaluators: list[DetectionEvaluator] = list(evaluators) if evaluators is not None else [COCOMetrics()]
        self.example_predictions: dict | None = None
        self.last_metrics: dict[str, float] = {}

    def forward(self, images: list[torch.Tensor]) -> list[dict]:
        return self.model(images)

    # -- training ----------------------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.model(images, targets)
        loss = sum(losses.values())
        bs = len(images)
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=bs)
        return loss

    def batch_identifiers(self, batch) -> list[int]:
        """The COCO image ids of a training batch (saved by the non-finite guard)."""
        return [int(t["image_id"]) for t in batch[1]]

    # -- evaluation --------------------------------------------------------------------------------------------
    def _start_eval(self, stage: str) -> None:
        dataset = self.trainer.datamodule.eval_dataset(stage)
        for evaluator in self.evaluators:
            evaluator.start(dataset, tuple(self.model.iou_types), stage=stage)
        self.example_predictions = None

    @torch.no_grad()
    def _eval_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        detections = self.model(images, original_sizes=[tuple(t["orig_size"]) for t in targets])
        for target, det in zip(targets, detections):
            for evaluator in self.evaluators:
                evaluator.update(target["image_id"], det)
        if self.example_predictions is None:  # the picture callback takes them and resets, up to max_images
            self.example_predictions = {"items": [self._at_input_size(im, det, t["orig_size"])
                                                  for im, det, t in zip(images, detections, targets)]}

    @staticmethod
    def _at_input_size(image: torch.Tensor, det: dict, orig_size) -> dict:
        """A detection in original pixels drawn on the (resized) input image: boxes and masks scaled back."""
        h, w = image.shape[-2:]
        h0, w0 = orig_size
        item = {"image": image.cpu(), "labels": det["labels"].cpu(), "scores": det["scores"].cpu()}
        if "masks" in det:  # (N, H0, W0) binary -> (N, H, W)
            item["masks"] = F.interpolate(det["masks"][:, None].float(), size=(h, w), mode="nearest")[:, 0].cpu()
        item["boxes"] = (det["boxes"] * det["boxes"].new_tensor([w / w0, h / h0, w / w0, h / h0])).cpu()
        return item

    def _end_eval(self, stage: str) -> None:
        metrics: dict[str, float] = {}
        for evaluator in self.evaluators:
            metrics.update(evaluator.finish())
        self.last_metrics = metrics
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, rank_zero_only=True, prog_bar=name.endswith("AP50"))
        if not self.trainer.sanity_checking:
            for evaluator in self.evaluators:
                text = evaluator.summary()
                if text:
                    rank_zero_info(f"[{stage}] step {self.global_step}: {text}")
            if stage == "test" and self.global_rank == 0:
                for evaluator in self.evaluators:
                    path = evaluator.write(Path(self.trainer.default_root_dir))
                    if path is not None:
                        rank_zero_info(f"[test] official results: {path}")


    # -- optimisation ------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return optimizer_config(self.optimizer_factory(params), self.scheduler_factory)
