"""bits/dim = NLL in nats / (D ln 2): by hand, the uniform 8.0, the running mean and its interval vs the stdlib."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from lit_papers.metrics.bits_per_dim import (
    BitsPerDim,
    bits_per_dim,
    categorical_nll_nats,
    uniform_bits_per_dim,
)


def test_formula_by_hand():
    # one example, D = 2 dimensions, K = 3 values: dimension 0 has p = (1/2, 1/2, 0), dimension 1 (1/4, 1/4, 1/2)
    probs = torch.tensor([[0.5, 0.25], [0.5, 0.25], [0.0, 0.5]], dtype=torch.float64)  # (K, D)
    logits = torch.log(probs)[None]  # (B=1, K=3, D=2)
    targets = torch.tensor([[0, 1]])  # p = 1/2 and 1/4: -ln p(x) = ln 2 + ln 4 = 3 ln 2 -> 3 bits / 2 dims
    nll = categorical_nll_nats(logits, targets)
    assert nll.tolist() == pytest.approx([3 * math.log(2.0)], abs=1e-12)
    assert bits_per_dim(nll, 2).tolist() == pytest.approx([1.5], abs=1e-12)


def test_uniform_distribution_is_exactly_8_bits_per_dim_on_cifar_images():
    d = 3 * 32 * 32
    logits = torch.zeros(2, 256, 3, 32, 32, dtype=torch.float64)
    targets = torch.randint(0, 256, (2, 3, 32, 32))
    bpd = bits_per_dim(categorical_nll_nats(logits, targets), d)
    assert bpd.tolist() == pytest.approx([8.0, 8.0], abs=1e-12)
    assert uniform_bits_per_dim() == 8.0 and uniform_bits_per_dim(2) == 1.0


def test_running_mean_and_interval_match_the_stdlib():
    d = 3072
    per_image = [3.1, 2.7, 3.9, 3.3, 2.95, 3.6, 3.05]  # bits/dim of 7 images, fed in two batches
    metric = BitsPerDim()
    nats = torch.tensor(per_image, dtype=torch.float64) * d * math.log(2.0)
    metric.update(nats[:3], d)
    metric.update(nats[3:], d)
    out = metric.compute()
    assert out["bits_per_dim"].item() == pytest.approx(statistics.fmean(per_image), abs=1e-12)
    half = 1.959963984540054 * statistics.stdev(per_image) / math.sqrt(len(per_image))
    assert out["ci95"].item() == pytest.approx(half, rel=1e-9)
    assert out["n"].item() == 7


def test_bad_input_is_an_error():
    with pytest.raises(ValueError, match="do not match"):
        categorical_nll_nats(torch.zeros(2, 256, 3, 4, 4), torch.zeros(2, 3, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="outside 0..255"):
        categorical_nll_nats(torch.zeros(1, 256, 1), torch.tensor([[256]]))
    with pytest.raises(ValueError, match="positive"):
        bits_per_dim(torch.tensor(1.0), 0)
    with pytest.raises(ValueError, match="before any update"):
        BitsPerDim().compute()
