"""RandomLabelsLitModule: the fitting experiments of Zhang et al. 2017 (sec. 2-3, Figure 1).

Softmax classification with the injected network and optimizer (no weight decay, no dropout, no augmentation in
the fitting configs: those are the datamodule's and the optimizer's settings). What the paper measures:

* the **training accuracy on the labels as trained on** (corrupted ones included): the datamodule's ``eval_train``
  adds the training split, unaugmented, as a second validation loader; it is logged as ``train_eval/acc`` (and
  ``train_eval/loss``, ``train_eval/acc_n``) at every validation;
* the **time to fit** (Figure 1b): the first optimizer step after which ``train_eval/acc >= fit_threshold``
  (1.0 = every training label), logged once as ``fit/steps`` and ``fit/epochs``; with ``stop_when_fit`` training
  stops there (the paper's "time to overfit"; the steps are then counted at validation granularity, once per
  epoch in the configs);
* the **test accuracy** on the true test labels (``test/acc``, ``test/error``, ``test/acc_n``; a datamodule with
  several test sets (``test_metric_suffixes``, e.g. ``["", "_exact"]``) gets ``test/acc_exact``, ...) and, at test time,
  the last training-split accuracy and the fit as ``fit/train_acc`` (``fit/train_acc_n``), ``fit/reached`` (0/1)
  and ``fit/steps_to_fit`` (NaN if never reached), so a run's card result holds the whole claim.

``val/acc`` (true labels of images held out of the training split) is logged when the datamodule has a val split.
Training rows: ``train/loss`` (every ``log_every_n_steps``; Figure 1a's curves) and ``train/acc`` (the batch's).
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric, SumMetric
from torchmetrics.classification import MulticlassAccuracy

from lit_papers.schedules import optimizer_config

STAGES = ("val", "train_eval")


class RandomLabelsLitModule(L.LightningModule):
    def __init__(
        self,
        *,
        model: nn.Module,
        optimizer: OptimizerCallable,
        scheduler: LRSchedulerCallable | None = None,
        num_classes: int = 10,
        fit_threshold: float = 1.0,
        stop_when_fit: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 < fit_threshold <= 1.0:
            raise ValueError(f"fit_threshold={fit_threshold}: a training accuracy in (0, 1] is needed")
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.fit_threshold, self.stop_when_fit = fit_threshold, stop_when_fit
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.evals = nn.ModuleDict({
            stage: nn.ModuleList([MulticlassAccuracy(num_classes, average="micro"), MeanMetric(), SumMetric()])
            for stage in STAGES
        })
        self.val_names: list[str] = ["val"]
        self.num_classes = num_classes
        self.test_suffixes: list[str] = [""]
        self.test_metrics = nn.ModuleList()  # one (accuracy, mean loss, count) per test set, made at test start
        # what the run has found so far (kept in checkpoints: a resumed run keeps its time to fit)
        self.fit_step: int | None = None
        self.fit_epoch: int | None = None
        self.last_train_acc: float | None = None
        self.last_train_n: int | None = None

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

    # -- evaluation ------------------------------------------------------------------------------------
    def _evaluate(self, batch, stage: str, metrics, suffix: str = "") -> None:
        accuracy, mean_loss, count = metrics
        images, labels = batch
        logits = self.model(images)
        accuracy(logits, labels)
        # example-weighted mean, summed over ranks by torchmetrics: exact under DDP (no padded duplicates)
        mean_loss(F.cross_entropy(logits.float(), labels, reduction="none"))
        count(torch.tensor(float(len(labels)), device=labels.device))
        self.log(f"{stage}/loss{suffix}", mean_loss, on_epoch=True, add_dataloader_idx=False)
        self.log(f"{stage}/acc{suffix}", accuracy, on_epoch=True, prog_bar=stage != "test",
                 add_dataloader_idx=False)

    def _totals(self, stage: str, metrics, suffix: str = "") -> tuple[float, int] | None:
        accuracy, _, count = metrics
        n = int(count.compute().item())
        if n == 0:
            return None
        acc = float(accuracy.compute().item())
        self.log(f"{stage}/acc{suffix}_n", float(n), add_dataloader_idx=False)
        count.reset()
        return acc, n

    def on_validation_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        self.val_names = list(getattr(datamodule, "val_loader_names", None) or ["val"])

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        stage = self.val_names[dataloader_idx]
        self._evaluate(batch, stage, self.evals[stage])

    def on_validation_epoch_end(self) -> None:
        totals = {stage: self._totals(stage, self.evals[stage]) for stage in STAGES if stage in self.val_names}
        fitted = totals.get("train_eval")
        if fitted is None or self.trainer.sanity_checking:
            return
        self.last_train_acc, self.last_train_n = fitted
        if self.fit_step is None and fitted[0] >= self.fit_threshold:
            self.fit_step, self.fit_epoch = int(self.global_step), int(self.current_epoch) + 1
            self.log("fit/steps", float(self.fit_step))
            self.log("fit/epochs", float(self.fit_epoch))
            if self.stop_when_fit:
                self.trainer.should_stop = True

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
            totals = self._totals("test", metrics, suffix)
            if totals is not None:
                self.log(f"test/error{suffix}", 1.0 - totals[0], add_dataloader_idx=False)
                self.log(f"test/error{suffix}_n", float(totals[1]), add_dataloader_idx=False)
        if self.last_train_acc is not None:
            self.log("fit/train_acc", self.last_train_acc)
            self.log("fit/train_acc_n", float(self.last_train_n))
        self.log("fit/reached", float(self.fit_step is not None))
        self.log("fit/steps_to_fit", math.nan if self.fit_step is None else float(self.fit_step))

    # -- checkpoints ------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["random_labels_fit"] = {"step": self.fit_step, "epoch": self.fit_epoch,
                                           "train_acc": self.last_train_acc, "train_n": self.last_train_n}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("random_labels_fit") or {}
        self.fit_step, self.fit_epoch = saved.get("step"), saved.get("epoch")
        self.last_train_acc, self.last_train_n = saved.get("train_acc"), saved.get("train_n")

    def configure_optimizers(self):
        return optimizer_config(self.optimizer_factory(self.parameters()), self.scheduler_factory)
