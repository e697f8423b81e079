"""Step-indexed learning-rate schedules used by several papers (stepped every optimizer step).

Use under LightningCLI as ``scheduler: {class_path: lit_papers.schedules.WarmupMultiStepLR, init_args: ...}``;
the LitModule steps it with ``interval: step``.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupMultiStepLR(LRScheduler):
    """lr(t) = base_lr * gamma ** #{m in milestones : m <= t}, times ``warmup_factor`` while t < ``warmup_steps``.

    ``warmup: constant`` holds ``warmup_factor`` (He et al. 2016, ResNet-110: lr 0.01 = 0.1 x 0.1 for the first
    ~400 iterations); ``linear`` ramps from ``warmup_factor`` to 1 (Goyal et al. 2017, used by detection).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        *,
        milestones: Sequence[int],
        gamma: float = 0.1,
        warmup_steps: int = 0,
        warmup_factor: float = 0.1,
        warmup: str = "constant",
        last_epoch: int = -1,
    ) -> None:
        if list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing, got {list(milestones)}")
        if warmup not in ("constant", "linear"):
            raise ValueError(f"warmup must be 'constant' or 'linear', got {warmup!r}")
        self.milestones = list(milestones)
        self.gamma, self.warmup_steps, self.warmup_factor, self.warmup = gamma, warmup_steps, warmup_factor, warmup
        super().__init__(optimizer, last_epoch=last_epoch)

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    def factor(self, step: int) -> float:
        scale = self.gamma ** bisect.bisect_right(self.milestones, step)
        if step < self.warmup_steps:
            if self.warmup == "constant":
                return scale * self.warmup_factor
            alpha = step / self.warmup_steps
            return scale * (self.warmup_factor * (1 - alpha) + alpha)
        return scale


def optimizer_config(optimizer, scheduler_factory=None, interval: str = "step"):
    """What ``configure_optimizers`` returns for an injected optimizer and optional scheduler factory: the
    optimizer alone, or with its scheduler stepped every optimizer ``step`` (or every ``epoch``)."""
    if scheduler_factory is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler_factory(optimizer), "interval": interval}}
