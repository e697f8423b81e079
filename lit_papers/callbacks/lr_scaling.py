"""Linear scaling rule of the learning rate (Goyal et al. 2017, "Accurate, Large Minibatch SGD", sec. 2.1; used by
Detectron and the Mask R-CNN recipes): the config's lr is for ``reference_batch_size`` images per iteration (16
in the Mask R-CNN paper: 8 GPUs x 2); with B images per iteration the lr becomes lr x B / reference.

B = the first training batch's size (measured, not read back from the datamodule) x ``trainer.world_size`` x
``accumulate_grad_batches``. The rule is applied once, before the first optimizer step: every param group's
``lr`` and ``initial_lr`` and every scheduler's ``base_lrs`` are multiplied (a scheduler built before the
scaling would otherwise undo it at its next step), and the message says so. The factor is stored in the
checkpoint (callback state), so a resumed run (whose optimizer/scheduler state is already scaled) is not scaled
again. The iteration counts of the schedule are not changed: scale ``max_steps`` and milestones by reference / B
to keep the paper's number of epochs.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.utilities import rank_zero_info


def batch_length(batch) -> int:
    """Images in a batch: the length of a (images, targets) pair's first element, or of the batch itself."""
    first = batch[0] if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], (tuple, list)) else batch
    if isinstance(first, dict):
        first = next(iter(first.values()))
    return len(first)


class LinearScalingRule(L.Callback):
    def __init__(self, *, reference_batch_size: int) -> None:
        if reference_batch_size <= 0:
            raise ValueError(f"reference_batch_size must be positive, got {reference_batch_size}")
        self.reference_batch_size = reference_batch_size
        self.factor: float | None = None  # applied factor (None: not yet)

    def scale(self, trainer: L.Trainer, images_per_device: int) -> float:
        total = images_per_device * trainer.world_size * trainer.accumulate_grad_batches
        factor = total / self.reference_batch_size
        self.factor = factor
        if factor == 1.0:
            return factor
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= factor
                if "initial_lr" in group:
                    group["initial_lr"] *= factor
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
            if hasattr(scheduler, "_last_lr"):
                scheduler._last_lr = [group["lr"] for group in scheduler.optimizer.param_groups]
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        rank_zero_info(f"[linear scaling rule] {total} images/iteration instead of {self.reference_batch_size}: "
                       f"lr x {factor:g} (now {lr:g}); scale max_steps and milestones by {1 / factor:g} to keep the "
                       "paper's number of epochs")
        return factor

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.factor is None:
            self.scale(trainer, batch_length(batch))

    def state_dict(self) -> dict:
        return {"factor": self.factor}

    def load_state_dict(self, state_dict: dict) -> None:
        self.factor = state_dict.get("factor")
