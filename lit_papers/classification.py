"""ClassifierLitModule: softmax classification with an injected network, the LightningModule that the CIFAR papers
(``resnet_cifar``, ``batch_norm``, ``random_labels``) subclass for what their paper adds.

The network, optimizer and scheduler are injected; the scheduler is stepped per optimizer step
(:func:`lit_papers.schedules.optimizer_config`). Logged, as fractions:

* ``train/loss`` and ``train/acc`` (the batch's) at every step;
* per evaluation stage S: ``S/loss``, ``S/acc``, ``S/error``, with ``S/acc_n`` = ``S/error_n`` = the number of
  images evaluated (a binomial interval needs nothing else). The stages are ``val`` (or the names the datamodule
  gives its validation loaders, ``val_loader_names``, e.g. ``["val", "train_eval"]``; a subclass lists the ones it
  expects in ``VAL_STAGES``) and ``test``; several test sets (the datamodule's ``test_metric_suffixes``, e.g.
  ``["", "_exact"]``) are logged as ``test/acc<suffix>``, ``test/error<suffix>``, ...

Losses are example-weighted means whose sums torchmetrics adds over ranks, so they are exact under DDP (no padded
duplicates in the counts either).
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


class ClassifierLitModule(L.LightningModule):
    VAL_STAGES: tuple[str, ...] = ("val",)

    def __init__(self, *, model: nn.Module, optimizer: OptimizerCallable,
                 scheduler: LRSchedulerCallable | None = None, num_classes: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.num_classes = num_classes
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_metrics = nn.ModuleDict({stage: self._metrics() for stage in self.VAL_STAGES})
        self.val_names: list[str] = ["val"]
        self.test_suffixes: list[str] = [""]
        self.test_metrics = nn.ModuleList()  # one (accuracy, mean loss, count) per test set, made at test start

    def _metrics(self) -> nn.ModuleList:
        return nn.ModuleList([MulticlassAccuracy(self.num_classes, average="micro"), MeanMetric(), SumMetric()])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        images, labels = batch
        logits = self.model(images)  # (B, K)
        loss = F.cross_entropy(logits.float(), labels)
        self.train_acc(logits, labels)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/acc", self.train_acc, on_step=True, on_epoch=False)
        return loss

    # -- evaluation ---------------------------------------------------------------------------------------------
    def _evaluate(self, batch, stage: str, metrics: nn.ModuleList, suffix: str = "") -> None:
        accuracy, mean_loss, count = metrics
        images, labels = batch
        logits = self.model(images)
        accuracy(logits, labels)
        mean_loss(F.cross_entropy(logits.float(), labels, reduction="none"))
        count(torch.tensor(float(len(labels)), device=labels.device))
        self.log(f"{stage}/loss{suffix}", mean_loss, on_epoch=True, add_dataloader_idx=False)
        self.log(f"{stage}/acc{suffix}", accuracy, on_epoch=True, prog_bar=stage == "val" and not suffix,
                 add_dataloader_idx=False)

    def _totals(self, stage: str, metrics: nn.ModuleList, suffix: str = "") -> tuple[float, int] | None:
        """Log ``stage/error``, ``_n`` counts; -> (accuracy, images) of the evaluation, None if it saw none."""
        accuracy, _, count = metrics
        n = int(count.compute().item())
        count.reset()
        if n == 0:
            return None
        acc = float(accuracy.compute().item())
        self.log(f"{stage}/error{suffix}", 1.0 - acc, add_dataloader_idx=False)
        for name in ("acc", "error"):
            self.log(f"{stage}/{name}{suffix}_n", float(n), add_dataloader_idx=False)
        return acc, n

    def on_validation_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        self.val_names = list(getattr(datamodule, "val_loader_names", None) or ["val"])
        unknown = [name for name in self.val_names if name not in self.val_metrics]
        if unknown:
            raise ValueError(f"{type(self).__name__} evaluates the validation stages {list(self.VAL_STAGES)}; the "
                             f"datamodule also serves {unknown} (val_loader_names): switch that option off")

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        stage = self.val_names[dataloader_idx]
        self._evaluate(batch, stage, self.val_metrics[stage])

    def on_validation_epoch_end(self) -> None:
        self.validation_totals({stage: self._totals(stage, self.val_metrics[stage]) for stage in self.val_names})

    def validation_totals(self, totals: dict[str, tuple[float, int] | None]) -> None:
        """Hook for subclasses: (accuracy, images) per validation stage after each validation."""

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

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        images = batch[0] if isinstance(batch, list | tuple) else batch
        probs = self.model(images).float().softmax(dim=-1)  # (B, K)
        return {"probs": probs, "label": probs.argmax(dim=-1)}

    def configure_optimizers(self):
        return optimizer_config(self.optimizer_factory(self.parameters()), self.scheduler_factory)
