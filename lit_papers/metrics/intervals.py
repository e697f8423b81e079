"""95 % intervals shared by every paper (the README's table lists which family uses which).

Per-item and per-episode means use the normal approximation, 1.96 x std / sqrt(n) (:mod:`lit_papers.metrics.fewshot`;
as a torchmetrics metric over items, :class:`MeanCI95`); a mean over a few seeds or repeats uses Student's t with
n - 1 degrees of freedom (:func:`t_half_width`), since 1.96 would understate it badly at n = 3 (t = 4.30).
"""

from __future__ import annotations

import math
import statistics

import torch
from torchmetrics import Metric

from lit_papers.metrics.fewshot import episode_moments, moments_ci95


def t_half_width(values: list[float]) -> float | None:
    """Half-width of the 95 % Student-t interval of the mean of ``values`` (None for fewer than 2)."""
    if len(values) < 2:
        return None
    from scipy.stats import t  # scipy comes with scikit-learn

    return float(t.ppf(0.975, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))


class MeanCI95(Metric):
    """A running mean with its 95 % interval over independent items: ``update(values)`` adds per-item values (any
    shape, flattened); ``compute()`` -> (mean, 1.96 * sample std / sqrt(n), n), each a float64 scalar tensor. The
    state is :func:`episode_moments` (count, sum, sum of squares in float64), summed across ranks."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("moments", default=torch.zeros(3, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: torch.Tensor) -> None:
        self.moments += episode_moments(values).to(self.moments.device)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean, half = moments_ci95(self.moments.cpu())
        n = float(self.moments[0])
        as_t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        return as_t(mean), as_t(half), as_t(n)
