"""Prototypes and squared Euclidean distances against a hand-computed case and a float64 loop."""

from __future__ import annotations

import pytest
import torch

from lit_papers.ops.prototypes import class_prototypes, squared_euclidean


def test_hand_computed_prototypes_and_distances():
    # 2 classes, 2-d embeddings: class 0 at (0,0),(2,0) -> prototype (1,0); class 1 at (0,4) -> (0,4)
    emb = torch.tensor([[[0.0, 0.0], [0.0, 4.0], [2.0, 0.0]]])
    labels = torch.tensor([[0, 1, 0]])
    protos = class_prototypes(emb, labels, 2)
    assert protos.tolist() == [[[1.0, 0.0], [0.0, 4.0]]]
    query = torch.tensor([[[1.0, 1.0], [3.0, 4.0]]])
    # (1,1): to (1,0) -> 1, to (0,4) -> 1 + 9 = 10; (3,4): to (1,0) -> 4 + 16 = 20, to (0,4) -> 9
    assert squared_euclidean(query, protos).tolist() == [[[1.0, 10.0], [20.0, 9.0]]]


def test_against_float64_loops():
    g = torch.Generator().manual_seed(0)
    emb, q = torch.randn(3, 12, 7, generator=g), torch.randn(3, 5, 7, generator=g)
    labels = torch.arange(4).repeat(3).view(1, 12).expand(3, 12)[:, torch.randperm(12, generator=g)]
    protos = class_prototypes(emb, labels, 4)
    d = squared_euclidean(q, protos)
    for b in range(3):
        for k in range(4):
            ref = emb[b][labels[b] == k].double().mean(0)
            torch.testing.assert_close(protos[b, k].double(), ref)
            for i in range(5):
                torch.testing.assert_close(d[b, i, k].double(), ((q[b, i].double() - ref) ** 2).sum(), rtol=1e-5,
                                           atol=1e-5)


def test_class_without_support_is_refused():
    with pytest.raises(ValueError, match="no support"):
        class_prototypes(torch.zeros(1, 2, 3), torch.tensor([[0, 0]]), 2)
