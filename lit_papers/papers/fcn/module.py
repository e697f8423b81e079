"""FCNLitModule: per-pixel softmax training and the four metrics of Long et al. 2015 (sec. 4.3, sec. 5).

The network, optimizer and scheduler are injected (configs choose FCN-32s / 16s / 8s and the paper's SGD). The
loss is the per-pixel multinomial logistic loss over the output map, pixels labelled ``ignore_index`` (VOC's 255
"void") excluded (sec. 4.3); ``loss_reduction`` ``mean`` averages it over the counted pixels, ``sum`` sums it over
pixels and averages over images (Caffe's unnormalised loss of the reference solvers). ``init_from``: a coarser
net's checkpoint for the paper's staged training (:meth:`FCNLitModule.load_coarser`).
Logged: ``train/loss``, ``val/loss``, ``{val,test}/{pixel_acc, mean_acc, mean_iu, fw_iu}`` (fractions; the card
scales to percent) and ``<key>_n`` (images the metric is over); at test, with at least ``bootstrap_min_images``
images, ``<key>_ci95``: the 95 % half-width over images (``bootstrap`` resamples;
:func:`~lit_papers.metrics.segmentation.bootstrap_ci95`). The first batch of each evaluation is kept as
``example_predictions`` for :class:`~lit_papers.papers.fcn.pictures.SegmentationPictures`.
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric, SumMetric

from lit_papers.metrics.segmentation import METRIC_NAMES, SegmentationMetrics, bootstrap_ci95
from lit_papers.ops.checkpoint import CheckpointError, read_checkpoint
from lit_papers.schedules import optimizer_config


class FCNLitModule(L.LightningModule):
    def __init__(self, *, model: nn.Module, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None = None,
                 num_classes: int = 21, ignore_index: int = 255, loss_reduction: Literal["mean", "sum"] = "mean",
                 max_pictures: int = 4, init_from: str | None = None, bootstrap: int = 200,
                 bootstrap_min_images: int = 20) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.metrics = nn.ModuleDict({s: SegmentationMetrics(num_classes=num_classes, ignore_index=ignore_index,
                                                             per_image=s == "test" and bootstrap > 0)
                                      for s in ("val", "test")})
        self.images_seen = nn.ModuleDict({s: SumMetric() for s in ("val", "test")})
        self.val_loss = MeanMetric()
        self.example_predictions: dict | None = None
        if init_from is not None:
            self.load_coarser(init_from)

    def load_coarser(self, path: str) -> None:
        """Staged training (sec. 4.2): start FCN-16s from a trained FCN-32s checkpoint (FCN-8s from FCN-16s).
        Every tensor whose name and shape match is copied; the new skip layers keep their zero / bilinear init and
        the fixed final upsampling (another factor) is rebuilt. Prints what was not taken."""
        checkpoint = read_checkpoint(path, mmap=False)
        if "state_dict" not in checkpoint:
            raise CheckpointError(f"{path}: no 'state_dict' (init_from takes a Lightning checkpoint of an FCN run)")
        state = checkpoint["state_dict"]
        own = self.state_dict()
        kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        self.load_state_dict(kept, strict=False)
        new = sorted(set(own) - set(kept))
        print(f"[fcn] init_from {path}: {len(kept)} tensors copied; kept at init: {new}; "
              f"not used: {sorted(set(state) - set(kept))}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def loss(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """logits (B, K, H, W), masks (B, H, W) int64 with ``ignore_index`` -> scalar loss."""
        hp = self.hparams
        if hp.loss_reduction == "sum":
            per_pixel = F.cross_entropy(logits.float(), masks, ignore_index=hp.ignore_index, reduction="sum")
            return per_pixel / logits.shape[0]
        return F.cross_entropy(logits.float(), masks, ignore_index=hp.ignore_index)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, masks = batch
        loss = self.loss(self.model(images), masks)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        images, masks = batch
        logits = self.model(images)  # (B, K, H, W)
        preds = logits.argmax(dim=1)  # (B, H, W)
        self.metrics[stage].update(preds, masks)
        self.images_seen[stage].update(torch.tensor(float(len(images)), device=images.device))
        if stage == "val":
            self.val_loss.update(self.loss(logits, masks), weight=len(images))
            self.log("val/loss", self.val_loss, on_epoch=True, batch_size=len(images))
        if batch_idx == 0:
            k = self.hparams.max_pictures
            self.example_predictions = {"images": images[:k].cpu(), "targets": masks[:k].cpu(),
                                        "preds": preds[:k].cpu()}

    def _log_metrics(self, stage: str) -> None:
        scores = self.metrics[stage].compute()  # summed over ranks
        n = self.images_seen[stage].compute()
        hp = self.hparams
        half = (bootstrap_ci95(scores["per_image"], resamples=hp.bootstrap)
                if "per_image" in scores and len(scores["per_image"]) >= hp.bootstrap_min_images else {})
        for name in METRIC_NAMES:
            self.log(f"{stage}/{name}", scores[name].float(), prog_bar=name == "mean_iu")
            self.log(f"{stage}/{name}_n", n)
            if name in half:
                self.log(f"{stage}/{name}_ci95", half[name])
        self.metrics[stage].reset()
        self.images_seen[stage].reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        images = batch[0] if isinstance(batch, list | tuple) else batch
        return self.model(images).argmax(dim=1)  # (B, H, W)

    def configure_optimizers(self):
        return optimizer_config(self.optimizer_factory(self.parameters()), self.scheduler_factory)
