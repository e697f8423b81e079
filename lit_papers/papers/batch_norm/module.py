"""BatchNormLitModule: softmax classification for the BN experiment (Ioffe & Szegedy 2015, sec. 4.2 on CIFAR).

Network, optimizer and scheduler are injected; a learning-rate multiple (the paper's "BN-x5", "BN-x30") is a
config's ``lr``. Logged: ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``test/loss``, ``test/acc``
(fractions) with ``val/acc_n``, ``test/acc_n`` (images evaluated; a binomial interval needs nothing else).
The global step of every validation is in the logs, so "steps to reach accuracy X" is read from ``val/acc``.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from lit_papers.schedules import optimizer_config


class BatchNormLitModule(L.LightningModule):
    def __init__(self, *, model: nn.Module, optimizer: OptimizerCallable, scheduler: LRSchedulerCallable | None = None,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.evals = nn.ModuleDict({
            stage: nn.ModuleList([MulticlassAccuracy(num_classes, average="micro"), MeanMetric(), SumMetric()])
            for stage in ("val", "test")
        })

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

    def _evaluate(self, batch, stage: str) -> None:
        accuracy, mean_loss, count = self.evals[stage]
        images, labels = batch
        logits = self.model(images)
        accuracy(logits, labels)
        mean_loss(F.cross_entropy(logits.float(), labels, reduction="none"))
        count(torch.tensor(float(len(labels)), device=labels.device))
        self.log(f"{stage}/loss", mean_loss, on_epoch=True)
        self.log(f"{stage}/acc", accuracy, on_epoch=True, prog_bar=stage == "val")

    def _totals(self, stage: str) -> None:
        count = self.evals[stage][2]
        self.log(f"{stage}/acc_n", count.compute())
        count.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._totals("val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._totals("test")

    def configure_optimizers(self):
        return optimizer_config(self.optimizer_factory(self.parameters()), self.scheduler_factory)
