"""RandomLabelsLitModule: the fitting experiments of Zhang et al. 2017 (sec. 2-3, Figure 1).

Softmax classification with the injected network and optimizer (the shared
:class:`lit_papers.classification.ClassifierLitModule`; no weight decay, no dropout, no augmentation in the fitting
configs: those are the datamodule's and the optimizer's settings). What the paper measures:

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

from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_papers.classification import ClassifierLitModule


class RandomLabelsLitModule(ClassifierLitModule):
    VAL_STAGES = ("val", "train_eval")

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
        if not 0.0 < fit_threshold <= 1.0:
            raise ValueError(f"fit_threshold={fit_threshold}: a training accuracy in (0, 1] is needed")
        super().__init__(model=model, optimizer=optimizer, scheduler=scheduler, num_classes=num_classes)
        self.fit_threshold, self.stop_when_fit = fit_threshold, stop_when_fit
        # what the run has found so far (kept in checkpoints: a resumed run keeps its time to fit)
        self.fit_step: int | None = None
        self.fit_epoch: int | None = None
        self.last_train_acc: float | None = None
        self.last_train_n: int | None = None

    def validation_totals(self, totals: dict[str, tuple[float, int] | None]) -> None:
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

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
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
