"""ResNetCifarLitModule: softmax classification training of He et al. 2016, sec. 4.2.

The network, optimizer and scheduler are injected (configs choose ResNet-20...110, SGD 0.1/0.9/1e-4 and the
32k/48k-iteration steps). The scheduler is stepped per optimizer step, since the paper counts iterations.
Logged: ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``val/error``, ``test/acc``, ``test/error``
(accuracy and error as fractions; the card scales error to percent).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lit_papers.schedules import optimizer_config


class ResNetCifarLitModule(L.LightningModule):
    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: OptimizerCallable,
        scheduler: LRSchedulerCallable | None = None,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.model(images)
        loss = F.cross_entropy(logits.float(), labels)
        self.train_acc(logits, labels)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=True, on_epoch=False)
        return loss

    def _evaluate(self, batch, stage: str, metric: MulticlassAccuracy, mean_loss: MeanMetric) -> None:
        images, labels = batch
        logits = self.model(images)
        metric(logits, labels)
        # example-weighted mean, summed over ranks by torchmetrics: exact under DDP (no padded duplicates)
        mean_loss(F.cross_entropy(logits.float(), labels, reduction="none"))
        self.log(f"{stage}/loss", mean_loss, on_epoch=True)
        self.log(f"{stage}/acc", metric, on_epoch=True, prog_bar=stage == "val")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc, self.val_loss)

    def on_validation_epoch_end(self) -> None:
        self.log("val/error", 1.0 - self.val_acc.compute())

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc, self.test_loss)

    def on_test_epoch_end(self) -> None:
        self.log("test/error", 1.0 - self.test_acc.compute())

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        images = batch[0] if isinstance(batch, list | tuple) else batch
        probs = self.model(images).float().softmax(dim=-1)  # (B, K)
        return {"probs": probs, "label": probs.argmax(dim=-1)}

    def configure_optimizers(self):
        return optimizer_config(self.optimizer_factory(self.parameters()), self.scheduler_factory)
