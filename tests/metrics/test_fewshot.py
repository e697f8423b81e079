"""Mean accuracy +- 95% confidence interval over episodes."""

from __future__ import annotations

import math

import pytest
import torch

from lit_papers.metrics.fewshot import episode_moments, mean_ci95, moments_ci95


def test_hand_computed_interval():
    values = torch.tensor([0.5, 1.0, 0.75, 0.75])
    mean, ci = mean_ci95(values)
    # sample variance: (0.0625 + 0.0625 + 0 + 0) / 3 = 0.041667; std err = sqrt(0.041667 / 4) = 0.10206
    assert mean == pytest.approx(0.75)
    assert ci == pytest.approx(1.959964 * math.sqrt(0.125 / 3 / 4), rel=1e-6)


def test_moments_add_across_ranks():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(101, generator=g)
    split = episode_moments(values[:40]) + episode_moments(values[40:])
    assert moments_ci95(split) == pytest.approx(mean_ci95(values))
    assert mean_ci95(values)[1] == pytest.approx(1.959964 * values.double().std().item() / math.sqrt(101), rel=1e-6)
    with pytest.raises(ValueError):
        moments_ci95(torch.zeros(3, dtype=torch.float64))


def test_binomial_interval_of_the_official_runs_by_hand():
    from lit_papers.metrics.fewshot import binomial_ci95

    p, ci = binomial_ci95(340, 400)  # 85 % of the 20 official runs x 20 queries
    assert p == 0.85 and math.isclose(ci, 1.959963984540054 * math.sqrt(0.85 * 0.15 / 400))
    with pytest.raises(ValueError):
        binomial_ci95(0, 0)
