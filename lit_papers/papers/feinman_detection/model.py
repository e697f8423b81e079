"""Feinman, Curtin, Shintre, Gardner. Detecting Adversarial Samples from Artifacts. arXiv 1703.00410 (2017).

The detector reads two artifacts of a dropout classifier (sec. 3-4):

1. **Bayesian uncertainty** (sec. 3.2, eq. 4-5): with T stochastic forward passes (dropout on at test time)
   giving probability vectors y_1..y_T,  U(x) = 1/T sum_i y_i^T y_i - (1/T sum_i y_i)^T (1/T sum_i y_i)
   (:func:`bayesian_uncertainty`; T = 50, sec. 4). It is the trace of the predictive covariance.
2. **Kernel density** (sec. 3.1, eq. 2) of the last hidden layer phi(x) under the training points of the
   predicted class t:  K(x) = 1/|X_t| sum_{x_i in X_t} exp(-|phi(x) - phi(x_i)|^2 / sigma^2), sigma = 0.26 on
   CIFAR-10 (the scikit-learn Gaussian KernelDensity with bandwidth sigma, up to its constant: see
   :mod:`.detector`).

Both are combined by a logistic regression on z-scored features (sec. 4.3, :mod:`.detector`). This file also
holds the paper's victim kind: a network with dropout. The paper's CIFAR-10 model is a deep conv net with
dropout; ours is the CIFAR ResNet-20 of He et al. 2016 with dropout inside every block (the backbone's
``dropout`` keyword) and before the classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_papers.backbones.cifar_resnet import CifarResNet


class DropoutResNetCifar(nn.Module):
    """ResNet-(6n+2) with dropout: backbone (dropout between the two convs of every block) -> global average
    pool -> dropout -> linear. Input (B, 3, 32, 32) normalised -> logits (B, K)."""

    def __init__(self, *, depth: int = 20, num_classes: int = 10, shortcut: str = "A", block_dropout: float = 0.1,
                 head_dropout: float = 0.5) -> None:
        super().__init__()
        self.backbone = CifarResNet(depth=depth, shortcut=shortcut, dropout=block_dropout)
        self.head_dropout = nn.Dropout(head_dropout)
        self.fc = nn.Linear(self.backbone.out_channels[-1], num_classes)
        nn.init.kaiming_normal_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = self.backbone(x)["stage3"]  # (B, 64, 8, 8)
        return self.fc(self.head_dropout(last.mean(dim=(2, 3))))  # (B, 64) -> (B, K)


def dropout_on(network: nn.Module) -> list[nn.Module]:
    """Put only the dropout layers of ``network`` in training mode (BatchNorm keeps its running statistics);
    returns them, so the caller can switch them back off."""
    layers = [m for m in network.modules() if isinstance(m, nn.Dropout | nn.Dropout2d)]
    for m in layers:
        m.train()
    return layers


@torch.no_grad()
def mc_dropout_probs(model: nn.Module, x: torch.Tensor, samples: int = 50, batch_size: int = 500) -> torch.Tensor:
    """T stochastic forward passes with dropout on (sec. 3.2): softmax outputs (T, B, K)."""
    layers = dropout_on(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no dropout layer: Bayesian uncertainty needs a dropout network "
                         "(e.g. lit_papers.papers.feinman_detection.model.DropoutResNetCifar)")
    try:
        out = torch.stack([torch.cat([model(x[i:i + batch_size]).softmax(dim=1) for i in range(0, len(x), batch_size)])
                           for _ in range(samples)])
    finally:
        for m in layers:
            m.eval()
    return out


def bayesian_uncertainty(probs: torch.Tensor) -> torch.Tensor:
    """Eq. 4-5 without the model-precision term: 1/T sum_i y_i^T y_i - (1/T sum_i y_i)^T (1/T sum_i y_i) for
    ``probs`` (T, B, K) -> (B,)."""
    mean = probs.mean(dim=0)  # (B, K)
    return (probs * probs).sum(dim=2).mean(dim=0) - (mean * mean).sum(dim=1)
