"""DetectionLitModule: training and exact COCO evaluation of the R-CNN family (shared by Faster R-CNN and
Mask R-CNN, whose paper modules subclass it). The detector, optimizer and scheduler are injected.

* ``training_step``: the detector's loss dict (float32) summed; logged as ``train/loss`` and ``train/<name>``.
  A NaN/inf loss or gradient stops the run before the optimizer step (the CLI's
  :class:`~lit_papers.callbacks.nonfinite.NonFiniteGuard`); ``batch_identifiers`` gives it the batch's COCO image
  ids for ``<run folder>/nonfinite_batch.json``.
* ``validation_step``/``test_step``: detections are mapped back to each image's original size (boxes divided by
  the datamodule's ``scale``; 28x28 mask probabilities pasted into the box with torchvision's
  ``paste_masks_in_image`` and binarised at ``mask_threshold``), then handed to
  :class:`~lit_papers.metrics.coco_eval.COCOEvaluator` against the datamodule's ground truth
  (``trainer.datamodule.eval_dataset(stage)``: ``.coco``, ``.cat_ids``). At epoch end the results are gathered
  from all ranks and COCOeval's numbers are logged as ``<stage>/bbox_AP``, ``<stage>/bbox_AP50``, ...,
  ``<stage>/segm_AP``...; the table is printed; ``test`` also writes the official results JSON
  ``coco_results_test.json`` into the run folder. The first batch's predictions are kept in
  ``self.example_predictions`` for the picture callback (:mod:`lit_papers.callbacks.detections`).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchvision.models.detection.transform import paste_masks_in_image

from lit_papers.metrics.coco_eval import COCOEvaluator, summary_table, write_results
from lit_papers.metrics.voc_eval import voc_map
from lit_papers.schedules import optimizer_config


class DetectionLitModule(L.LightningModule):
    def __init__(self, *, model: nn.Module, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None = None,
                 mask_threshold: float = 0.5, write_results_json: bool = True,
                 reference_batch_size: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.evaluator: COCOEvaluator | None = None
        self.example_predictions: dict | None = None
        self.last_metrics: dict[str, dict[str, float]] = {}

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
        iou_types = ("bbox", "segm") if getattr(self.model.roi_heads, "mask_branch", None) is not None else ("bbox",)
        self.evaluator = COCOEvaluator(dataset.coco, dataset.cat_ids, iou_types)
        self.example_predictions = None

    @torch.no_grad()
    def _eval_step(self, batch, batch_idx: int) -> None:
        images, targets = batch
        detections = self.model(images)
        for target, det in zip(targets, detections):
            sy, sx = target["scale"]
            h0, w0 = target["orig_size"]
            boxes = det["boxes"] / det["boxes"].new_tensor([sx, sy, sx, sy])  # (N, 4) original pixels
            masks = None
            if "mask_probs" in det:
                probs = paste_masks_in_image(det["mask_probs"], boxes, (h0, w0), padding=1)  # (N, 1, H0, W0)
                masks = (probs[:, 0] >= self.hparams.mask_threshold).to(torch.uint8)  # (N, H0, W0)
            self.evaluator.update(target["image_id"], boxes, det["scores"], det["labels"], masks)
        if batch_idx == 0 and self.example_predictions is None:
            shown = []
            for image, det in zip(images, detections):
                item = {"image": image.cpu(), **{k: det[k].cpu() for k in ("boxes", "labels", "scores")}}
                if "mask_probs" in det:
                    h, w = image.shape[-2:]
                    item["masks"] = paste_masks_in_image(det["mask_probs"], det["boxes"], (h, w), padding=1)[:, 0].cpu()
                shown.append(item)
            self.example_predictions = {"items": shown}

    def _end_eval(self, stage: str) -> None:
        evaluator = self.evaluator
        evaluator.gather()
        stats = evaluator.compute()
        self.last_metrics = stats
        for kind, values in stats.items():
            for name, value in values.items():
                self.log(f"{stage}/{kind}_{name}", value, rank_zero_only=True, prog_bar=name == "AP50")
        dataset = self.trainer.datamodule.eval_dataset(stage)
        if hasattr(dataset, "voc_ground_truth"):  # PASCAL VOC: also the VOC metric (07 11-point and area)
            detections: dict = {}
            for r in evaluator.records:
                x, y, w, h = r["bbox"]
                detections.setdefault(r["category_id"], []).append((r["image_id"], r["score"], [x, y, x + w, y + h]))
            gt = dataset.voc_ground_truth()
            for metric, key in (("11point", "voc07_mAP"), ("area", "voc_mAP")):
                value = voc_map(detections, gt, metric=metric, inclusive=False)["mAP"]
                self.log(f"{stage}/{key}", value, rank_zero_only=True)
        if not self.trainer.sanity_checking:
            rank_zero_info(f"[{stage}] COCO AP on {len(evaluator.results)} images (step {self.global_step}):\n"
                           + summary_table(stats))
            if stage == "test" and self.hparams.write_results_json and self.global_rank == 0:
                path = write_results(evaluator.records, Path(self.trainer.default_root_dir) / "coco_results_test.json")
                rank_zero_info(f"[test] official results JSON: {path}")

    def on_validation_epoch_start(self) -> None:
        self._start_eval("val")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval("test")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")

    # -- optimisation ------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        self._apply_linear_scaling(optimizer)
        return optimizer_config(optimizer, self.scheduler_factory)

    def _apply_linear_scaling(self, optimizer) -> None:
        """Linear scaling rule (Goyal et al. 2017, used by Detectron): the config's lr is for
        ``reference_batch_size`` images per iteration (16 in the Mask R-CNN paper: 8 GPUs x 2); with B images per
        iteration (per-device batch x devices x gradient accumulation) the lr becomes lr x B / reference, and the
        message says so. The iteration counts of the schedule are not changed (scale them by reference / B for
        the same number of epochs)."""
        reference = self.hparams.reference_batch_size
        if not reference or self._trainer is None:
            return
        trainer = self.trainer
        per_device = getattr(trainer.datamodule, "batch_size", None)
        if per_device is None:
            return
        total = per_device * trainer.world_size * trainer.accumulate_grad_batches
        if total == reference:
            return
        factor = total / reference
        for group in optimizer.param_groups:
            group["lr"] *= factor
            group["initial_lr"] = group["lr"]
        rank_zero_info(f"[linear scaling rule] {total} images/iteration instead of {reference}: lr x {factor:g} = "
                       f"{optimizer.param_groups[0]['lr']:g}; scale max_steps and milestones by {1 / factor:g} to keep "
                       "the paper's number of epochs")
