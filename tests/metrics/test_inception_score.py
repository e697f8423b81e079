"""Inception score exp(E_x KL(p(y|x) || p(y))) on hand-computed cases; the pluggable classifier and its checkpoint."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lit_papers.metrics.inception_score import (
    NormalizedClassifier,
    bootstrap_score_ci95,
    classifier_score,
    load_classifier_checkpoint,
    score_from_logits,
    score_from_probs,
)
from lit_papers.ops.checkpoint import CheckpointError


def test_uniform_predictions_score_one():
    assert score_from_probs(torch.full((7, 5), 0.2)) == pytest.approx((1.0, 0.0), abs=1e-12)
    # every image gets the same (non-uniform) distribution: p(y|x) = p(y), KL = 0
    same = torch.tensor([[0.7, 0.2, 0.1]]).repeat(4, 1)
    assert score_from_probs(same)[0] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("k", [2, 3, 10])
def test_one_hot_balanced_scores_k(k):
    probs = torch.eye(k).repeat(3, 1)  # 3 images per class, each one-hot
    assert score_from_probs(probs)[0] == pytest.approx(k, rel=1e-12)


def test_hand_case_and_splits():
    # two images, p(y|x) = (1, 0) and (0.5, 0.5): p(y) = (0.75, 0.25)
    # KL1 = log(1/0.75); KL2 = 0.5 log(0.5/0.75) + 0.5 log(0.5/0.25)
    probs = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    kl1 = math.log(1 / 0.75)
    kl2 = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert score_from_probs(probs)[0] == pytest.approx(math.exp((kl1 + kl2) / 2), rel=1e-12)
    # split into halves: each half is one image (KL = 0 against its own marginal) -> 1 each, std 0
    assert score_from_probs(probs, splits=2) == pytest.approx((1.0, 0.0), abs=1e-12)
    # unequal splits: [one-hot class 0, one-hot class 1] -> 2; [one-hot class 0, same] -> 1; mean 1.5, std 0.5
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    assert score_from_probs(probs, splits=2) == pytest.approx((1.5, 0.5), rel=1e-12)


def test_logits_path_and_bad_input():
    logits = torch.tensor([[30.0, 0.0, 0.0], [0.0, 30.0, 0.0], [0.0, 0.0, 30.0]])
    assert score_from_logits(logits)[0] == pytest.approx(3.0, rel=1e-9)
    with pytest.raises(ValueError, match="summing to 1"):
        score_from_probs(logits)
    with pytest.raises(ValueError, match="splits=4"):
        score_from_probs(torch.eye(3), splits=4)


class Scale(nn.Module):
    """A 'classifier' with known logits: class k's logit is 10 * the image's mean in channel k."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(10.0))

    def forward(self, x):
        return self.w * x.mean(dim=(2, 3))  # (N, 3)


def test_classifier_score_normalisation_and_checkpoint(tmp_path):
    # images whose channel k (k = i mod 3) is 1 and the others 0: confident, balanced -> close to 3
    images = torch.zeros(6, 3, 4, 4)
    for i in range(6):
        images[i, i % 3] = 1.0
    direct = score_from_logits(10 * images.mean(dim=(2, 3)))[0]
    assert classifier_score(Scale(), images, batch_size=4)[0] == pytest.approx(direct, rel=1e-9)
    # a checkpoint saved as Lightning does, with the datamodule's normalisation: the wrapper undoes it
    mean, std = torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.25, 0.25, 0.25])
    torch.save({"state_dict": {"model.w": torch.tensor(2.5)},
                "datamodule_hyper_parameters": {"normalization": "channel"},  # a name, not the statistics
                "CIFARDataModule": {"normalization": {"mean": mean, "std": std}}}, tmp_path / "c.ckpt")
    wrapped = load_classifier_checkpoint(Scale(), tmp_path / "c.ckpt")
    assert isinstance(wrapped, NormalizedClassifier) and not wrapped.training
    expected = 2.5 * ((images - 0.5) / 0.25).mean(dim=(2, 3))
    assert torch.allclose(wrapped(images), expected)
    assert all(not p.requires_grad for p in wrapped.parameters())
    with pytest.raises(CheckpointError, match="no state_dict entries start with 'net.'"):
        load_classifier_checkpoint(Scale(), tmp_path / "c.ckpt", prefix="net.")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_classifier_checkpoint(Scale(), tmp_path / "missing.ckpt")


def _draw(n: int, gen: torch.Generator) -> torch.Tensor:
    """n class-probability rows from a fixed generative process: a peaked softmax around a random class."""
    cls = torch.randint(0, 10, (n,), generator=gen)
    logits = torch.randn(n, 10, generator=gen, dtype=torch.float64) + 3.0 * nn.functional.one_hot(cls, 10)
    return torch.softmax(logits, dim=1)


def test_bootstrap_interval_matches_the_spread_over_fresh_sample_sets():
    """The oracle: the score's 1.96 x std over 300 independent sample sets of the same process; the bootstrap from
    one set estimates it (within 25 %: one set's bootstrap has its own sampling error)."""
    gen = torch.Generator().manual_seed(0)
    fresh = torch.tensor([score_from_probs(_draw(400, gen))[0] for _ in range(300)])
    oracle = 1.96 * float(fresh.std())
    ours = bootstrap_score_ci95(_draw(400, gen), resamples=400)
    assert abs(ours - oracle) / oracle < 0.25, (ours, oracle)
    same = _draw(1, gen).repeat(50, 1)
    assert bootstrap_score_ci95(same, resamples=20) == pytest.approx(0.0, abs=1e-12)
