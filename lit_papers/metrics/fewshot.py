"""Few-shot accuracy as reported by Vinyals et al. 2016 / Snell et al. 2017: the mean accuracy over test episodes
with a 95% confidence interval, half-width 1.96 * std / sqrt(n) (sample std, normal approximation).

A fixed set of test items that is not a sample of episodes (the 20 official 20-way one-shot runs of Lake et al.:
400 queries) gets the binomial interval over its queries instead, :func:`binomial_ci95` (normal approximation).

The running form keeps (n, sum, sum of squares) in float64, so partial results from DDP ranks are simply summed.
"""

from __future__ import annotations

import math

import torch

Z95 = 1.959963984540054


def mean_ci95(values: torch.Tensor) -> tuple[float, float]:
    """(mean, 95% half-width) of per-episode accuracies (1-d tensor); half-width 0 for one episode."""
    values = values.detach().to(torch.float64).flatten()
    return moments_ci95(episode_moments(values))


def episode_moments(values: torch.Tensor) -> torch.Tensor:
    """float64 (3,): (count, sum, sum of squares) of per-episode accuracies; add them across ranks/batches."""
    values = values.detach().to(torch.float64).flatten()
    return torch.stack([torch.tensor(float(values.numel()), dtype=torch.float64), values.sum(), values.pow(2).sum()])


def moments_ci95(moments: torch.Tensor) -> tuple[float, float]:
    n, s, ss = (float(v) for v in moments)
    if n <= 0:
        raise ValueError("no episodes were evaluated")
    mean = s / n
    if n < 2:
        return mean, 0.0
    var = max(ss - s * s / n, 0.0) / (n - 1)
    return mean, Z95 * math.sqrt(var / n)


def binomial_ci95(correct: float, n: float) -> tuple[float, float]:
    """(accuracy, 95% half-width) of ``correct`` successes out of ``n`` queries: 1.96 * sqrt(p (1 - p) / n)."""
    if n <= 0:
        raise ValueError("no queries were evaluated")
    p = correct / n
    return p, Z95 * math.sqrt(max(p * (1.0 - p), 0.0) / n)
