"""Bits per dimension: the negative log-likelihood of discrete data in base 2, divided by its dimension.

For an image x of D sub-pixels (D = 3 * 32 * 32 = 3072 for CIFAR-10) with model likelihood p(x),

    bits/dim(x) = -ln p(x) / (D ln 2)

(van den Oord et al. 2016a, "Pixel Recurrent Neural Networks", sec. 5.1: "the total discrete log-likelihood is
normalized by the dimensionality of the images"). A model giving every one of the 256 values of every sub-pixel
probability 1/256 has exactly log2(256) = 8 bits/dim. A data set's bits/dim is the mean over its images.

:class:`BitsPerDim` accumulates the per-image values as ``torchmetrics`` sum states (``dist_reduce_fx="sum"``),
so under DDP the mean is over all images of all ranks, and it also gives the 95% half-width of that mean
(normal approximation over images: 1.96 * sample std / sqrt(n)).
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

Z95 = 1.959963984540054


def bits_per_dim(nll_nats: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Per-example NLL in nats (any shape) and the dimension D of one example -> bits/dim (same shape)."""
    if num_dims <= 0:
        raise ValueError(f"num_dims must be positive, got {num_dims}")
    return nll_nats / (num_dims * math.log(2.0))


def uniform_bits_per_dim(levels: int = 256) -> float:
    """bits/dim of the uniform distribution over ``levels`` values per dimension: log2(levels) (8 for 8 bits)."""
    return math.log2(levels)


def categorical_nll_nats(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Logits (B, K, *dims) of a K-way softmax per dimension and integer targets (B, *dims) in 0..K-1 ->
    per-example NLL in nats (B,), summed over the dimensions (computed in float32 or wider)."""
    if logits.shape[0] != targets.shape[0] or logits.shape[2:] != targets.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} do not match targets {tuple(targets.shape)} "
                         "(expected (B, K, *dims) and (B, *dims))")
    k = logits.shape[1]
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= k):
        raise ValueError(f"targets outside 0..{k - 1}: min {int(targets.min())}, max {int(targets.max())}")
    dtype = torch.promote_types(logits.dtype, torch.float32)
    nll = torch.nn.functional.cross_entropy(logits.to(dtype), targets.long(), reduction="none")  # (B, *dims)
    return nll.flatten(1).sum(dim=1)


class BitsPerDim(Metric):
    """Mean bits/dim over examples, with its 95% half-width and count. ``update(nll_nats (B,), num_dims)``."""

    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, nll_nats: torch.Tensor, num_dims: int) -> None:
        values = bits_per_dim(nll_nats.detach().double().flatten(), num_dims)
        self.total += values.sum()
        self.total_sq += (values * values).sum()
        self.count += values.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        """{"bits_per_dim": mean, "ci95": 95% half-width of the mean (0 for a single example), "n": count},
        over every rank's examples (torchmetrics syncs the states before ``compute``)."""
        n = self.count
        if n == 0:
            raise ValueError("BitsPerDim.compute() before any update")
        mean = self.total / n
        if n < 2:
            half = torch.zeros_like(mean)
        else:
            var = (self.total_sq - n * mean * mean).clamp_min(0.0) / (n - 1)
            half = Z95 * torch.sqrt(var / n)
        return {"bits_per_dim": mean, "ci95": half, "n": n}
