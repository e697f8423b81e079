"""Prototypes and distances for metric-based few-shot learning (Snell et al. 2017, eqs. 1-2).

    c_k = 1/|S_k| sum_{(x_i, y_i) in S_k} f(x_i)                 (eq. 1, class prototype)
    p(y = k | x) = softmax_k(-d(f(x), c_k)),  d = squared Euclidean  (eq. 2)
"""

from __future__ import annotations

import torch


def class_prototypes(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean embedding per class.

    embeddings: (B, S, D) support embeddings; labels: int64 (B, S) in 0..num_classes-1.
    Returns (B, num_classes, D). A class without support points raises ValueError (its mean is undefined).
    """
    b, _, d = embeddings.shape
    one_hot = torch.nn.functional.one_hot(labels, num_classes).to(embeddings.dtype)  # (B, S, N)
    counts = one_hot.sum(dim=1)  # (B, N)
    if bool((counts == 0).any()):
        raise ValueError("class_prototypes: a class has no support embedding")
    sums = one_hot.transpose(1, 2) @ embeddings  # (B, N, S) @ (B, S, D) -> (B, N, D)
    return sums / counts.unsqueeze(-1)


def squared_euclidean(queries: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """||q - c||^2 for every pair: queries (B, Q, D), prototypes (B, N, D) -> (B, Q, N).

    Computed as a broadcast difference (exact and non-negative; the |q|^2 - 2 q.c + |c|^2 expansion loses precision
    for nearby points and is not needed at these sizes).
    """
    diff = queries.unsqueeze(2) - prototypes.unsqueeze(1)  # (B, Q, N, D)
    return diff.pow(2).sum(-1)
