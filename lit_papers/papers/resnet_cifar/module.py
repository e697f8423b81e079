"""ResNetCifarLitModule: softmax classification training of He et al. 2016, sec. 4.2.

The network, optimizer and scheduler are injected (configs choose ResNet-20...110, SGD 0.1/0.9/1e-4 and the
32k/48k-iteration steps). The scheduler is stepped per optimizer step, since the paper counts iterations.
Logged: ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``val/error``, ``test/acc``, ``test/error``
(accuracy and error as fractions; the card scales error to percent), with ``<metric>_n`` = the number of images
each evaluation is over (a binomial interval needs nothing else). With several test sets (the datamodule's
``test_metric_suffixes``, e.g. ``["", "_exact"]``) the k-th is logged as ``test/acc<suffix>``,
``test/error<suffix>``, ...
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
        self.val_loss = MeanMetric()
        self.val_n = SumMetric()
        self.num_classes = num_classes
        self.test_suffixes: list[str] = [""]
        self.test_metrics = nn.ModuleList()  # one (accuracy, mean loss, count) per test set, made at test start

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

    def _evaluate(self, batch, stage: str, metrics, suffix: str = "") -> None:
        accuracy, mean_loss, count = metrics
        images, labels = batch
        logits = self.model(images)
        accuracy(logits, labels)
        # example-weighted mean, summed over ranks by torchmetrics: exact under DDP (no padded duplicates)
        mean_loss(F.cross_entropy(logits.float(), labels, reduction="none"))
        count(torch.tensor(float(len(labels)), device=labels.device))
        self.log(f"{stage}/loss{suffix}", mean_loss, on_epoch=True, add_dataloader_idx=False)
        self.log(f"{stage}/acc{suffix}", accuracy, on_epoch=True, prog_bar=stage == "val" and not suffix,
                 add_dataloader_idx=False)

    def _log_totals(self, stage: str, metrics, suffix: str = "") -> None:
        accuracy, _, count = metrics
        n = count.compute()
        self.log(f"{stage}/error{suffix}", 1.0 - accuracy.compute(), add_dataloader_idx=False)
        for name in ("acc", "error"):
            self.log(f"{stage}/{name}{suffix}_n", n, add_dataloader_idx=False)
        count.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", (self.val_acc, self.val_loss, self.val_n))

    def on_validation_epoch_end(self) -> None:
        self._log_totals("val", (self.val_acc, self.val_loss, self.val_n))

    def on_test_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        self.test_suffixes = list(getattr(datamodule, "test_metric_suffixes", None) or [""])
        self.test_metrics = nn.ModuleList(
            nn.ModuleList([MulticlassAccuracy(self.num_classes, average="micro"), MeanMetric(), SumMetric()])
            for _ in self.test_suffixes
        ).to(self.device)

    def test_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate(batch, "test", self.test_metrics[dataloader_idx], self.test_suffixes[dataloader_idx])

    def on_test_epoch_end(self) -> None:
        for metrics, suffix in zip(self.test_metrics, self.test_suffixes, strict=True):
            self._log_totals("test", metrics, suffix)

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        images = batch[0] if isinstance(batch, list | tuple) else batch
        probs = self.model(images).float().softmax(dim=-1)  # (B, K)
        return {"probs": probs, "label": probs.argmax(dim=-1)}

    def configure_optimizers(self):
        return optimizer_config(self.optimizer_factory(self.parameters()), self.scheduler_factory)
