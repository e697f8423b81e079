"""Snell, Swersky, Zemel. Prototypical Networks for Few-shot Learning. NeurIPS 2017.

Sec. 2.2: an embedding f_phi maps each image to R^M; the prototype of class k is the mean embedded support point
of that class (eq. 1); a query is classified by a softmax over negative squared Euclidean distances to the
prototypes (eq. 2); training minimises the negative log-probability of the true class over random episodes
(Algorithm 1). Sec. 3.1: f_phi is four [3x3 conv 64, batch norm, ReLU, 2x2 max-pool] blocks, giving a
64-d output on 28x28 Omniglot.
"""

from __future__ import annotations

import torch
from torch import nn

from lit_papers.ops.prototypes import class_prototypes, squared_euclidean


class PrototypicalNetwork(nn.Module):
    """logits = -||f(query) - c_k||^2 (eq. 2 before the softmax).

    ``encoder``: any backbone following the repository contract (``forward -> OrderedDict`` of maps); its last map,
    flattened, is the embedding (Conv4 on 28x28: (B, 64, 1, 1) -> 64-d).
    """

    def __init__(self, *, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, M, C, H, W) -> embeddings (B, M, D)."""
        b, m = images.shape[:2]
        maps = self.encoder(images.reshape(b * m, *images.shape[2:]))  # (B*M, C, H, W) in
        last = next(reversed(maps.values()))  # (B*M, D', h, w)
        return last.reshape(b, m, -1)  # (B, M, D)

    def forward(self, support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
                way: int) -> torch.Tensor:
        """support (B, N*K, C, H, W), support_labels int64 (B, N*K) in 0..way-1, query (B, Q, C, H, W)
        -> logits (B, Q, way).

        Support and query go through the encoder together (one batch-norm batch, as in Algorithm 1's episode).
        """
        s = support.shape[1]
        z = self.embed(torch.cat([support, query], dim=1))  # (B, N*K + Q, D)
        return self.classify(z[:, :s], support_labels, z[:, s:], way)

    @staticmethod
    def classify(support_z: torch.Tensor, support_labels: torch.Tensor, query_z: torch.Tensor,
                 way: int) -> torch.Tensor:
        """Embeddings -> logits: support_z (B, N*K, D), query_z (B, Q, D) -> (B, Q, way)."""
        prototypes = class_prototypes(support_z, support_labels, way)  # (B, N, D), eq. 1
        return -squared_euclidean(query_z, prototypes)  # (B, Q, N), eq. 2
