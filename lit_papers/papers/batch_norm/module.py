"""BatchNormLitModule: softmax classification for the BN experiment (Ioffe & Szegedy 2015, sec. 4.2 on CIFAR).

Network, optimizer and scheduler are injected; a learning-rate multiple (the paper's "BN-x5", "BN-x30") is a
config's ``lr``. Logged: ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``test/loss``, ``test/acc``
(fractions) with ``val/acc_n``, ``test/acc_n`` (images evaluated; a binomial interval needs nothing else); with
several test sets (``test_sources: [folder, pickle]``) the k-th is logged with the datamodule's suffix
(``test/acc_exact``: the 500 exact test records).
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
        self.num_classes = num_classes
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_metrics = self._metrics()
        self.test_suffixes: list[str] = [""]
        self.test_metrics = nn.ModuleList()  # one (accuracy, mean loss, count) per test set, made at test start

    def _metrics(self) -> nn.ModuleList:
        return nn.ModuleList([MulticlassAccuracy(self.num_classes, average="micro"), MeanMetric(), SumMetric()])

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

    def _evaluate(self, batch, stage: str, metrics: nn.ModuleList, suffix: str = "") -> None:
        accuracy, mean_loss, count = metrics
        images, labels = batch
        logits = self.model(images)
        accuracy(logits, labels)
        mean_loss(F.cross_entropy(logits.float(), labels, reduction="none"))
        count(torch.tensor(float(len(labels)), device=labels.device))
        self.log(f"{stage}/loss{suffix}", mean_loss, on_epoch=True, add_dataloader_idx=False)
        self.log(f"{stage}/acc{suffix}", accuracy, on_epoch=True, prog_bar=stage == "val", add_dataloader_idx=False)

    def _totals(self, stage: str, metrics: nn.ModuleList, suffix: str = "") -> None:
        count = metrics[2]
        self.log(f"{stage}/acc{suffix}_n", count.compute(), add_dataloader_idx=False)
        count.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._totals("val", self.val_metrics)

    def on_test_start(self) -> None:
        # one set of metrics per test set the datamodule serves (test_sources: [folder, pickle] -> "", "_exact")
        datamodule = getattr(self.trainer, "datamodule", None)
        self.test_suffixes = list(getattr(datamodule, "test_metric_suffixes", None) or [""])
        self.test_metrics = nn.ModuleList(self._metrics() for _ in self.test_suffixes).to(self.device)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test", self.test_metrics[dataloader_idx], self.test_suffixes[dataloader_idx])

    def on_test_epoch_end(self) -> None:
        for metrics, suffix in zip(self.test_metrics, self.test_suffixes, strict=True):
            self._totals("test", metrics, suffix)

    def configure_optimizers(self):
        return optimizer_config(self.optimizer_factory(self.parameters()), self.scheduler_factory)
