"""Ioffe & Szegedy 2015, Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate
Shift (ICML 2015).

:class:`BatchNorm` is the transform of Algorithm 1 (training: mini-batch statistics) and Algorithm 2 step 10
(inference: population statistics); for convolutional maps the statistics are taken per channel over the batch
and all locations (sec. 3.2). :class:`BNConvNet` is the small CIFAR network of our version of the paper's
experiment (sec. 4.2 uses Inception on ImageNet): the same net without BN, with BN, or with sigmoid units.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn


class BatchNorm(nn.Module):
    """y = gamma * (x - mu) / sqrt(sigma^2 + eps) + beta, per feature (channel).

    Training (Alg. 1): mu, sigma^2 are the mean and the biased variance over the mini-batch -- over N for
    (N, C) inputs, over N, H, W for (N, C, H, W) maps ("effective mini-batch of size m' = |B| * pq", sec. 3.2) --
    and gradients flow through them. The population statistics of Alg. 2 step 10, E[x] = E_B[mu_B] and
    Var[x] = m / (m - 1) * E_B[sigma_B^2], are tracked as moving averages (sec. 3.1, "Using moving averages
    instead, we can track the accuracy of a model as it trains") with weight ``momentum`` on the new batch, or
    as the plain average over all training batches when ``momentum`` is None (Alg. 2 literally). Inference
    (``eval()``) uses them: a fixed affine map.

    ``eps``: "a constant added to the mini-batch variance for numerical stability" (Alg. 1; the paper gives no
    value, 1e-5 as torch). gamma starts at 1 and beta at 0 (the paper does not say; the identity is representable,
    sec. 3: "gamma = sqrt(Var[x]), beta = E[x]" would recover the original activations).
    """

    def __init__(self, *, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))  # gamma
        self.bias = nn.Parameter(torch.zeros(num_features))  # beta
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]  # every axis but the channel axis 1
        shape = [1, -1] + [1] * (x.dim() - 2)  # (1, C) or (1, C, 1, 1)
        if self.training:
            var, mean = torch.var_mean(x, dim=dims, unbiased=False)  # (C,) sigma_B^2 = 1/m sum (x - mu_B)^2, mu_B
            m = x.numel() // x.shape[1]
            self.num_batches_tracked += 1
            w = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_mean.mul_(1 - w).add_(mean.detach(), alpha=w)
            self.running_var.mul_(1 - w).add_(var.detach() * (m / max(m - 1, 1)), alpha=w)  # unbiased, step 10
        else:
            mean, var = self.running_mean, self.running_var
        # gamma * (x - mu) / sqrt(var + eps) + beta, folded per channel into one multiply-add over the map:
        # scale = gamma / sqrt(var + eps), shift = beta - mu * scale (gradients still flow through mu and var)
        scale = self.weight * torch.rsqrt(var + self.eps)
        shift = self.bias - mean * scale
        return torch.addcmul(shift.view(shape), x, scale.view(shape))


class BNConvNet(nn.Module):
    """Conv net for 32x32 images: stages of two 3x3 conv units with max-pooling between, global average pool,
    linear. Input (B, 3, 32, 32) -> logits (B, K).

    ``batch_norm``: each unit is z = g(BN(W u)) -- BN right before the nonlinearity and no conv bias ("the bias b
    can be ignored since its effect will be canceled by the subsequent mean subtraction", sec. 3.2); without,
    z = g(W u + b). ``activation``: ReLU, or sigmoid (sec. 4.2.1 "BN-x5-Sigmoid": trains only with BN).
    """

    def __init__(self, *, widths: tuple[int, ...] = (32, 64, 128), num_classes: int = 10, batch_norm: bool = True,
                 activation: Literal["relu", "sigmoid"] = "relu", eps: float = 1e-5,
                 momentum: float | None = 0.1) -> None:
        super().__init__()
        act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}[activation]
        layers: list[nn.Module] = []
        c_in = 3
        for i, width in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(2):
                layers.append(nn.Conv2d(c_in, width, 3, padding=1, bias=not batch_norm))
                if batch_norm:
                    layers.append(BatchNorm(num_features=width, eps=eps, momentum=momentum))
                layers.append(act())
                c_in = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))  # (B, C, h, w) -> (B, C) -> (B, K)
