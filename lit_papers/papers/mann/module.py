"""MANNLitModule: sequence training of Santoro et al. 2016 (sec. 4.1) for the MANN or the LSTM baseline.

A batch holds ``episodes_per_batch`` episodes of N classes x K samples in random order (``support``
(B, T, 1, S, S), ``support_labels`` (B, T), T = N*K); the model sees x_t with y_{t-1} and is trained with the
cross-entropy of y_t at every step. Accuracy is reported by *instance*: the k-th presentation of a class in the
episode (Table 1 reports the 1st, 2nd, 3rd, 4th, 5th and 10th). Logged: ``train/loss``, ``train/acc_inst{k}``,
``<stage>/acc_inst{k}`` (fractions, exact sums over DDP ranks) with ``<stage>/acc_inst{k}_ci95`` (95% half-width over
episodes: the evaluation episodes are a random sample, an episode's accuracy at instance k is one observation) and
``<stage>/acc_inst{k}_n`` (number of episodes), ``<stage>/loss``, ``<stage>/acc``.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from lit_papers.metrics.fewshot import moments_ci95
from lit_papers.metrics.hooks import EvaluationHooks
from lit_papers.schedules import optimizer_config

REPORTED = (1, 2, 3, 4, 5, 10)  # Table 1's columns


def instance_numbers(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """labels (B, T) -> int64 (B, T): 1 for the first time a label occurs in its sequence, 2 the second, ..."""
    counts = F.one_hot(labels, num_classes).cumsum(dim=1)  # (B, T, C) running count per class
    return counts.gather(-1, labels.unsqueeze(-1)).squeeze(-1)  # (B, T)


class MANNLitModule(EvaluationHooks, L.LightningModule):
    def __init__(self, *, model: nn.Module, optimizer: OptimizerCallable,
                 scheduler: LRSchedulerCallable | None = None, max_instance: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self._sums: torch.Tensor | None = None

    def _forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        images, labels = batch["support"], batch["support_labels"]  # (B, T, 1, S, S), (B, T)
        logits = self.model(images, labels).float()  # (B, T, C)
        loss = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")  # (B, T)
        return logits, labels, loss

    def _instance_counts(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """float64 (5, max_instance) per instance number 1..max_instance: correct predictions, predictions, and over
        the episodes that have that instance: count, sum and sum of squares of the episode's accuracy."""
        k = self.hparams.max_instance
        b = labels.shape[0]
        inst = instance_numbers(labels, logits.shape[-1]).clamp(max=k) - 1  # (B, T) in 0..k-1
        correct = (logits.argmax(-1) == labels).double()  # (B, T)
        per = torch.zeros(2, b, k, dtype=torch.float64, device=logits.device)  # (2, B, k) per-episode counts
        per[0].scatter_add_(1, inst, correct)
        per[1].scatter_add_(1, inst, torch.ones_like(correct))
        has = per[1] > 0  # (B, k)
        acc = torch.where(has, per[0] / per[1].clamp(min=1), torch.zeros_like(per[0]))  # (B, k)
        return torch.stack([per[0].sum(0), per[1].sum(0), has.double().sum(0), acc.sum(0), acc.pow(2).sum(0)])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits, labels, loss = self._forward(batch)
        loss = loss.mean()
        counts = self._instance_counts(logits.detach(), labels)
        self.log("train/loss", loss, prog_bar=True)
        for k in (1, 2, 10):
            if k <= self.hparams.max_instance and counts[1, k - 1] > 0:
                self.log(f"train/acc_inst{k}", counts[0, k - 1] / counts[1, k - 1], prog_bar=k == 2)
        return loss

    # -- evaluation -------------------------------------------------------------------------------------------
    def _start_eval(self, stage: str) -> None:
        self._sums = torch.zeros(6, self.hparams.max_instance, dtype=torch.float64, device=self.device)

    def _eval_step(self, batch: dict, batch_idx: int = 0) -> None:
        logits, labels, loss = self._forward(batch)
        self._sums[:5] += self._instance_counts(logits, labels)
        self._sums[5, 0] += loss.double().sum()

    def _end_eval(self, stage: str) -> None:
        sums = self.trainer.strategy.reduce(self._sums, reduce_op="sum")
        correct, total = sums[0], sums[1]
        if total.sum() <= 0:
            return
        for k in REPORTED:
            if k <= self.hparams.max_instance and total[k - 1] > 0:
                self.log(f"{stage}/acc_inst{k}", float(correct[k - 1] / total[k - 1]), sync_dist=False)
                _, ci = moments_ci95(sums[2:5, k - 1].cpu())
                self.log(f"{stage}/acc_inst{k}_ci95", ci, sync_dist=False)
                self.log(f"{stage}/acc_inst{k}_n", float(sums[2, k - 1]), sync_dist=False)
        self.log(f"{stage}/acc", float(correct.sum() / total.sum()), sync_dist=False)
        self.log(f"{stage}/loss", float(sums[5, 0] / total.sum()), sync_dist=False)


    def configure_optimizers(self):
        return optimizer_config(self.optimizer_factory(self.parameters()), self.scheduler_factory)
